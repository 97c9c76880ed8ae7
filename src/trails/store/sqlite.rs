//! Embedded SQLite backend: one file, WAL journal, `synchronous = FULL`.
//!
//! Why FULL: in WAL mode NORMAL survives a crash of the process but may lose
//! the last commits on power loss or an OS crash. An ack promises the fix is
//! kept, so every commit syncs the WAL; group commits keep that affordable.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Sqlite};

use super::reads::{SqlReads, TrailReads};
use super::{StoreError, TrailStore, latest_per_driver, retention_cutoff, seq_to_db};
use crate::domain::{Timestamp, TrailPoint};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows per INSERT statement: 9 parameters each stays far below SQLite's
/// limit of 32,766 bound parameters.
const ROWS_PER_INSERT: usize = 500;
/// A writer waits this long for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Retention deletes in slices so the write lock is never held for long.
const RETENTION_SLICE: i64 = 10_000;

const INSERT_HEAD: &str = "INSERT INTO positions \
    (driver_id, fleet_id, seq, ts, lat, lon, speed, heading, acc) VALUES ";
const INSERT_TAIL: &str = " ON CONFLICT DO NOTHING";

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
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await
            .with_context(|| format!("opening the SQLite file {}", path.display()))?;
        Ok(Self {
            reads: SqlReads::new(pool.clone()),
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
        for chunk in points.chunks(ROWS_PER_INSERT) {
            let sql = insert_sql(chunk.len());
            let mut query = sqlx::query(AssertSqlSafe(sql));
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

    fn reads(&self) -> &dyn TrailReads {
        &self.reads
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
