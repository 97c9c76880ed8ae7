//! One connected driver: an actor that owns its session state (identity,
//! rate-limit bucket, ack progress, online status) and runs one loop over its
//! inbound frames, its pending commits, its stop signal and one timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, Session};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use governor::DefaultDirectRateLimiter;
use tokio::sync::oneshot;
use tokio::time::sleep_until;

use super::ack_tracker::AckTracker;
use super::pipeline::{CommitDone, Refusal, Source, driver_key, driver_of};
use super::rate_limit::{limiter, quota};
use crate::app_state::AppState;
use crate::auth::{DriverIdentity, Role};
use crate::domain::{DriverKey, Seq, Timestamp};
use crate::http_api::ApiError;
use crate::live::{ConnId, DriverHandle, LiveDriver, Status, next_id};
use crate::metrics as m;
use crate::protocol::{Close, DriverFrame, DriverOut, ErrorCode, WireFix, to_json};
use crate::ws;

/// A driver that accepts no outbound frame for this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `welcome` waits for the store's last seq before using the hub's memory.
const LAST_SEQ_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /ws/driver`: checks the token before the upgrade, then starts the actor.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let hard_limit = state.settings.ws.hard_frame_limit_bytes;
    let ws = ws::upgrade(&req, body, &state, &[Role::Driver], hard_limit)?;
    let me = driver_of(&ws.identity).map_err(ApiError::from)?;
    let held = ws::Held {
        slot: ws.slot,
        socket: ws::ConnSocket::of(&req),
    };
    actix_web::rt::spawn(run(state, me, ws.session, ws.stream, held));
    Ok(ws.response)
}

type PendingCommit = Pin<Box<dyn Future<Output = CommitDone> + Send>>;

/// Why the loop ended: a close to send, or a peer already gone.
enum Exit {
    Close(Close),
    Gone,
}

struct DriverActor {
    state: web::Data<AppState>,
    me: DriverIdentity,
    /// `me` as the registry, the live state and the store key it.
    key: DriverKey,
    live: Arc<LiveDriver>,
    conn: ConnId,
    session: Session,
    abuse: DefaultDirectRateLimiter,
    acks: AckTracker,
    pending: FuturesUnordered<PendingCommit>,
    last_heard: Instant,
    /// When the last accepted position came: `offline_after` counts from here.
    last_fix: Instant,
    online: bool,
}

async fn run(
    state: web::Data<AppState>,
    me: DriverIdentity,
    session: Session,
    stream: AggregatedMessageStream,
    held: ws::Held,
) {
    let (stop, stopped) = oneshot::channel();
    let conn = next_id();
    let key = driver_key(&me);
    // Claimed first: a session elsewhere closes, and this one carries the new epoch.
    let epoch = state.bus.claim(&key).await;
    state
        .registry
        .register(&key, DriverHandle { conn, epoch, stop });
    // Registered first: a connected driver's live entry is never forgotten.
    let live = state.pipeline.source_entry(&me);
    live.set_epoch(epoch);
    let settings = &state.settings.driver;
    let mut actor = DriverActor {
        abuse: limiter(quota(settings.abuse_per_sec, settings.abuse_burst)),
        state: state.clone(),
        me,
        key,
        live,
        conn,
        session,
        acks: AckTracker::default(),
        pending: FuturesUnordered::new(),
        last_heard: Instant::now(),
        last_fix: Instant::now(),
        online: true,
    };
    m::connection_opened("driver");
    tracing::debug!(driver = %actor.key, conn, "driver connected");
    // Checked after registering: shutdown stops the registered actors after
    // cancelling the token, so none slips through.
    let exit = if state.shutdown.is_cancelled() {
        Exit::Close(Close::SHUTTING_DOWN)
    } else {
        actor.serve(stream, stopped).await
    };
    actor.finish(exit).await;
    // A peer that reads nothing must not keep the socket: it goes after a grace.
    ws::release(held.socket, ws::RELEASE_GRACE);
}

impl DriverActor {
    async fn serve(
        &mut self,
        mut stream: AggregatedMessageStream,
        mut stopped: oneshot::Receiver<Close>,
    ) -> Exit {
        self.state.drivers.set_status(&self.live, Status::Online);
        let last_seq = self.last_stored_seq().await;
        let welcome = DriverOut::Welcome {
            driver: self.me.driver.as_str(),
            fleet: self.me.fleet.as_str(),
            last_seq,
        };
        if self.send(&to_json(&welcome)).await.is_err() {
            return Exit::Gone;
        }
        let mut deadlines = Deadlines::new(&self.state, self.me.expires_at);
        // Every branch is polled on every wake-up, i.e. on every position and
        // every commit: hence one stop signal and one timer, each built once.
        let timer = sleep_until(deadlines.next_deadline(self.online, self.last_fix).into());
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                stop = &mut stopped => {
                    return Exit::Close(stop.unwrap_or(Close::SHUTTING_DOWN));
                }
                Some(done) = self.pending.next() => {
                    if let Err(exit) = self.on_commit(done).await { return exit; }
                }
                message = stream.recv() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(e)) => return ws::close_for(&e).map_or(Exit::Gone, Exit::Close),
                        None => return Exit::Gone,
                    };
                    self.last_heard = Instant::now();
                    let was_online = self.online;
                    if let Err(exit) = self.on_message(message).await { return exit; }
                    if self.online != was_online {
                        timer.as_mut().reset(deadlines.next_deadline(self.online, self.last_fix).into());
                    }
                }
                _ = &mut timer => {
                    if let Err(exit) = self.on_timer(&mut deadlines).await { return exit; }
                    timer.as_mut().reset(deadlines.next_deadline(self.online, self.last_fix).into());
                }
            }
        }
    }

    /// The timer fired: the token may have expired, a heartbeat may be due, or
    /// the driver may have gone silent. A deadline that moved since the timer
    /// was armed (a fix came in) is simply not due yet.
    async fn on_timer(&mut self, due: &mut Deadlines) -> Result<(), Exit> {
        let now = Instant::now();
        if now >= due.expiry {
            return Err(Exit::Close(Close::TOKEN_EXPIRED));
        }
        if now >= due.next_heartbeat {
            due.next_heartbeat = now + due.heartbeat_every;
            let quiet_for = now.saturating_duration_since(self.last_heard);
            if quiet_for > due.client_timeout {
                return Err(Exit::Close(Close::NO_PONG));
            }
            // A driver that streams positions proves it is alive; only a
            // quiet one is pinged (a ping and its pong cost as much as a fix).
            if quiet_for >= due.heartbeat_every / 2 && self.session.ping(b"").await.is_err() {
                return Err(Exit::Gone);
            }
        }
        if self.online && now >= self.last_fix + due.offline_after {
            self.online = false;
            self.state.drivers.set_status(&self.live, Status::Offline);
        }
        Ok(())
    }

    async fn last_stored_seq(&self) -> Seq {
        let remembered = self.state.drivers.committed_seq(&self.key);
        match tokio::time::timeout(LAST_SEQ_TIMEOUT, self.state.store.last_seq(&self.key)).await {
            Ok(Ok(stored)) => stored.max(remembered),
            Ok(Err(e)) => {
                tracing::warn!(driver = %self.key, error = %e, "last seq unavailable, using the hub's memory");
                remembered
            }
            Err(_) => remembered,
        }
    }

    async fn on_message(&mut self, message: AggregatedMessage) -> Result<(), Exit> {
        match message {
            AggregatedMessage::Text(text) => {
                if self.on_text(&text).await? {
                    self.last_fix = self.last_heard;
                    if !self.online {
                        // Back from silence with fixes the filters dropped
                        // (a parked driver): no position shows it online.
                        self.state.drivers.set_status(&self.live, Status::Online);
                    }
                    self.online = true;
                }
                self.send_ack().await
            }
            AggregatedMessage::Binary(_) => {
                self.reject_frame(ErrorCode::BadJson, "frames must be JSON text")
                    .await
            }
            AggregatedMessage::Ping(bytes) => {
                self.session.pong(&bytes).await.map_err(|_| Exit::Gone)
            }
            AggregatedMessage::Pong(_) => Ok(()),
            AggregatedMessage::Close(_) => Err(Exit::Close(Close::BYE)),
        }
    }

    /// Handles one text frame. Returns whether it carried an accepted position.
    async fn on_text(&mut self, text: &str) -> Result<bool, Exit> {
        let max = self.state.settings.ws.max_frame_bytes;
        if text.len() > max {
            let message = format!("frames are limited to {max} bytes");
            self.reject_frame(ErrorCode::FrameTooLarge, &message)
                .await?;
            return Ok(false);
        }
        let frame: DriverFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(e) => {
                self.reject_frame(ErrorCode::BadJson, &e.to_string())
                    .await?;
                return Ok(false);
            }
        };
        if frame
            .driver
            .as_deref()
            .is_some_and(|d| d != self.me.driver.as_str())
        {
            let message = "a driver may only publish as itself";
            let refusal = Refusal {
                code: ErrorCode::Forbidden,
                message: message.into(),
                seq: frame.seq,
            };
            self.reject(refusal).await?;
            return Ok(false);
        }
        match frame.kind.as_deref() {
            Some("pos") => self.ingest(&[frame.fix()]).await,
            Some("batch") => self.ingest(&frame.items.unwrap_or_default()).await,
            Some("sos") => self.ingest(&[frame.sos()]).await,
            Some(other) => {
                let message = format!("unknown message type `{other}` (pos, batch or sos)");
                self.reject_frame(ErrorCode::UnknownType, &message).await?;
                Ok(false)
            }
            None => {
                self.reject_frame(ErrorCode::UnknownType, "a `type` field is required")
                    .await?;
                Ok(false)
            }
        }
    }

    /// Runs the fixes through the ingest pipeline and answers its refusals;
    /// the accepted ones are acked when their commit resolves. Returns
    /// whether the driver showed it is streaming: a fix accepted (shown
    /// live), or one the input filters dropped (a parked driver is there).
    async fn ingest(&mut self, fixes: &[WireFix]) -> Result<bool, Exit> {
        let source = Source {
            me: &self.me,
            live: &self.live,
        };
        let accepted = match self.state.pipeline.ingest(&source, fixes) {
            Ok(accepted) => accepted,
            Err(refused) => {
                for seq in refused.seqs {
                    self.acks.settled(seq);
                }
                self.reject(refused.refusal).await?;
                return Ok(false);
            }
        };
        let filtered = !accepted.filtered.is_empty();
        for seq in accepted.filtered {
            self.acks.settled(seq);
        }
        for refusal in accepted.refused {
            if let Some(seq) = refusal.seq {
                self.acks.settled(seq);
            }
            self.reject(refusal).await?;
        }
        if let Some(unstored) = accepted.unstored {
            for seq in unstored.seqs {
                self.acks.settled(seq);
            }
            self.reject(unstored.refusal).await?;
            // Shown live all the same: the driver is streaming.
            return Ok(true);
        }
        let Some(commit) = accepted.commit else {
            return Ok(filtered);
        };
        self.acks.begin(commit.seqs());
        self.pending.push(Box::pin(commit.wait()));
        Ok(true)
    }

    async fn on_commit(&mut self, done: CommitDone) -> Result<(), Exit> {
        self.acks.finish(&done.seqs);
        if let Err(refusal) = done.result {
            self.reject(refusal).await?;
        }
        self.send_ack().await
    }

    async fn send_ack(&mut self) -> Result<(), Exit> {
        match self.acks.next_ack() {
            Some(seq) => self.send(&to_json(&DriverOut::Ack { seq })).await,
            None => Ok(()),
        }
    }

    /// Refuses a frame that carried no position (no seq to answer under).
    async fn reject_frame(&mut self, code: ErrorCode, message: &str) -> Result<(), Exit> {
        let refusal = Refusal {
            code,
            message: message.into(),
            seq: None,
        };
        self.reject(refusal).await
    }

    /// Sends an error frame; sustained abuse ends the connection with 1008.
    async fn reject(&mut self, refusal: Refusal) -> Result<(), Exit> {
        let frame = DriverOut::Error {
            code: refusal.code,
            message: &refusal.message,
            seq: refusal.seq,
        };
        self.send(&to_json(&frame)).await?;
        if self.abuse.check().is_err() {
            tracing::info!(driver = %self.key, "closing an abusive driver connection");
            return Err(Exit::Close(Close::ABUSE));
        }
        Ok(())
    }

    async fn send(&mut self, text: &str) -> Result<(), Exit> {
        match tokio::time::timeout(SEND_TIMEOUT, self.session.text(text.to_owned())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_closed)) => Err(Exit::Gone),
            Err(_elapsed) => Err(Exit::Gone),
        }
    }

    async fn finish(self, exit: Exit) {
        if self.state.registry.unregister(&self.key, self.conn) {
            self.state.drivers.set_status(&self.live, Status::Offline);
        }
        m::connection_closed("driver");
        tracing::debug!(driver = %self.key, conn = self.conn, "driver disconnected");
        if let Exit::Close(close) = exit {
            ws::close(self.session, close, SEND_TIMEOUT).await;
        }
    }
}

/// The actor's deadlines, all served by one timer.
struct Deadlines {
    expiry: Instant,
    next_heartbeat: Instant,
    heartbeat_every: Duration,
    client_timeout: Duration,
    offline_after: Duration,
}

impl Deadlines {
    fn new(state: &AppState, expires_at: Timestamp) -> Self {
        let ws = &state.settings.ws;
        let now = Instant::now();
        let heartbeat_every = Duration::from_secs(ws.heartbeat_secs);
        Self {
            expiry: now + until_expiry(expires_at),
            next_heartbeat: now + heartbeat_every,
            heartbeat_every,
            client_timeout: Duration::from_secs(ws.client_timeout_secs),
            offline_after: Duration::from_secs(state.settings.driver.offline_after_secs),
        }
    }

    /// The earliest of the token's expiry, the next heartbeat and, while the
    /// driver is online, the moment it would count as silent.
    fn next_deadline(&self, online: bool, last_fix: Instant) -> Instant {
        let deadline = self.expiry.min(self.next_heartbeat);
        if online {
            deadline.min(last_fix + self.offline_after)
        } else {
            deadline
        }
    }
}

fn until_expiry(expires_at: Timestamp) -> Duration {
    let left = expires_at.as_millis() - Timestamp::now().as_millis();
    Duration::from_millis(left.max(0) as u64)
}
