//! What the driver and dashboard sessions share on their sockets: the
//! admitted, authorized upgrade with a frame limit, one way to end a session
//! with a close frame, and the release of the socket once the session is over.

use std::any::Any;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessageStream, CloseCode, CloseReason, ProtocolError, Session};
use socket2::SockAddr;

use crate::app_state::AppState;
use crate::auth::{Identity, Role};
use crate::http_api::ApiError;
use crate::http_api::admission::ConnectionSlot;
use crate::protocol::{Close, ErrorCode};

/// A handshake accepted for an authorized caller: the session starts once
/// `response` is returned, and owns `slot` until it ends.
pub struct Upgrade {
    pub identity: Identity,
    pub response: HttpResponse,
    pub session: Session,
    pub stream: AggregatedMessageStream,
    pub slot: ConnectionSlot,
}

/// Everything is checked before the upgrade, each refusal answered with the
/// JSON error body: the page's origin (403) and room on this node (503) and
/// for the client's address (429); the token against `roles` (401, 403);
/// room for the token (429). Then the socket is upgraded, its frames and
/// messages assembled from fragments limited to `max_frame` bytes.
pub fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
    roles: &[Role],
    max_frame: usize,
) -> Result<Upgrade, actix_web::Error> {
    let slot = state.admission.admit(req)?;
    let identity = state.auth.authorize(req, roles).map_err(ApiError::from)?;
    let slot = slot.for_token(&identity)?;
    let (response, session, stream) = actix_ws::handle(req, body).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("not a WebSocket handshake: {e}"),
        )
    })?;
    let stream = stream
        .max_frame_size(max_frame)
        .aggregate_continuations()
        .max_continuation_size(max_frame);
    Ok(Upgrade {
        identity,
        response,
        session,
        stream,
        slot,
    })
}

/// Sends the close frame, waiting at most `grace` for the peer's socket to take it.
pub async fn close(session: Session, close: Close, grace: Duration) {
    let reason = CloseReason {
        code: CloseCode::from(close.code),
        description: Some(close.reason.to_owned()),
    };
    let _ = tokio::time::timeout(grace, session.close(Some(reason))).await;
}

/// The close a socket whose frames could not be read ends with; `None` when
/// the transport itself failed (the peer is gone, nobody to tell).
pub fn close_for(error: &ProtocolError) -> Option<Close> {
    match error {
        ProtocolError::Overflow => Some(Close::TOO_BIG),
        ProtocolError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            Some(Close::INVALID_UTF8)
        }
        // actix-ws reports fragments adding up to more than the limit this way.
        ProtocolError::Io(e) if e.to_string().contains("continuation size") => Some(Close::TOO_BIG),
        ProtocolError::Io(_) => None,
        _ => Some(Close::PROTOCOL_ERROR),
    }
}

/// How long a socket whose session has ended may take to deliver its close
/// frame and go before the hub cuts it: a peer that reads nothing would
/// otherwise hold the connection (and its buffers) open for good, because the
/// HTTP layer keeps a connection until what it was given to write is written.
pub const RELEASE_GRACE: Duration = Duration::from_secs(5);

/// What a session holds for its whole life: its place under the connection
/// caps, and its TCP socket, released (see [`release`]) once it is over.
pub struct Held {
    pub slot: ConnectionSlot,
    pub socket: Option<ConnSocket>,
}

/// The TCP socket under a connection, noted in the connection's data so that
/// a WebSocket session that ends can make sure its socket goes with it.
///
/// It holds the descriptor's number and the connection's two addresses, not a
/// duplicate descriptor: a duplicate would double the descriptors every
/// connection costs (the hub is meant to hold close to its open-files limit in
/// connections). A number can outlive its connection and be given to another
/// file, so [`ConnSocket::cut`] first checks that the number still names a
/// socket with this connection's addresses.
#[derive(Clone, Copy)]
pub struct ConnSocket {
    fd: RawFd,
    peer: SocketAddr,
    local: SocketAddr,
}

impl ConnSocket {
    /// For `HttpServer::on_connect`: notes each TCP connection's socket.
    pub fn keep(conn: &dyn Any, data: &mut Extensions) {
        let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        if let (Ok(peer), Ok(local)) = (tcp.peer_addr(), tcp.local_addr()) {
            data.insert(ConnSocket {
                fd: tcp.as_raw_fd(),
                peer,
                local,
            });
        }
    }

    /// The socket of the connection `req` came on, if it was noted.
    pub fn of(req: &HttpRequest) -> Option<ConnSocket> {
        req.conn_data::<ConnSocket>().copied()
    }

    /// Whether the descriptor still names this connection's socket.
    fn still_ours(&self) -> bool {
        let addresses = |get: unsafe extern "C" fn(
            libc::c_int,
            *mut libc::sockaddr,
            *mut libc::socklen_t,
        ) -> libc::c_int| {
            // SAFETY: the call only writes an address of at most `len` bytes
            // into the storage socket2 hands out; on a descriptor that is
            // closed or not a socket it fails and writes nothing.
            unsafe {
                SockAddr::try_init(|storage, len| match get(self.fd, storage.cast(), len) {
                    -1 => Err(std::io::Error::last_os_error()),
                    _ => Ok(()),
                })
            }
            .ok()
            .and_then(|((), addr)| addr.as_socket())
        };
        addresses(libc::getpeername) == Some(self.peer)
            && addresses(libc::getsockname) == Some(self.local)
    }

    /// Bytes the kernel has taken from this connection so far: acknowledged
    /// by the peer (`TCP_INFO`) plus waiting in the send queue (`SIOCOUTQ`).
    /// `None` once the descriptor no longer names this connection's socket.
    pub fn bytes_taken(&self) -> Option<u64> {
        if !self.still_ours() {
            return None;
        }
        // SAFETY: `tcp_info` is plain integers, valid when zeroed.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `info`, which
        // is that large; the descriptor was checked to be this socket.
        let got = unsafe {
            libc::getsockopt(
                self.fd,
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&raw mut info).cast(),
                &mut len,
            )
        };
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one int into `queued`.
        let asked = unsafe { libc::ioctl(self.fd, libc::TIOCOUTQ, &raw mut queued) };
        // `tcpi_bytes_acked` is there since Linux 4.1; a shorter answer lacks it.
        let full = len as usize >= std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + 8;
        (got == 0 && asked == 0 && full)
            .then(|| info.tcpi_bytes_acked + u64::try_from(queued).unwrap_or(0))
    }

    /// Shuts the socket down both ways: whatever the HTTP layer still waits
    /// to write fails at once and the connection is dropped. A connection
    /// that already went its way (its number closed or reused) is left alone.
    fn cut(&self) {
        if !self.still_ours() {
            return;
        }
        // SAFETY: a plain system call on a descriptor number checked just
        // above to be this connection's socket; it touches no memory.
        if unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) } == -1 {
            tracing::trace!(error = %std::io::Error::last_os_error(), "socket already shut down");
        }
    }
}

/// After a session has ended: gives its socket `grace` to send the close
/// frame and close normally, then cuts it, and lets go of the handle.
pub fn release(socket: Option<ConnSocket>, grace: Duration) {
    let Some(socket) = socket else { return };
    actix_web::rt::spawn(async move {
        tokio::time::sleep(grace).await;
        socket.cut();
    });
}
