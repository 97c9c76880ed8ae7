//! One connected driver: an actor that owns its session state (identity,
//! rate-limit bucket, ack progress, online status) and runs one loop over its
//! inbound frames, its pending commits, its stop signal and one timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use governor::DefaultDirectRateLimiter;
use tokio::sync::oneshot;
use tokio::time::sleep_until;

use crate::ack_tracker::AckTracker;
use crate::api_error::ApiError;
use crate::auth::{AuthError, DriverIdentity, Role};
use crate::domain::{Seq, Timestamp, TrailPoint};
use crate::hub::{ConnId, DriverHandle, LiveDriver, PublishOutcome, Stop};
use crate::metrics as m;
use crate::outbox::Status;
use crate::protocol::{DriverFrame, DriverOut, ErrorCode, WireFix, close, to_json};
use crate::rate_limit::{self, limiter, position_quota, quota};
use crate::startup::AppState;
use crate::trail_store::StoreError;

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
    let identity = state
        .auth
        .authorize(&req, &[Role::Driver])
        .map_err(ApiError::from)?;
    let me = identity
        .as_driver()
        .ok_or_else(|| ApiError::from(AuthError::Invalid))?;
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let hard_limit = state.settings.ws.hard_frame_limit_bytes;
    let stream = stream
        .max_frame_size(hard_limit)
        .aggregate_continuations()
        .max_continuation_size(hard_limit);
    actix_web::rt::spawn(run(state, me, session, stream));
    Ok(response)
}

type PendingCommit = Pin<Box<dyn Future<Output = CommitDone> + Send>>;

struct CommitDone {
    seqs: Vec<Seq>,
    received: Instant,
    result: Result<(), StoreError>,
}

/// Why the loop ended: a close to send, or a peer already gone.
enum Exit {
    Close(u16, &'static str),
    Gone,
}

struct DriverActor {
    state: web::Data<AppState>,
    me: DriverIdentity,
    live: Arc<LiveDriver>,
    conn: ConnId,
    session: Session,
    limiter: DefaultDirectRateLimiter,
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
) {
    let (stop, stopped) = oneshot::channel();
    let conn = state.hub.next_id();
    state
        .hub
        .register_driver(&me.driver, DriverHandle { conn, stop });
    // Registered first: a connected driver's live entry is never forgotten.
    let live = state.hub.live_driver(&me.driver, &me.fleet);
    let settings = &state.settings.driver;
    let mut actor = DriverActor {
        limiter: limiter(position_quota(settings)),
        abuse: limiter(quota(settings.abuse_per_sec, settings.abuse_burst)),
        state: state.clone(),
        me,
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
    tracing::debug!(driver = %actor.me.driver, conn, "driver connected");
    // Checked after registering: the hub stops the registered actors after
    // cancelling the token, so none slips through.
    let exit = if state.shutdown.is_cancelled() {
        Exit::Close(close::GOING_AWAY, "server shutting down")
    } else {
        actor.serve(stream, stopped).await
    };
    actor.finish(exit).await;
}

impl DriverActor {
    async fn serve(
        &mut self,
        mut stream: AggregatedMessageStream,
        mut stopped: oneshot::Receiver<Stop>,
    ) -> Exit {
        let hub = &self.state.hub;
        hub.set_status(&self.me.driver, &self.me.fleet, Status::Online);
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
                    return match stop {
                        Ok(Stop::Replaced) => Exit::Close(close::REPLACED, "replaced"),
                        Ok(Stop::ShuttingDown) | Err(_) => {
                            Exit::Close(close::GOING_AWAY, "server shutting down")
                        }
                    };
                }
                Some(done) = self.pending.next() => {
                    if let Err(exit) = self.on_commit(done).await { return exit; }
                }
                message = stream.recv() => {
                    let Some(Ok(message)) = message else { return Exit::Gone };
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
            return Err(Exit::Close(close::POLICY, "token expired"));
        }
        if now >= due.next_heartbeat {
            due.next_heartbeat = now + due.heartbeat_every;
            let quiet_for = now.saturating_duration_since(self.last_heard);
            if quiet_for > due.client_timeout {
                return Err(Exit::Close(close::TIMEOUT, "no pong"));
            }
            // A driver that streams positions proves it is alive; only a
            // quiet one is pinged (a ping and its pong cost as much as a fix).
            if quiet_for >= due.heartbeat_every / 2 && self.session.ping(b"").await.is_err() {
                return Err(Exit::Gone);
            }
        }
        if self.online && now >= self.last_fix + due.offline_after {
            self.online = false;
            let hub = &self.state.hub;
            hub.set_status(&self.me.driver, &self.me.fleet, Status::Offline);
        }
        Ok(())
    }

    async fn last_stored_seq(&self) -> Seq {
        let remembered = self.state.hub.committed_seq(&self.me.driver);
        match tokio::time::timeout(LAST_SEQ_TIMEOUT, self.state.store.last_seq(&self.me.driver))
            .await
        {
            Ok(Ok(stored)) => stored.max(remembered),
            Ok(Err(e)) => {
                tracing::warn!(driver = %self.me.driver, error = %e, "last seq unavailable, using the hub's memory");
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
                    self.online = true;
                }
                self.send_ack().await
            }
            AggregatedMessage::Binary(_) => {
                self.reject(ErrorCode::BadJson, "frames must be JSON text", None)
                    .await
            }
            AggregatedMessage::Ping(bytes) => {
                self.session.pong(&bytes).await.map_err(|_| Exit::Gone)
            }
            AggregatedMessage::Pong(_) => Ok(()),
            AggregatedMessage::Close(_) => Err(Exit::Close(close::NORMAL, "bye")),
        }
    }

    /// Handles one text frame. Returns whether it carried an accepted position.
    async fn on_text(&mut self, text: &str) -> Result<bool, Exit> {
        if text.len() > self.state.settings.ws.max_frame_bytes {
            let message = format!(
                "frames are limited to {} bytes",
                self.state.settings.ws.max_frame_bytes
            );
            self.reject(ErrorCode::FrameTooLarge, &message, None)
                .await?;
            return Ok(false);
        }
        let frame: DriverFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(e) => {
                self.reject(ErrorCode::BadJson, &e.to_string(), None)
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
            self.reject(ErrorCode::Forbidden, message, frame.seq)
                .await?;
            return Ok(false);
        }
        match frame.kind.as_deref() {
            Some("pos") => self.accept(vec![frame.fix()]).await,
            Some("batch") => self.on_batch(frame.items.unwrap_or_default()).await,
            Some(other) => {
                let message = format!("unknown message type `{other}` (pos or batch)");
                self.reject(ErrorCode::UnknownType, &message, None).await?;
                Ok(false)
            }
            None => {
                self.reject(ErrorCode::UnknownType, "a `type` field is required", None)
                    .await?;
                Ok(false)
            }
        }
    }

    async fn on_batch(&mut self, items: Vec<WireFix>) -> Result<bool, Exit> {
        let max = self.state.settings.driver.max_batch_items;
        if items.len() > max {
            let top = highest_seq(&items);
            self.settle(&items);
            let message = format!("a batch holds at most {max} items, got {}", items.len());
            m::rejected(ErrorCode::BatchTooLarge.as_str(), items.len() as u64);
            self.reject(ErrorCode::BatchTooLarge, &message, top).await?;
            return Ok(false);
        }
        self.accept(items).await
    }

    /// Validates, shows live, and queues for the trail. Refusals are answered
    /// with error frames; the connection carries on.
    async fn accept(&mut self, fixes: Vec<WireFix>) -> Result<bool, Exit> {
        let received = Instant::now();
        let count = fixes.len() as u64;
        m::received(count);
        if !rate_limit::take(&self.limiter, fixes.len()) {
            self.settle(&fixes);
            m::rejected(ErrorCode::RateLimited.as_str(), count);
            let message = "too many positions: slow down and resend";
            return self
                .reject(ErrorCode::RateLimited, message, highest_seq(&fixes))
                .await
                .map(|()| false);
        }
        let window = self.state.settings.time_window();
        let now = Timestamp::now();
        let mut points = Vec::with_capacity(fixes.len());
        for fix in &fixes {
            match fix.validate(&window, now) {
                Ok((seq, position)) => {
                    let hub = &self.state.hub;
                    if let PublishOutcome::Late =
                        hub.publish_to(&self.live, &self.me.fleet, &position)
                    {
                        m::late();
                    }
                    points.push(TrailPoint {
                        driver: self.me.driver.clone(),
                        fleet: self.me.fleet.clone(),
                        seq,
                        position,
                    });
                }
                Err(e) => {
                    if let Some(seq) = e.seq {
                        self.acks.settled(seq);
                    }
                    m::rejected(ErrorCode::InvalidPosition.as_str(), 1);
                    self.reject(ErrorCode::InvalidPosition, &e.message, e.seq)
                        .await?;
                }
            }
        }
        let accepted = !points.is_empty();
        if accepted {
            self.store(points, received).await?;
        }
        Ok(accepted)
    }

    async fn store(&mut self, points: Vec<TrailPoint>, received: Instant) -> Result<(), Exit> {
        let seqs: Vec<Seq> = points.iter().map(|p| p.seq).collect();
        match self.state.writer.try_submit(points) {
            Ok(committed) => {
                self.acks.begin(&seqs);
                self.pending.push(Box::pin(async move {
                    let result = committed
                        .await
                        .unwrap_or_else(|_| Err(StoreError::Unavailable("writer stopped".into())));
                    CommitDone {
                        seqs,
                        received,
                        result,
                    }
                }));
                Ok(())
            }
            Err(_full) => {
                for &seq in &seqs {
                    self.acks.settled(seq);
                }
                m::rejected(ErrorCode::StorageUnavailable.as_str(), seqs.len() as u64);
                let top = seqs.iter().copied().max();
                let message = "storage is busy or down: not stored, resend later";
                self.reject(ErrorCode::StorageUnavailable, message, top)
                    .await
            }
        }
    }

    async fn on_commit(&mut self, done: CommitDone) -> Result<(), Exit> {
        self.acks.finish(&done.seqs);
        match done.result {
            Ok(()) => {
                if let Some(top) = done.seqs.iter().copied().max() {
                    self.live.note_committed(top);
                }
                m::ack_latency(done.received.elapsed().as_secs_f64());
            }
            Err(e) => {
                let top = done.seqs.iter().copied().max();
                m::rejected(
                    ErrorCode::StorageUnavailable.as_str(),
                    done.seqs.len() as u64,
                );
                let message = format!("not stored ({e}): resend later");
                self.reject(ErrorCode::StorageUnavailable, &message, top)
                    .await?;
            }
        }
        self.send_ack().await
    }

    fn settle(&mut self, fixes: &[WireFix]) {
        for seq in fixes.iter().filter_map(|f| f.seq) {
            self.acks.settled(seq);
        }
    }

    async fn send_ack(&mut self) -> Result<(), Exit> {
        match self.acks.next_ack() {
            Some(seq) => self.send(&to_json(&DriverOut::Ack { seq })).await,
            None => Ok(()),
        }
    }

    /// Sends an error frame; sustained abuse ends the connection with 1008.
    async fn reject(
        &mut self,
        code: ErrorCode,
        message: &str,
        seq: Option<Seq>,
    ) -> Result<(), Exit> {
        self.send(&to_json(&DriverOut::Error { code, message, seq }))
            .await?;
        if self.abuse.check().is_err() {
            tracing::info!(driver = %self.me.driver, "closing an abusive driver connection");
            return Err(Exit::Close(close::POLICY, "too many bad messages"));
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
        let hub = &self.state.hub;
        if hub.unregister_driver(&self.me.driver, self.conn) {
            hub.set_status(&self.me.driver, &self.me.fleet, Status::Offline);
        }
        m::connection_closed("driver");
        tracing::debug!(driver = %self.me.driver, conn = self.conn, "driver disconnected");
        if let Exit::Close(code, reason) = exit {
            let reason = CloseReason {
                code: CloseCode::from(code),
                description: Some(reason.to_owned()),
            };
            let _ = tokio::time::timeout(SEND_TIMEOUT, self.session.close(Some(reason))).await;
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

fn highest_seq(fixes: &[WireFix]) -> Option<Seq> {
    fixes.iter().filter_map(|f| f.seq).max()
}

fn until_expiry(expires_at: Timestamp) -> Duration {
    let left = expires_at.as_millis() - Timestamp::now().as_millis();
    Duration::from_millis(left.max(0) as u64)
}
