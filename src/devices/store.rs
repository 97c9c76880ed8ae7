//! Where devices are kept: the `devices` table of the trail database, with
//! the same SQL on both backends (sqlx binds `$N` on SQLite as on
//! PostgreSQL), so one generic [`SqlDevices`] serves both, the way the trail
//! reads do. Each trail backend hands one out over its own pool
//! ([`TrailStore::devices`](crate::trails::TrailStore::devices)).

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::{Device, DeviceId, Protocol};
use crate::domain::{DriverId, FleetId, Timestamp};
use crate::ingest::units::SpeedUnit;
use crate::trails::StoreError;

/// Most devices one list answers with: a fleet's phones, or every fleet's for
/// an admin. Beyond it the list is cut (in id order), so one request never
/// reads an unbounded table.
pub const MAX_LIST: usize = 10_000;

const INSERT: &str = "INSERT INTO devices \
    (device_id, fleet_id, driver_id, protocol, speed_unit, key_hash, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

const GET: &str = "SELECT device_id, fleet_id, driver_id, protocol, speed_unit, key_hash, created_at \
    FROM devices WHERE device_id = $1";

const LIST_FLEET: &str = "SELECT device_id, fleet_id, driver_id, protocol, speed_unit, key_hash, created_at \
    FROM devices WHERE fleet_id = $1 ORDER BY fleet_id, device_id LIMIT $2";

const LIST_ALL: &str = "SELECT device_id, fleet_id, driver_id, protocol, speed_unit, key_hash, created_at \
    FROM devices ORDER BY fleet_id, device_id LIMIT $1";

// The fleet is part of every write's key: a dispatcher's request can only
// touch its own fleet's devices (an admin's names the device's own fleet).
// RETURNING tells whether a row was there the same way on both backends
// (sqlx's result types share no row count accessor).
const DELETE: &str =
    "DELETE FROM devices WHERE device_id = $1 AND fleet_id = $2 RETURNING device_id";

const SET_KEY: &str =
    "UPDATE devices SET key_hash = $3 WHERE device_id = $1 AND fleet_id = $2 RETURNING device_id";

/// A device as stored: what the API shows and the hash of its key.
#[derive(Debug, Clone)]
pub struct StoredDevice {
    pub device: Device,
    pub key_hash: String,
}

/// The contract every backend keeps.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Adds the device; `Ok(false)` when its id is taken (in any fleet).
    async fn insert(&self, device: &Device, key_hash: &str) -> Result<bool, StoreError>;
    /// The device with this id, `None` when there is none.
    async fn get(&self, id: &DeviceId) -> Result<Option<StoredDevice>, StoreError>;
    /// One fleet's devices, or every fleet's (`None`), in id order, at most [`MAX_LIST`].
    async fn list(&self, fleet: Option<&FleetId>) -> Result<Vec<Device>, StoreError>;
    /// Removes the device of `fleet`; `false` when it has none with this id.
    async fn delete(&self, id: &DeviceId, fleet: &FleetId) -> Result<bool, StoreError>;
    /// Replaces the key of the device of `fleet`; `false` when it has none with this id.
    async fn set_key(
        &self,
        id: &DeviceId,
        fleet: &FleetId,
        key_hash: &str,
    ) -> Result<bool, StoreError>;
}

/// The device store over one backend's pool.
pub struct SqlDevices<DB: Database> {
    pool: Pool<DB>,
}

impl<DB: Database> SqlDevices<DB> {
    pub fn new(pool: Pool<DB>) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl<DB> DeviceStore for SqlDevices<DB>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    async fn insert(&self, device: &Device, key_hash: &str) -> Result<bool, StoreError> {
        let inserted = sqlx::query(INSERT)
            .bind(device.device_id.as_str())
            .bind(device.fleet.as_str())
            .bind(device.driver.as_str())
            .bind(device.protocol.as_str())
            .bind(device.speed_unit.as_str())
            .bind(key_hash)
            .bind(device.created_at.as_millis())
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, id: &DeviceId) -> Result<Option<StoredDevice>, StoreError> {
        let row = sqlx::query(GET)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| stored(&row)).transpose()
    }

    async fn list(&self, fleet: Option<&FleetId>) -> Result<Vec<Device>, StoreError> {
        let limit = i64::try_from(MAX_LIST).unwrap_or(i64::MAX);
        let rows = match fleet {
            Some(fleet) => {
                sqlx::query(LIST_FLEET)
                    .bind(fleet.as_str())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(LIST_ALL)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|row| stored(row).map(|s| s.device))
            .collect()
    }

    async fn delete(&self, id: &DeviceId, fleet: &FleetId) -> Result<bool, StoreError> {
        let gone = sqlx::query(DELETE)
            .bind(id.as_str())
            .bind(fleet.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(gone.is_some())
    }

    async fn set_key(
        &self,
        id: &DeviceId,
        fleet: &FleetId,
        key_hash: &str,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(SET_KEY)
            .bind(id.as_str())
            .bind(fleet.as_str())
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(changed.is_some())
    }
}

/// A stored row back into a device, every column checked.
fn stored<R: Row>(row: &R) -> Result<StoredDevice, StoreError>
where
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let text = |column: &str| -> Result<String, StoreError> { Ok(row.try_get(column)?) };
    let device_id = text("device_id")?;
    let corrupt = |what: &str, value: &str| {
        StoreError::Corrupt(format!("device {device_id:?}: {what} {value:?}"))
    };
    let fleet = text("fleet_id")?;
    let driver = text("driver_id")?;
    let protocol = text("protocol")?;
    let speed_unit = text("speed_unit")?;
    let created_at: i64 = row.try_get("created_at")?;
    Ok(StoredDevice {
        device: Device {
            device_id: DeviceId::parse(&device_id).map_err(|_| corrupt("id", &device_id))?,
            fleet: FleetId::parse(&fleet).map_err(|_| corrupt("fleet", &fleet))?,
            driver: DriverId::parse(&driver).map_err(|_| corrupt("driver", &driver))?,
            protocol: Protocol::parse(&protocol).ok_or_else(|| corrupt("protocol", &protocol))?,
            speed_unit: SpeedUnit::parse(&speed_unit)
                .ok_or_else(|| corrupt("speed unit", &speed_unit))?,
            created_at: Timestamp::from_millis(created_at),
        },
        key_hash: text("key_hash")?,
    })
}
