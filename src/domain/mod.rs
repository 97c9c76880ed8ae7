//! Domain types. Each one checks its invariants when it is built, so the rest
//! of the hub can trust any value it holds.

mod bbox;
mod driver_key;
mod ids;
mod position;

pub use bbox::{BBox, BBoxError};
pub use driver_key::DriverKey;
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
}
