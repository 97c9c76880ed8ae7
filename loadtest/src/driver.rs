//! One simulated driver app: it keeps producing fixes at its rate whether
//! or not it is connected, keeps every fix in its resend buffer until the hub
//! acknowledges it, and reconnects (with jittered backoff, failing over
//! across URLs) whenever the socket goes away.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, watch};
use tokio::time::{MissedTickBehavior, interval_at, sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::city::City;
use crate::movement::Vehicle;
use crate::net::{self, ConnectError, Ws};
use crate::resend::{Pending, ResendBuffer};
use crate::roster::{LastFix, Roster, Sent};
use crate::stats::Stats;
use crate::token::{self, Role};
use crate::wire::{self, DriverIn};

/// The hub must greet a new socket within this time.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// First reconnection delay; doubles per failed attempt up to `max_backoff`.
const BASE_BACKOFF: Duration = Duration::from_millis(250);

/// How the apps authenticate.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Mint a fresh token per connection (so expiry never strands an app).
    Secret(String),
    /// Ready-made tokens, one per driver, in driver order.
    Tokens(Vec<String>),
}

/// What all drivers of a run share.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// WebSocket bases (`ws://host:port`); driver `i` starts on `urls[i % n]`.
    pub urls: Vec<String>,
    pub credential: Credential,
    pub fleet: String,
    pub rate_hz: f64,
    pub city: City,
    pub seed: u64,
    /// Most unacknowledged positions an app keeps; older ones are dropped.
    pub resend_capacity: usize,
    /// Bind sockets to 127.0.0.x source addresses (see [`net::source_for`]).
    pub spread_sources: bool,
    pub token_ttl: Duration,
    pub max_backoff: Duration,
}

/// Signals from the run to one driver.
#[derive(Debug, Clone)]
pub struct Control {
    /// `true` while the app should produce new positions.
    pub sending: watch::Receiver<bool>,
    /// Becomes `true` when the driver must close and stop.
    pub shutdown: watch::Receiver<bool>,
    /// Churn: drop the connection now and reconnect.
    pub kick: Arc<Notify>,
}

/// How a connection ended.
enum End {
    Shutdown,
    Kicked,
    /// The hub is going away (1001): try another node at once.
    Moved,
    /// Anything else; the label is for the report.
    Lost(String),
}

struct Driver {
    index: usize,
    cfg: Arc<DriverConfig>,
    stats: Arc<Stats>,
    roster: Arc<Roster>,
    vehicle: Vehicle,
    buffer: ResendBuffer,
    /// For backoff jitter; separate from the vehicle's so the trip stays reproducible.
    rng: StdRng,
    url_idx: usize,
    ticker: tokio::time::Interval,
}

/// Runs driver `index` until `ctl.shutdown`, starting after `start_delay`.
pub async fn run(
    index: usize,
    start_delay: Duration,
    cfg: Arc<DriverConfig>,
    stats: Arc<Stats>,
    roster: Arc<Roster>,
    mut ctl: Control,
) {
    if !wait_or_shutdown(start_delay, &mut ctl.shutdown).await {
        return;
    }
    let mut driver = Driver::new(index, cfg, stats, roster);
    driver.run(&mut ctl).await;
}

impl Driver {
    fn new(index: usize, cfg: Arc<DriverConfig>, stats: Arc<Stats>, roster: Arc<Roster>) -> Self {
        let vehicle = Vehicle::new(&cfg.city, cfg.seed, index as u64);
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0xA5A5_A5A5 ^ ((index as u64) << 20));
        let period = Duration::from_secs_f64(1.0 / cfg.rate_hz);
        // A random phase spreads a fleet's sends over the period instead of
        // all drivers firing on the same millisecond.
        let phase = period.mul_f64(rng.random_range(0.0..1.0));
        let mut ticker = interval_at(tokio::time::Instant::now() + phase, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Self {
            index,
            url_idx: index % cfg.urls.len().max(1),
            buffer: ResendBuffer::new(cfg.resend_capacity),
            cfg,
            stats,
            roster,
            vehicle,
            rng,
            ticker,
        }
    }

    async fn run(&mut self, ctl: &mut Control) {
        let mut attempt: u32 = 0;
        loop {
            let Some(connected) = self.connect_while_ticking(ctl).await else {
                return;
            };
            match connected {
                Ok(mut ws) => {
                    let end = self.connected(&mut ws, ctl).await;
                    attempt = match end {
                        End::Shutdown => return,
                        End::Kicked | End::Moved => 0,
                        End::Lost(_) => 1,
                    };
                }
                Err(e) => {
                    self.connect_failed(&e);
                    attempt = attempt.saturating_add(1);
                }
            }
            let delay = self.backoff(attempt);
            if !self.tick_for(delay, ctl).await {
                return;
            }
        }
    }

    /// One connection's life, with the bookkeeping around it.
    async fn connected(&mut self, ws: &mut Ws, ctl: &mut Control) -> End {
        Stats::add(&self.stats.connects, 1);
        let end = self.session(ws, ctl).await;
        self.roster.set_connected(self.index, false);
        match &end {
            End::Shutdown | End::Kicked => {
                // Say goodbye properly, but never hang on a dead peer.
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                if matches!(end, End::Kicked) {
                    Stats::add(&self.stats.kicks, 1);
                }
            }
            End::Moved => {
                self.stats.close("1001");
                self.next_url();
            }
            End::Lost(why) => self.stats.close(why),
        }
        end
    }

    fn connect_failed(&mut self, e: &ConnectError) {
        Stats::add(&self.stats.connect_failures, 1);
        let label = match e {
            ConnectError::Refused(code) => format!("http_{code}"),
            ConnectError::Other(_) => "connect_error".to_owned(),
        };
        tracing::debug!(driver = self.index, "connect failed: {e}");
        self.stats.close(&label);
        self.next_url();
    }

    fn next_url(&mut self) {
        if self.cfg.urls.len() > 1 {
            self.url_idx = (self.url_idx + 1) % self.cfg.urls.len();
            Stats::add(&self.stats.failovers, 1);
        }
    }

    fn token(&self) -> String {
        match &self.cfg.credential {
            Credential::Secret(secret) => token::mint(
                secret,
                self.roster.id(self.index),
                Role::Driver,
                Some(&self.cfg.fleet),
                self.cfg.token_ttl,
            ),
            Credential::Tokens(tokens) => tokens.get(self.index).cloned().unwrap_or_default(),
        }
    }

    /// Connects while the vehicle keeps driving (fixes pile up in the buffer).
    /// `None` on shutdown.
    async fn connect_while_ticking(
        &mut self,
        ctl: &mut Control,
    ) -> Option<Result<Ws, ConnectError>> {
        let url = net::endpoint(&self.cfg.urls[self.url_idx], "/ws/driver", &self.token());
        let source = net::source_for(self.index, self.cfg.spread_sources);
        let connecting = net::connect(&url, source, Some(net::small_buffers()));
        tokio::pin!(connecting);
        loop {
            tokio::select! {
                res = &mut connecting => return Some(res),
                _ = self.ticker.tick() => self.produce(ctl),
                _ = ctl.shutdown.changed() => return None,
            }
        }
    }

    /// Waits `delay`, still producing fixes; `false` on shutdown.
    async fn tick_for(&mut self, delay: Duration, ctl: &mut Control) -> bool {
        let until = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => return true,
                _ = self.ticker.tick() => self.produce(ctl),
                _ = ctl.shutdown.changed() => return false,
            }
        }
    }

    /// Full jitter between half and all of an exponential delay.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let exp = BASE_BACKOFF.saturating_mul(1u32 << attempt.min(10));
        let cap = exp.min(self.cfg.max_backoff);
        cap.mul_f64(self.rng.random_range(0.5..1.0))
    }

    async fn session(&mut self, ws: &mut Ws, ctl: &mut Control) -> End {
        self.buffer.on_connect();
        let welcome_deadline = tokio::time::Instant::now() + WELCOME_TIMEOUT;
        let mut welcomed = false;
        loop {
            let retry_at = self.buffer.next_retry().filter(|_| welcomed);
            let retry_at = retry_at.map_or(welcome_deadline, tokio::time::Instant::from_std);
            let flush = tokio::select! {
                _ = ctl.shutdown.changed() => return End::Shutdown,
                _ = ctl.kick.notified() => return End::Kicked,
                _ = sleep_until(welcome_deadline), if !welcomed => return End::Lost("no_welcome".into()),
                _ = sleep_until(retry_at), if welcomed && self.buffer.next_retry().is_some() => true,
                _ = self.ticker.tick() => { self.produce(ctl); welcomed }
                msg = ws.next() => match self.on_message(msg, &mut welcomed) {
                    Ok(flush) => flush,
                    Err(end) => return end,
                },
            };
            if flush && let Err(e) = self.flush(ws).await {
                return End::Lost(io_label(&e));
            }
        }
    }

    /// Handles one inbound message; `Ok(true)` when the outbox should be flushed.
    fn on_message(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
        welcomed: &mut bool,
    ) -> Result<bool, End> {
        match msg {
            None => Err(End::Lost("eof".into())),
            Some(Err(e)) => Err(End::Lost(io_label(&e))),
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                Err(if code == 1001 {
                    End::Moved
                } else {
                    End::Lost(code.to_string())
                })
            }
            Some(Ok(Message::Text(text))) => Ok(self.on_text(text.as_str(), welcomed)),
            Some(Ok(_)) => Ok(false),
        }
    }

    fn on_text(&mut self, text: &str, welcomed: &mut bool) -> bool {
        let Ok(frame) = serde_json::from_str::<DriverIn>(text) else {
            self.stats.error("hub_sent_bad_json");
            return false;
        };
        match frame.kind.as_ref() {
            "welcome" => {
                let done = self.buffer.on_welcome(frame.last_seq.unwrap_or(0));
                Stats::add(&self.stats.acked_by_welcome, done.len() as u64);
                self.settle(&done);
                self.roster.set_connected(self.index, true);
                *welcomed = true;
                true
            }
            "ack" => {
                let done = self.buffer.on_ack(frame.seq.unwrap_or(0));
                self.settle(&done);
                false
            }
            "error" => {
                self.on_error(frame.code.as_deref().unwrap_or("none"), frame.seq);
                false
            }
            _ => false,
        }
    }

    fn on_error(&mut self, code: &str, seq: Option<u64>) {
        self.stats.error(code);
        let Some(seq) = seq else { return };
        let retryable = wire::is_retryable(code);
        if self
            .buffer
            .on_error(seq, retryable, Instant::now())
            .is_some()
        {
            Stats::add(&self.stats.rejected, 1);
        }
        self.roster.set_unacked(self.index, self.buffer.len());
    }

    fn settle(&mut self, done: &[Pending]) {
        Stats::add(&self.stats.acked, done.len() as u64);
        for p in done.iter().filter(|p| p.sends == 1) {
            if let Some(at) = p.first_sent {
                self.stats.record_ack_latency(self.index, at);
            }
        }
        self.roster.set_unacked(self.index, self.buffer.len());
    }

    /// A new fix from the vehicle into the outbox (if the run is still sending).
    fn produce(&mut self, ctl: &Control) {
        if !*ctl.sending.borrow() {
            return;
        }
        let fix = self.vehicle.advance(1.0 / self.cfg.rate_hz);
        let ts = now_ms();
        let (_, evicted) = self.buffer.push(ts, fix);
        Stats::add(&self.stats.sent, 1);
        if evicted.is_some() {
            Stats::add(&self.stats.evicted, 1);
        }
        let last = LastFix {
            ts,
            lat: fix.lat,
            lon: fix.lon,
        };
        self.roster.set_last(self.index, last);
        self.roster.set_unacked(self.index, self.buffer.len());
    }

    /// Writes everything sendable, in frames of at most [`wire::MAX_BATCH`].
    async fn flush(&mut self, ws: &mut Ws) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        loop {
            let frame = self.buffer.take_sendable(Instant::now(), wire::MAX_BATCH);
            if frame.is_empty() {
                return Ok(());
            }
            // Stamp before writing: a dashboard may see it before `send` returns.
            // `url_idx` is the node this socket is connected to (it only
            // moves on after the connection ends).
            let sent = Sent {
                at_ns: self.stats.now_ns(),
                node: self.url_idx as u32,
            };
            for p in frame.iter().filter(|p| p.sends == 1) {
                self.roster.record_send(self.index, p.seq, p.ts, sent);
            }
            ws.send(Message::text(wire::encode_positions(&frame)))
                .await?;
            Stats::add(&self.stats.written, frame.len() as u64);
        }
    }
}

/// A bounded label for a transport error (the report groups by it).
fn io_label(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::ConnectionClosed | E::AlreadyClosed => "closed",
        E::Io(_) => "io_error",
        E::Protocol(_) => "protocol_error",
        _ => "ws_error",
    }
    .to_owned()
}

/// Milliseconds since the Unix epoch, the protocol's `ts`.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Sleeps `delay` unless shutdown comes first; `false` on shutdown.
pub(crate) async fn wait_or_shutdown(
    delay: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = sleep(delay) => true,
        _ = shutdown.changed() => false,
    }
}
