//! The hub: what every session shares. The live state of each driver (last
//! position, online or not), the registry of connected driver actors, and the
//! dashboards' subscriptions in a [`SpatialIndex`] so a position reaches only
//! the dashboards whose regions contain it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::auth::FleetScope;
use crate::domain::{BBox, DriverId, FleetId, Position, Seq, Timestamp};
use crate::metrics as m;
use crate::outbox::{LiveUpdate, Outbox, Pushed, Status};
use crate::protocol::DriverView;
use crate::spatial_index::{SpatialIndex, SubKey};

/// Identifies one WebSocket connection for the lifetime of the process.
pub type ConnId = u64;

/// Scope key in the index: a fleet's dispatchers, or admins who see all fleets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexScope {
    Fleet(FleetId),
    All,
}

impl From<&FleetScope> for IndexScope {
    fn from(scope: &FleetScope) -> Self {
        match scope {
            FleetScope::One(f) => IndexScope::Fleet(f.clone()),
            FleetScope::All => IndexScope::All,
        }
    }
}

/// Why a driver actor is told to stop, the one thing it hears from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The same driver connected again: close with 4001.
    Replaced,
    /// The hub is shutting down: close with 1001.
    ShuttingDown,
}

/// How the registry reaches a connected driver actor. A oneshot, because the
/// actor polls it on every position: that costs one atomic load.
pub struct DriverHandle {
    pub conn: ConnId,
    pub stop: oneshot::Sender<Stop>,
}

#[derive(Default)]
struct LiveState {
    update: Option<Arc<LiveUpdate>>,
    position: Option<Position>,
    online: bool,
    /// Hub clock when the driver was last heard from.
    last_seen: Option<Timestamp>,
    /// Highest seq known stored, a fallback for `welcome` when the store is unreachable.
    committed_seq: Seq,
}

/// One driver's live state. Its mutex serialises publishing for that driver,
/// which is what guarantees dashboards never see its `ts` go backwards.
pub struct LiveDriver {
    pub driver: DriverId,
    pub fleet: FleetId,
    state: Mutex<LiveState>,
}

impl LiveDriver {
    /// Remembers that everything up to `seq` is stored.
    pub fn note_committed(&self, seq: Seq) {
        let mut state = self.state.lock();
        state.committed_seq = state.committed_seq.max(seq);
    }
}

/// A snapshot row: the driver's last position and status.
pub struct DriverRow {
    pub update: Arc<LiveUpdate>,
    pub position: Position,
    pub online: bool,
    pub last_seen: Option<Timestamp>,
}

impl DriverRow {
    /// The protocol's `P` with the driver's status, and `last_seen` when asked.
    pub fn view(&self, with_last_seen: bool) -> Box<RawValue> {
        let status = if self.online {
            Status::Online
        } else {
            Status::Offline
        };
        let last_seen = self.last_seen.filter(|_| with_last_seen);
        let (driver, fleet) = (&self.update.driver, &self.update.fleet);
        view_json(driver, fleet, &self.position, Some(status), last_seen)
    }
}

/// What a dashboard has subscribed to, for the admin listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubscriptionInfo {
    pub id: String,
    pub bbox: [f64; 4],
}

pub struct DashboardEntry {
    pub conn: ConnId,
    pub role: &'static str,
    pub scope: FleetScope,
    pub outbox: Arc<Outbox>,
    subscriptions: Mutex<Vec<(String, SubKey, BBox)>>,
}

impl DashboardEntry {
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        self.subscriptions
            .lock()
            .iter()
            .map(|(id, _, b)| SubscriptionInfo {
                id: id.clone(),
                bbox: b.as_array(),
            })
            .collect()
    }
}

pub enum PublishOutcome {
    /// The newest position of the driver: shown live.
    Live,
    /// Older than what the map shows: kept for the trail only.
    Late,
}

pub struct Hub {
    node_id: String,
    drivers: DashMap<DriverId, Arc<LiveDriver>>,
    sessions: DashMap<DriverId, DriverHandle>,
    dashboards: DashMap<ConnId, Arc<DashboardEntry>>,
    index: RwLock<SpatialIndex<IndexScope, Arc<Outbox>>>,
    next_id: AtomicU64,
    queued_bytes: Arc<AtomicUsize>,
}

impl Hub {
    pub fn new(node_id: String) -> Self {
        Self {
            node_id,
            drivers: DashMap::new(),
            sessions: DashMap::new(),
            dashboards: DashMap::new(),
            index: RwLock::new(SpatialIndex::new()),
            next_id: AtomicU64::new(1),
            queued_bytes: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Bytes waiting in all dashboards' outboxes.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// The fleet of a driver this hub has seen, stored or not yet.
    pub fn fleet_of(&self, driver: &DriverId) -> Option<FleetId> {
        self.drivers.get(driver).map(|d| d.fleet.clone())
    }

    /// The driver's live entry, made on first sight. A connected driver's
    /// entry is never forgotten, so its actor may hold on to it.
    pub fn live_driver(&self, driver: &DriverId, fleet: &FleetId) -> Arc<LiveDriver> {
        if let Some(d) = self.drivers.get(driver) {
            return Arc::clone(&d);
        }
        let entry = self.drivers.entry(driver.clone()).or_insert_with(|| {
            Arc::new(LiveDriver {
                driver: driver.clone(),
                fleet: fleet.clone(),
                state: Mutex::new(LiveState::default()),
            })
        });
        Arc::clone(&entry)
    }

    // ---- drivers -------------------------------------------------------

    /// Registers a connected driver actor. The actor it replaces, if any, is
    /// told to close with 4001.
    pub fn register_driver(&self, driver: &DriverId, handle: DriverHandle) {
        if let Some(old) = self.sessions.insert(driver.clone(), handle) {
            let _ = old.stop.send(Stop::Replaced);
        }
    }

    /// Removes the driver's registration if it is still this connection's.
    /// Returns whether it was (a replaced session must not mark the driver offline).
    pub fn unregister_driver(&self, driver: &DriverId, conn: ConnId) -> bool {
        self.sessions
            .remove_if(driver, |_, h| h.conn == conn)
            .is_some()
    }

    /// Tells every connected driver actor to close: the hub is shutting down.
    /// An actor that registers after this sees the shutdown token instead.
    pub fn stop_drivers(&self) {
        let ids: Vec<DriverId> = self.sessions.iter().map(|e| e.key().clone()).collect();
        for id in ids {
            if let Some((_, handle)) = self.sessions.remove(&id) {
                let _ = handle.stop.send(Stop::ShuttingDown);
            }
        }
    }

    pub fn connected_drivers(&self) -> usize {
        self.sessions.len()
    }

    /// Forgets the drivers that are not connected and were last heard from
    /// before `before` (or never): the live map then holds the fleet that is
    /// around, not every id ever seen. Returns how many were forgotten.
    pub fn forget_silent_drivers(&self, before: Timestamp) -> usize {
        let mut forgotten = 0;
        // Lock order as everywhere: map shard, then the driver's mutex.
        self.drivers.retain(|id, live| {
            let keep = self.sessions.contains_key(id)
                || live.state.lock().last_seen.is_some_and(|t| t >= before);
            forgotten += usize::from(!keep);
            keep
        });
        forgotten
    }

    /// Highest seq this node has seen committed for the driver.
    pub fn committed_seq(&self, driver: &DriverId) -> Seq {
        self.drivers
            .get(driver)
            .map(|d| d.state.lock().committed_seq)
            .unwrap_or(0)
    }

    pub fn note_committed(&self, driver: &DriverId, fleet: &FleetId, seq: Seq) {
        self.live_driver(driver, fleet).note_committed(seq);
    }

    /// Shows a position live if it is the driver's newest; otherwise it is late
    /// and only its trail keeps it.
    pub fn publish(
        &self,
        driver: &DriverId,
        fleet: &FleetId,
        position: &Position,
    ) -> PublishOutcome {
        self.publish_to(&self.live_driver(driver, fleet), fleet, position)
    }

    /// `publish` for a caller that holds the driver's entry (its actor).
    pub fn publish_to(
        &self,
        live: &LiveDriver,
        fleet: &FleetId,
        position: &Position,
    ) -> PublishOutcome {
        let driver = &live.driver;
        let mut state = live.state.lock();
        state.last_seen = Some(Timestamp::now());
        if state.position.is_some_and(|p| p.ts() >= position.ts()) {
            return PublishOutcome::Late;
        }
        let update = Arc::new(make_update(driver, fleet, position, None));
        let previous = state.position.replace(*position);
        state.update = Some(Arc::clone(&update));
        let came_back = !state.online;
        state.online = true;
        self.fan_out(&update, previous.as_ref());
        if came_back {
            self.push_status(fleet, driver, position, Status::Online);
        }
        PublishOutcome::Live
    }

    /// Marks a driver online or offline and tells the dashboards that see it.
    pub fn set_status(&self, driver: &DriverId, fleet: &FleetId, status: Status) {
        let live = self.live_driver(driver, fleet);
        let mut state = live.state.lock();
        let online = status == Status::Online;
        if state.online == online && state.position.is_some() {
            return;
        }
        state.online = online;
        if let Some(position) = state.position {
            self.push_status(fleet, driver, &position, status);
        }
    }

    fn push_status(&self, fleet: &FleetId, driver: &DriverId, at: &Position, status: Status) {
        let scopes = [&IndexScope::Fleet(fleet.clone()), &IndexScope::All];
        self.index
            .read()
            .for_each_match(&scopes, at.lat(), at.lon(), |outbox| {
                outbox.push_status(driver, status)
            });
    }

    /// Hands the update to every dashboard whose box holds the new position or
    /// held the previous one (so a marker that leaves the view moves out of it
    /// rather than freezing at the edge).
    fn fan_out(&self, update: &Arc<LiveUpdate>, previous: Option<&Position>) {
        let scopes = [&IndexScope::Fleet(update.fleet.clone()), &IndexScope::All];
        let index = self.index.read();
        let push = |outbox: &Arc<Outbox>| match outbox.push_position(update) {
            Pushed::Queued => m::fanned_out(),
            Pushed::Coalesced => {
                m::fanned_out();
                m::coalesced_drop();
            }
            Pushed::Stale | Pushed::Refused => {}
        };
        let mut reached: Vec<*const Outbox> = Vec::new();
        index.for_each_match(&scopes, update.lat, update.lon, |outbox| {
            reached.push(Arc::as_ptr(outbox));
            push(outbox);
        });
        if let Some(prev) = previous {
            // Only the dashboards the driver just left: the others have it already.
            index.for_each_match(&scopes, prev.lat(), prev.lon(), |outbox| {
                if !reached.contains(&Arc::as_ptr(outbox)) {
                    reached.push(Arc::as_ptr(outbox));
                    push(outbox);
                }
            });
        }
    }

    /// The last known position of every driver in `scope` inside `bbox`.
    pub fn drivers_in(&self, scope: &FleetScope, bbox: &BBox) -> Vec<DriverRow> {
        let mut rows = Vec::new();
        for entry in self.drivers.iter() {
            let live = entry.value();
            if !scope.allows(&live.fleet) {
                continue;
            }
            let state = live.state.lock();
            let (Some(update), Some(position)) = (&state.update, state.position) else {
                continue;
            };
            if bbox.contains(position.lat(), position.lon()) {
                rows.push(DriverRow {
                    update: Arc::clone(update),
                    position,
                    online: state.online,
                    last_seen: state.last_seen,
                });
            }
        }
        rows
    }

    // ---- dashboards ----------------------------------------------------

    pub fn add_dashboard(&self, role: &'static str, scope: FleetScope) -> Arc<DashboardEntry> {
        let entry = Arc::new(DashboardEntry {
            conn: self.next_id(),
            role,
            scope,
            outbox: Arc::new(Outbox::new(Arc::clone(&self.queued_bytes))),
            subscriptions: Mutex::new(Vec::new()),
        });
        self.dashboards.insert(entry.conn, Arc::clone(&entry));
        entry
    }

    /// Adds or replaces the dashboard's subscription `id`. Returns `false` when
    /// it would exceed `max` subscriptions.
    pub fn subscribe(&self, dash: &DashboardEntry, id: &str, bbox: BBox, max: usize) -> bool {
        let mut subs = dash.subscriptions.lock();
        let count = subs.len();
        let key = match subs.iter_mut().find(|(sid, _, _)| sid == id) {
            Some(existing) => {
                existing.2 = bbox;
                existing.1
            }
            None if count >= max => return false,
            None => {
                let key = self.next_id();
                subs.push((id.to_owned(), key, bbox));
                key
            }
        };
        let scope = IndexScope::from(&dash.scope);
        self.index
            .write()
            .insert(key, scope, bbox, Arc::clone(&dash.outbox));
        true
    }

    pub fn unsubscribe(&self, dash: &DashboardEntry, id: &str) -> bool {
        let mut subs = dash.subscriptions.lock();
        let Some(pos) = subs.iter().position(|(sid, _, _)| sid == id) else {
            return false;
        };
        let (_, key, _) = subs.remove(pos);
        self.index.write().remove(key);
        true
    }

    pub fn remove_dashboard(&self, dash: &DashboardEntry) {
        let subs = std::mem::take(&mut *dash.subscriptions.lock());
        let mut index = self.index.write();
        for (_, key, _) in subs {
            index.remove(key);
        }
        drop(index);
        self.dashboards.remove(&dash.conn);
    }

    pub fn dashboards(&self) -> Vec<Arc<DashboardEntry>> {
        let mut all: Vec<_> = self
            .dashboards
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect();
        all.sort_by_key(|d| d.conn);
        all
    }

    pub fn subscription_count(&self) -> usize {
        self.index.read().len()
    }
}

/// Serialises the protocol's `P` once per position; every dashboard shares it.
pub fn make_update(
    driver: &DriverId,
    fleet: &FleetId,
    position: &Position,
    status: Option<Status>,
) -> LiveUpdate {
    LiveUpdate {
        driver: driver.clone(),
        fleet: fleet.clone(),
        ts: position.ts(),
        lat: position.lat(),
        lon: position.lon(),
        json: view_json(driver, fleet, position, status, None),
        received: Instant::now(),
    }
}

pub fn view_json(
    driver: &DriverId,
    fleet: &FleetId,
    position: &Position,
    status: Option<Status>,
    last_seen: Option<Timestamp>,
) -> Box<RawValue> {
    let view = DriverView {
        driver: driver.as_str(),
        fleet: fleet.as_str(),
        lat: position.lat(),
        lon: position.lon(),
        ts: position.ts(),
        speed: position.speed(),
        heading: position.heading(),
        status: status.map(Status::as_str),
        last_seen,
    };
    serde_json::value::to_raw_value(&view).unwrap_or_else(|e| {
        tracing::error!(error = %e, "failed to serialise a driver view");
        Box::<RawValue>::default()
    })
}

/// How often [`run_housekeeping`] looks for drivers to forget.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Hourly until `shutdown`: forgets drivers silent for longer than `forget_after`
/// (the oldest fix the hub accepts: a driver silent for longer has no live
/// position worth showing).
pub async fn run_housekeeping(
    hub: Arc<Hub>,
    forget_after: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let age = i64::try_from(forget_after.as_millis()).unwrap_or(i64::MAX);
    crate::periodic::run_every(HOUSEKEEPING_EVERY, shutdown, || {
        let before = Timestamp::from_millis(Timestamp::now().as_millis().saturating_sub(age));
        let forgotten = hub.forget_silent_drivers(before);
        if forgotten > 0 {
            tracing::info!(forgotten, "forgot drivers silent for too long");
        }
        std::future::ready(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> DriverId {
        DriverId::parse(raw).expect("a valid id")
    }

    #[test]
    fn silent_drivers_are_forgotten_unless_connected() {
        let hub = Hub::new("test".into());
        let fleet = FleetId::parse("acme").expect("a valid fleet");
        let here = Position::new(-12.05, -77.04, Timestamp::now(), None, None, None)
            .expect("a valid position");
        for driver in ["gone", "connected"] {
            hub.publish(&id(driver), &fleet, &here);
        }
        let (stop, _stopped) = oneshot::channel();
        hub.register_driver(&id("connected"), DriverHandle { conn: 1, stop });
        let everywhere = BBox::new(-180.0, -90.0, 180.0, 90.0).expect("a valid box");

        // Heard from after the cut-off: kept.
        let long_ago = Timestamp::from_millis(Timestamp::now().as_millis() - 60_000);
        assert_eq!(hub.forget_silent_drivers(long_ago), 0);
        // Silent since before the cut-off: forgotten, unless connected.
        let later = Timestamp::from_millis(Timestamp::now().as_millis() + 60_000);
        assert_eq!(hub.forget_silent_drivers(later), 1);
        let left: Vec<_> = hub
            .drivers_in(&FleetScope::All, &everywhere)
            .iter()
            .map(|r| r.update.driver.to_string())
            .collect();
        assert_eq!(left, vec!["connected".to_owned()]);
    }
}
