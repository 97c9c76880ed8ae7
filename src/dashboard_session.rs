//! One connected dashboard: a reader loop (subscriptions, heartbeat, expiry)
//! and a writer task that drains the dashboard's [`Outbox`] into the socket,
//! so a dashboard that stops reading stalls only its own writer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use governor::DefaultDirectRateLimiter;
use tokio::time::sleep;

use crate::api_error::ApiError;
use crate::auth::{FleetScope, Identity, Role};
use crate::domain::{BBox, Timestamp};
use crate::hub::{DashboardEntry, DriverRow};
use crate::metrics as m;
use crate::outbox::{Batch, Control, Outbox};
use crate::protocol::{DashboardFrame, DashboardOut, ErrorCode, close, to_json};
use crate::rate_limit::{limiter, quota};
use crate::startup::AppState;

/// Longest subscription id accepted, in bytes.
pub const MAX_SUBSCRIPTION_ID: usize = 64;
/// Largest frame a dashboard may send; its frames are small.
const MAX_INBOUND_FRAME: usize = 16 * 1024;
/// How long a dashboard found stuck still gets to read its 1013 close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(30);
/// Bad frames a dashboard may send per second, and in a burst, before 1008.
const ABUSE_PER_SEC: u32 = 5;
const ABUSE_BURST: u32 = 50;

/// `GET /ws/dashboard`: dispatchers and admins only.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let identity = state
        .auth
        .authorize(&req, &[Role::Dispatcher, Role::Admin])
        .map_err(ApiError::from)?;
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let stream = stream
        .max_frame_size(MAX_INBOUND_FRAME)
        .aggregate_continuations()
        .max_continuation_size(MAX_INBOUND_FRAME);
    actix_web::rt::spawn(run(state, identity, session, stream));
    Ok(response)
}

async fn run(
    state: web::Data<AppState>,
    identity: Identity,
    session: Session,
    stream: AggregatedMessageStream,
) {
    let dash = state
        .hub
        .add_dashboard(identity.role.as_str(), identity.scope.clone());
    m::connection_opened("dashboard");
    let fleet = match &identity.scope {
        FleetScope::One(f) => Some(f.as_str()),
        FleetScope::All => None,
    };
    let hello = DashboardOut::Hello {
        role: dash.role,
        fleet,
        node: state.hub.node_id(),
    };
    dash.outbox.push_control(Control::Text(to_json(&hello)));
    let writer = actix_web::rt::spawn(write_loop(
        session,
        Arc::clone(&dash.outbox),
        WriterSettings::from(&state),
    ));
    let mut reader = Reader {
        state: state.clone(),
        dash: Arc::clone(&dash),
        abuse: limiter(quota(ABUSE_PER_SEC, ABUSE_BURST)),
        last_heard: Instant::now(),
    };
    reader.serve(stream, identity.expires_at, writer).await;
    state.hub.remove_dashboard(&dash);
    m::connection_closed("dashboard");
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
        let shutdown = self.state.shutdown.clone();
        let outbox = Arc::clone(&self.dash.outbox);
        loop {
            tokio::select! {
                biased;
                _ = &mut writer => return,
                _ = shutdown.cancelled() => {
                    outbox.close(close::GOING_AWAY, "server shutting down");
                    break;
                }
                _ = &mut expiry => {
                    outbox.close(close::POLICY, "token expired");
                    break;
                }
                message = stream.recv() => {
                    let Some(Ok(message)) = message else { break };
                    self.last_heard = Instant::now();
                    if !self.on_message(message) { break; }
                }
                _ = heartbeat.tick() => {
                    if self.last_heard.elapsed() > client_timeout {
                        outbox.close(close::TIMEOUT, "no pong");
                        break;
                    }
                    outbox.push_control(Control::Ping);
                }
            }
        }
        // Give the writer a moment to send the close frame, then let it go.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
    }

    /// Returns `false` when the connection should end.
    fn on_message(&mut self, message: AggregatedMessage) -> bool {
        match message {
            AggregatedMessage::Text(text) => self.on_text(&text),
            AggregatedMessage::Binary(_) => {
                self.reject(ErrorCode::BadJson, "frames must be JSON text")
            }
            AggregatedMessage::Ping(bytes) => {
                self.dash.outbox.push_control(Control::Pong(bytes.to_vec()))
            }
            AggregatedMessage::Pong(_) => true,
            AggregatedMessage::Close(_) => {
                self.dash.outbox.close(close::NORMAL, "bye");
                false
            }
        }
    }

    fn on_text(&mut self, text: &str) -> bool {
        let frame: DashboardFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(e) => return self.reject(ErrorCode::BadJson, &e.to_string()),
        };
        match frame.kind.as_deref() {
            Some("subscribe") => self.subscribe(frame),
            Some("unsubscribe") => match valid_id(frame.id.as_deref()) {
                Some(id) => {
                    self.state.hub.unsubscribe(&self.dash, id);
                    true
                }
                None => self.reject(ErrorCode::InvalidId, "`id` must be 1 to 64 bytes"),
            },
            Some(other) => {
                let message = format!("unknown message type `{other}` (subscribe or unsubscribe)");
                self.reject(ErrorCode::UnknownType, &message)
            }
            None => self.reject(ErrorCode::UnknownType, "a `type` field is required"),
        }
    }

    fn subscribe(&mut self, frame: DashboardFrame) -> bool {
        let Some(id) = valid_id(frame.id.as_deref()) else {
            return self.reject(ErrorCode::InvalidId, "`id` must be 1 to 64 bytes");
        };
        let bbox = match frame.bbox.as_deref() {
            Some(&[w, s, e, n]) => BBox::new(w, s, e, n),
            _ => {
                return self.reject(
                    ErrorCode::InvalidBbox,
                    "`bbox` must be [west, south, east, north]",
                );
            }
        };
        let bbox = match bbox {
            Ok(b) => b,
            Err(e) => return self.reject(ErrorCode::InvalidBbox, &e.to_string()),
        };
        let max = self.state.settings.dashboard.max_subscriptions;
        if !self.state.hub.subscribe(&self.dash, id, bbox, max) {
            let message = format!("a dashboard holds at most {max} subscriptions");
            return self.reject(ErrorCode::TooManySubscriptions, &message);
        }
        // Registered first, snapshot second: nothing published in between is missed.
        let rows = self.state.hub.drivers_in(&self.dash.scope, &bbox);
        self.dash
            .outbox
            .push_control(Control::Text(snapshot_frame(id, rows)))
    }

    fn reject(&mut self, code: ErrorCode, message: &str) -> bool {
        let frame = to_json(&DashboardOut::Error { code, message });
        if !self.dash.outbox.push_control(Control::Text(frame)) || self.abuse.check().is_err() {
            self.dash
                .outbox
                .close(close::POLICY, "too many bad messages");
            return false;
        }
        true
    }
}

fn valid_id(id: Option<&str>) -> Option<&str> {
    id.filter(|id| !id.is_empty() && id.len() <= MAX_SUBSCRIPTION_ID)
}

fn snapshot_frame(id: &str, mut rows: Vec<DriverRow>) -> String {
    rows.sort_by_key(|r| std::cmp::Reverse(r.position.ts()));
    let views: Vec<_> = rows.iter().map(|r| r.view(false)).collect();
    to_json(&DashboardOut::Snapshot {
        id,
        drivers: views.iter().map(|v| v.as_ref()).collect(),
    })
}

fn until(t: Timestamp) -> Duration {
    Duration::from_millis((t.as_millis() - Timestamp::now().as_millis()).max(0) as u64)
}

struct WriterSettings {
    interval: Duration,
    max_items: usize,
    stuck_after: Duration,
}

impl WriterSettings {
    fn from(state: &AppState) -> Self {
        Self {
            interval: state.settings.fanout_interval(),
            max_items: state.settings.dashboard.max_items_per_frame,
            stuck_after: Duration::from_secs(state.settings.dashboard.stuck_after_secs),
        }
    }
}

enum Sent {
    Ok,
    Gone,
    Stuck,
}

/// Drains the outbox into the socket: waits for work, lets the batching window
/// pass, then writes control frames, statuses and one `positions` frame.
async fn write_loop(mut session: Session, outbox: Arc<Outbox>, settings: WriterSettings) {
    loop {
        outbox.ready().await;
        if !settings.interval.is_zero() {
            sleep(settings.interval).await;
        }
        let batch = outbox.take(settings.max_items);
        let close = batch.close;
        let bytes = batch.bytes;
        let sent = write_batch(&mut session, batch, settings.stuck_after).await;
        outbox.release(bytes);
        match sent {
            Sent::Ok => {}
            Sent::Gone => return,
            Sent::Stuck => {
                m::slow_dashboard_closed();
                tracing::info!("closing a dashboard that stopped reading");
                outbox.close(close::TRY_AGAIN_LATER, "too slow");
                // The socket is full; the close frame waits its turn in the background.
                actix_web::rt::spawn(send_close(
                    session,
                    close::TRY_AGAIN_LATER,
                    "too slow",
                    CLOSE_GRACE,
                ));
                return;
            }
        }
        if let Some((code, reason)) = close {
            send_close(session, code, reason, Duration::from_secs(1)).await;
            return;
        }
    }
}

async fn write_batch(session: &mut Session, batch: Batch, stuck_after: Duration) -> Sent {
    for control in batch.control {
        let sent = match control {
            Control::Text(text) => send(session.text(text), stuck_after).await,
            Control::Pong(bytes) => send(session.pong(&bytes), stuck_after).await,
            Control::Ping => send(session.ping(b""), stuck_after).await,
        };
        if !matches!(sent, Sent::Ok) {
            return sent;
        }
    }
    for (driver, status) in batch.statuses {
        let frame = to_json(&DashboardOut::Status {
            driver: driver.as_str(),
            status: status.as_str(),
        });
        let sent = send(session.text(frame), stuck_after).await;
        if !matches!(sent, Sent::Ok) {
            return sent;
        }
    }
    if batch.positions.is_empty() {
        return Sent::Ok;
    }
    let frame = to_json(&DashboardOut::Positions {
        items: batch.positions.iter().map(|u| u.json.as_ref()).collect(),
    });
    let sent = send(session.text(frame), stuck_after).await;
    if matches!(sent, Sent::Ok) {
        m::delivered(batch.positions.len() as u64);
        for update in &batch.positions {
            m::fanout_latency(update.received.elapsed().as_secs_f64());
        }
    }
    sent
}

async fn send<F>(fut: F, stuck_after: Duration) -> Sent
where
    F: std::future::Future<Output = Result<(), actix_ws::Closed>>,
{
    match tokio::time::timeout(stuck_after, fut).await {
        Ok(Ok(())) => Sent::Ok,
        Ok(Err(_)) => Sent::Gone,
        Err(_) => Sent::Stuck,
    }
}

async fn send_close(session: Session, code: u16, reason: &'static str, grace: Duration) {
    let reason = CloseReason {
        code: CloseCode::from(code),
        description: Some(reason.to_owned()),
    };
    let _ = tokio::time::timeout(grace, session.close(Some(reason))).await;
}
