//! Device keys: 32 random bytes, shown once as URL-safe base64 (43
//! characters, no padding, safe in a query string). Only their SHA-256 is
//! stored; a key is checked by hashing it and comparing in constant time.
//! A fast hash is enough: the key is random, not a password anyone chose, so
//! there is nothing to guess from its hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a key.
const KEY_BYTES: usize = 32;
/// Longest key read from a request: a real one is 43 characters; anything
/// far longer is not hashed at all.
pub const MAX_KEY_LEN: usize = 256;

/// A new secret key (kept as a secret: never logged, never in Debug output).
pub fn generate() -> SecretString {
    let mut bytes = [0u8; KEY_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of `key`: SHA-256, lowercase hex.
pub fn hash(key: &SecretString) -> String {
    hex(&Sha256::digest(key.expose_secret().as_bytes()))
}

/// Whether `key` is the one whose hash is `stored`, compared in constant time.
pub fn verify(key: &str, stored: &str) -> bool {
    if key.len() > MAX_KEY_LEN {
        return false;
    }
    let computed = hex(&Sha256::digest(key.as_bytes()));
    computed.as_bytes().ct_eq(stored.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_verifies_against_its_hash_only() {
        let key = generate();
        assert_eq!(key.expose_secret().len(), 43);
        let stored = hash(&key);
        assert_eq!(stored.len(), 64);
        assert!(verify(key.expose_secret(), &stored));
        assert!(!verify("not-the-key", &stored));
        assert!(!verify("", &stored));
        let other = generate();
        assert_ne!(key.expose_secret(), other.expose_secret());
        assert!(!verify(other.expose_secret(), &stored));
    }

    #[test]
    fn keys_are_url_safe() {
        let key = generate();
        assert!(
            key.expose_secret()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}
