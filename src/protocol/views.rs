//! The JSON a driver is shown as: `P` in the protocol doc, built once per
//! position and shared by every dashboard and the REST listing.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::domain::{DriverId, FleetId, Position, Timestamp};

/// Live view of one driver as dashboards receive it (`P` in the protocol doc).
#[derive(Debug, Serialize)]
struct DriverView<'a> {
    driver: &'a str,
    fleet: &'a str,
    lat: f64,
    lon: f64,
    ts: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    speed: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heading: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    /// Hub clock when the driver was last heard from (REST listing only).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<Timestamp>,
}

/// `P` for a driver at `position`, with its status (`online`/`offline`) and
/// `last_seen` when given.
pub fn driver_view(
    driver: &DriverId,
    fleet: &FleetId,
    position: &Position,
    status: Option<&str>,
    last_seen: Option<Timestamp>,
) -> Box<RawValue> {
    let view = DriverView {
        driver: driver.as_str(),
        fleet: fleet.as_str(),
        lat: position.lat(),
        lon: position.lon(),
        ts: position.ts(),
        speed: position.speed(),
        heading: position.heading(),
        status,
        last_seen,
    };
    serde_json::value::to_raw_value(&view).unwrap_or_else(|e| {
        tracing::error!(error = %e, "failed to serialise a driver view");
        Box::<RawValue>::default()
    })
}
