//! The clustered bus: several nodes act as one hub through Redis.
//!
//! - **Out**: a node gathers its drivers' newest positions for
//!   `cluster.flush_ms` and publishes one message per channel (fleet and grid
//!   cell), in the same pipeline as the writes to the shared last-known state.
//! - **In**: a node listens only to the channels covering its dashboards'
//!   regions, and hands what it hears to the same spatial index, coalescing
//!   and time order as its own drivers' positions ([`RemoteDrivers`]).
//! - **Owners**: a driver that connects claims a new epoch; the node holding
//!   an older session closes it on the notice, or on its next heartbeat's
//!   ownership check if the notice was lost.
//! - **Liveness**: nodes heartbeat into Redis; a node that stops (or comes back
//!   as a new incarnation) has its drivers shown offline.
//! - **Outages**: the link task reconnects with jittered backoff, resubscribes,
//!   republishes this node's drivers and re-snapshots every dashboard; a probe
//!   through the node's own channel catches a pub/sub connection that went deaf.
//!
//! Three tasks: the link (connections and everything heard), the publisher,
//! and the heartbeat. None of them is on the ingest hot path, which only
//! fills the pending map.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use redis::{PushKind, Value};
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use super::channels::{Cell, Channels};
use super::link::{Conn, Connector};
use super::nodes::Nodes;
use super::remote::{Origin, RemoteDrivers};
use super::shared_state::{self, StateWrite};
use super::wire::{BatchIn, BatchOut, Notice, owner_value, parse_view};
use super::{Changed, ClusterBus, Epoch, LinkState, LocalBus};
use crate::auth::FleetScope;
use crate::config::{ClusterSettings, Settings};
use crate::domain::{BBox, DriverId, DriverKey, FleetId, Position, Timestamp};
use crate::live::{
    DriverRegistry, DriverRow, LiveDrivers, LiveUpdate, Status, Subscriptions, snapshot,
};
use crate::metrics as m;

/// How long a claim or a shared-state read may wait for Redis before the
/// node goes on with what it knows.
const CALL_TIMEOUT: Duration = Duration::from_millis(800);
/// Reconnection backoff: from the first to the longest wait, with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_LONGEST: Duration = Duration::from_secs(2);
/// Expired drivers are removed from the shared state every this many heartbeats.
const EXPIRE_EVERY_BEATS: u64 = 60;

/// Claims the driver for a node: a new epoch, and the owner that goes with it.
const CLAIM: &str = r"
local epoch = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HSET', KEYS[2], ARGV[1], epoch .. ' ' .. ARGV[2])
return epoch
";

/// A background task of the bus, for start-up to spawn and report.
pub type ClusterTask = (&'static str, BoxFuture<'static, ()>);

/// This node's driver sessions, as the bus acts on them.
#[derive(Clone)]
pub(super) struct Sessions {
    registry: Arc<DriverRegistry>,
    drivers: Arc<LiveDrivers>,
}

impl Sessions {
    /// After `evicted` (a session closed because another node owns its driver
    /// now): this node's stale state of the driver is neither shown online
    /// nor published again. Returns `evicted`.
    fn moved(&self, driver: &DriverKey, evicted: bool) -> bool {
        if evicted {
            self.drivers.moved(driver);
            m::cluster_takeover();
        }
        evicted
    }
}

/// What a driver's pending update carries to the other nodes.
struct Outgoing {
    update: Arc<LiveUpdate>,
    /// The cell the driver left since the last flush, whose watchers must see it go.
    left: Option<Cell>,
    online: bool,
}

pub struct RedisBus {
    node: String,
    incarnation: u64,
    channels: Channels,
    connector: Connector,
    settings: ClusterSettings,
    max_age: Duration,
    subscriptions: Arc<Subscriptions>,
    local: LocalBus,
    /// This node's drivers' updates not yet published, newest per driver.
    pending: Mutex<HashMap<DriverKey, Outgoing>>,
    wake_publisher: Notify,
    /// The command connection while the link is up.
    commands: RwLock<Option<Conn>>,
    up: AtomicBool,
    /// A command failed: the link task reconnects.
    link_lost: Notify,
    /// The fleets or wide interests changed: the link task recomputes its channels.
    interest_changed: Notify,
    probe_heard: Mutex<Instant>,
    remote: RemoteDrivers,
    nodes: Nodes,
    /// Fleets with live drivers anywhere (admins' dashboards stand for all of them).
    fleets: RwLock<Vec<FleetId>>,
    /// Fleets some node watches wide, this one included.
    wide: RwLock<HashSet<FleetId>>,
    /// Fleets this node watches wide.
    my_wide: RwLock<BTreeSet<FleetId>>,
    subscribed: AtomicUsize,
    /// Other nodes' changes, for the task that applies them ([`RedisBus::changes`]).
    changed: UnboundedSender<Changed>,
    changes: Mutex<Option<UnboundedReceiver<Changed>>>,
}

impl RedisBus {
    pub fn new(
        settings: &Settings,
        node_id: &str,
        subscriptions: Arc<Subscriptions>,
    ) -> anyhow::Result<Self> {
        let connector = Connector::new(&settings.redis)?;
        let cluster = settings.cluster.clone();
        let incarnation = rand::random::<u64>() >> 12;
        let (changed, changes) = unbounded_channel();
        Ok(Self {
            node: node_id.to_owned(),
            incarnation,
            channels: Channels::new(
                &settings.redis.key_prefix,
                cluster.cell_deg,
                cluster.max_cells,
            ),
            connector,
            max_age: Duration::from_secs(settings.driver.max_age_secs),
            nodes: Nodes::new(
                node_id,
                incarnation,
                Duration::from_millis(cluster.node_timeout_ms),
            ),
            settings: cluster,
            local: LocalBus::new(Arc::clone(&subscriptions)),
            subscriptions,
            pending: Mutex::new(HashMap::new()),
            wake_publisher: Notify::new(),
            commands: RwLock::new(None),
            up: AtomicBool::new(false),
            link_lost: Notify::new(),
            interest_changed: Notify::new(),
            probe_heard: Mutex::new(Instant::now()),
            remote: RemoteDrivers::default(),
            fleets: RwLock::new(Vec::new()),
            wide: RwLock::new(HashSet::new()),
            my_wide: RwLock::new(BTreeSet::new()),
            subscribed: AtomicUsize::new(0),
            changed,
            changes: Mutex::new(Some(changes)),
        })
    }

    /// What other nodes changed, for the one task that applies it (`None`
    /// once taken).
    pub fn changes(&self) -> Option<UnboundedReceiver<Changed>> {
        self.changes.lock().take()
    }

    /// Publishes `notice` on the control channel in the background, if the
    /// link is up (a lost notice is made up for by the resync).
    fn announce(&self, notice: &Notice) {
        let Some(mut conn) = self.live_connection() else {
            return;
        };
        let text = serde_json::to_string(notice).unwrap_or_default();
        let channel = self.channels.control();
        tokio::spawn(async move {
            let mut publish = redis::cmd("PUBLISH");
            publish.arg(channel).arg(text);
            if let Err(e) = conn.cmd::<()>(&publish).await {
                tracing::warn!(error = %e, "cluster: a notice was not published; the next resync makes up for it");
            }
        });
    }

    /// The bus's background tasks; each ends when `stop` is cancelled, the
    /// publisher after a last flush.
    pub fn tasks(
        self: &Arc<Self>,
        drivers: Arc<LiveDrivers>,
        registry: Arc<DriverRegistry>,
        stop: CancellationToken,
    ) -> Vec<ClusterTask> {
        let sessions = Sessions { registry, drivers };
        let link = Link {
            bus: Arc::clone(self),
            sessions: sessions.clone(),
        };
        vec![
            ("cluster link", Box::pin(link.run(stop.clone()))),
            (
                "cluster publisher",
                Box::pin(Arc::clone(self).run_publisher(stop.clone())),
            ),
            (
                "cluster heartbeat",
                Box::pin(Arc::clone(self).run_heartbeat(sessions, stop)),
            ),
        ]
    }

    fn queue(&self, update: &Arc<LiveUpdate>, left: Option<Cell>, online: bool) {
        let mut pending = self.pending.lock();
        let was_empty = pending.is_empty();
        let entry = pending
            .entry(update.key.clone())
            .or_insert_with(|| Outgoing {
                update: Arc::clone(update),
                left: None,
                online,
            });
        entry.update = Arc::clone(update);
        entry.left = entry.left.or(left);
        entry.online = online;
        drop(pending);
        if was_empty {
            self.wake_publisher.notify_one();
        }
    }

    fn connection(&self) -> Option<Conn> {
        self.commands.read().clone()
    }

    /// The command connection, if the link is up.
    fn live_connection(&self) -> Option<Conn> {
        self.connection()
            .filter(|_| self.up.load(Ordering::Relaxed))
    }

    fn is_me(&self, node: &str, incarnation: u64) -> bool {
        node == self.node && incarnation == self.incarnation
    }

    /// Marks the link down after a failed call; the link task reconnects.
    fn failed(&self, what: &str, error: &redis::RedisError) {
        if self.up.load(Ordering::Relaxed) {
            tracing::warn!(error = %error, "cluster: {what} failed; reconnecting to Redis");
            self.link_lost.notify_one();
        }
    }

    // ---- publishing ----

    /// Publishes what is pending, `flush_ms` after the first update came in.
    /// Under load the wait stretches so the node sends at most
    /// `max_messages_per_sec` on average (a token bucket with a tenth of a
    /// second of burst): more positions per message, not more messages.
    async fn run_publisher(self: Arc<Self>, stop: CancellationToken) {
        let flush_every = Duration::from_millis(self.settings.flush_ms);
        let mut pace = Pace::new(f64::from(self.settings.max_messages_per_sec));
        loop {
            tokio::select! {
                _ = self.wake_publisher.notified() => {}
                _ = stop.cancelled() => break,
            }
            let wait = flush_every.max(pace.wait());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => break,
            }
            let sent = self.flush().await;
            pace.spend(sent);
        }
        // The drivers' last states (offline, after the sessions closed) go out.
        self.flush().await;
    }

    /// Publishes the pending updates; returns how many messages that took.
    async fn flush(&self) -> usize {
        let batch: Vec<Outgoing> = std::mem::take(&mut *self.pending.lock())
            .into_values()
            .collect();
        if batch.is_empty() {
            return 0;
        }
        let Some(mut conn) = self.live_connection() else {
            // The link task republishes every driver when it is back.
            m::cluster_dropped(batch.len());
            return 0;
        };
        let (pipe, messages) = self.build_flush(&batch);
        match conn.exec(&pipe).await {
            Ok(()) => {
                for (bytes, positions) in &messages {
                    m::cluster_published(*bytes, *positions);
                }
                messages.len()
            }
            Err(e) => {
                m::cluster_dropped(batch.len());
                self.failed("publishing", &e);
                0
            }
        }
    }

    /// One pipeline: a message per channel, then the shared-state writes.
    /// Also returns each message's size and position count, for the metrics.
    fn build_flush(&self, batch: &[Outgoing]) -> (redis::Pipeline, Vec<(usize, usize)>) {
        // Read-locked while the batch is sorted (no await in here): no copy per flush.
        let wide = self.wide.read();
        let mut by_channel: HashMap<String, Vec<&Outgoing>> = HashMap::new();
        for out in batch {
            let fleet = out.update.key.fleet();
            let cell = self.channels.cell_of(out.update.lat, out.update.lon);
            by_channel
                .entry(self.channels.position(fleet, cell))
                .or_default()
                .push(out);
            if let Some(left) = out.left.filter(|c| *c != cell) {
                by_channel
                    .entry(self.channels.position(fleet, left))
                    .or_default()
                    .push(out);
            }
            if wide.contains(fleet) {
                by_channel
                    .entry(self.channels.wide(fleet))
                    .or_default()
                    .push(out);
            }
        }
        let publish = if self.connector.sharded() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let sent_at = Timestamp::now().as_millis();
        let mut pipe = redis::pipe();
        let mut messages = Vec::with_capacity(by_channel.len());
        for (channel, items) in by_channel {
            let message = BatchOut {
                n: &self.node,
                i: self.incarnation,
                t: sent_at,
                p: items
                    .iter()
                    .map(|o| (o.update.epoch, u8::from(o.online), &*o.update.json))
                    .collect(),
            };
            let Ok(text) = serde_json::to_string(&message) else {
                continue;
            };
            messages.push((text.len(), items.len()));
            pipe.cmd(publish).arg(channel).arg(text);
        }
        let writes: Vec<StateWrite<'_>> = batch
            .iter()
            .map(|o| StateWrite {
                update: &o.update,
                online: o.online,
            })
            .collect();
        shared_state::write(
            &mut pipe,
            &self.channels,
            &self.node,
            self.incarnation,
            &writes,
        );
        (pipe, messages)
    }

    // ---- the heartbeat ----

    async fn run_heartbeat(self: Arc<Self>, sessions: Sessions, stop: CancellationToken) {
        let mut beat: u64 = 0;
        crate::periodic::run_every(
            Duration::from_millis(self.settings.heartbeat_ms),
            stop,
            || {
                beat += 1;
                let this = Arc::clone(&self);
                let sessions = sessions.clone();
                async move {
                    if let Some(mut conn) = this.live_connection()
                        && let Err(e) = this.heartbeat(&mut conn, &sessions, beat).await
                    {
                        this.failed("the heartbeat", &e);
                    }
                    this.remote.forget_silent(since(this.max_age));
                    m::cluster_remote_drivers(this.remote.count());
                }
            },
        )
        .await;
    }

    /// Writes this node's beat and probe; reads the other nodes' beats, the
    /// fleets and the wide interests; re-checks who owns this node's drivers.
    async fn heartbeat(
        &self,
        conn: &mut Conn,
        sessions: &Sessions,
        beat: u64,
    ) -> redis::RedisResult<()> {
        let now = Timestamp::now().as_millis();
        let publish = if self.connector.sharded() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let mut writes = redis::pipe();
        writes
            .cmd("HSET")
            .arg(self.channels.nodes_key())
            .arg(&self.node)
            .arg(self.nodes.beat_value(beat));
        writes
            .cmd(publish)
            .arg(self.channels.probe(&self.node))
            .arg("probe");
        let wide_until = now + i64::try_from(self.settings.node_timeout_ms).unwrap_or(i64::MAX);
        for fleet in self.my_wide.read().iter() {
            writes
                .cmd("HSET")
                .arg(self.channels.wide_key())
                .arg(format!("{fleet} {}", self.node))
                .arg(wide_until);
        }
        conn.exec(&writes).await?;
        let mut reads = redis::pipe();
        reads.cmd("HGETALL").arg(self.channels.nodes_key());
        reads.cmd("HGETALL").arg(self.channels.fleets_key());
        reads.cmd("HGETALL").arg(self.channels.wide_key());
        type Beats = HashMap<String, String>;
        type Stamps = HashMap<String, i64>;
        let (beats, fleets, wide): (Beats, Stamps, Stamps) = conn.query(&reads).await?;

        for (node, incarnation) in self.nodes.observe(&beats) {
            tracing::info!(%node, incarnation, "cluster: a node is gone; its drivers show offline");
        }
        self.remote.node_gone(&self.subscriptions, |node, inc| {
            !self.nodes.alive(node, inc)
        });
        self.take_fleets(&fleets, now);
        self.take_wide(&wide, now);
        self.check_ownership(conn, sessions).await?;
        if beat.is_multiple_of(EXPIRE_EVERY_BEATS) {
            let fleets = self.fleets.read().clone();
            shared_state::expire(conn, &self.channels, &fleets, since(self.max_age)).await?;
        }
        Ok(())
    }

    fn take_fleets(&self, fleets: &HashMap<String, i64>, now: i64) {
        let oldest = now - i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX);
        let mut live: Vec<FleetId> = fleets
            .iter()
            .filter(|(_, at)| **at >= oldest)
            .filter_map(|(f, _)| FleetId::parse(f).ok())
            .collect();
        live.sort();
        let mut known = self.fleets.write();
        if *known != live {
            *known = live;
            self.interest_changed.notify_one();
        }
    }

    fn take_wide(&self, entries: &HashMap<String, i64>, now: i64) {
        let wide: HashSet<FleetId> = entries
            .iter()
            .filter(|(_, until)| **until >= now)
            .filter_map(|(k, _)| k.split_once(' '))
            .filter_map(|(f, _)| FleetId::parse(f).ok())
            .chain(self.my_wide.read().iter().cloned())
            .collect();
        *self.wide.write() = wide;
    }

    /// Closes this node's sessions whose driver another node has claimed
    /// since (its notice may have been lost).
    async fn check_ownership(
        &self,
        conn: &mut Conn,
        sessions: &Sessions,
    ) -> redis::RedisResult<()> {
        let mut by_fleet: HashMap<FleetId, Vec<(DriverKey, Epoch)>> = HashMap::new();
        for (key, epoch) in sessions.registry.claimed() {
            by_fleet
                .entry(key.fleet().clone())
                .or_default()
                .push((key, epoch));
        }
        if by_fleet.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let groups: Vec<_> = by_fleet.into_iter().collect();
        for (fleet, drivers) in &groups {
            let names: Vec<&str> = drivers.iter().map(|(k, _)| k.driver().as_str()).collect();
            pipe.cmd("HMGET")
                .arg(self.channels.owners_key(fleet))
                .arg(names);
        }
        let owners: Vec<Vec<Option<String>>> = conn.query(&pipe).await?;
        for ((_, drivers), owners) in groups.iter().zip(owners) {
            for ((key, epoch), owner) in drivers.iter().zip(owners) {
                let mine = owner_value(*epoch, self.incarnation, &self.node);
                let lost = owner.is_some_and(|o| o != mine);
                if sessions.moved(key, lost && sessions.registry.evict_exact(key, *epoch)) {
                    tracing::info!(driver = %key, "cluster: driver owned elsewhere now; session closed");
                }
            }
        }
        Ok(())
    }

    // ---- what is heard ----

    fn on_push(
        &self,
        sessions: &Sessions,
        kind: &PushKind,
        data: &[Value],
    ) -> Result<(), &'static str> {
        match kind {
            PushKind::Message | PushKind::SMessage => {}
            PushKind::Disconnection => return Err("the pub/sub connection closed"),
            _ => return Ok(()),
        }
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
            (data.first(), data.get(1))
        else {
            return Ok(());
        };
        let channel = String::from_utf8_lossy(channel);
        if channel == self.channels.control() {
            self.on_notice(sessions, payload);
        } else if channel == self.channels.probe(&self.node) {
            *self.probe_heard.lock() = Instant::now();
        } else {
            self.on_batch(sessions, payload);
        }
        Ok(())
    }

    fn on_batch(&self, sessions: &Sessions, payload: &[u8]) {
        let Ok(batch) = serde_json::from_slice::<BatchIn>(payload) else {
            tracing::warn!(
                bytes = payload.len(),
                "cluster: an unreadable message was dropped"
            );
            return;
        };
        if self.is_me(batch.n, batch.i) {
            return;
        }
        let latency = (Timestamp::now().as_millis() - batch.t).max(0) as f64 / 1000.0;
        m::cluster_received(payload.len(), batch.p.len(), Some(latency));
        let node: Arc<str> = Arc::from(batch.n);
        for (epoch, online, view) in batch.p {
            let Some((key, position)) = parse_view(view) else {
                continue;
            };
            // Connected here, the driver is this node's: what another node
            // says of it can only be older.
            if sessions.registry.is_connected(&key) {
                continue;
            }
            let origin = Origin {
                node: Arc::clone(&node),
                incarnation: batch.i,
                epoch,
            };
            self.remote.apply(
                &self.subscriptions,
                key,
                position,
                view,
                online == 1,
                &origin,
            );
        }
    }

    fn on_notice(&self, sessions: &Sessions, payload: &[u8]) {
        let Ok(notice) = serde_json::from_slice::<Notice>(payload) else {
            tracing::warn!(
                bytes = payload.len(),
                "cluster: an unreadable notice was dropped"
            );
            return;
        };
        match notice {
            Notice::Owner { f, d, n, i, e } => {
                if self.is_me(&n, i) {
                    return;
                }
                let (Ok(fleet), Ok(driver)) = (FleetId::parse(&f), DriverId::parse(&d)) else {
                    return;
                };
                let key = DriverKey::new(fleet, driver);
                if sessions.moved(&key, sessions.registry.evict_older(&key, e)) {
                    tracing::info!(driver = %key, node = %n, "cluster: driver taken over by another node");
                }
                let origin = Origin {
                    node: Arc::from(n.as_str()),
                    incarnation: i,
                    epoch: e,
                };
                self.remote.note_owner(&key, &origin);
            }
            Notice::Hello { n, i } => {
                if n != self.node {
                    self.nodes.hello(&n, i);
                    self.remote.node_gone(&self.subscriptions, |node, inc| {
                        !self.nodes.alive(node, inc)
                    });
                }
            }
            Notice::Wide { f } => {
                if let Ok(fleet) = FleetId::parse(&f) {
                    self.wide.write().insert(fleet);
                }
            }
            Notice::Fences { f, n, i } => {
                if self.is_me(&n, i) {
                    return;
                }
                let change = match f.as_deref().map(FleetId::parse) {
                    Some(Ok(fleet)) => Changed::Fences(fleet),
                    Some(Err(_)) => return,
                    None => Changed::Everything,
                };
                let _ = self.changed.send(change);
            }
            Notice::Event { f, e, n, i } => {
                if self.is_me(&n, i) {
                    return;
                }
                if let Ok(fleet) = FleetId::parse(&f) {
                    self.subscriptions.push_event(&fleet, &e);
                }
            }
        }
    }

    async fn publish_notice(&self, conn: &mut Conn, notice: &Notice) -> redis::RedisResult<()> {
        let text = serde_json::to_string(notice).unwrap_or_default();
        conn.cmd::<()>(redis::cmd("PUBLISH").arg(self.channels.control()).arg(text))
            .await
    }

    /// The fleets a region of `scope` covers.
    fn fleets_of(&self, scope: &FleetScope) -> Vec<FleetId> {
        match scope {
            FleetScope::One(f) => vec![f.clone()],
            FleetScope::All => self.fleets.read().clone(),
        }
    }
}

#[async_trait]
impl ClusterBus for RedisBus {
    fn publish(&self, update: &Arc<LiveUpdate>, previous: Option<&Position>) {
        self.local.publish(update, previous);
        let left = previous.map(|p| self.channels.cell_of(p.lat(), p.lon()));
        self.queue(update, left, true);
    }

    fn publish_status(&self, update: &Arc<LiveUpdate>, status: Status) {
        self.local.publish_status(update, status);
        self.queue(update, None, status == Status::Online);
    }

    async fn claim(&self, driver: &DriverKey) -> Epoch {
        let Some(mut conn) = self
            .connection()
            .filter(|_| self.up.load(Ordering::Relaxed))
        else {
            return 0;
        };
        let fleet = driver.fleet();
        let claim = redis::Script::new(CLAIM);
        let mut script = claim.prepare_invoke();
        script
            .key(self.channels.epochs_key(fleet))
            .key(self.channels.owners_key(fleet))
            .arg(driver.driver().as_str())
            .arg(format!("{} {}", self.incarnation, self.node));
        let claimed = tokio::time::timeout(CALL_TIMEOUT, conn.script::<u64>(&script)).await;
        let epoch = match claimed {
            Ok(Ok(epoch)) => epoch,
            Ok(Err(e)) => {
                self.failed("claiming a driver", &e);
                return 0;
            }
            Err(_) => return 0,
        };
        // What other nodes said of the driver until now is older than this session.
        let me = Origin {
            node: Arc::from(self.node.as_str()),
            incarnation: self.incarnation,
            epoch,
        };
        self.remote.note_owner(driver, &me);
        let notice = Notice::Owner {
            f: fleet.to_string(),
            d: driver.driver().to_string(),
            n: self.node.clone(),
            i: self.incarnation,
            e: epoch,
        };
        if let Err(e) = self.publish_notice(&mut conn, &notice).await {
            // The other node re-checks ownership on its heartbeat.
            self.failed("announcing a takeover", &e);
        }
        epoch
    }

    async fn remote_rows(&self, scope: &FleetScope, bbox: &BBox) -> Vec<DriverRow> {
        let fleets = self.fleets_of(scope);
        if let Some(mut conn) = self
            .connection()
            .filter(|_| self.up.load(Ordering::Relaxed))
        {
            let read = shared_state::read(
                &mut conn,
                &self.channels,
                &self.nodes,
                &fleets,
                bbox,
                since(self.max_age),
            );
            match tokio::time::timeout(CALL_TIMEOUT, read).await {
                Ok(Ok(rows)) => return rows,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cluster: shared state unreadable; using what this node heard")
                }
                Err(_) => {
                    tracing::warn!("cluster: shared state too slow; using what this node heard")
                }
            }
        }
        self.remote.in_box(scope, bbox)
    }

    fn link_state(&self) -> LinkState {
        if self.up.load(Ordering::Relaxed) {
            LinkState::Up
        } else {
            LinkState::Degraded
        }
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    fn fences_changed(&self, fleet: &FleetId) {
        self.announce(&Notice::Fences {
            f: Some(fleet.to_string()),
            n: self.node.clone(),
            i: self.incarnation,
        });
    }

    fn publish_event(&self, fleet: &FleetId, frame: &str) {
        self.subscriptions.push_event(fleet, frame);
        self.announce(&Notice::Event {
            f: fleet.to_string(),
            e: frame.to_owned(),
            n: self.node.clone(),
            i: self.incarnation,
        });
    }
}

fn since(age: Duration) -> Timestamp {
    let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millis(Timestamp::now().as_millis().saturating_sub(age))
}

/// The link task: keeps the two connections, listens, and resyncs after an outage.
struct Link {
    bus: Arc<RedisBus>,
    sessions: Sessions,
}

impl Link {
    async fn run(self, stop: CancellationToken) {
        let mut failures: u32 = 0;
        let mut linked_before = false;
        while !stop.is_cancelled() {
            let started = Instant::now();
            let result = self.serve(&stop, linked_before).await;
            let was_up = self.bus.up.load(Ordering::Relaxed);
            match result {
                Ok(()) => break,
                // Said once per outage; the retries are quiet.
                Err(e) if was_up => {
                    tracing::warn!(error = %e, "cluster: link to Redis lost; serving this node's own drivers and dashboards until it is back")
                }
                Err(e) if !linked_before && failures == 0 => {
                    tracing::warn!(error = %e, "cluster: Redis unreachable; serving this node's own drivers and dashboards until it is")
                }
                Err(e) => tracing::debug!(error = %e, "cluster: Redis still unreachable"),
            }
            linked_before |= was_up;
            self.down();
            // A link that held a while starts its backoff over.
            failures = if was_up && started.elapsed() > Duration::from_secs(10) {
                1
            } else {
                failures + 1
            };
            tokio::select! {
                _ = tokio::time::sleep(backoff(failures)) => {}
                _ = stop.cancelled() => break,
            }
        }
        self.farewell().await;
    }

    fn down(&self) {
        let bus = &self.bus;
        bus.up.store(false, Ordering::Relaxed);
        *bus.commands.write() = None;
        m::cluster_link_up(false);
    }

    /// Connects, subscribes and listens until the link fails or `stop`.
    async fn serve(&self, stop: &CancellationToken, linked_before: bool) -> Result<(), String> {
        let bus = &self.bus;
        let mut commands = bus.connector.commands().await.map_err(|e| e.to_string())?;
        let (mut pubsub, mut pushes) = bus.connector.pubsub().await.map_err(|e| e.to_string())?;
        pubsub
            .subscribe(&[bus.channels.control()], false)
            .await
            .map_err(|e| e.to_string())?;
        let probe = bus.channels.probe(&bus.node);
        pubsub
            .subscribe(std::slice::from_ref(&probe), bus.connector.sharded())
            .await
            .map_err(|e| e.to_string())?;
        let mut current = BTreeSet::new();
        self.resubscribe(&mut pubsub, &mut current)
            .await
            .map_err(|e| e.to_string())?;
        let hello = Notice::Hello {
            n: bus.node.clone(),
            i: bus.incarnation,
        };
        bus.publish_notice(&mut commands, &hello)
            .await
            .map_err(|e| e.to_string())?;
        *bus.commands.write() = Some(commands.clone());
        *bus.probe_heard.lock() = Instant::now();
        bus.nodes.forgive();
        bus.up.store(true, Ordering::Relaxed);
        // At once rather than at the next tick: snapshots need to know which
        // nodes are alive, and the other nodes this one.
        bus.heartbeat(&mut commands, &self.sessions, 0)
            .await
            .map_err(|e| e.to_string())?;
        m::cluster_link_up(true);
        if linked_before {
            m::cluster_resubscribed();
            tracing::info!("cluster: link to Redis back; resubscribed and resyncing");
        } else {
            tracing::info!(node = %bus.node, incarnation = bus.incarnation, "cluster: linked through Redis");
        }
        self.resync();
        self.listen(stop, &mut pubsub, &mut pushes, &mut current)
            .await
    }

    async fn listen(
        &self,
        stop: &CancellationToken,
        pubsub: &mut Conn,
        pushes: &mut tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
        current: &mut BTreeSet<String>,
    ) -> Result<(), String> {
        let bus = &self.bus;
        let probe_timeout = Duration::from_millis(bus.settings.probe_timeout_ms);
        let mut probe_check =
            tokio::time::interval(Duration::from_millis(bus.settings.heartbeat_ms));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                push = pushes.recv() => {
                    let push = push.ok_or("the pub/sub connection closed")?;
                    bus.on_push(&self.sessions, &push.kind, &push.data)?;
                }
                _ = bus.subscriptions.changed().notified() => {
                    self.resubscribe(pubsub, current).await.map_err(|e| e.to_string())?;
                }
                _ = bus.interest_changed.notified() => {
                    self.resubscribe(pubsub, current).await.map_err(|e| e.to_string())?;
                }
                _ = bus.link_lost.notified() => return Err("a command to Redis failed".into()),
                _ = probe_check.tick() => {
                    if bus.probe_heard.lock().elapsed() > probe_timeout {
                        return Err("this node no longer hears its own probe".into());
                    }
                }
            }
        }
    }

    /// Brings the subscribed position channels to what the dashboards need.
    async fn resubscribe(
        &self,
        pubsub: &mut Conn,
        current: &mut BTreeSet<String>,
    ) -> redis::RedisResult<()> {
        let bus = &self.bus;
        let regions = bus.subscriptions.regions();
        let fleets = bus.fleets.read().clone();
        let wanted = bus
            .channels
            .wanted(regions.iter().map(|(s, b)| (s, b)), &fleets);
        let sharded = bus.connector.sharded();
        let gone: Vec<String> = current.difference(&wanted.channels).cloned().collect();
        let new: Vec<String> = wanted.channels.difference(current).cloned().collect();
        pubsub.unsubscribe(&gone, sharded).await?;
        pubsub.subscribe(&new, sharded).await?;
        *current = wanted.channels;
        bus.subscribed.store(current.len(), Ordering::Relaxed);
        m::cluster_channels(current.len());
        let newly_wide: Vec<FleetId> = {
            let mut mine = bus.my_wide.write();
            let newly = wanted.wide.difference(&mine).cloned().collect();
            *mine = wanted.wide;
            newly
        };
        if !newly_wide.is_empty()
            && let Some(mut conn) = bus.connection()
        {
            for fleet in newly_wide {
                bus.wide.write().insert(fleet.clone());
                bus.publish_notice(
                    &mut conn,
                    &Notice::Wide {
                        f: fleet.to_string(),
                    },
                )
                .await?;
            }
        }
        Ok(())
    }

    /// After (re)connecting: this node's drivers are published again, so the
    /// shared state and the other nodes catch up, and every dashboard gets a
    /// fresh snapshot, so none keeps remote positions that went stale meanwhile.
    fn resync(&self) {
        for (update, online) in self.sessions.drivers.current() {
            self.bus.queue(&update, None, online);
        }
        // Changes made while the link was down, here or elsewhere: every
        // node reloads what it keeps a copy of.
        let _ = self.bus.changed.send(Changed::Everything);
        self.bus.announce(&Notice::Fences {
            f: None,
            n: self.bus.node.clone(),
            i: self.bus.incarnation,
        });
        let bus: Arc<dyn ClusterBus> = Arc::clone(&self.bus) as Arc<dyn ClusterBus>;
        let drivers = Arc::clone(&self.sessions.drivers);
        let subscriptions = Arc::clone(&self.bus.subscriptions);
        tokio::spawn(async move {
            for dash in subscriptions.dashboards() {
                for sub in dash.subscriptions() {
                    let Ok(bbox) = BBox::from_array(sub.bbox) else {
                        continue;
                    };
                    let rows = snapshot::rows(&drivers, bus.as_ref(), &dash.scope, &bbox).await;
                    snapshot::send(&dash, &sub.id, rows);
                }
            }
        });
    }

    /// A node that stops says so: its heartbeat goes, so the others do not wait for the timeout.
    async fn farewell(&self) {
        let bus = &self.bus;
        bus.flush().await;
        if let Some(mut conn) = bus.connection() {
            let cmd = redis::cmd("HDEL")
                .arg(bus.channels.nodes_key())
                .arg(&bus.node)
                .clone();
            let _ = tokio::time::timeout(CALL_TIMEOUT, conn.cmd::<()>(&cmd)).await;
        }
        self.down();
    }
}

/// The publisher's message budget: `rate` per second, a tenth of a second's
/// worth of burst.
struct Pace {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Pace {
    fn new(rate: f64) -> Self {
        let rate = rate.max(1.0);
        Self {
            rate,
            burst: (rate / 10.0).max(1.0),
            tokens: (rate / 10.0).max(1.0),
            at: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now;
    }

    /// How long until the budget is no longer overdrawn.
    fn wait(&mut self) -> Duration {
        self.refill();
        Duration::from_secs_f64((-self.tokens).max(0.0) / self.rate)
    }

    fn spend(&mut self, messages: usize) {
        self.refill();
        self.tokens -= messages as f64;
    }
}

/// Exponential backoff with full jitter, so nodes that lost Redis together
/// do not all come back in the same instant.
fn backoff(failures: u32) -> Duration {
    let ceiling = BACKOFF_FIRST
        .saturating_mul(1 << failures.min(5))
        .min(BACKOFF_LONGEST);
    let jitter = rand::random::<f64>();
    ceiling.mul_f64(0.5 + jitter / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_lets_bursts_through_and_stretches_under_load() {
        let mut pace = Pace::new(200.0);
        pace.spend(10);
        assert_eq!(pace.wait(), Duration::ZERO, "within the burst");
        pace.spend(30);
        let wait = pace.wait();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
    }

    #[test]
    fn backoff_grows_to_a_ceiling_and_is_jittered() {
        assert!(backoff(1) <= Duration::from_millis(200));
        assert!(backoff(1) >= Duration::from_millis(100));
        for _ in 0..20 {
            let wait = backoff(30);
            assert!(
                wait <= BACKOFF_LONGEST && wait >= BACKOFF_LONGEST / 2,
                "{wait:?}"
            );
        }
    }
}
