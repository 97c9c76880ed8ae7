//! The cluster bus: how a driver's live updates reach the dashboards that
//! watch it, on this node and on the others, and how the nodes agree on who
//! owns a driver. One trait, one file per backend: [`LocalBus`] for a single
//! node (no Redis, nothing on the hot path but the local fan-out) and
//! [`RedisBus`] for several nodes kept in sync through Redis. The channel
//! scheme, the guarantees and the failure matrix are in `docs/CLUSTER.md`.

mod channels;
mod link;
mod local;
mod nodes;
mod redis;
mod remote;
mod shared_state;
mod wire;

use std::sync::Arc;

use async_trait::async_trait;

use crate::auth::FleetScope;
use crate::config::Settings;
use crate::domain::{BBox, DriverKey, FleetId, Position};
use crate::live::{DriverRow, LiveUpdate, Status, Subscriptions};

pub use self::redis::{ClusterTask, RedisBus};
pub use local::LocalBus;

/// A driver's ownership epoch: it grows with every connection of the driver
/// anywhere in the cluster, and the session with the highest one is the
/// driver's. 0 means not claimed (one node, or Redis unreachable).
pub type Epoch = u64;

/// The state of the link to the other nodes, for `/readyz` and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// One node: there is no link.
    Local,
    Up,
    /// Redis is unreachable: this node serves its own drivers and dashboards.
    Degraded,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Local => "local",
            LinkState::Up => "ok",
            LinkState::Degraded => "degraded",
        }
    }
}

/// Carries live updates from the node that owns a driver to every dashboard
/// that watches it, and settles who owns a driver.
///
/// The contract every backend keeps:
/// - `publish` and `publish_status` come from the driver's owner, one at a
///   time per driver and in fix order (the caller holds the driver's
///   live-state lock), so a backend that keeps that order per driver keeps
///   every dashboard's markers from going back in time.
/// - Neither blocks nor fails the caller: they run on the ingest hot path
///   under that lock. Delivery to this node's dashboards happens before the
///   call returns; delivery to other nodes is at most once, may lag, and
///   converges to the newest position through snapshots and resync.
/// - Live delivery is not durability: trails are stored by the trail writer
///   whatever the bus does.
/// - `claim` and `remote_rows` are bounded in time: when the other nodes
///   cannot be reached they answer from what this node knows.
#[async_trait]
pub trait ClusterBus: Send + Sync + 'static {
    /// A driver's newest position; `previous` is the one it replaces, so the
    /// dashboards it just left are told it moved out of their view.
    fn publish(&self, update: &Arc<LiveUpdate>, previous: Option<&Position>);

    /// A driver went online or offline; `update` is its last position.
    fn publish_status(&self, update: &Arc<LiveUpdate>, status: Status);

    /// Makes this node the driver's owner, for a driver that just
    /// connected: the session it had on any other node is closed with 4001.
    async fn claim(&self, driver: &DriverKey) -> Epoch;

    /// The drivers of other nodes in `scope` inside `bbox`, for snapshots
    /// and listings (this node's own drivers are the caller's to add).
    async fn remote_rows(&self, scope: &FleetScope, bbox: &BBox) -> Vec<DriverRow>;

    fn link_state(&self) -> LinkState;

    /// "local", or the clustered backend's name, for logs.
    fn backend(&self) -> &'static str;

    /// Tells the other nodes that `fleet`'s geofences changed in the
    /// database, so that they reload them ([`Changed`]). Best effort and
    /// never blocking: a notice lost with the link is made up for when the
    /// link comes back (every node then reloads everything).
    fn fences_changed(&self, fleet: &FleetId);

    /// An event this node stored, for the dashboards that see `fleet`, on
    /// this node and the others: its frame, `{"type":"event",...}`. Live
    /// delivery is best effort, like positions (the event is stored and
    /// listed by `GET /api/v1/events`); never blocking.
    fn publish_event(&self, fleet: &FleetId, frame: &str);
}

/// What another node changed of what every node keeps a copy of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// One fleet's geofences or alert rules.
    Fences(FleetId),
    /// Anything: changes may have been missed while a link was down.
    Everything,
}

/// The bus start-up wires in: the trait object every part uses, and the
/// Redis backend itself when there is one, whose tasks start-up spawns.
pub struct Built {
    pub bus: Arc<dyn ClusterBus>,
    pub redis: Option<Arc<RedisBus>>,
}

/// The bus the settings ask for: Redis when `redis.url` is set, local otherwise.
pub fn build(
    settings: &Settings,
    node_id: &str,
    subscriptions: Arc<Subscriptions>,
) -> anyhow::Result<Built> {
    if !settings.redis.enabled() {
        let bus = Arc::new(LocalBus::new(subscriptions));
        return Ok(Built { bus, redis: None });
    }
    let redis = Arc::new(RedisBus::new(settings, node_id, subscriptions)?);
    let bus = Arc::clone(&redis) as Arc<dyn ClusterBus>;
    Ok(Built {
        bus,
        redis: Some(redis),
    })
}
