//! A driver's newest position as dashboards will see it, and its status.

use std::time::Instant;

use serde_json::value::RawValue;

use crate::domain::{DriverKey, Position, Timestamp};
use crate::protocol::driver_view;

/// One position ready for dashboards, serialised once and shared by all of them.
#[derive(Debug)]
pub struct LiveUpdate {
    /// Whose position: dashboards coalesce and order updates per key.
    pub key: DriverKey,
    pub ts: Timestamp,
    pub lat: f64,
    pub lon: f64,
    /// The `P` object of the protocol.
    pub json: Box<RawValue>,
    /// When this node got the position, for the fan-out latency histogram.
    pub received: Instant,
    /// The owner's epoch for the driver when it sent the position (0 on one node).
    pub epoch: u64,
}

impl LiveUpdate {
    pub fn new(key: &DriverKey, position: &Position, epoch: u64) -> Self {
        let json = driver_view(key.driver(), key.fleet(), position, None, None);
        Self::from_view(key.clone(), position, json, epoch)
    }

    /// An update whose `P` was built elsewhere (by the node that owns the driver).
    pub fn from_view(key: DriverKey, position: &Position, json: Box<RawValue>, epoch: u64) -> Self {
        Self {
            key,
            ts: position.ts(),
            lat: position.lat(),
            lon: position.lon(),
            json,
            received: Instant::now(),
            epoch,
        }
    }
}

/// Whether a driver is streaming (`online`) or went silent or away (`offline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Online,
    Offline,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Offline => "offline",
        }
    }
}
