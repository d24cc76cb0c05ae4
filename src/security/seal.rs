//! Secrets sealed at rest: webhook secrets (current and rotated-out) and custom header
//! values are encrypted before the record that carries them is written, so no file under the
//! data directory holds one in clear.
//!
//! Sealing is XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) with a random 24-byte
//! nonce per value, under a key that lives outside the data directory: a key file, or the
//! `seal_key` setting (e.g. from systemd's `LoadCredential`). The key file is a keyring, one
//! `<id> <base64 key>` per line, the first the one that seals; the others still open what
//! they sealed, so a key can be rotated (`herald seal-key rotate`) while old records stay
//! readable.
//!
//! Invariants:
//! - A sealed value is `sealed:v1:<key id>:<base64 nonce‖ciphertext>`; anything else is a
//!   value an older Herald stored in clear, and opens as itself (`herald seal` rewrites a
//!   log so that none is left).
//! - Opening needs the key that sealed: a data directory whose canary (`seal-canary`, sealed
//!   when the directory got its first key) no key of the ring opens does not start.
//! - Nothing here logs or prints a key or a clear value; [`SealedText`]'s `Debug` shows
//!   neither.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const PREFIX: &str = "sealed:v1:";
/// Binds every sealed value to this purpose.
const AAD: &[u8] = b"herald sealed value v1";
/// The canary's file name in the data directory, and what it holds once opened.
pub const CANARY_FILE: &str = "seal-canary";
const CANARY: &str = "herald seal canary";

/// A value as stored: sealed, or (from an older Herald) in clear. Encodes exactly as a
/// `String`, so records written before sealing decode as values in clear.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct SealedText(String);

impl SealedText {
    /// A value stored in clear (as an older Herald did), for migration and its tests.
    pub fn in_clear(value: impl Into<String>) -> Self {
        SealedText(value.into())
    }

    pub fn is_sealed(&self) -> bool {
        self.0.starts_with(PREFIX)
    }

    /// The stored form.
    pub fn stored(&self) -> &str {
        &self.0
    }

    /// The id of the key that sealed it.
    pub fn key_id(&self) -> Option<&str> {
        self.0.strip_prefix(PREFIX)?.split(':').next()
    }
}

impl std::fmt::Debug for SealedText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.key_id() {
            Some(id) => write!(f, "SealedText(sealed with {id})"),
            None => f.write_str("SealedText(in clear)"),
        }
    }
}

/// Why a value or a key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no key {0} in the seal keyring (sealed with a key this node does not hold)")]
    NoKey(String),
    #[error("a sealed value is damaged")]
    Damaged,
    #[error("seal keyring: {0}")]
    BadKeyring(String),
    #[error("{0}")]
    Io(String),
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
    bytes: [u8; 32],
}

/// The keys that open sealed values; the first seals.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({:?})", self.ids())
    }
}

fn key_from(id: String, bytes: [u8; 32]) -> Key {
    Key { id, cipher: XChaCha20Poly1305::new(&bytes.into()), bytes }
}

fn new_key() -> Key {
    let bytes: [u8; 32] = XChaCha20Poly1305::generate_key(&mut OsRng).into();
    let id = hex8(&rand::random::<[u8; 4]>());
    key_from(id, bytes)
}

fn hex8(b: &[u8; 4]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Keyring {
    /// A keyring of one new key.
    pub fn generate() -> Keyring {
        Keyring { keys: vec![new_key()] }
    }

    /// Reads `<id> <base64 key>` lines (or comma-separated pairs), `#` comments, first seals.
    pub fn parse(text: &str) -> Result<Keyring, SealError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut keys = Vec::new();
        for entry in text.lines().flat_map(|l| l.split('#').next().unwrap_or("").split(',')) {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let mut parts = entry.split_whitespace();
            let (Some(id), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(SealError::BadKeyring("each key is `<id> <base64 of 32 bytes>`".into()));
            };
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(SealError::BadKeyring(format!("key id `{id}` must be letters and digits")));
            }
            let bytes: [u8; 32] = b64
                .decode(key)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| SealError::BadKeyring(format!("key {id} is not base64 of 32 bytes")))?;
            if keys.iter().any(|k: &Key| k.id == id) {
                return Err(SealError::BadKeyring(format!("key id {id} appears twice")));
            }
            keys.push(key_from(id.to_owned(), bytes));
        }
        if keys.is_empty() {
            return Err(SealError::BadKeyring("no key".into()));
        }
        Ok(Keyring { keys })
    }

    /// The keyring as its file holds it.
    pub fn to_text(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = String::from("# Herald seal keyring: the first key seals, every key opens. Keep it secret,\n# and back it up apart from the data directory.\n");
        for k in &self.keys {
            out.push_str(&format!("{} {}\n", k.id, b64.encode(k.bytes)));
        }
        out
    }

    /// A keyring with a new sealing key in front of these.
    pub fn rotated(&self) -> Keyring {
        let mut keys = vec![new_key()];
        keys.extend(self.keys.iter().map(|k| key_from(k.id.clone(), k.bytes)));
        Keyring { keys }
    }

    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Seals `clear` with the first key.
    pub fn seal(&self, clear: &str) -> SealedText {
        let key = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        // Encryption of an in-memory buffer fails only for messages beyond 2^38 bytes.
        let sealed = key.cipher.encrypt(&nonce, Payload { msg: clear.as_bytes(), aad: AAD }).unwrap_or_default();
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&sealed);
        SealedText(format!("{PREFIX}{}:{}", key.id, base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw)))
    }

    /// The clear value (a value stored in clear is returned as it is).
    pub fn open(&self, value: &SealedText) -> Result<String, SealError> {
        self.open_str(&value.0)
    }

    /// [`Keyring::open`] of a stored string.
    pub fn open_str(&self, stored: &str) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_owned()) };
        let (id, data) = rest.split_once(':').ok_or(SealError::Damaged)?;
        let key = self.keys.iter().find(|k| k.id == id).ok_or_else(|| SealError::NoKey(id.to_owned()))?;
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD.decode(data).map_err(|_| SealError::Damaged)?;
        if raw.len() < 24 {
            return Err(SealError::Damaged);
        }
        let (nonce, sealed) = raw.split_at(24);
        let clear = key
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: AAD })
            .map_err(|_| SealError::Damaged)?;
        String::from_utf8(clear).map_err(|_| SealError::Damaged)
    }

    /// `value` sealed with the first key, whatever it was sealed with before (or in clear).
    pub fn reseal(&self, value: &SealedText) -> Result<SealedText, SealError> {
        Ok(self.seal(&self.open(value)?))
    }
}

/// Where the keyring comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The `seal_key` setting (keys inline).
    Inline(String),
    /// A key file.
    File(PathBuf),
}

/// Where a data directory's key file is when none is configured: `$CREDENTIALS_DIRECTORY/
/// herald-seal-key` under systemd's `LoadCredential`, else beside the data directory
/// (`<data_dir>.seal-key`), never inside it.
pub fn default_key_file(data_dir: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let candidate = Path::new(&dir).join("herald-seal-key");
        if candidate.exists() {
            return candidate;
        }
    }
    let name = data_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "herald-data".into());
    data_dir.with_file_name(format!("{name}.seal-key"))
}

/// Loads the keyring for `data_dir` and checks it opens the directory's canary. With no key
/// anywhere and a directory that was never sealed, generates one into the key file (mode
/// 0600) and says so; with a sealed directory and no key, refuses with a message that says
/// which key is missing and where it was looked for.
pub fn load(source: &KeySource, data_dir: &Path) -> Result<Keyring, SealError> {
    let canary_path = data_dir.join(CANARY_FILE);
    let canary = match std::fs::read_to_string(&canary_path) {
        Ok(text) => Some(SealedText(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(SealError::Io(format!("cannot read {}: {e}", canary_path.display()))),
    };
    let sealed = format!("the secrets in {}", data_dir.display());
    let keyring = keyring(source, canary.as_ref(), &sealed, "restore the key file from its backup")?;
    match canary {
        Some(c) => check_canary(&keyring, &c, &sealed, &canary_path.display().to_string(), "restore that key")?,
        None => {
            super::create_private_dir(data_dir).map_err(|e| SealError::Io(format!("{}: {e}", data_dir.display())))?;
            write_private(&canary_path, keyring.seal(CANARY).stored())?;
        }
    }
    Ok(keyring)
}

/// [`load`] for a node of a cluster, whose secrets are the cluster's: the canary is the one
/// the cluster's first node sealed and left in the database (`existing`), not the data
/// directory's, so a node whose key differs from the others' refuses to start instead of
/// failing to sign. With no canary yet, `share` offers this node's and returns the one the
/// cluster kept (another node's, if it was first).
pub fn load_for_cluster(
    source: &KeySource,
    existing: Option<String>,
    share: impl FnOnce(String) -> Result<String, SealError>,
) -> Result<Keyring, SealError> {
    const FIX: &str = "every node needs the same seal key: copy the key file from a node of the cluster";
    let existing = existing.map(SealedText);
    let keyring = keyring(source, existing.as_ref(), "the cluster's secrets", FIX)?;
    let canary = match existing {
        Some(c) => c,
        None => SealedText(share(keyring.seal(CANARY).0)?),
    };
    check_canary(&keyring, &canary, "the cluster's secrets", "the cluster's seal canary", FIX)?;
    Ok(keyring)
}

/// The keyring `source` names; a missing key file is generated only when nothing was sealed
/// yet (`canary` is `None`), else refused with `fix`.
fn keyring(source: &KeySource, canary: Option<&SealedText>, sealed: &str, fix: &str) -> Result<Keyring, SealError> {
    match source {
        KeySource::Inline(text) => Keyring::parse(text),
        KeySource::File(path) => match std::fs::read_to_string(path) {
            Ok(text) => Keyring::parse(&text).map_err(|e| SealError::BadKeyring(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(c) = canary {
                    return Err(SealError::Io(format!(
                        "no seal key file at {}: {sealed} are sealed with key {}; {fix} \
                         (or set seal_key_file / HERALD_SEAL_KEY)",
                        path.display(),
                        c.key_id().unwrap_or("?")
                    )));
                }
                let keyring = Keyring::generate();
                write_private(path, &keyring.to_text())?;
                tracing::warn!(
                    key_file = %path.display(),
                    "generated the key that seals secrets at rest; back it up apart from the data directory"
                );
                Ok(keyring)
            }
            Err(e) => Err(SealError::Io(format!("cannot read seal key file {}: {e}", path.display()))),
        },
    }
}

/// That `keyring` opens `canary` (named `shown` in messages) to what a canary holds.
fn check_canary(keyring: &Keyring, canary: &SealedText, sealed: &str, shown: &str, fix: &str) -> Result<(), SealError> {
    match keyring.open(canary) {
        Ok(text) if text == CANARY => Ok(()),
        Ok(_) | Err(SealError::Damaged) => Err(SealError::Io(format!("{shown} is damaged"))),
        Err(SealError::NoKey(id)) => Err(SealError::Io(format!(
            "{sealed} are sealed with key {id}, which the seal keyring ({}) does not hold; {fix}",
            keyring.ids().join(", ")
        ))),
        Err(e) => Err(e),
    }
}

/// What `herald seal-key rotate` did to a key file.
pub struct Rotation {
    /// The key that seals from now on.
    pub new: String,
    /// The keys kept after it (none when the file was created).
    pub kept: Vec<String>,
}

/// `herald seal-key rotate`: puts a new key in front of the file's keys, or creates the file
/// with one key when there is none yet (a key kept outside the state directory, made before
/// the first start). With a data directory that holds sealed secrets, the file must open
/// them (a wrong file is not rotated, a missing one not replaced). Never creates the data
/// directory.
pub fn rotate_file(path: &Path, data_dir: &Path) -> Result<Rotation, SealError> {
    let ring = if data_dir.join(CANARY_FILE).exists() {
        // Opens the directory's canary, or says which key to restore if the file is missing.
        load(&KeySource::File(path.to_owned()), data_dir)?
    } else {
        match std::fs::read_to_string(path) {
            Ok(text) => Keyring::parse(&text).map_err(|e| SealError::BadKeyring(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let ring = Keyring::generate();
                write_private(path, &ring.to_text())?;
                return Ok(Rotation { new: ring.ids()[0].to_owned(), kept: Vec::new() });
            }
            Err(e) => return Err(SealError::Io(format!("cannot read seal key file {}: {e}", path.display()))),
        }
    };
    let rotated = ring.rotated();
    write_private(path, &rotated.to_text())?;
    Ok(Rotation { new: rotated.ids()[0].to_owned(), kept: ring.ids().iter().map(|s| s.to_string()).collect() })
}

/// Writes `text` to `path` (created with mode 0600, replaced whole).
pub fn write_private(path: &Path, text: &str) -> Result<(), SealError> {
    use std::io::Write;
    let fail = |e: std::io::Error| SealError::Io(format!("cannot write {}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&tmp).map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_with_any_key_of_the_ring_and_nothing_else() {
        let ring = Keyring::generate();
        let sealed = ring.seal("whsec_abc");
        assert!(sealed.is_sealed() && !sealed.stored().contains("whsec_abc"));
        assert_ne!(ring.seal("whsec_abc"), sealed, "a fresh nonce each time");
        assert_eq!(ring.open(&sealed).unwrap(), "whsec_abc");
        // Rotation: the new key seals, the old one still opens.
        let rotated = Keyring::parse(&ring.rotated().to_text()).unwrap();
        assert_eq!(rotated.ids().len(), 2);
        assert_eq!(rotated.open(&sealed).unwrap(), "whsec_abc");
        assert_eq!(rotated.seal("x").key_id(), Some(rotated.ids()[0]));
        // Another ring does not open it, and says which key it needs.
        let other = Keyring::generate();
        assert_eq!(other.open(&sealed), Err(SealError::NoKey(ring.ids()[0].to_owned())));
        // Tampering is noticed.
        let mut bad = sealed.stored().to_owned();
        let flip = if bad.ends_with('A') { 'B' } else { 'A' };
        bad.pop();
        bad.push(flip);
        assert_eq!(ring.open_str(&bad), Err(SealError::Damaged));
        // A value stored in clear opens as itself.
        assert_eq!(ring.open(&SealedText::in_clear("legacy")).unwrap(), "legacy");
        assert!(!format!("{sealed:?}").contains(sealed.stored()));
    }

    #[test]
    fn a_keyring_file_is_checked() {
        assert!(Keyring::parse("").is_err());
        assert!(Keyring::parse("k1 notbase64!").is_err());
        assert!(Keyring::parse("k1 AAAA").is_err());
        let one = Keyring::generate().to_text();
        assert!(Keyring::parse(&format!("{one}{one}")).is_err(), "an id twice");
        assert_eq!(Keyring::parse(&one).unwrap().ids().len(), 1);
    }

    #[test]
    fn a_directory_sealed_with_a_key_does_not_open_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let file = default_key_file(&data);
        assert_eq!(file, dir.path().join("data.seal-key"));
        let ring = load(&KeySource::File(file.clone()), &data).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(load(&KeySource::File(file.clone()), &data).is_ok(), "the same key opens it again");
        let other = Keyring::generate().to_text();
        let e = load(&KeySource::Inline(other), &data).unwrap_err().to_string();
        assert!(e.contains(ring.ids()[0]), "{e}");
        std::fs::remove_file(&file).unwrap();
        let e = load(&KeySource::File(file.clone()), &data).unwrap_err().to_string();
        assert!(e.contains("no seal key file") && e.contains(ring.ids()[0]), "{e}");
        assert!(!file.exists(), "no new key is made for a sealed directory");
    }
}
