//! The device registry: the phone apps (Traccar Client / OsmAnd, OwnTracks)
//! allowed to post positions, each for one driver of one fleet, with a
//! secret key. The registry is kept in the trail database ([`store`]), read
//! through a short-lived cache ([`registry`]) so a position costs no database
//! read, and managed through the HTTP API ([`api`]). Keys are generated and
//! checked in [`keys`]; only their hash is stored.
//!
//! A device id is unique across fleets: OsmAnd sends nothing but `id`, so
//! the id alone has to name the device's fleet and driver.

pub mod api;
pub mod keys;
pub mod registry;
pub mod store;

use serde::{Deserialize, Serialize};

use crate::domain::{DriverId, FleetId, Timestamp};
use crate::ingest::units::SpeedUnit;

pub use registry::{DeviceRegistry, KnownDevice};
pub use store::{DeviceStore, SqlDevices};

/// A device id: the same alphabet and length as driver ids (it travels in
/// URLs, logs and OwnTracks topics).
pub type DeviceId = DriverId;

/// The protocol a device speaks: which ingest path it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Osmand,
    Owntracks,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Osmand => "osmand",
            Protocol::Owntracks => "owntracks",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "osmand" => Some(Protocol::Osmand),
            "owntracks" => Some(Protocol::Owntracks),
            _ => None,
        }
    }
}

/// A registered device, as the API shows it (never with its key).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    pub device_id: DeviceId,
    pub fleet: FleetId,
    pub driver: DriverId,
    pub protocol: Protocol,
    /// The unit of the `speed` the device sends (OsmAnd; OwnTracks sends km/h).
    pub speed_unit: SpeedUnit,
    pub created_at: Timestamp,
}
