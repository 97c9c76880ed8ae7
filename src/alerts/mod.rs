//! Alerts: what the hub tells dispatchers about their drivers (issue #14).
//!
//! - [`rules`]: a fleet's limits (overspeed, idle, offline, low battery);
//! - [`engine`]: the evaluation of a driver's fixes against its fleet's
//!   fences and rules, from the driver's stored state;
//! - [`persist`]: the part of the trail store's transaction that runs it:
//!   every stored fix of a fleet with fences or rules (and every SOS) is
//!   evaluated once, in fix-time order, under a lock on the driver's state
//!   row, and the events it raises are stored with their webhook outbox rows
//!   in that same transaction;
//! - [`event`]: an event, its id derived from its cause, so the same event
//!   produced twice is stored once;
//! - [`store`]: the tables, the same SQL on both backends;
//! - [`offline`]: the sweep that raises `offline` for silent drivers;
//! - [`api`]: `GET`/`PUT /api/v1/alert-rules`, `GET /api/v1/events`.
//!
//! Events reach people from the node that stored them: pushed live to the
//! dashboards that see the driver's fleet (through the cluster bus) and
//! delivered to the fleet's webhooks from the outbox.

pub mod api;
pub mod engine;
pub mod event;
pub mod offline;
pub mod persist;
pub mod rules;
pub mod store;

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Notify;

pub use engine::{Context, DriverState};
pub use event::{Event, EventFix, EventKind, EventView};
pub use persist::Evaluator;
pub use rules::AlertRules;
pub use store::{AlertStore, EventQuery, SqlAlerts};

use crate::cluster::ClusterBus;
use crate::domain::{FleetId, TrailPoint};
use crate::geofences::Geofences;
use crate::metrics as m;
use crate::trails::{StoreError, TrailStore};

/// The alerts of every fleet: their rules (the database is the truth, this
/// node holds a copy kept in step like the fences), the evaluation the trail
/// store runs, and the announcement of what it raised.
pub struct Alerts {
    store: Arc<dyn TrailStore>,
    fences: Arc<Geofences>,
    bus: Arc<dyn ClusterBus>,
    /// Fleets with at least one rule on.
    rules: DashMap<FleetId, Arc<AlertRules>>,
    /// Told when events were stored: their webhook deliveries are due.
    outbox: Arc<Notify>,
}

impl Alerts {
    pub fn new(
        store: Arc<dyn TrailStore>,
        fences: Arc<Geofences>,
        bus: Arc<dyn ClusterBus>,
    ) -> Self {
        Self {
            store,
            fences,
            bus,
            rules: DashMap::new(),
            outbox: Arc::new(Notify::new()),
        }
    }

    pub fn store(&self) -> &dyn AlertStore {
        self.store.alerts()
    }

    /// Notified whenever events were stored, so their deliveries start at once.
    pub fn outbox_ready(&self) -> Arc<Notify> {
        Arc::clone(&self.outbox)
    }

    /// (Re)loads every fleet's rules from the database; returns how many fleets have some.
    pub async fn load(&self) -> Result<usize, StoreError> {
        let all = self.store().all_rules().await?;
        self.rules.clear();
        for (fleet, rules) in all {
            self.remember(fleet, rules);
        }
        Ok(self.rules.len())
    }

    /// Reloads one fleet's rules (another node changed them).
    pub async fn reload_fleet(&self, fleet: &FleetId) -> Result<(), StoreError> {
        let rules = self.store().rules(fleet).await?.unwrap_or_default();
        self.remember(fleet.clone(), rules);
        Ok(())
    }

    /// The fleet's rules (all off when it has none).
    pub fn rules(&self, fleet: &FleetId) -> Arc<AlertRules> {
        self.rules
            .get(fleet)
            .map(|r| Arc::clone(&r))
            .unwrap_or_default()
    }

    /// Stores the fleet's rules, applies them here and tells the other nodes.
    pub async fn put_rules(&self, fleet: &FleetId, rules: AlertRules) -> Result<(), StoreError> {
        self.store().put_rules(fleet, &rules).await?;
        self.remember(fleet.clone(), rules);
        self.bus.fences_changed(fleet);
        Ok(())
    }

    fn remember(&self, fleet: FleetId, rules: AlertRules) {
        if rules.is_empty() {
            self.rules.remove(&fleet);
        } else {
            self.rules.insert(fleet, Arc::new(rules));
        }
    }

    /// Announces events this node stored: live to the dashboards of their
    /// fleet, on every node, and to the webhook outbox's sender.
    pub fn announce(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        for event in events {
            m::event_raised(event.kind.as_str());
            self.bus.publish_event(&event.fleet, event.to_json().get());
        }
        self.outbox.notify_one();
    }
}

impl Evaluator for Alerts {
    fn wants(&self, point: &TrailPoint) -> bool {
        point.extras.sos
            || self.rules.contains_key(&point.fleet)
            || self
                .fences
                .index()
                .fleet(&point.fleet)
                .is_some_and(|f| !f.is_empty())
    }

    fn evaluate(&self, state: &mut DriverState, points: &[&TrailPoint]) -> Vec<Event> {
        let Some(first) = points.first() else {
            return Vec::new();
        };
        let fences = self.fences.index().fleet(&first.fleet);
        let rules = self.rules(&first.fleet);
        let ctx = Context {
            fences: fences.as_deref(),
            rules: &rules,
        };
        points
            .iter()
            .flat_map(|point| state.evaluate(point, ctx))
            .collect()
    }
}
