//! Drivers of other nodes that this node has heard of on the channels it
//! listens to: their newest position, status and owner. Remote positions go
//! through the same spatial index, coalescing and time order as local ones:
//! a position older than the one known is not shown, and a status change is
//! taken only from the node that sent the position shown.

use std::sync::Arc;

use dashmap::DashMap;
use serde_json::value::RawValue;

use crate::auth::FleetScope;
use crate::domain::{BBox, DriverKey, Position, Timestamp};
use crate::live::{DriverRow, LiveUpdate, Status, Subscriptions};

/// Where an update came from: a node's incarnation and the driver's epoch there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub node: Arc<str>,
    pub incarnation: u64,
    pub epoch: u64,
}

struct RemoteDriver {
    update: Arc<LiveUpdate>,
    position: Position,
    online: bool,
    origin: Origin,
    /// This node's clock when last heard of.
    heard: Timestamp,
}

#[derive(Default)]
pub struct RemoteDrivers {
    drivers: DashMap<DriverKey, RemoteDriver>,
}

impl RemoteDrivers {
    /// How many remote drivers this node knows.
    pub fn count(&self) -> usize {
        self.drivers.len()
    }

    /// Takes a position from another node and shows it to this node's
    /// dashboards if it is the driver's newest, from its newest owner.
    /// Returns whether it was shown.
    pub fn apply(
        &self,
        subscriptions: &Subscriptions,
        key: DriverKey,
        position: Position,
        view: &RawValue,
        online: bool,
        origin: &Origin,
    ) -> bool {
        // Built only for what will be shown: most remote items of a busy
        // channel are fine, but a stale one must cost no allocation.
        let update = || {
            Arc::new(LiveUpdate::from_view(
                key.clone(),
                &position,
                view.to_owned(),
                origin.epoch,
            ))
        };
        let mut entry = match self.drivers.entry(key.clone()) {
            dashmap::Entry::Occupied(o) => o,
            dashmap::Entry::Vacant(v) => {
                let update = update();
                let driver = RemoteDriver {
                    update: Arc::clone(&update),
                    position,
                    online,
                    origin: origin.clone(),
                    heard: Timestamp::now(),
                };
                v.insert(driver);
                subscriptions.fan_out(&update, None);
                subscriptions.push_status(&update, status_of(online));
                return true;
            }
        };
        let known = entry.get_mut();
        // Fix time orders positions, whichever node sent them: epochs are not
        // comparable across a Redis that lost them (restarted empty) or a
        // session claimed while Redis was down (epoch 0).
        let newer = position.ts() > known.position.ts();
        let owner_on_same_fix =
            position.ts() == known.position.ts() && known.origin.node == origin.node;
        if !(newer || owner_on_same_fix) {
            // An older fix, or another node's word on the fix already shown.
            return false;
        }
        known.origin = origin.clone();
        known.heard = Timestamp::now();
        if newer {
            let update = update();
            let previous = std::mem::replace(&mut known.position, position);
            known.update = Arc::clone(&update);
            subscriptions.fan_out(&update, Some(&previous));
        }
        if known.online != online {
            known.online = online;
            subscriptions.push_status(&known.update, status_of(online));
        }
        newer
    }

    /// A driver moved to `origin` (a takeover): its status is the new owner's
    /// to tell, and the old owner's death no longer concerns it.
    pub fn note_owner(&self, key: &DriverKey, origin: &Origin) {
        if let Some(mut known) = self.drivers.get_mut(key) {
            known.origin = origin.clone();
        }
    }

    /// Shows offline every driver last owned by the node incarnations `gone`
    /// says are gone. Returns how many.
    pub fn node_gone(
        &self,
        subscriptions: &Subscriptions,
        gone: impl Fn(&str, u64) -> bool,
    ) -> usize {
        let mut count = 0;
        for mut entry in self.drivers.iter_mut() {
            let known = entry.value_mut();
            if known.online && gone(&known.origin.node, known.origin.incarnation) {
                known.online = false;
                subscriptions.push_status(&known.update, Status::Offline);
                count += 1;
            }
        }
        count
    }

    /// Forgets drivers not heard of since `before`.
    pub fn forget_silent(&self, before: Timestamp) {
        self.drivers.retain(|_, d| d.heard >= before);
    }

    /// Rows for a snapshot when the shared state cannot be read.
    pub fn in_box(&self, scope: &FleetScope, bbox: &BBox) -> Vec<DriverRow> {
        self.drivers
            .iter()
            .filter(|e| scope.allows(e.key().fleet()))
            .filter(|e| bbox.contains(e.position.lat(), e.position.lon()))
            .map(|e| DriverRow {
                update: Arc::clone(&e.update),
                position: e.position,
                online: e.online,
                last_seen: Some(e.heard),
            })
            .collect()
    }
}

fn status_of(online: bool) -> Status {
    if online {
        Status::Online
    } else {
        Status::Offline
    }
}
