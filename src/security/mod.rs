//! What keeps secrets and targets safe, as rules and primitives every layer may use: issuing
//! and checking tokens, sealing secrets at rest, where Herald may send, which custom headers a
//! webhook may set. It imports nothing else of Herald's.
//!
//! - [`credentials`]: tokens — generate, hash, constant-time check.
//! - [`seal`]: the keyring and XChaCha20-Poly1305 sealing of secrets and header values.
//! - [`safety`]: where Herald may send (contract §6).
//! - [`header_rules`]: which custom headers a webhook may set, which values are masked.

pub mod credentials;
pub mod header_rules;
pub mod safety;
pub mod seal;

use std::path::Path;

/// Creates `dir` (and parents) with mode 0700 if it does not exist: the data directory and
/// the key file's directory hold what only this user may read.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
