//! The single-node bus: updates go straight to this node's subscriptions,
//! and this node owns every driver that connects to it.

use std::sync::Arc;

use async_trait::async_trait;

use super::{ClusterBus, Epoch, LinkState};
use crate::auth::FleetScope;
use crate::domain::{BBox, DriverKey, FleetId, Position};
use crate::live::{DriverRow, LiveUpdate, Status, Subscriptions};

pub struct LocalBus {
    subscriptions: Arc<Subscriptions>,
}

impl LocalBus {
    pub fn new(subscriptions: Arc<Subscriptions>) -> Self {
        Self { subscriptions }
    }
}

#[async_trait]
impl ClusterBus for LocalBus {
    fn publish(&self, update: &Arc<LiveUpdate>, previous: Option<&Position>) {
        self.subscriptions.fan_out(update, previous);
    }

    fn publish_status(&self, update: &Arc<LiveUpdate>, status: Status) {
        self.subscriptions.push_status(update, status);
    }

    async fn claim(&self, _driver: &DriverKey) -> Epoch {
        0
    }

    async fn remote_rows(&self, _scope: &FleetScope, _bbox: &BBox) -> Vec<DriverRow> {
        Vec::new()
    }

    fn link_state(&self) -> LinkState {
        LinkState::Local
    }

    fn backend(&self) -> &'static str {
        "local"
    }

    /// One node: nobody else to tell.
    fn fences_changed(&self, _fleet: &FleetId) {}

    fn publish_event(&self, fleet: &FleetId, frame: &str) {
        self.subscriptions.push_event(fleet, frame);
    }
}
