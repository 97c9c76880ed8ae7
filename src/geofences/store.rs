//! Where fences are kept: the `geofences` table of the trail database, with
//! the same SQL on both backends, so one generic [`SqlGeofences`] serves
//! both, like the devices. Each trail backend hands one out over its own
//! pool ([`TrailStore::geofences`](crate::trails::TrailStore::geofences)).
//! A row is read back through the fence's own checks: a row that fails them
//! is corrupt, never half-used.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::fence::{FenceDef, FenceId, Geofence};
use crate::domain::{FleetId, Timestamp};
use crate::trails::StoreError;

/// Most fences one fleet may have: every node keeps them all in memory
/// (10,000 fences of 50 vertices take about 15 MB with their R-tree), and a
/// city with thousands of zones is what the fence benchmark measures.
pub const MAX_PER_FLEET: usize = 10_000;
/// Most fences one list answers with (every fleet's, for an admin), in
/// (fleet, id) order.
pub const MAX_LIST: usize = 10_000;

// The count and the insert are one statement. A node makes one write at a
// time (`Geofences`), but creates on several nodes at once may each pass the
// count (PostgreSQL, read committed): the bound can be passed by a few, never
// by many.
const INSERT: &str = "INSERT INTO geofences (id, fleet_id, name, feature, created_at, updated_at) \
    SELECT $1, $2, $3, $4, $5, $5 \
    WHERE (SELECT COUNT(*) FROM geofences WHERE fleet_id = $2) < $6 \
    RETURNING id";

const GET: &str =
    "SELECT id, fleet_id, feature, created_at, updated_at FROM geofences WHERE id = $1";

const LIST_FLEET: &str = "SELECT id, fleet_id, feature, created_at, updated_at FROM geofences \
    WHERE fleet_id = $1 ORDER BY fleet_id, id LIMIT $2";

const LIST_ALL: &str = "SELECT id, fleet_id, feature, created_at, updated_at FROM geofences \
    ORDER BY fleet_id, id LIMIT $1";

// The fleet is part of every write's key: a dispatcher's request can only
// touch its own fleet's fences. RETURNING tells whether a row was there the
// same way on both backends.
const UPDATE: &str = "UPDATE geofences SET name = $3, feature = $4, updated_at = $5 \
    WHERE id = $1 AND fleet_id = $2 RETURNING created_at";

const DELETE: &str = "DELETE FROM geofences WHERE id = $1 AND fleet_id = $2 RETURNING id";

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Done,
    /// The fleet has [`MAX_PER_FLEET`] fences already.
    FleetFull,
    /// Another fence has this id (a random id met another: pick a new one).
    IdTaken,
}

/// The contract every backend keeps.
#[async_trait]
pub trait GeofenceStore: Send + Sync {
    /// Adds the fence, unless its fleet is full or its id taken.
    async fn insert(&self, fence: &Geofence) -> Result<Inserted, StoreError>;
    /// The fence with this id, in any fleet; `None` when there is none.
    async fn get(&self, id: &FenceId) -> Result<Option<Geofence>, StoreError>;
    /// One fleet's fences, or every fleet's (`None`), in (fleet, id) order,
    /// at most `limit`.
    async fn list(
        &self,
        fleet: Option<&FleetId>,
        limit: usize,
    ) -> Result<Vec<Geofence>, StoreError>;
    /// Replaces the definition of the fence of `fleet`; its creation time
    /// when there was one, `None` when `fleet` has no fence with this id.
    async fn update(
        &self,
        id: &FenceId,
        fleet: &FleetId,
        def: &FenceDef,
        updated_at: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError>;
    /// Removes the fence of `fleet`; `false` when it has none with this id.
    async fn delete(&self, id: &FenceId, fleet: &FleetId) -> Result<bool, StoreError>;
}

/// The fence store over one backend's pool.
pub struct SqlGeofences<DB: Database> {
    pool: Pool<DB>,
}

impl<DB: Database> SqlGeofences<DB> {
    pub fn new(pool: Pool<DB>) -> Self {
        Self { pool }
    }
}

fn db_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl<DB> GeofenceStore for SqlGeofences<DB>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    async fn insert(&self, fence: &Geofence) -> Result<Inserted, StoreError> {
        let inserted = sqlx::query(INSERT)
            .bind(fence.id().as_str())
            .bind(fence.fleet().as_str())
            .bind(fence.props().name.as_str())
            .bind(fence.def().to_stored())
            .bind(fence.created_at().as_millis())
            .bind(db_count(MAX_PER_FLEET))
            .fetch_optional(&self.pool)
            .await;
        match inserted {
            Ok(Some(_)) => Ok(Inserted::Done),
            Ok(None) => Ok(Inserted::FleetFull),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Inserted::IdTaken),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, id: &FenceId) -> Result<Option<Geofence>, StoreError> {
        let row = sqlx::query(GET)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| fence_of(&row)).transpose()
    }

    async fn list(
        &self,
        fleet: Option<&FleetId>,
        limit: usize,
    ) -> Result<Vec<Geofence>, StoreError> {
        let rows = match fleet {
            Some(fleet) => {
                sqlx::query(LIST_FLEET)
                    .bind(fleet.as_str())
                    .bind(db_count(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(LIST_ALL)
                    .bind(db_count(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(fence_of).collect()
    }

    async fn update(
        &self,
        id: &FenceId,
        fleet: &FleetId,
        def: &FenceDef,
        updated_at: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let updated = sqlx::query(UPDATE)
            .bind(id.as_str())
            .bind(fleet.as_str())
            .bind(def.props().name.as_str())
            .bind(def.to_stored())
            .bind(updated_at.as_millis())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = updated else {
            return Ok(None);
        };
        let created_at: i64 = row.try_get("created_at")?;
        Ok(Some(Timestamp::from_millis(created_at)))
    }

    async fn delete(&self, id: &FenceId, fleet: &FleetId) -> Result<bool, StoreError> {
        let gone = sqlx::query(DELETE)
            .bind(id.as_str())
            .bind(fleet.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(gone.is_some())
    }
}

/// A stored row back into a fence, every column checked.
fn fence_of<R: Row>(row: &R) -> Result<Geofence, StoreError>
where
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("geofence {id:?}: {what}"));
    let fleet: String = row.try_get("fleet_id")?;
    let feature: String = row.try_get("feature")?;
    let created_at: i64 = row.try_get("created_at")?;
    let updated_at: i64 = row.try_get("updated_at")?;
    let def = FenceDef::from_stored(&feature).map_err(|e| corrupt(&e.to_string()))?;
    Ok(Geofence::new(
        FenceId::parse(&id).ok_or_else(|| corrupt("bad id"))?,
        FleetId::parse(&fleet).map_err(|_| corrupt(&format!("bad fleet {fleet:?}")))?,
        def,
        Timestamp::from_millis(created_at),
        Timestamp::from_millis(updated_at),
    ))
}
