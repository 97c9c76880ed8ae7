//! One connected dashboard's reader: the handshake, subscriptions,
//! heartbeat and token expiry. Its [`writer`](super::writer) drains the
//! dashboard's outbox into the socket, so a dashboard that stops reading
//! stalls only its own writer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, Session};
use governor::DefaultDirectRateLimiter;
use tokio::time::sleep;

use super::outbox::Control;
use super::writer::{self, WriterSettings};
use crate::app_state::AppState;
use crate::auth::{Identity, Role};
use crate::domain::{BBox, Timestamp};
use crate::ingest::rate_limit::{limiter, quota};
use crate::live::{DashboardEntry, snapshot};
use crate::metrics as m;
use crate::protocol::{Close, DashboardFrame, DashboardOut, DashboardRequest, ErrorCode, to_json};
use crate::ws;

/// How long a closing reader waits for its writer to send the close frame.
const WRITER_GRACE: Duration = Duration::from_secs(2);

/// `GET /ws/dashboard`: dispatchers and admins only.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let max_frame = state.settings.dashboard.max_frame_bytes;
    let roles = [Role::Dispatcher, Role::Admin];
    let ws = ws::upgrade(&req, body, &state, &roles, max_frame)?;
    let held = ws::Held {
        slot: ws.slot,
        socket: ws::ConnSocket::of(&req),
    };
    actix_web::rt::spawn(run(state, ws.identity, ws.session, ws.stream, held));
    Ok(ws.response)
}

async fn run(
    state: web::Data<AppState>,
    identity: Identity,
    session: Session,
    stream: AggregatedMessageStream,
    held: ws::Held,
) {
    let dash = state
        .subscriptions
        .add_dashboard(identity.role.as_str(), identity.scope.clone());
    if let Some(socket) = held.socket {
        dash.outbox.watch_socket(socket);
    }
    m::connection_opened("dashboard");
    let hello = DashboardOut::Hello {
        role: dash.role,
        fleet: identity.scope.fleet().map(|f| f.as_str()),
        node: &state.node_id,
    };
    dash.outbox.push_control(Control::Text(to_json(&hello)));
    // Checked after registering: shutdown closes the registered dashboards
    // after cancelling the token, so none slips through.
    if state.shutdown.is_cancelled() {
        dash.outbox.close(Close::SHUTTING_DOWN);
    }
    let writer = actix_web::rt::spawn(writer::run(
        session,
        Arc::clone(&dash.outbox),
        WriterSettings::from(&state.settings),
    ));
    let settings = &state.settings.dashboard;
    let mut reader = Reader {
        abuse: limiter(quota(settings.abuse_per_sec, settings.abuse_burst)),
        state: state.clone(),
        dash: Arc::clone(&dash),
        last_heard: Instant::now(),
    };
    reader.serve(stream, identity.expires_at, writer).await;
    state.subscriptions.remove_dashboard(&dash);
    m::connection_closed("dashboard");
    // A dashboard closed for not reading gets `dashboard.close_grace_secs`
    // to take its close frame (behind what was in flight); any other, a
    // short grace.
    let grace = match dash.outbox.closing() {
        Some(Close::TOO_SLOW) => Duration::from_secs(settings.close_grace_secs),
        _ => ws::RELEASE_GRACE,
    };
    ws::release(held.socket, grace);
}

struct Reader {
    state: web::Data<AppState>,
    dash: Arc<DashboardEntry>,
    abuse: DefaultDirectRateLimiter,
    last_heard: Instant,
}

impl Reader {
    async fn serve(
        &mut self,
        mut stream: AggregatedMessageStream,
        expires_at: Timestamp,
        mut writer: tokio::task::JoinHandle<()>,
    ) {
        let ws = &self.state.settings.ws;
        let mut heartbeat = tokio::time::interval(Duration::from_secs(ws.heartbeat_secs));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let client_timeout = Duration::from_secs(ws.client_timeout_secs);
        let expiry = sleep(until(expires_at));
        tokio::pin!(expiry);
        let outbox = Arc::clone(&self.dash.outbox);
        loop {
            tokio::select! {
                biased;
                // Ends when the socket is gone, or after the writer sent the
                // close frame queued by anyone (shutdown, a stuck socket, abuse).
                _ = &mut writer => return,
                _ = &mut expiry => {
                    outbox.close(Close::TOKEN_EXPIRED);
                    break;
                }
                message = stream.recv() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(e)) => {
                            if let Some(close) = ws::close_for(&e) {
                                outbox.close(close);
                            }
                            break;
                        }
                        None => break,
                    };
                    self.last_heard = Instant::now();
                    if !self.on_message(message).await { break; }
                }
                _ = heartbeat.tick() => {
                    if self.last_heard.elapsed() > client_timeout {
                        outbox.close(Close::NO_PONG);
                        break;
                    }
                    outbox.push_control(Control::Ping);
                }
            }
        }
        // Every way out ends the writer too: it sends the close asked for
        // (or, when the peer just went away, a plain one) and releases the
        // socket; one that cannot within the grace is stopped.
        outbox.close(Close::BYE);
        if tokio::time::timeout(WRITER_GRACE, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }

    /// Returns `false` when the connection should end.
    async fn on_message(&mut self, message: AggregatedMessage) -> bool {
        match message {
            AggregatedMessage::Text(text) => self.on_text(&text).await,
            AggregatedMessage::Binary(_) => {
                self.reject(ErrorCode::BadJson, "frames must be JSON text")
            }
            AggregatedMessage::Ping(bytes) => {
                self.dash.outbox.push_control(Control::Pong(bytes.to_vec()))
            }
            AggregatedMessage::Pong(_) => true,
            AggregatedMessage::Close(_) => {
                self.dash.outbox.close(Close::BYE);
                false
            }
        }
    }

    async fn on_text(&mut self, text: &str) -> bool {
        let frame = match DashboardFrame::decode(text) {
            Ok(frame) => frame,
            Err(e) => return self.reject(e.code, &e.message),
        };
        match frame.request() {
            Ok(DashboardRequest::Subscribe { id, bbox }) => self.subscribe(id, bbox).await,
            Ok(DashboardRequest::Unsubscribe { id }) => {
                self.state.subscriptions.unsubscribe(&self.dash, id);
                true
            }
            Err(e) => self.reject(e.code, &e.message),
        }
    }

    async fn subscribe(&mut self, id: &str, bbox: BBox) -> bool {
        let max = self.state.settings.dashboard.max_subscriptions;
        if self
            .state
            .subscriptions
            .subscribe(&self.dash, id, bbox, max)
            .is_err()
        {
            let message = format!("a dashboard holds at most {max} subscriptions");
            return self.reject(ErrorCode::TooManySubscriptions, &message);
        }
        // Registered first, snapshot second: nothing published in between is missed.
        let state = &self.state;
        let rows =
            snapshot::rows(&state.drivers, state.bus.as_ref(), &self.dash.scope, &bbox).await;
        snapshot::send(&self.dash, id, rows)
    }

    fn reject(&mut self, code: ErrorCode, message: &str) -> bool {
        let frame = to_json(&DashboardOut::Error { code, message });
        if !self.dash.outbox.push_control(Control::Text(frame)) || self.abuse.check().is_err() {
            self.dash.outbox.close(Close::ABUSE);
            return false;
        }
        true
    }
}

fn until(t: Timestamp) -> Duration {
    Duration::from_millis((t.as_millis() - Timestamp::now().as_millis()).max(0) as u64)
}
