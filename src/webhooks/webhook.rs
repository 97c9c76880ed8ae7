//! A webhook: where a fleet's events are POSTed, and which kinds. Valid by
//! construction: [`Webhook::check_url`] and [`parse_kinds`] are the only
//! ways in from a request, and a stored row is read back through them.

use serde::Serialize;

use crate::alerts::EventKind;
use crate::domain::{FleetId, Timestamp};

/// Longest URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2_048;

/// Why a webhook definition is refused; the message names the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct WebhookError(pub String);

/// A webhook's id: 16 hex digits, random.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct WebhookId(String);

impl WebhookId {
    pub fn generate() -> Self {
        Self(format!("{:016x}", rand::random::<u64>()))
    }

    /// An id as the API or the store gives it; `None` when no webhook can
    /// have it (so a path with it is simply unknown).
    pub fn parse(raw: &str) -> Option<Self> {
        let plausible = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
        plausible.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for WebhookId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A webhook as the API shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Webhook {
    pub id: WebhookId,
    pub fleet: FleetId,
    pub url: String,
    /// The kinds sent; empty: every kind.
    pub kinds: Vec<EventKind>,
    pub created_at: Timestamp,
}

impl Webhook {
    /// `raw` as a webhook URL: absolute http or https, with a host, at most
    /// [`MAX_URL_LEN`] bytes, without credentials (they would show in every
    /// list) or a fragment (never sent). Returned as given, trimmed.
    pub fn check_url(raw: &str) -> Result<String, WebhookError> {
        let raw = raw.trim();
        if raw.len() > MAX_URL_LEN {
            return Err(WebhookError(format!(
                "`url` is longer than {MAX_URL_LEN} bytes"
            )));
        }
        let url = reqwest::Url::parse(raw)
            .map_err(|e| WebhookError(format!("`url` is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(WebhookError("`url` must be http:// or https://".to_owned()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(WebhookError("`url` has no host".to_owned()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(WebhookError(
                "`url` must not hold credentials: verify the signature instead".to_owned(),
            ));
        }
        if url.fragment().is_some() {
            return Err(WebhookError("`url` must not have a #fragment".to_owned()));
        }
        Ok(raw.to_owned())
    }
}

/// The kinds a request names, each once, in the order given; an unknown
/// one is refused, naming it. Empty means every kind.
pub fn parse_kinds<S: AsRef<str>>(raw: &[S]) -> Result<Vec<EventKind>, WebhookError> {
    let mut kinds = Vec::new();
    for name in raw {
        let name = name.as_ref();
        let kind = EventKind::parse(name).ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            WebhookError(format!(
                "`kinds`: unknown event kind {name:?}; the kinds are {}",
                known.join(", ")
            ))
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// The stored form of `kinds`: `",a,b,"`, or `""` for every kind, so that
/// the event producer matches a kind with `LIKE '%,' || kind || ',%'`.
pub fn kinds_to_stored(kinds: &[EventKind]) -> String {
    if kinds.is_empty() {
        return String::new();
    }
    let mut stored = String::from(",");
    for kind in kinds {
        stored.push_str(kind.as_str());
        stored.push(',');
    }
    stored
}

/// The stored form back; `None` when it names something that is no kind.
pub fn kinds_from_stored(stored: &str) -> Option<Vec<EventKind>> {
    stored
        .split(',')
        .filter(|part| !part.is_empty())
        .map(EventKind::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_http_or_https_without_credentials() {
        assert!(Webhook::check_url("https://example.com/hook?x=1").is_ok());
        assert!(Webhook::check_url(" http://127.0.0.1:9000/ ").is_ok());
        for bad in [
            "",
            "example.com/hook",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "https://example.com/#x",
            "http://",
        ] {
            assert!(Webhook::check_url(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(Webhook::check_url(&long).is_err());
    }

    #[test]
    fn kinds_round_trip_through_their_stored_form() {
        let kinds = parse_kinds(&["sos", "geofence_enter", "sos"]).unwrap();
        assert_eq!(kinds, [EventKind::Sos, EventKind::GeofenceEnter]);
        let stored = kinds_to_stored(&kinds);
        assert_eq!(stored, ",sos,geofence_enter,");
        assert_eq!(kinds_from_stored(&stored).unwrap(), kinds);
        assert_eq!(kinds_to_stored(&[]), "");
        assert_eq!(kinds_from_stored("").unwrap(), []);
        assert!(kinds_from_stored(",nope,").is_none());
        let e = parse_kinds(&["sos", "fire"]).unwrap_err();
        assert!(e.0.contains("\"fire\""), "{e}");
    }
}
