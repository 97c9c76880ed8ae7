//! What the driver and dashboard sessions share on their sockets: the
//! authorized upgrade with a frame limit, one way to end a session with a
//! close frame, and the release of the socket once the session is over.

use std::any::Any;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessageStream, CloseCode, CloseReason, ProtocolError, Session};
use socket2::SockRef;

use crate::auth::{Authenticator, Identity, Role};
use crate::http_api::ApiError;
use crate::protocol::Close;

/// A handshake accepted for an authorized caller: the session starts once
/// `response` is returned.
pub struct Upgrade {
    pub identity: Identity,
    pub response: HttpResponse,
    pub session: Session,
    pub stream: AggregatedMessageStream,
}

/// Checks the request's token against `roles` before anything else (401 or
/// 403 with the JSON error body, no upgrade), then upgrades to a WebSocket
/// whose frames, and messages assembled from fragments, are limited to
/// `max_frame` bytes.
pub fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
    auth: &Authenticator,
    roles: &[Role],
    max_frame: usize,
) -> Result<Upgrade, actix_web::Error> {
    let identity = auth.authorize(req, roles).map_err(ApiError::from)?;
    let (response, session, stream) = actix_ws::handle(req, body)?;
    let stream = stream
        .max_frame_size(max_frame)
        .aggregate_continuations()
        .max_continuation_size(max_frame);
    Ok(Upgrade {
        identity,
        response,
        session,
        stream,
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

/// The TCP socket under a connection, kept (as a duplicate descriptor) in the
/// connection's data so that a WebSocket session that ends can make sure its
/// socket goes with it. The duplicate lives as long as the connection, and
/// as long as a session holds it: [`release`] drops it.
#[derive(Clone)]
pub struct ConnSocket(Arc<OwnedFd>);

impl ConnSocket {
    /// For `HttpServer::on_connect`: keeps a handle on each TCP connection.
    pub fn keep(conn: &dyn Any, data: &mut Extensions) {
        let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        match tcp.as_fd().try_clone_to_owned() {
            Ok(fd) => {
                data.insert(ConnSocket(Arc::new(fd)));
            }
            Err(e) => tracing::warn!(error = %e, "could not keep a handle on a connection"),
        }
    }

    /// The socket of the connection `req` came on, if it was kept.
    pub fn of(req: &HttpRequest) -> Option<ConnSocket> {
        req.conn_data::<ConnSocket>().cloned()
    }

    /// Shuts the socket down both ways: whatever the HTTP layer still waits
    /// to write fails at once and the connection is dropped.
    fn cut(&self) {
        if let Err(e) = SockRef::from(&*self.0).shutdown(std::net::Shutdown::Both) {
            // NotConnected: the connection already went its way.
            tracing::trace!(error = %e, "socket already shut down");
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
