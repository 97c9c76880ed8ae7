//! What this node knows live: the drivers' last-known state ([`drivers`]),
//! the registry of connected driver actors ([`registry`]), and the
//! dashboards' subscriptions ([`subscriptions`]) with their [`spatial_index`].

pub mod drivers;
pub mod registry;
pub mod snapshot;
pub mod spatial_index;
pub mod subscriptions;
pub mod update;

use std::sync::atomic::{AtomicU64, Ordering};

pub use drivers::{DriverRow, LiveDriver, LiveDrivers, Published, run_housekeeping};
pub use registry::{DriverHandle, DriverRegistry};
pub use subscriptions::{DashboardEntry, IndexScope, Subscriptions, TooManySubscriptions};
pub use update::{LiveUpdate, Status};

/// Identifies one WebSocket connection (or one subscription) for the lifetime of the process.
pub type ConnId = u64;

/// A fresh id for a connection or a subscription.
pub fn next_id() -> ConnId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
