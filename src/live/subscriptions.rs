//! The dashboards connected to this node and the regions they watch, filed in
//! a [`SpatialIndex`] so a position reaches only the dashboards whose regions
//! contain it. Fan-out lands here, from this node's drivers through the
//! cluster bus (and, with a clustered bus, from other nodes' drivers).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use super::spatial_index::{SpatialIndex, SubKey};
use super::update::{LiveUpdate, Status};
use super::{ConnId, next_id};
use crate::auth::FleetScope;
use crate::dashboards::outbox::{Control, Outbox, Pushed};
use crate::domain::{BBox, FleetId, Position};
use crate::metrics as m;
use crate::protocol::Close;

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

/// What a dashboard has subscribed to, for the admin listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubscriptionInfo {
    pub id: String,
    pub bbox: [f64; 4],
}

/// One connected dashboard: who it is, its outbox and its named regions.
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

/// Why a subscription was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManySubscriptions;

pub struct Subscriptions {
    dashboards: DashMap<ConnId, Arc<DashboardEntry>>,
    index: RwLock<SpatialIndex<IndexScope, Arc<Outbox>>>,
    /// Bytes waiting in all dashboards' outboxes.
    queued_bytes: Arc<AtomicUsize>,
    max_control_frames: usize,
    /// Told whenever a region is added or removed (the cluster bus listens
    /// to the channels covering the regions).
    changed: Notify,
}

impl Subscriptions {
    /// `max_control_frames` bounds each dashboard's queue of control frames.
    pub fn new(max_control_frames: usize) -> Self {
        Self {
            dashboards: DashMap::new(),
            index: RwLock::new(SpatialIndex::new()),
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            max_control_frames,
            changed: Notify::new(),
        }
    }

    /// Notified when the set of watched regions changes.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Every region some dashboard watches, with the fleets it may see.
    pub fn regions(&self) -> Vec<(IndexScope, BBox)> {
        let mut regions = Vec::new();
        for dash in self.dashboards.iter() {
            let scope = IndexScope::from(&dash.scope);
            let subs = dash.subscriptions.lock();
            regions.extend(subs.iter().map(|(_, _, bbox)| (scope.clone(), *bbox)));
        }
        regions
    }

    /// Bytes waiting in all dashboards' outboxes.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    pub fn add_dashboard(&self, role: &'static str, scope: FleetScope) -> Arc<DashboardEntry> {
        let outbox = Outbox::new(Arc::clone(&self.queued_bytes), self.max_control_frames);
        let entry = Arc::new(DashboardEntry {
            conn: next_id(),
            role,
            scope,
            outbox: Arc::new(outbox),
            subscriptions: Mutex::new(Vec::new()),
        });
        self.dashboards.insert(entry.conn, Arc::clone(&entry));
        entry
    }

    /// Adds or replaces the dashboard's subscription `id`, refused when it
    /// would exceed `max` subscriptions.
    pub fn subscribe(
        &self,
        dash: &DashboardEntry,
        id: &str,
        bbox: BBox,
        max: usize,
    ) -> Result<(), TooManySubscriptions> {
        let mut subs = dash.subscriptions.lock();
        let count = subs.len();
        let key = match subs.iter_mut().find(|(sid, _, _)| sid == id) {
            Some(existing) => {
                existing.2 = bbox;
                existing.1
            }
            None if count >= max => return Err(TooManySubscriptions),
            None => {
                let key = next_id();
                subs.push((id.to_owned(), key, bbox));
                key
            }
        };
        let scope = IndexScope::from(&dash.scope);
        self.index
            .write()
            .insert(key, scope, bbox, Arc::clone(&dash.outbox));
        drop(subs);
        self.changed.notify_one();
        Ok(())
    }

    pub fn unsubscribe(&self, dash: &DashboardEntry, id: &str) -> bool {
        let mut subs = dash.subscriptions.lock();
        let Some(pos) = subs.iter().position(|(sid, _, _)| sid == id) else {
            return false;
        };
        let (_, key, _) = subs.remove(pos);
        self.index.write().remove(key);
        drop(subs);
        self.changed.notify_one();
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
        self.changed.notify_one();
    }

    /// Tells every dashboard to close with `close` (their writers send it).
    /// A dashboard added after this must check for shutdown itself.
    pub fn close_all(&self, close: Close) {
        for entry in self.dashboards.iter() {
            entry.outbox.close(close);
        }
    }

    /// An event frame (`{"type":"event",...}`) for every dashboard that
    /// sees `fleet`, wherever its regions are: events are few and each one
    /// matters. Queued as a control frame (kept in order, never coalesced).
    pub fn push_event(&self, fleet: &FleetId, frame: &str) {
        for dash in self.dashboards.iter() {
            if dash.scope.allows(fleet) {
                dash.outbox.push_control(Control::Text(frame.to_owned()));
            }
        }
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

    /// Hands the update to every dashboard whose box holds the new position or
    /// held the previous one (so a marker that leaves the view moves out of it
    /// rather than freezing at the edge).
    pub fn fan_out(&self, update: &Arc<LiveUpdate>, previous: Option<&Position>) {
        let scopes = [
            &IndexScope::Fleet(update.key.fleet().clone()),
            &IndexScope::All,
        ];
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

    /// Tells the dashboards that see `at` that the driver went online or offline.
    pub fn push_status(&self, update: &LiveUpdate, status: Status) {
        let scopes = [
            &IndexScope::Fleet(update.key.fleet().clone()),
            &IndexScope::All,
        ];
        self.index
            .read()
            .for_each_match(&scopes, update.lat, update.lon, |outbox| {
                outbox.push_status(&update.key, status)
            });
    }
}
