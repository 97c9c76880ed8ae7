//! How a delivery is signed, so a receiver can tell it came from the hub
//! and was not replayed long after: the header
//! `Fleethub-Signature: t=<unix seconds>,v1=<hex>`, where `<hex>` is the
//! lowercase hex HMAC-SHA256, keyed with the webhook's secret (its text, as
//! shown at creation), of `"<t>.<body>"`. The time is signed with the body:
//! a receiver refuses a signature older than a few minutes.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const HEADER: &str = "Fleethub-Signature";

/// Secrets are 32 random bytes: HMAC-SHA256's own block of key material.
const SECRET_BYTES: usize = 32;

/// A new webhook secret: 32 random bytes, URL-safe base64 (43 characters).
pub fn generate_secret() -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use rand::RngCore;
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The lowercase hex HMAC-SHA256 of `message` under `key`.
fn hmac_hex(key: &[u8], message: &[&[u8]]) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    for part in message {
        mac.update(part);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Fleethub-Signature` value for `body` sent at `unix_secs`.
pub fn header_value(secret: &str, unix_secs: i64, body: &[u8]) -> String {
    let t = unix_secs.to_string();
    let v1 = hmac_hex(secret.as_bytes(), &[t.as_bytes(), b".", body]);
    format!("t={t},v1={v1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        assert_eq!(
            hmac_hex(b"Jefe", &[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_header_signs_time_dot_body() {
        // Computed independently: Python's hmac.new(b"whsec-test",
        // b'1700000000.{"type":"event"}', hashlib.sha256).hexdigest().
        assert_eq!(
            header_value("whsec-test", 1_700_000_000, br#"{"type":"event"}"#),
            "t=1700000000,v1=851010828cb0438a9664a653ffea6ea6a5091f2b83938c2e51e7507284643e36"
        );
    }

    #[test]
    fn secrets_are_32_random_bytes_in_url_safe_base64() {
        let a = generate_secret();
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(a, generate_secret());
    }
}
