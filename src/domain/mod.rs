//! Domain types. Each one checks its invariants when it is built, so the rest
//! of the hub can trust any value it holds.

mod bbox;
mod driver_key;
mod ids;
mod position;

pub use bbox::{BBox, BBoxError};
pub use driver_key::DriverKey;
pub(crate) use ids::generated_id;
pub use ids::{DriverId, FleetId, IdError};
pub use position::{MAX_ACCURACY_M, Position, PositionError, TimeWindow, Timestamp};

/// A driver's sequence number: strictly increasing per driver ([`DriverKey`]), chosen by the app.
pub type Seq = u64;

/// One position as it travels to the trail store: who sent it, under which
/// sequence number, and the validated fix.
#[derive(Debug, Clone, PartialEq)]
pub struct TrailPoint {
    pub driver: DriverId,
    pub fleet: FleetId,
    pub seq: Seq,
    pub position: Position,
    /// What came with the fix besides the position; not stored in the trail,
    /// only evaluated by the alert rules.
    pub extras: FixExtras,
}

/// What a fix may carry besides its position: read by the alert rules
/// ([`crate::alerts`]), not kept in the trail.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FixExtras {
    /// The phone's battery level, percent in [0, 100], when the app reports it.
    pub battery: Option<f64>,
    /// The driver pressed SOS (an `sos` frame, or `"sos": true` in a batch item).
    pub sos: bool,
}
