//! The drivers' last-known state on this node: each driver's newest position,
//! whether it is online, and the highest seq known stored. Publishing a
//! position goes through here, under the driver's own lock, which is what
//! keeps a driver's `ts` from ever going backwards on a dashboard. Drivers
//! are keyed by [`DriverKey`] (fleet and id): the same id in two fleets is
//! two drivers with two states.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::registry::DriverRegistry;
use super::update::{LiveUpdate, Status};
use crate::auth::FleetScope;
use crate::cluster::ClusterBus;
use crate::domain::{BBox, DriverKey, Position, Seq, Timestamp};
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
    /// The driver's session moved to another node: this state is stale, not
    /// to be shown online or published again, until the driver is back here.
    moved: bool,
    /// The newest fix the input filters let through (shown live, or about
    /// to be): what they judge the next fix against. Kept apart from
    /// `position`, which is set only once published, so that two paths of
    /// one driver cannot both pass the same duplicate.
    screened: Option<Screened>,
}

/// A fix the input filters kept, with the seq it came under.
#[derive(Debug, Clone, Copy)]
pub struct Screened {
    pub seq: Seq,
    pub position: Position,
}

/// One driver's live state. Its mutex serialises publishing for that driver.
pub struct LiveDriver {
    pub key: DriverKey,
    state: Mutex<LiveState>,
    /// The ownership epoch of the driver's session on this node.
    epoch: AtomicU64,
}

impl LiveDriver {
    /// The driver's session claimed `epoch`: its updates carry it from now on.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// Judges `position` by `judge`, given the newest fix judged before it
    /// and kept, under the driver's lock; when kept and newer than that fix,
    /// `position` takes its place.
    pub fn screen<R>(
        &self,
        seq: Seq,
        position: &Position,
        judge: impl FnOnce(Option<&Screened>) -> Result<(), R>,
    ) -> Result<(), R> {
        let mut state = self.state.lock();
        judge(state.screened.as_ref())?;
        if state
            .screened
            .is_none_or(|last| position.ts() > last.position.ts())
        {
            state.screened = Some(Screened {
                seq,
                position: *position,
            });
        }
        Ok(())
    }

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
        let key = &self.update.key;
        driver_view(
            key.driver(),
            key.fleet(),
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
    drivers: DashMap<DriverKey, Arc<LiveDriver>>,
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

    /// Whether this hub knows the driver live (seen lately, stored or not yet).
    pub fn knows(&self, driver: &DriverKey) -> bool {
        self.drivers.contains_key(driver)
    }

    /// The driver's live entry, made on first sight. A connected driver's
    /// entry is never forgotten, so its actor may hold on to it.
    pub fn entry(&self, driver: &DriverKey) -> Arc<LiveDriver> {
        if let Some(d) = self.drivers.get(driver) {
            return Arc::clone(&d);
        }
        let entry = self.drivers.entry(driver.clone()).or_insert_with(|| {
            Arc::new(LiveDriver {
                key: driver.clone(),
                state: Mutex::new(LiveState::default()),
                epoch: AtomicU64::new(0),
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
        self.drivers.retain(|key, live| {
            let keep = registry.is_connected(key)
                || live.state.lock().last_seen.is_some_and(|t| t >= before);
            forgotten += usize::from(!keep);
            keep
        });
        forgotten
    }

    /// Highest seq this node has seen committed for the driver.
    pub fn committed_seq(&self, driver: &DriverKey) -> Seq {
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
        state.moved = false;
        if state.position.is_some_and(|p| p.ts() >= position.ts()) {
            return Published::Late;
        }
        let epoch = live.epoch.load(Ordering::Relaxed);
        let update = Arc::new(LiveUpdate::new(&live.key, position, epoch));
        let previous = state.position.replace(*position);
        state.update = Some(Arc::clone(&update));
        let came_back = !state.online;
        state.online = true;
        self.bus.publish(&update, previous.as_ref());
        if came_back {
            self.bus.publish_status(&update, Status::Online);
        }
        Published::Live
    }

    /// Marks a driver online or offline and tells the dashboards that see it.
    pub fn set_status(&self, live: &LiveDriver, status: Status) {
        let mut state = live.state.lock();
        let online = status == Status::Online;
        state.moved &= !online;
        if state.online == online && state.position.is_some() {
            return;
        }
        state.online = online;
        if let Some(update) = &state.update {
            self.bus.publish_status(update, status);
        }
    }

    /// Every driver's newest update and whether it is online, for a node that
    /// republishes its drivers after its cluster link came back.
    pub fn current(&self) -> Vec<(Arc<LiveUpdate>, bool)> {
        self.drivers
            .iter()
            .filter_map(|entry| {
                let state = entry.state.lock();
                let update = state.update.as_ref().filter(|_| !state.moved)?;
                Some((Arc::clone(update), state.online))
            })
            .collect()
    }

    /// The driver's session moved to another node (which now publishes it):
    /// this node's state of it goes offline without telling anyone.
    pub fn moved(&self, driver: &DriverKey) {
        if let Some(live) = self.drivers.get(driver) {
            let mut state = live.state.lock();
            state.online = false;
            state.moved = true;
            // Another node judges its fixes now: this one's basis is stale.
            state.screened = None;
        }
    }

    /// The last known position of every driver in `scope` inside `bbox`.
    pub fn in_box(&self, scope: &FleetScope, bbox: &BBox) -> Vec<DriverRow> {
        let mut rows = Vec::new();
        for entry in self.drivers.iter() {
            let live = entry.value();
            if !scope.allows(live.key.fleet()) {
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

    fn key(fleet: &str, driver: &str) -> DriverKey {
        DriverKey::of(fleet, driver)
    }

    fn drivers() -> LiveDrivers {
        let subscriptions = Arc::new(Subscriptions::new(64));
        LiveDrivers::new(Arc::new(LocalBus::new(subscriptions)))
    }

    fn at(lat: f64, lon: f64) -> Position {
        Position::new(lat, lon, Timestamp::now(), None, None, None).expect("a valid position")
    }

    fn listed(drivers: &LiveDrivers, scope: &FleetScope) -> Vec<String> {
        let mut keys: Vec<_> = drivers
            .in_box(scope, &BBox::world())
            .iter()
            .map(|r| r.update.key.to_string())
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn silent_drivers_are_forgotten_unless_connected() {
        let drivers = drivers();
        let registry = DriverRegistry::default();
        let here = at(-12.05, -77.04);
        for (fleet, driver) in [
            ("acme", "gone"),
            ("acme", "connected"),
            ("beta", "connected"),
        ] {
            drivers.publish(&drivers.entry(&key(fleet, driver)), &here);
        }
        let (stop, _stopped) = tokio::sync::oneshot::channel();
        registry.register(
            &key("acme", "connected"),
            DriverHandle {
                conn: 1,
                epoch: 0,
                stop,
            },
        );

        // Heard from after the cut-off: kept.
        let long_ago = Timestamp::from_millis(Timestamp::now().as_millis() - 60_000);
        assert_eq!(drivers.forget_silent(long_ago, &registry), 0);
        // Silent since before the cut-off: forgotten, unless connected (in its own fleet).
        let later = Timestamp::from_millis(Timestamp::now().as_millis() + 60_000);
        assert_eq!(drivers.forget_silent(later, &registry), 2);
        assert_eq!(listed(&drivers, &FleetScope::All), vec!["acme/connected"]);
    }

    #[test]
    fn the_same_id_in_two_fleets_is_two_drivers() {
        let drivers = drivers();
        let (acme, beta) = (key("acme", "d1"), key("beta", "d1"));
        drivers.publish(&drivers.entry(&acme), &at(-12.05, -77.04));
        drivers.publish(&drivers.entry(&beta), &at(48.85, 2.35));
        drivers.entry(&acme).note_committed(7);
        assert_eq!(drivers.committed_seq(&acme), 7);
        assert_eq!(drivers.committed_seq(&beta), 0);
        let acme_only = FleetScope::One(acme.fleet().clone());
        assert_eq!(listed(&drivers, &acme_only), vec!["acme/d1"]);
        let rows = drivers.in_box(&acme_only, &BBox::world());
        assert_eq!(rows[0].position.lat(), -12.05, "acme's own fix");
        assert_eq!(
            listed(&drivers, &FleetScope::All),
            vec!["acme/d1", "beta/d1"]
        );
    }
}
