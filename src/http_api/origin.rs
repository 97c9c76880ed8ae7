//! Which web pages may open a WebSocket to the hub. A browser lets any page
//! open a WebSocket to any host (there is no same-origin rule for them) and
//! sends the page's `Origin` with the handshake, so the hub checks it: its
//! own origin (the host the request was sent to) and the configured
//! `ws.allowed_origins` are accepted, any other is refused with 403. A
//! request without `Origin` does not come from a web page (phone apps,
//! simulators, the load generator) and is not concerned.

use actix_web::HttpRequest;
use actix_web::http::header;

/// An origin as browsers send it, `scheme://host[:port]`, kept lowercase
/// with its port made explicit, so that equal origins compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not an origin: scheme://host[:port] with scheme http or https, e.g. https://ops.example.com"
)]
pub struct OriginError(String);

impl Origin {
    pub fn parse(raw: &str) -> Result<Self, OriginError> {
        let bad = || OriginError(raw.to_owned());
        let (scheme, authority) = raw.trim().split_once("://").ok_or_else(bad)?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = default_port(&scheme).ok_or_else(bad)?;
        // A configured origin may be written with a trailing slash.
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        let (host, port) = host_and_port(authority, default_port).ok_or_else(bad)?;
        Ok(Self { scheme, host, port })
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// The host (lowercase) and port of an authority such as `example.com`,
/// `example.com:8080` or `[::1]:8080`; `None` when it is not one.
fn host_and_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            let port = match after {
                "" => default_port,
                port => port.strip_prefix(':')?.parse().ok()?,
            };
            (format!("[{host}]"), port)
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host.to_owned(), port.parse().ok()?),
            None => (authority.to_owned(), default_port),
        },
    };
    if host.is_empty() || host == "[]" {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// The origins whose pages may open a WebSocket, besides the hub's own.
#[derive(Debug, Default)]
pub struct OriginPolicy {
    allowed: Vec<Origin>,
}

impl OriginPolicy {
    pub fn new(allowed: &[String]) -> Result<Self, OriginError> {
        let allowed = allowed
            .iter()
            .map(|o| Origin::parse(o))
            .collect::<Result<_, _>>()?;
        Ok(Self { allowed })
    }

    /// Whether the handshake may go on: no `Origin`, the hub's own, or a listed one.
    pub fn allows(&self, req: &HttpRequest) -> bool {
        let Some(value) = req.headers().get(header::ORIGIN) else {
            return true;
        };
        // `null` (a sandboxed page, a file) and anything unreadable are refused.
        let Some(origin) = value.to_str().ok().and_then(|v| Origin::parse(v).ok()) else {
            return false;
        };
        self.allowed.contains(&origin) || is_own(&origin, req)
    }
}

/// The page came from the host the request was sent to (the hub, or a proxy
/// in front of it that passes `Host` on): same host and port.
fn is_own(origin: &Origin, req: &HttpRequest) -> bool {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let Some(host) = host else {
        return false;
    };
    // A Host without a port means the default port of the page's scheme.
    let default = default_port(&origin.scheme).unwrap_or(80);
    host_and_port(host, default).is_some_and(|(h, p)| h == origin.host && p == origin.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn request(host: &str, origin: Option<&str>) -> HttpRequest {
        let mut req = TestRequest::default().insert_header((header::HOST, host));
        if let Some(origin) = origin {
            req = req.insert_header((header::ORIGIN, origin));
        }
        req.to_http_request()
    }

    #[test]
    fn origins_compare_with_their_default_ports_and_case() {
        assert_eq!(
            Origin::parse("HTTPS://Ops.Example.com"),
            Origin::parse("https://ops.example.com:443/")
        );
        assert_ne!(
            Origin::parse("http://ops.example.com"),
            Origin::parse("https://ops.example.com")
        );
        for bad in [
            "ops.example.com",
            "ftp://x",
            "http://",
            "http://a/b",
            "http://a:x",
            "null",
            "http://u@a",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
        assert!(Origin::parse("http://[::1]:8080").is_ok());
    }

    #[test]
    fn the_hubs_own_origin_a_listed_one_and_none_pass() {
        let policy = OriginPolicy::new(&["https://ops.example.com".into()]).unwrap();
        assert!(policy.allows(&request("hub.local:8080", None)));
        assert!(policy.allows(&request("hub.local:8080", Some("http://hub.local:8080"))));
        assert!(policy.allows(&request("hub.example.com", Some("https://hub.example.com"))));
        assert!(policy.allows(&request("hub.local:8080", Some("https://ops.example.com"))));
        assert!(!policy.allows(&request("hub.local:8080", Some("http://evil.example"))));
        assert!(!policy.allows(&request("hub.local:8080", Some("http://hub.local:9090"))));
        assert!(!policy.allows(&request("hub.local", Some("http://hub.local:8080"))));
        assert!(!policy.allows(&request("hub.local:8080", Some("null"))));
    }
}
