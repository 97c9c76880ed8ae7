//! What the driver and dashboard sessions share on their sockets: the
//! admitted, authorized upgrade with a frame limit, and one way to end a
//! session with a close frame.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessageStream, CloseCode, CloseReason, ProtocolError, Session};

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
