//! Rows back into domain values, for both backends: sqlx reads the columns
//! into plain row structs (the same on every database), and the domain types
//! check them here, so a corrupt row is reported the same way everywhere.

use super::{DriverRecord, StoreError, seq_from_db};
use crate::domain::{DriverId, FleetId, Position, Timestamp, TrailPoint};

/// A `positions` row as the trail query selects it.
#[derive(sqlx::FromRow)]
pub(super) struct PositionRow {
    driver_id: String,
    fleet_id: String,
    seq: i64,
    ts: i64,
    lat: f64,
    lon: f64,
    speed: Option<f64>,
    heading: Option<f64>,
    acc: Option<f64>,
}

/// A `drivers` row as the driver query selects it.
#[derive(sqlx::FromRow)]
pub(super) struct DriverRow {
    driver_id: String,
    fleet_id: String,
    last_seq: i64,
    last_ts: i64,
    last_lat: f64,
    last_lon: f64,
}

fn driver(raw: &str) -> Result<DriverId, StoreError> {
    DriverId::parse(raw).map_err(|e| StoreError::Corrupt(format!("driver id {raw:?}: {e}")))
}

fn fleet(raw: &str) -> Result<FleetId, StoreError> {
    FleetId::parse(raw).map_err(|e| StoreError::Corrupt(format!("fleet id {raw:?}: {e}")))
}

impl TryFrom<PositionRow> for TrailPoint {
    type Error = StoreError;

    fn try_from(row: PositionRow) -> Result<Self, StoreError> {
        let position = Position::new(
            row.lat,
            row.lon,
            Timestamp::from_millis(row.ts),
            row.speed,
            row.heading,
            row.acc,
        )
        .map_err(|e| {
            let who = format!("{}/{}", row.fleet_id, row.driver_id);
            StoreError::Corrupt(format!("stored position of {who}: {e}"))
        })?;
        Ok(TrailPoint {
            driver: driver(&row.driver_id)?,
            fleet: fleet(&row.fleet_id)?,
            seq: seq_from_db(row.seq)?,
            position,
            extras: Default::default(),
        })
    }
}

impl TryFrom<DriverRow> for DriverRecord {
    type Error = StoreError;

    fn try_from(row: DriverRow) -> Result<Self, StoreError> {
        Ok(DriverRecord {
            driver: driver(&row.driver_id)?,
            fleet: fleet(&row.fleet_id)?,
            last_seq: seq_from_db(row.last_seq)?,
            last_ts: Timestamp::from_millis(row.last_ts),
            last_lat: row.last_lat,
            last_lon: row.last_lon,
        })
    }
}
