//! What every phone-app adapter ([`osmand`](super::osmand),
//! [`owntracks`](super::owntracks), and the [`mqtt`](super::mqtt) consumer) shares:
//! the device's credentials as the apps send them, and one fix taken through
//! the [`pipeline`](super::pipeline) as the device's driver, answered once
//! it is committed. The apps send one fix per request and resend what was
//! not answered 200, so a fix is answered only after its commit, the way a
//! WebSocket driver is acked; a refusal keeps its code and message.

use actix_web::HttpRequest;
use actix_web::http::header;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;

use crate::app_state::AppState;
use crate::devices::KnownDevice;
use crate::devices::keys::MAX_KEY_LEN;
use crate::http_api::ApiError;
use crate::protocol::WireFix;

/// The user name and password of `Authorization: Basic`, when the request
/// has one that decodes. The password is a device key: kept secret.
pub struct BasicAuth {
    pub user: String,
    pub password: SecretString,
}

/// Longest `Authorization` value read: a device id (64) and a key (43)
/// base64-encoded fit many times over.
const MAX_AUTHORIZATION: usize = 1024;

pub fn basic_auth(req: &HttpRequest) -> Option<BasicAuth> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    if value.len() > MAX_AUTHORIZATION {
        return None;
    }
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    if password.len() > MAX_KEY_LEN {
        return None;
    }
    Some(BasicAuth {
        user: user.to_owned(),
        password: SecretString::from(password.to_owned()),
    })
}

/// Takes `fix` through the pipeline as `device`'s driver and waits for its
/// commit. `Ok` when it is stored, or filtered out (taken: the app must not
/// resend it); otherwise the refusal with its code: `invalid_position`
/// (400), `rate_limited` (429), `storage_unavailable` (503).
pub async fn store_fix(
    state: &AppState,
    device: &KnownDevice,
    fix: WireFix,
) -> Result<(), ApiError> {
    let accepted = state
        .pipeline
        .ingest_as(&device.driver(), std::slice::from_ref(&fix))
        .map_err(|refused| ApiError::from(refused.refusal))?;
    if let Some(refusal) = accepted.refused.into_iter().next() {
        return Err(ApiError::from(refusal));
    }
    if let Some(unstored) = accepted.unstored {
        return Err(ApiError::from(unstored.refusal));
    }
    if let Some(commit) = accepted.commit {
        commit.wait().await.result.map_err(ApiError::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;
    use secrecy::ExposeSecret;

    use super::*;

    fn with_authorization(value: &str) -> HttpRequest {
        TestRequest::default()
            .insert_header((header::AUTHORIZATION, value))
            .to_http_request()
    }

    #[test]
    fn basic_credentials_are_read_and_anything_else_is_none() {
        // "p1:s3cr:et", the password may hold colons.
        let encoded = STANDARD.encode("p1:s3cr:et");
        let auth = basic_auth(&with_authorization(&format!("Basic {encoded}"))).unwrap();
        assert_eq!(auth.user, "p1");
        assert_eq!(auth.password.expose_secret(), "s3cr:et");
        assert!(basic_auth(&with_authorization(&format!("basic {encoded}"))).is_some());
        for bad in [
            "Bearer abc".to_owned(),
            "Basic !!!".to_owned(),
            format!("Basic {}", STANDARD.encode("no-colon")),
            format!(
                "Basic {}",
                STANDARD.encode(format!("p1:{}", "k".repeat(300)))
            ),
        ] {
            assert!(basic_auth(&with_authorization(&bad)).is_none(), "{bad}");
        }
        assert!(basic_auth(&TestRequest::default().to_http_request()).is_none());
    }
}
