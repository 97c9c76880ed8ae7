//! `mqtt.url`, read once at start-up (and checked with the settings). Its
//! errors never repeat the URL: it may hold the broker password.

use secrecy::SecretString;

/// The broker `mqtt.url` names: `mqtt://` or `tcp://`, an optional
/// `user:password@` (percent-encoded), a host and a port (1883 by default).
pub struct BrokerUrl {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<SecretString>,
}

impl BrokerUrl {
    /// Reads the URL; the error never repeats it (it may hold a password).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let rest = raw
            .strip_prefix("mqtt://")
            .or_else(|| raw.strip_prefix("tcp://"))
            .ok_or_else(|| {
                "must be mqtt://[user:password@]host[:port] (no TLS: mqtts:// is not supported)"
                    .to_owned()
            })?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err("must have no path nor query: mqtt://[user:password@]host[:port]".into());
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport)?;
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let password = password
                    .map(|p| percent_decode(p).map(SecretString::from))
                    .transpose()?;
                (Some(percent_decode(user)?), password)
            }
        };
        Ok(Self {
            host,
            port,
            user,
            password,
        })
    }
}

fn split_host_port(hostport: &str) -> Result<(String, u16), String> {
    let bad_port = || "has a port that is not a number from 1 to 65535".to_owned();
    // [v6]:port or [v6]
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "has an unclosed `[`".to_owned())?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad_port())?,
            None if after.is_empty() => 1883,
            None => return Err("has something after the host".into()),
        };
        return Ok((host.to_owned(), port));
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|_| bad_port())?),
        None => (hostport, 1883),
    };
    if host.is_empty() || port == 0 {
        return Err("needs a host and a port from 1 to 65535".into());
    }
    Ok((host.to_owned(), port))
}

fn percent_decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "has a bad %-escape in its user or password".to_owned())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "has a user or password that is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn broker_urls_are_read_without_repeating_the_password() {
        let url = BrokerUrl::parse("mqtt://hub:p%40ss:w@broker.local:1884").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("broker.local", 1884));
        assert_eq!(url.user.as_deref(), Some("hub"));
        assert_eq!(url.password.unwrap().expose_secret(), "p@ss:w");
        let plain = BrokerUrl::parse("tcp://127.0.0.1/").unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.user),
            ("127.0.0.1", 1883, None)
        );
        let v6 = BrokerUrl::parse("mqtt://[::1]:2000").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 2000));
        for bad in [
            "mqtts://u:secret@h",
            "http://h",
            "mqtt://u:secret@h:x",
            "mqtt://u:secret@h:0",
            "mqtt://u:secret@h/path",
            "mqtt://u:se%zzcret@h",
            "mqtt://",
        ] {
            let e = BrokerUrl::parse(bad).err().unwrap_or_default();
            assert!(!e.is_empty(), "{bad} accepted");
            assert!(!e.contains("secret"), "{bad}: {e}");
        }
    }
}
