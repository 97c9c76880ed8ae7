//! Tokens: HS256 JWTs with `sub`, `role`, `fleet`, `exp` (and optionally
//! `nbf`, `iat`). Every connection and every API call is checked here before
//! anything else happens.

use std::time::Duration;

use actix_web::HttpRequest;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::domain::{DriverId, FleetId, Timestamp};
use crate::protocol::ErrorCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Driver,
    Dispatcher,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Driver => "driver",
            Role::Dispatcher => "dispatcher",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "driver" => Ok(Role::Driver),
            "dispatcher" => Ok(Role::Dispatcher),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}` (driver, dispatcher or admin)"
            )),
        }
    }
}

/// The claims as they travel in a token.
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

/// How far in the future a token's `iat` may be: the issuer's clock may run
/// a little ahead of the hub's, a token from beyond that is forged or broken.
pub const IAT_LEEWAY_SECS: u64 = 60;

/// Latest `exp` accepted: the last second of year 9999. Beyond it an expiry
/// is not a date the hub can keep (2^64 - 1 overflows every clock type), so
/// the token is refused before the upgrade instead of closing at once.
pub const MAX_EXP_SECS: u64 = 253_402_300_799;

/// Which vehicles a caller may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetScope {
    One(FleetId),
    All,
}

impl FleetScope {
    /// The one fleet check every endpoint and session makes: may this caller
    /// see `fleet`'s drivers?
    pub fn allows(&self, fleet: &FleetId) -> bool {
        match self {
            FleetScope::All => true,
            FleetScope::One(own) => own == fleet,
        }
    }

    /// The caller's own fleet; `None` for admins, who see every fleet.
    pub fn fleet(&self) -> Option<&FleetId> {
        match self {
            FleetScope::One(own) => Some(own),
            FleetScope::All => None,
        }
    }
}

/// A verified caller. Built only from a token whose signature and expiry were checked.
#[derive(Debug, Clone)]
pub struct Identity {
    pub sub: String,
    pub role: Role,
    pub scope: FleetScope,
    /// When the token stops being valid; open sockets are closed then.
    pub expires_at: Timestamp,
}

/// A verified driver: it may publish only as `driver`, in `fleet`.
#[derive(Debug, Clone)]
pub struct DriverIdentity {
    pub driver: DriverId,
    pub fleet: FleetId,
    pub expires_at: Timestamp,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("a token is required (Authorization: Bearer, or ?access_token=)")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token is not valid")]
    Invalid,
    #[error("this endpoint is not open to the `{0}` role")]
    WrongRole(&'static str),
}

impl AuthError {
    /// Stable code for error bodies.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Missing => ErrorCode::TokenMissing,
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::NotYetValid | AuthError::Invalid => ErrorCode::TokenInvalid,
            AuthError::WrongRole(_) => ErrorCode::Forbidden,
        }
    }
}

/// Signs and verifies tokens with one shared secret.
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry and `nbf` (checked when present) are exact: a token lives
        // from the second it says to the second it says.
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn issue(
        &self,
        sub: &str,
        role: Role,
        fleet: Option<&str>,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = (Timestamp::now().as_millis() / 1000) as u64;
        let claims = Claims {
            sub: sub.to_owned(),
            role,
            fleet: fleet.map(str::to_owned),
            exp: now.saturating_add(ttl.as_secs()),
            iat: now,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid,
            })?;
        let claims = data.claims;
        check_times(&claims, Timestamp::now())?;
        let scope = match (claims.role, claims.fleet.as_deref()) {
            (Role::Admin, None) => FleetScope::All,
            (Role::Admin, Some(_)) => FleetScope::All,
            (_, Some(f)) => FleetScope::One(FleetId::parse(f).map_err(|_| AuthError::Invalid)?),
            (_, None) => return Err(AuthError::Invalid),
        };
        Ok(Identity {
            sub: claims.sub,
            role: claims.role,
            scope,
            expires_at: expires_at(claims.exp)?,
        })
    }

    /// Verifies the request's token and checks its role against `allowed`.
    pub fn authorize(&self, req: &HttpRequest, allowed: &[Role]) -> Result<Identity, AuthError> {
        let token = token_from_request(req).ok_or(AuthError::Missing)?;
        let identity = self.verify(&token)?;
        if !allowed.contains(&identity.role) {
            return Err(AuthError::WrongRole(identity.role.as_str()));
        }
        Ok(identity)
    }
}

impl Identity {
    /// The driver view of a driver token; `None` for other roles.
    pub fn as_driver(&self) -> Option<DriverIdentity> {
        if self.role != Role::Driver {
            return None;
        }
        let FleetScope::One(fleet) = &self.scope else {
            return None;
        };
        Some(DriverIdentity {
            driver: DriverId::parse(&self.sub).ok()?,
            fleet: fleet.clone(),
            expires_at: self.expires_at,
        })
    }
}

/// The checks jsonwebtoken does not make: an `iat` from the future (beyond
/// [`IAT_LEEWAY_SECS`]) and an `exp` beyond [`MAX_EXP_SECS`].
fn check_times(claims: &Claims, now: Timestamp) -> Result<(), AuthError> {
    let now_secs = u64::try_from(now.as_millis() / 1000).unwrap_or(0);
    if claims.iat > now_secs.saturating_add(IAT_LEEWAY_SECS) {
        return Err(AuthError::Invalid);
    }
    if claims.exp > MAX_EXP_SECS {
        return Err(AuthError::Invalid);
    }
    Ok(())
}

/// The token's expiry as a hub time; `exp` is at most [`MAX_EXP_SECS`], far
/// inside what the millisecond clock holds.
fn expires_at(exp: u64) -> Result<Timestamp, AuthError> {
    let secs = i64::try_from(exp).map_err(|_| AuthError::Invalid)?;
    let millis = secs.checked_mul(1000).ok_or(AuthError::Invalid)?;
    Ok(Timestamp::from_millis(millis))
}

/// `Authorization: Bearer <t>` first, then `?access_token=<t>` (browsers cannot
/// set headers on a WebSocket).
fn token_from_request(req: &HttpRequest) -> Option<String> {
    if let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))?;
        return Some(token.trim().to_owned());
    }
    actix_web::web::Query::<std::collections::HashMap<String, String>>::from_query(
        req.query_string(),
    )
    .ok()?
    .into_inner()
    .remove("access_token")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn an_issued_token_verifies_with_its_claims() {
        let auth = Authenticator::new(SECRET);
        let token = auth
            .issue("d1", Role::Driver, Some("acme"), Duration::from_secs(60))
            .unwrap();
        let id = auth.verify(&token).unwrap();
        let driver = id.as_driver().unwrap();
        assert_eq!(driver.driver.as_str(), "d1");
        assert_eq!(driver.fleet.as_str(), "acme");
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let other = Authenticator::new(b"another-secret-another-secret-xx");
        let token = other
            .issue("d1", Role::Driver, Some("acme"), Duration::from_secs(60))
            .unwrap();
        let auth = Authenticator::new(SECRET);
        assert_eq!(auth.verify(&token).unwrap_err(), AuthError::Invalid);
    }

    /// A token with the given claims, signed with the test secret.
    fn signed(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET);
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    fn now_secs() -> u64 {
        (Timestamp::now().as_millis() / 1000) as u64
    }

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({
            "sub": "d1", "role": "driver", "fleet": "acme", "exp": now_secs() + 3600,
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    #[test]
    fn a_token_not_valid_yet_is_refused_until_its_nbf() {
        let auth = Authenticator::new(SECRET);
        let later = signed(claims(serde_json::json!({"nbf": now_secs() + 3600})));
        assert_eq!(auth.verify(&later).unwrap_err(), AuthError::NotYetValid);
        assert_eq!(AuthError::NotYetValid.code(), ErrorCode::TokenInvalid);
        let past = signed(claims(serde_json::json!({"nbf": now_secs() - 10})));
        assert!(auth.verify(&past).is_ok());
        let garbage = signed(claims(serde_json::json!({"nbf": "soon"})));
        assert_eq!(auth.verify(&garbage).unwrap_err(), AuthError::Invalid);
    }

    #[test]
    fn an_iat_in_the_future_is_refused_beyond_the_leeway() {
        let auth = Authenticator::new(SECRET);
        let skewed = signed(claims(serde_json::json!({"iat": now_secs() + 30})));
        assert!(
            auth.verify(&skewed).is_ok(),
            "a clock a little ahead is fine"
        );
        let future = signed(claims(
            serde_json::json!({"iat": now_secs() + IAT_LEEWAY_SECS + 120}),
        ));
        assert_eq!(auth.verify(&future).unwrap_err(), AuthError::Invalid);
    }

    #[test]
    fn an_absurd_exp_is_invalid_and_a_far_one_keeps_its_date() {
        let auth = Authenticator::new(SECRET);
        for exp in [u64::MAX, i64::MAX as u64, MAX_EXP_SECS + 1] {
            let token = signed(claims(serde_json::json!({"exp": exp})));
            assert_eq!(
                auth.verify(&token).unwrap_err(),
                AuthError::Invalid,
                "{exp}"
            );
        }
        let token = signed(claims(serde_json::json!({"exp": MAX_EXP_SECS})));
        let id = auth.verify(&token).unwrap();
        assert_eq!(id.expires_at.as_millis(), MAX_EXP_SECS as i64 * 1000);
        assert!(id.expires_at.as_millis() > Timestamp::now().as_millis());
    }

    #[test]
    fn a_dispatcher_without_fleet_is_refused_and_admin_sees_all() {
        let auth = Authenticator::new(SECRET);
        let t = auth
            .issue("x", Role::Dispatcher, None, Duration::from_secs(60))
            .unwrap();
        assert_eq!(auth.verify(&t).unwrap_err(), AuthError::Invalid);
        let t = auth
            .issue("ops", Role::Admin, None, Duration::from_secs(60))
            .unwrap();
        assert_eq!(auth.verify(&t).unwrap().scope, FleetScope::All);
    }
}
