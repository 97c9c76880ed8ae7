//! The cluster bus: how a driver's live updates reach the dashboards that
//! watch it, on this node and on the others. One trait, one file per backend;
//! only the local backend exists so far (a single node).

mod local;

use std::sync::Arc;

use crate::domain::{DriverId, FleetId, Position};
use crate::live::{LiveUpdate, Status};

pub use local::LocalBus;

/// Carries live updates from the node that owns a driver to every dashboard
/// that watches it.
///
/// The contract every backend keeps:
/// - Calls come from the driver's owner, one at a time per driver and in fix
///   order (the caller holds the driver's live-state lock), so a backend
///   that keeps that order per driver keeps every dashboard's markers from
///   going back in time.
/// - Neither call blocks or fails the caller: they run on the ingest hot path
///   under that lock. Delivery to this node's dashboards happens before the
///   call returns; delivery to other nodes is at most once and may lag.
/// - Live delivery is not durability: trails are stored by the trail writer
///   whatever the bus does.
pub trait ClusterBus: Send + Sync + 'static {
    /// A driver's newest position; `previous` is the one it replaces, so the
    /// dashboards it just left are told it moved out of their view.
    fn publish(&self, update: &Arc<LiveUpdate>, previous: Option<&Position>);

    /// A driver went online or offline; `at` is its last position.
    fn publish_status(&self, fleet: &FleetId, driver: &DriverId, at: &Position, status: Status);

    /// "local", or the clustered backend's name, for logs.
    fn backend(&self) -> &'static str;
}
