//! Tokens: the simulator signs its own HS256 JWTs with the hub's shared
//! secret, exactly as an identity provider would for real apps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// Who the token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Driver,
    Dispatcher,
    Admin,
}

/// The claims the hub reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
}

/// Signs a token for `sub` valid for `ttl` from now.
pub fn mint(secret: &str, sub: &str, role: Role, fleet: Option<&str>, ttl: Duration) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = Claims {
        sub: sub.to_owned(),
        role,
        fleet: fleet.map(str::to_owned),
        exp: now + ttl.as_secs().max(1),
        iat: now,
    };
    let key = EncodingKey::from_secret(secret.as_bytes());
    // HMAC over a JSON object of strings and numbers has no failure mode left
    // once the key exists; an error here is a bug in jsonwebtoken, not input.
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .expect("HS256 signing of plain claims cannot fail")
}

/// Reads the claims of a ready-made token without checking its signature
/// (the hub does that); used to learn the driver id a `--token` speaks for.
pub fn peek(token: &str) -> anyhow::Result<Claims> {
    Ok(jsonwebtoken::dangerous::insecure_decode_claims::<Claims>(
        token,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_carries_claims() {
        let t = mint(
            "s3cret",
            "d1",
            Role::Driver,
            Some("acme"),
            Duration::from_secs(60),
        );
        let c = peek(&t).unwrap();
        assert_eq!(
            (c.sub.as_str(), c.role, c.fleet.as_deref()),
            ("d1", Role::Driver, Some("acme"))
        );
        assert!(c.exp >= c.iat + 60);
    }
}
