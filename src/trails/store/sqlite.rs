//! Embedded SQLite backend: one file, WAL journal, `synchronous = FULL`.
//!
//! Why FULL: in WAL mode NORMAL survives a crash of the process but may lose
//! the last commits on power loss or an OS crash. An ack promises the fix is
//! kept, so every commit syncs the WAL; group commits keep that affordable.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::reads::{SqlReads, TrailReads};
use super::{StoreError, TrailStore, Turn, latest_per_driver, retention_cutoff, seq_to_db};
use crate::alerts::persist::{self, Planned, StateRow};
use crate::alerts::store::insert_events;
use crate::alerts::{AlertStore, Evaluator, Event, SqlAlerts};
use crate::devices::{DeviceStore, SqlDevices};
use crate::domain::{Timestamp, TrailPoint};
use crate::geofences::{GeofenceStore, SqlGeofences};
use crate::webhooks::{SqlWebhooks, WebhookStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The shapes of the positions INSERT, largest first. A batch goes in as many
/// statements of the largest shape as fit, then of the next, down to single
/// rows (a batch of 1,234 rows: 2 of 500, 4 of 50, 6 of 5, 4 of 1). The text
/// of a statement depends on its row count and each pooled connection caches
/// one prepared statement per text, which holds about 4 kB plus 0.9 kB per row
/// (a 500-row one, 440 kB). Cutting batches at any size made one text per
/// size, up to the cache's capacity on every connection of the pool: 200 MB
/// at the defaults. Four fixed texts keep it at about 500 kB a connection.
/// Large statements keep bulk ingest (a backlog of 50,000 rows) at its rate:
/// with 100 rows at most it lost a fifth; SQLite runs in-process, so the few
/// executions of the small shapes cost no round trip to a server. Each shape
/// stays far below SQLite's limit of 32,766 bound parameters (9 a row).
const INSERT_SHAPES: [usize; 4] = [500, 50, 5, 1];
// The last shape must be a single row, so that every batch size is covered.
const _: () = assert!(INSERT_SHAPES[INSERT_SHAPES.len() - 1] == 1);
/// Statements each connection keeps prepared. The store runs about ten
/// distinct texts (the four INSERT shapes, the drivers upsert, the reads,
/// retention); sqlx's default of 100 would let any text that varies with its
/// input hold 100 prepared statements on every connection of the pool again.
const STATEMENT_CACHE_CAPACITY: usize = 32;
/// SQLite's page cache per connection (negative: in KiB; SQLite's default is
/// 2,000 KiB). In WAL mode a connection drops its whole cache when it starts a
/// transaction after another connection has committed, and the pool hands
/// its connections out in turn, so a connection's cache almost never
/// outlives one transaction: beyond what one group commit touches (about 100
/// pages for 300 drivers), a larger cache only keeps freed memory on every
/// connection of the pool (16 MB for 8 connections at the default). Measured,
/// a larger cache did not speed up bulk ingest.
const PAGE_CACHE_SIZE: &str = "-512";
/// A driver's alert state after a commit (see `crate::alerts::persist`).
const WRITE_STATE: &str = "INSERT INTO alert_state \
    (fleet_id, driver_id, last_ts, last_seq, last_lat, last_lon, last_recv, state) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (fleet_id, driver_id) DO UPDATE SET \
    last_ts = excluded.last_ts, last_seq = excluded.last_seq, last_lat = excluded.last_lat, \
    last_lon = excluded.last_lon, last_recv = excluded.last_recv, state = excluded.state";
/// A writer waits this long for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Retention deletes in slices so the write lock is never held for long.
const RETENTION_SLICE: i64 = 10_000;

const INSERT_HEAD: &str = "INSERT INTO positions \
    (driver_id, fleet_id, seq, ts, lat, lon, speed, heading, acc) VALUES ";
const INSERT_TAIL: &str = " ON CONFLICT DO NOTHING";

/// The INSERT text of each shape in `INSERT_SHAPES`, built once.
static INSERT_SQL: LazyLock<[String; INSERT_SHAPES.len()]> =
    LazyLock::new(|| INSERT_SHAPES.map(insert_sql));

const UPSERT_DRIVER: &str = concat!(
    r#"
INSERT INTO drivers AS d (driver_id, fleet_id, last_seq, last_ts, last_lat, last_lon, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
"#,
    merge_driver_row!()
);

pub struct SqliteTrailStore {
    pool: SqlitePool,
    reads: SqlReads<Sqlite>,
    devices: SqlDevices<Sqlite>,
    geofences: SqlGeofences<Sqlite>,
    webhooks: SqlWebhooks<Sqlite>,
    alerts: SqlAlerts<Sqlite>,
}

impl SqliteTrailStore {
    /// Opens (creating when missing) the database file.
    pub async fn open(path: impl AsRef<Path>, max_connections: u32) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let options = SqliteConnectOptions::from_str("sqlite://")
            .context("building SQLite options")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .statement_cache_capacity(STATEMENT_CACHE_CAPACITY)
            .pragma("cache_size", PAGE_CACHE_SIZE);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await
            .with_context(|| format!("opening the SQLite file {}", path.display()))?;
        Ok(Self {
            reads: SqlReads::new(pool.clone()),
            devices: SqlDevices::new(pool.clone()),
            geofences: SqlGeofences::new(pool.clone()),
            webhooks: SqlWebhooks::new(pool.clone()),
            alerts: SqlAlerts::new(pool.clone()),
            pool,
        })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .context("applying the SQLite migrations")
    }

    async fn insert_positions(
        tx: &mut sqlx::SqliteConnection,
        points: &[TrailPoint],
    ) -> Result<(), StoreError> {
        let mut rest = points;
        for (&shape, sql) in INSERT_SHAPES.iter().zip(INSERT_SQL.iter()) {
            while rest.len() >= shape {
                let (chunk, tail) = rest.split_at(shape);
                // A static text: prepared once per connection, reused after.
                let mut query = sqlx::query(sql.as_str());
                for p in chunk {
                    query = query
                        .bind(p.driver.as_str())
                        .bind(p.fleet.as_str())
                        .bind(seq_to_db(p.seq)?)
                        .bind(p.position.ts().as_millis())
                        .bind(p.position.lat())
                        .bind(p.position.lon())
                        .bind(p.position.speed())
                        .bind(p.position.heading())
                        .bind(p.position.acc());
                }
                query.execute(&mut *tx).await?;
                rest = tail;
            }
        }
        Ok(())
    }

    async fn upsert_drivers(
        tx: &mut sqlx::SqliteConnection,
        points: &[TrailPoint],
    ) -> Result<(), StoreError> {
        let now = Timestamp::now().as_millis();
        for (p, max_seq) in latest_per_driver(points) {
            sqlx::query(UPSERT_DRIVER)
                .bind(p.driver.as_str())
                .bind(p.fleet.as_str())
                .bind(seq_to_db(max_seq)?)
                .bind(p.position.ts().as_millis())
                .bind(p.position.lat())
                .bind(p.position.lon())
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }
}

/// `INSERT ... VALUES (?, ...), (?, ...) ON CONFLICT DO NOTHING` for `rows` rows.
/// Only placeholders go into the text; the values are bound.
fn insert_sql(rows: usize) -> String {
    const ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let mut sql = String::with_capacity(INSERT_HEAD.len() + rows * (ROW.len() + 2) + 32);
    sql.push_str(INSERT_HEAD);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(ROW);
    }
    sql.push_str(INSERT_TAIL);
    sql
}

#[async_trait]
impl TrailStore for SqliteTrailStore {
    async fn append(&self, points: &[TrailPoint]) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        // IMMEDIATE takes the write lock up front, so the busy timeout applies
        // instead of a deadlock error when two writers meet.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Self::insert_positions(&mut tx, points).await?;
        Self::upsert_drivers(&mut tx, points).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The positions, the drivers' rows and the alert steps in one
    /// transaction (see the trait). SQLite has one writer at a time, so
    /// reading the state rows inside the transaction is enough to hold them.
    async fn append_evaluated(
        &self,
        points: &[TrailPoint],
        evaluator: &dyn Evaluator,
        turn: &mut Turn,
    ) -> Result<Vec<Event>, StoreError> {
        turn.pass();
        let planned = Planned::new(evaluator, points);
        if points.is_empty() {
            return Ok(Vec::new());
        }
        let now = Timestamp::now();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Self::insert_positions(&mut tx, points).await?;
        Self::upsert_drivers(&mut tx, points).await?;
        let mut stored = HashMap::new();
        for key in planned.drivers.keys() {
            let row = sqlx::query_as::<_, (i64, i64, f64, f64, String)>(
                "SELECT last_ts, last_seq, last_lat, last_lon, state FROM alert_state \
                 WHERE fleet_id = ?1 AND driver_id = ?2",
            )
            .bind(key.fleet().as_str())
            .bind(key.driver().as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((last_ts, last_seq, last_lat, last_lon, state)) = row {
                let row = StateRow {
                    last_ts,
                    last_seq,
                    last_lat,
                    last_lon,
                    state,
                };
                stored.insert(key.clone(), row);
            }
        }
        let evaluated = persist::evaluate(evaluator, &planned, stored)?;
        for (key, row) in &evaluated.states {
            sqlx::query(WRITE_STATE)
                .bind(key.fleet().as_str())
                .bind(key.driver().as_str())
                .bind(row.last_ts)
                .bind(row.last_seq)
                .bind(row.last_lat)
                .bind(row.last_lon)
                .bind(now.as_millis())
                .bind(row.state.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let stored = insert_events::<Sqlite>(&mut tx, evaluated.events, now).await?;
        tx.commit().await?;
        Ok(stored)
    }

    fn reads(&self) -> &dyn TrailReads {
        &self.reads
    }

    fn devices(&self) -> &dyn DeviceStore {
        &self.devices
    }

    fn geofences(&self) -> &dyn GeofenceStore {
        &self.geofences
    }

    fn webhooks(&self) -> &dyn WebhookStore {
        &self.webhooks
    }

    fn alerts(&self) -> &dyn AlertStore {
        &self.alerts
    }

    /// Deletes the rows older than the cutoff, a slice at a time; returns the rows deleted.
    async fn apply_retention(&self, retention_days: u32) -> Result<u64, StoreError> {
        let cutoff = retention_cutoff(Timestamp::now(), retention_days);
        let mut deleted = 0;
        loop {
            let gone = sqlx::query(
                "DELETE FROM positions WHERE (fleet_id, driver_id, ts, seq) IN \
                 (SELECT fleet_id, driver_id, ts, seq FROM positions WHERE ts < ?1 LIMIT ?2)",
            )
            .bind(cutoff)
            .bind(RETENTION_SLICE)
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += gone;
            if gone == 0 {
                return Ok(deleted);
            }
        }
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
