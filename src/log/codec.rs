//! The byte framing of every value Herald stores: log records and projection rows alike.
//!
//! `[format version: u8][CRC-32 of version and body: u32 LE][body: bincode 2, standard config]`
//!
//! Invariants:
//! - The version byte comes first so the format can evolve: a reader keeps one decoder per
//!   version it has ever written and dispatches on this byte.
//! - sled checksums its own log, so a crash cannot tear a value; the CRC here is for damage
//!   after the fact (disk, copy, a bad restore) and turns it into [`CodecError::Checksum`]
//!   instead of garbage or a panic.
//! - bincode 2 through serde cannot decode `serde_json::Value`, untagged or internally tagged
//!   enums, `flatten` or `skip_serializing_if`; stored types avoid all of them and keep
//!   payloads as raw bytes.

use serde::{de::DeserializeOwned, Serialize};

/// Bytes before the body: version and checksum.
pub const HEADER_LEN: usize = 5;

/// Why stored bytes could not be turned back into a value.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("stored value is {0} bytes, shorter than its 5-byte header")]
    Truncated(usize),
    #[error("stored value fails its checksum (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("stored value has format version {0}, which this build cannot read")]
    UnknownVersion(u8),
    #[error("stored value does not decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("value does not encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

fn crc(version: u8, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[version]);
    h.update(body);
    h.finalize()
}

/// Frames `value` under `version`.
pub fn encode<T: Serialize>(version: u8, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![version, 0, 0, 0, 0];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())?;
    let sum = crc(version, &out[HEADER_LEN..]);
    out[1..HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// Frames bytes that are already the body (a layout of their own, not bincode).
pub fn frame_raw(version: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(version);
    out.extend_from_slice(&crc(version, body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Appends `more` to the body of a frame made by [`frame_raw`], extending its checksum: a
/// CRC-32 can be continued from its value, so this costs `more`, not the whole body. If the
/// body was damaged, the extended checksum still does not match it.
pub fn append_raw(framed: &mut Vec<u8>, more: &[u8]) -> Result<(), CodecError> {
    if framed.len() < HEADER_LEN {
        return Err(CodecError::Truncated(framed.len()));
    }
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&framed[1..HEADER_LEN]);
    let mut h = crc32fast::Hasher::new_with_initial(u32::from_le_bytes(stored));
    h.update(more);
    framed[1..HEADER_LEN].copy_from_slice(&h.finalize().to_le_bytes());
    framed.extend_from_slice(more);
    Ok(())
}

/// Checks the frame and returns its version and body.
pub fn unframe(bytes: &[u8]) -> Result<(u8, &[u8]), CodecError> {
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::Truncated(bytes.len()));
    }
    let version = bytes[0];
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&bytes[1..HEADER_LEN]);
    let stored = u32::from_le_bytes(stored);
    let body = &bytes[HEADER_LEN..];
    let computed = crc(version, body);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    Ok((version, body))
}

/// Decodes a body written with bincode's standard configuration.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let (value, _) = bincode::serde::decode_from_slice(body, bincode::config::standard())?;
    Ok(value)
}

/// Decodes a value that has only ever had one format version.
pub fn decode<T: DeserializeOwned>(expected_version: u8, bytes: &[u8]) -> Result<T, CodecError> {
    let (version, body) = unframe(bytes)?;
    if version != expected_version {
        return Err(CodecError::UnknownVersion(version));
    }
    decode_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_every_flipped_byte() {
        let value = (42u64, "lead.qualified".to_string(), vec![1u8, 2, 3]);
        let bytes = encode(1, &value).unwrap();
        let back: (u64, String, Vec<u8>) = decode(1, &bytes).unwrap();
        assert_eq!(back, value);
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x40;
            assert!(decode::<(u64, String, Vec<u8>)>(1, &damaged).is_err(), "byte {i}");
        }
        assert!(matches!(unframe(&bytes[..3]), Err(CodecError::Truncated(3))));
    }

    #[test]
    fn appending_extends_the_checksum_like_framing_the_whole() {
        let mut framed = frame_raw(1, b"first entry");
        append_raw(&mut framed, b", second").unwrap();
        assert_eq!(framed, frame_raw(1, b"first entry, second"));
        let mut damaged = frame_raw(1, b"first entry");
        damaged[7] ^= 1;
        append_raw(&mut damaged, b", second").unwrap();
        assert!(unframe(&damaged).is_err(), "damage before the append is still seen");
    }

    #[test]
    fn unknown_versions_are_refused_not_guessed() {
        let bytes = encode(9, &1u8).unwrap();
        assert!(matches!(decode::<u8>(1, &bytes), Err(CodecError::UnknownVersion(9))));
    }
}
