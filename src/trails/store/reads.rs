//! The reads both backends answer with the same SQL: sqlx binds `$N`
//! parameters on SQLite as on PostgreSQL, and both keep the same columns.
//! A backend hands out a [`SqlReads`] over its pool, and the
//! [`TrailStore`](super::TrailStore) read methods go through it.

use async_trait::async_trait;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Row, Type,
};

use super::rows::{DriverRow, PositionRow};
use super::{DriverRecord, StoreError, TrailQuery, seq_from_db};
use crate::domain::{DriverKey, Seq, TrailPoint};

// Every read names the driver by fleet and id, the primary keys' first columns.
const LAST_SEQ: &str = "SELECT last_seq FROM drivers WHERE fleet_id = $1 AND driver_id = $2";

/// Ordered like the primary key, so the index serves range and order.
const TRAIL: &str = r#"
SELECT driver_id, fleet_id, seq, ts, lat, lon, speed, heading, acc
FROM positions
WHERE fleet_id = $1 AND driver_id = $2 AND ts >= $3 AND ts <= $4
ORDER BY ts, seq
LIMIT $5
"#;

const DRIVER: &str = "SELECT driver_id, fleet_id, last_seq, last_ts, last_lat, last_lon \
    FROM drivers WHERE fleet_id = $1 AND driver_id = $2";

/// The read side of a store; see [`TrailStore`](super::TrailStore) for each contract.
#[async_trait]
pub trait TrailReads: Send + Sync {
    async fn last_seq(&self, driver: &DriverKey) -> Result<Seq, StoreError>;
    async fn trail(&self, query: &TrailQuery) -> Result<Vec<TrailPoint>, StoreError>;
    async fn driver(&self, driver: &DriverKey) -> Result<Option<DriverRecord>, StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The reads over one backend's pool.
pub struct SqlReads<DB: Database> {
    pool: Pool<DB>,
}

impl<DB: Database> SqlReads<DB> {
    pub(super) fn new(pool: Pool<DB>) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl<DB> TrailReads for SqlReads<DB>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
    for<'r> PositionRow: FromRow<'r, DB::Row>,
    for<'r> DriverRow: FromRow<'r, DB::Row>,
{
    async fn last_seq(&self, driver: &DriverKey) -> Result<Seq, StoreError> {
        let row = sqlx::query(LAST_SEQ)
            .bind(driver.fleet().as_str())
            .bind(driver.driver().as_str())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => seq_from_db(row.try_get("last_seq")?),
            None => Ok(0),
        }
    }

    async fn trail(&self, query: &TrailQuery) -> Result<Vec<TrailPoint>, StoreError> {
        let rows: Vec<PositionRow> = sqlx::query_as(TRAIL)
            .bind(query.driver.fleet().as_str())
            .bind(query.driver.driver().as_str())
            .bind(query.from.as_millis())
            .bind(query.to.as_millis())
            .bind(i64::try_from(query.limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(TrailPoint::try_from).collect()
    }

    async fn driver(&self, driver: &DriverKey) -> Result<Option<DriverRecord>, StoreError> {
        let row: Option<DriverRow> = sqlx::query_as(DRIVER)
            .bind(driver.fleet().as_str())
            .bind(driver.driver().as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(DriverRecord::try_from).transpose()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
