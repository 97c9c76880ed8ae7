//! Opening WebSockets the way thousands of phones would: one TCP connection
//! each, Nagle off, small buffers, and (when there are many) spread over
//! several loopback source addresses so the ephemeral ports do not run out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<TcpStream>;

/// How long a TCP connect plus upgrade may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Past this many sockets, source addresses are spread over 127.0.0.2–251.
pub const SPREAD_ABOVE: usize = 1_000;

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The hub answered the upgrade with an HTTP status (401, 403, 503...).
    Refused(u16),
    /// Anything else: refused TCP, timeout, bad URL.
    Other(anyhow::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused(code) => write!(f, "upgrade refused with HTTP {code}"),
            ConnectError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

/// `ws://host:port` + `/ws/driver` + token, tolerating a trailing slash.
pub fn endpoint(base: &str, path: &str, token: &str) -> String {
    // JWTs are base64url and dots: safe in a query string as they are.
    format!("{}{path}?access_token={token}", base.trim_end_matches('/'))
}

/// Source address for connection number `i`, or `None` to let the kernel pick.
pub fn source_for(i: usize, spread: bool) -> Option<IpAddr> {
    spread.then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 250) as u8)))
}

/// Buffers sized for a driver: it reads only small acks, so the default
/// 128 KiB read buffer per socket would cost gigabytes at 19,000 drivers.
pub fn small_buffers() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Connects and upgrades, within [`CONNECT_TIMEOUT`].
pub async fn connect(
    url: &str,
    source: Option<IpAddr>,
    config: Option<WebSocketConfig>,
) -> Result<Ws, ConnectError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(url, source, config)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Other(anyhow::anyhow!("connect timed out"))),
    }
}

async fn connect_inner(
    url: &str,
    source: Option<IpAddr>,
    config: Option<WebSocketConfig>,
) -> Result<Ws, ConnectError> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let request = url
        .into_client_request()
        .map_err(|e| ConnectError::Other(e.into()))?;
    let addr = resolve(request.uri()).await.map_err(ConnectError::Other)?;
    let stream = tcp_connect(addr, source)
        .await
        .map_err(|e| ConnectError::Other(anyhow::anyhow!("tcp connect to {addr}: {e}")))?;
    match tokio_tungstenite::client_async_with_config(request, stream, config).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(resp)) => Err(ConnectError::Refused(resp.status().as_u16())),
        Err(e) => Err(ConnectError::Other(e.into())),
    }
}

/// Connects to an MQTT-over-WebSocket broker (`ws://host:port/mqtt`), asking
/// for the `mqtt` subprotocol as brokers require; for the peer benchmark.
pub async fn connect_mqtt(url: &str, source: Option<IpAddr>) -> anyhow::Result<Ws> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static("mqtt"),
    );
    let addr = resolve(request.uri()).await?;
    let connect = async {
        let stream = tcp_connect(addr, source).await?;
        let (ws, _) = tokio_tungstenite::client_async(request, stream).await?;
        anyhow::Ok(ws)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| anyhow::anyhow!("connect to {url} timed out"))?
}

async fn resolve(uri: &tokio_tungstenite::tungstenite::http::Uri) -> anyhow::Result<SocketAddr> {
    anyhow::ensure!(
        uri.scheme_str() == Some("ws"),
        "only ws:// URLs are supported (got {uri})"
    );
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("no host in {uri}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} resolves to nothing"))
}

async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // Spreading only makes sense towards a loopback hub over IPv4.
    if let Some(src) = source.filter(|_| addr.is_ipv4() && addr.ip().is_loopback()) {
        socket.bind(SocketAddr::new(src, 0))?;
    }
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}

/// Raises the open-files soft limit to the hard limit; returns the new limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_sources() {
        assert_eq!(
            endpoint("ws://127.0.0.1:8080/", "/ws/driver", "a.b.c"),
            "ws://127.0.0.1:8080/ws/driver?access_token=a.b.c"
        );
        assert_eq!(source_for(0, false), None);
        assert_eq!(
            source_for(251, true),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
        );
    }
}
