//! Integrity checks shared by every backend: sha256 checksums of plugin files.
//!
//! A host pins a plugin by its sha256 (go-plugin's `SecureConfig`); the check runs on the exact
//! bytes that are about to be compiled or executed, before anything else touches them.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A sha256 digest, written and parsed as 64 lowercase hex digits.
///
/// ```
/// use plinth::Checksum;
///
/// let checksum = Checksum::of(b"plugin bytes");
/// let pinned: Checksum = checksum.to_string().parse()?;
/// assert_eq!(pinned, checksum);
/// // Pin it: ClientConfig::wasm("kv.wasm").checksum(pinned)
/// # Ok::<(), plinth::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checksum([u8; 32]);

impl Checksum {
    /// Computes the sha256 of `bytes`.
    pub fn of(bytes: &[u8]) -> Checksum {
        Checksum(Sha256::digest(bytes).into())
    }

    /// Wraps a raw 32-byte digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Checksum {
        Checksum(bytes)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks that `bytes` hash to this checksum; the error names both digests.
    pub fn verify(&self, plugin: &str, bytes: &[u8]) -> Result<()> {
        let actual = Checksum::of(bytes);
        if actual == *self {
            return Ok(());
        }
        Err(Error::ChecksumMismatch {
            plugin: plugin.to_owned(),
            expected: self.to_string(),
            actual: actual.to_string(),
        })
    }
}

impl FromStr for Checksum {
    type Err = Error;

    /// Parses 64 hex digits, with an optional `sha256:` prefix.
    fn from_str(input: &str) -> Result<Checksum> {
        let digits = input.trim();
        let digits = digits.strip_prefix("sha256:").unwrap_or(digits);
        let invalid = |reason: String| Error::InvalidChecksum {
            input: input.to_owned(),
            reason,
        };
        if digits.len() != 64 {
            return Err(invalid(format!("it has {} digits", digits.len())));
        }
        let mut raw = [0u8; 32];
        hex::decode_to_slice(digits, &mut raw).map_err(|e| invalid(e.to_string()))?;
        Ok(Checksum(raw))
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Checksum({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn computes_and_prints_the_known_digest() {
        assert_eq!(Checksum::of(b"abc").to_string(), ABC);
    }

    #[test]
    fn parses_with_and_without_prefix() {
        let plain: Checksum = ABC.parse().unwrap();
        let prefixed: Checksum = format!("sha256:{ABC}").parse().unwrap();
        assert_eq!(plain, prefixed);
        assert_eq!(plain, Checksum::of(b"abc"));
    }

    #[test]
    fn rejects_wrong_length_and_non_hex() {
        let short = "abc".parse::<Checksum>().unwrap_err();
        assert!(short.to_string().contains("it has 3 digits"), "{short}");
        let not_hex = "z".repeat(64).parse::<Checksum>().unwrap_err();
        assert!(
            matches!(not_hex, Error::InvalidChecksum { .. }),
            "{not_hex}"
        );
    }

    #[test]
    fn mismatch_names_both_digests() {
        let pinned = Checksum::of(b"abc");
        let err = pinned.verify("kv", b"abd").unwrap_err();
        let text = err.to_string();
        assert!(text.contains(ABC), "{text}");
        assert!(text.contains(&Checksum::of(b"abd").to_string()), "{text}");
        pinned.verify("kv", b"abc").unwrap();
    }
}
