//! The single-node bus: updates go straight to this node's subscriptions.

use std::sync::Arc;

use super::ClusterBus;
use crate::domain::{DriverId, FleetId, Position};
use crate::live::{LiveUpdate, Status, Subscriptions};

pub struct LocalBus {
    subscriptions: Arc<Subscriptions>,
}

impl LocalBus {
    pub fn new(subscriptions: Arc<Subscriptions>) -> Self {
        Self { subscriptions }
    }
}

impl ClusterBus for LocalBus {
    fn publish(&self, update: &Arc<LiveUpdate>, previous: Option<&Position>) {
        self.subscriptions.fan_out(update, previous);
    }

    fn publish_status(&self, fleet: &FleetId, driver: &DriverId, at: &Position, status: Status) {
        self.subscriptions.push_status(fleet, driver, at, status);
    }

    fn backend(&self) -> &'static str {
        "local"
    }
}
