//! The drivers' last-known state on this node: each driver's newest position,
//! whether it is online, and the highest seq known stored. Publishing a
//! position goes through here, under the driver's own lock, which is what
//! keeps a driver's `ts` from ever going backwards on a dashboard.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::registry::DriverRegistry;
use super::update::{LiveUpdate, Status};
use crate::auth::FleetScope;
use crate::cluster::ClusterBus;
use crate::domain::{BBox, DriverId, FleetId, Position, Seq, Timestamp};
use crate::protocol::driver_view;

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

/// One driver's live state. Its mutex serialises publishing for that driver.
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
        driver_view(
            driver,
            fleet,
            &self.position,
            Some(status.as_str()),
            last_seen,
        )
    }
}

/// What publishing a position did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The newest position of the driver: shown live.
    Live,
    /// Older than what the map shows: kept for the trail only.
    Late,
}

pub struct LiveDrivers {
    drivers: DashMap<DriverId, Arc<LiveDriver>>,
    bus: Arc<dyn ClusterBus>,
}

impl LiveDrivers {
    /// Live updates leave through `bus`.
    pub fn new(bus: Arc<dyn ClusterBus>) -> Self {
        Self {
            drivers: DashMap::new(),
            bus,
        }
    }

    /// The fleet of a driver this hub has seen, stored or not yet.
    pub fn fleet_of(&self, driver: &DriverId) -> Option<FleetId> {
        self.drivers.get(driver).map(|d| d.fleet.clone())
    }

    /// The driver's live entry, made on first sight. A connected driver's
    /// entry is never forgotten, so its actor may hold on to it.
    pub fn entry(&self, driver: &DriverId, fleet: &FleetId) -> Arc<LiveDriver> {
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

    /// Forgets the drivers that are not connected and were last heard from
    /// before `before` (or never): the live map then holds the fleet that is
    /// around, not every id ever seen. Returns how many were forgotten.
    pub fn forget_silent(&self, before: Timestamp, registry: &DriverRegistry) -> usize {
        let mut forgotten = 0;
        // Lock order as everywhere: map shard, then the driver's mutex.
        self.drivers.retain(|id, live| {
            let keep = registry.is_connected(id)
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

    /// Shows a position live if it is the driver's newest; otherwise it is
    /// late and only its trail keeps it.
    pub fn publish(&self, live: &LiveDriver, position: &Position) -> Published {
        let mut state = live.state.lock();
        state.last_seen = Some(Timestamp::now());
        if state.position.is_some_and(|p| p.ts() >= position.ts()) {
            return Published::Late;
        }
        let update = Arc::new(LiveUpdate::new(&live.driver, &live.fleet, position));
        let previous = state.position.replace(*position);
        state.update = Some(Arc::clone(&update));
        let came_back = !state.online;
        state.online = true;
        self.bus.publish(&update, previous.as_ref());
        if came_back {
            self.bus
                .publish_status(&live.fleet, &live.driver, position, Status::Online);
        }
        Published::Live
    }

    /// Marks a driver online or offline and tells the dashboards that see it.
    pub fn set_status(&self, live: &LiveDriver, status: Status) {
        let mut state = live.state.lock();
        let online = status == Status::Online;
        if state.online == online && state.position.is_some() {
            return;
        }
        state.online = online;
        if let Some(position) = state.position {
            self.bus
                .publish_status(&live.fleet, &live.driver, &position, status);
        }
    }

    /// The last known position of every driver in `scope` inside `bbox`.
    pub fn in_box(&self, scope: &FleetScope, bbox: &BBox) -> Vec<DriverRow> {
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
}

/// How often [`run_housekeeping`] looks for drivers to forget.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);

/// Hourly until `shutdown`: forgets drivers silent for longer than `forget_after`
/// (the oldest fix the hub accepts: a driver silent for longer has no live
/// position worth showing).
pub async fn run_housekeeping(
    drivers: Arc<LiveDrivers>,
    registry: Arc<DriverRegistry>,
    forget_after: Duration,
    shutdown: CancellationToken,
) {
    let age = i64::try_from(forget_after.as_millis()).unwrap_or(i64::MAX);
    crate::periodic::run_every(HOUSEKEEPING_EVERY, shutdown, || {
        let before = Timestamp::from_millis(Timestamp::now().as_millis().saturating_sub(age));
        let forgotten = drivers.forget_silent(before, &registry);
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
    use crate::cluster::LocalBus;
    use crate::live::{DriverHandle, Subscriptions};

    fn id(raw: &str) -> DriverId {
        DriverId::parse(raw).expect("a valid id")
    }

    #[test]
    fn silent_drivers_are_forgotten_unless_connected() {
        let subscriptions = Arc::new(Subscriptions::new(64));
        let drivers = LiveDrivers::new(Arc::new(LocalBus::new(subscriptions)));
        let registry = DriverRegistry::default();
        let fleet = FleetId::parse("acme").expect("a valid fleet");
        let here = Position::new(-12.05, -77.04, Timestamp::now(), None, None, None)
            .expect("a valid position");
        for driver in ["gone", "connected"] {
            drivers.publish(&drivers.entry(&id(driver), &fleet), &here);
        }
        let (stop, _stopped) = tokio::sync::oneshot::channel();
        registry.register(&id("connected"), DriverHandle { conn: 1, stop });
        let everywhere = BBox::new(-180.0, -90.0, 180.0, 90.0).expect("a valid box");

        // Heard from after the cut-off: kept.
        let long_ago = Timestamp::from_millis(Timestamp::now().as_millis() - 60_000);
        assert_eq!(drivers.forget_silent(long_ago, &registry), 0);
        // Silent since before the cut-off: forgotten, unless connected.
        let later = Timestamp::from_millis(Timestamp::now().as_millis() + 60_000);
        assert_eq!(drivers.forget_silent(later, &registry), 1);
        let left: Vec<_> = drivers
            .in_box(&FleetScope::All, &everywhere)
            .iter()
            .map(|r| r.update.driver.to_string())
            .collect();
        assert_eq!(left, vec!["connected".to_owned()]);
    }
}
