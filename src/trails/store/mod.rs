//! Where trails are kept. One trait, one file per backend: PostgreSQL when
//! `DATABASE_URL` is set, an embedded SQLite file otherwise. What both share
//! is written once: the reads ([`reads`]) and the row decoding ([`rows`]).

/// How a batch's row for a driver (fleet and id, the `drivers` key) merges
/// into the stored one, the same on both backends (a macro, so each backend's
/// statement stays a `const`): `last_seq` only grows and the last position
/// only moves to a newer fix, so the order in which commits land does not matter.
macro_rules! merge_driver_row {
    () => {
        r#"
ON CONFLICT (fleet_id, driver_id) DO UPDATE SET
    last_seq   = CASE WHEN excluded.last_seq > d.last_seq THEN excluded.last_seq ELSE d.last_seq END,
    last_lat   = CASE WHEN excluded.last_ts >= d.last_ts THEN excluded.last_lat ELSE d.last_lat END,
    last_lon   = CASE WHEN excluded.last_ts >= d.last_ts THEN excluded.last_lon ELSE d.last_lon END,
    last_ts    = CASE WHEN excluded.last_ts > d.last_ts THEN excluded.last_ts ELSE d.last_ts END,
    updated_at = excluded.updated_at
"#
    };
}

mod postgres;
mod reads;
mod rows;
mod sqlite;

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use secrecy::ExposeSecret;

use crate::alerts::{AlertStore, Evaluator, Event};
use crate::config::Settings;
use crate::devices::DeviceStore;
use crate::domain::{DriverId, DriverKey, FleetId, Seq, Timestamp, TrailPoint};
use crate::geofences::GeofenceStore;

pub use postgres::PgTrailStore;
pub use reads::TrailReads;
pub use sqlite::SqliteTrailStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the work; worth retrying.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The data the database returned breaks an invariant (never retried).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// What a history query asks for: one driver of one fleet (the caller's, or
/// the one an admin named). `from`/`to` are inclusive fix times.
#[derive(Debug, Clone)]
pub struct TrailQuery {
    pub driver: DriverKey,
    pub from: Timestamp,
    pub to: Timestamp,
    pub limit: usize,
}

/// What the store knows about one driver (fleet and id): the highest seq
/// stored and the newest stored fix.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverRecord {
    pub driver: DriverId,
    pub fleet: FleetId,
    pub last_seq: Seq,
    pub last_ts: Timestamp,
    pub last_lat: f64,
    pub last_lon: f64,
}

/// The contract every backend keeps.
#[async_trait]
pub trait TrailStore: Send + Sync + 'static {
    /// Stores the points and returns only after the transaction holding them
    /// is committed. A point already stored (same fleet, driver, `ts` and
    /// `seq`) is skipped, so a resend stores nothing twice. Also advances each driver's
    /// last stored seq and last seen position.
    async fn append(&self, points: &[TrailPoint]) -> Result<(), StoreError>;

    /// The backend's read side (the same SQL on every backend).
    fn reads(&self) -> &dyn TrailReads;

    /// The device registry kept in the same database (the same SQL on every backend).
    fn devices(&self) -> &dyn DeviceStore;

    /// The geofences kept in the same database (the same SQL on every backend).
    fn geofences(&self) -> &dyn GeofenceStore;

    /// Rules, events and alert states kept in the same database (the same
    /// SQL on every backend).
    fn alerts(&self) -> &dyn AlertStore;

    /// [`append`](TrailStore::append), and in the same transaction the
    /// evaluation of the fixes `evaluator` wants (see [`crate::alerts::persist`]):
    /// each driver's state row is locked, its new fixes evaluated in fix-time
    /// order, and the state, the events raised and their webhook outbox rows
    /// written. Returns the events this call stored (not those stored before:
    /// a retried or resent batch announces nothing twice). The transaction
    /// starts only once `turn` says the batch formed before this one has
    /// locked its state rows, so one node evaluates a driver's batches in
    /// order; it passes the turn on once its own are locked.
    async fn append_evaluated(
        &self,
        points: &[TrailPoint],
        evaluator: &dyn Evaluator,
        turn: &mut Turn,
    ) -> Result<Vec<Event>, StoreError>;

    /// Highest seq stored for the driver, 0 when none.
    async fn last_seq(&self, driver: &DriverKey) -> Result<Seq, StoreError> {
        self.reads().last_seq(driver).await
    }

    /// A driver's points in the query's range, oldest first, at most `limit`.
    async fn trail(&self, query: &TrailQuery) -> Result<Vec<TrailPoint>, StoreError> {
        self.reads().trail(query).await
    }

    /// The driver's record, `None` when nothing was ever stored for it.
    async fn driver(&self, driver: &DriverKey) -> Result<Option<DriverRecord>, StoreError> {
        self.reads().driver(driver).await
    }

    /// Cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError> {
        self.reads().ping().await
    }

    /// Drops data older than `retention_days`; returns how many partitions or rows went.
    /// Backends with partitions also create the partitions ahead here.
    async fn apply_retention(&self, retention_days: u32) -> Result<u64, StoreError>;

    /// "postgres" or "sqlite", for logs and metrics.
    fn backend(&self) -> &'static str;

    /// How many `append`s the writer may run at once. Concurrent appends must
    /// be safe (they are: each is one transaction, and dedup and the driver
    /// records do not depend on commit order); more than one pays only where
    /// the database can work on them in parallel.
    fn max_concurrent_appends(&self) -> usize {
        1
    }
}

/// Opens the configured store and brings its schema up to date: PostgreSQL
/// when `database.url` is set, else the SQLite file at `database.sqlite_path`
/// (created when missing).
pub async fn connect(settings: &Settings) -> anyhow::Result<Arc<dyn TrailStore>> {
    let url = settings.database.url.expose_secret();
    let max = settings.database.max_connections;
    if url.is_empty() {
        let store = SqliteTrailStore::open(&settings.database.sqlite_path, max).await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    } else {
        let store = PgTrailStore::connect(url, max).await?;
        store.migrate().await?;
        store
            .prepare_partitions(settings.trails.retention_days)
            .await
            .context("creating the trail partitions")?;
        Ok(Arc::new(store))
    }
}

/// A batch's place in the order the writer formed batches in, for the
/// evaluation of alerts: two commits run at once on PostgreSQL, and a
/// driver's newer fixes must not be evaluated before its older ones (they
/// would turn the older ones into late fixes). A batch waits for its
/// predecessor to have locked its drivers' state rows before it takes any
/// lock itself (waiting while holding one could close a cycle the database
/// cannot see); the database's row locks order the rest.
#[derive(Default)]
pub struct Turn {
    after: Option<tokio::sync::oneshot::Receiver<()>>,
    then: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Turn {
    /// The next turn after `previous` (the receiver of the last turn made):
    /// returns it and the receiver to chain the following one to.
    pub fn next(
        previous: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> (Turn, tokio::sync::oneshot::Receiver<()>) {
        let (then, rx) = tokio::sync::oneshot::channel();
        let turn = Turn {
            after: previous,
            then: Some(then),
        };
        (turn, rx)
    }

    /// Waits for the predecessor's locks (or for it to end, whatever way).
    pub async fn wait(&mut self) {
        if let Some(after) = self.after.take() {
            let _ = after.await;
        }
    }

    /// Lets the successor go on.
    pub fn pass(&mut self) {
        if let Some(then) = self.then.take() {
            let _ = then.send(());
        }
    }
}

/// Applies the migrations of the configured backend (`fleethub migrate`).
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    connect(settings).await.map(drop)
}

/// Milliseconds in a day, the partition width.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// The fix time before which retention removes data.
pub(crate) fn retention_cutoff(now: Timestamp, retention_days: u32) -> i64 {
    now.as_millis()
        .saturating_sub(i64::from(retention_days).saturating_mul(DAY_MS))
}

/// Seqs are u64 on the wire and bigint in the databases.
pub(crate) fn seq_to_db(seq: Seq) -> Result<i64, StoreError> {
    i64::try_from(seq)
        .map_err(|_| StoreError::Corrupt(format!("seq {seq} exceeds the storable range")))
}

pub(crate) fn seq_from_db(seq: i64) -> Result<Seq, StoreError> {
    Seq::try_from(seq).map_err(|_| StoreError::Corrupt(format!("negative seq {seq} in the store")))
}

/// For each driver (fleet and id) in the batch: its highest seq and its
/// newest fix (by fix time, the later seq winning ties), sorted by fleet and
/// driver, the key order, so concurrent upserts lock rows in one order.
pub(crate) fn latest_per_driver(points: &[TrailPoint]) -> Vec<(&TrailPoint, Seq)> {
    let mut latest: std::collections::BTreeMap<(&str, &str), (&TrailPoint, Seq)> =
        Default::default();
    for p in points {
        let key = (p.fleet.as_str(), p.driver.as_str());
        let entry = latest.entry(key).or_insert((p, p.seq));
        entry.1 = entry.1.max(p.seq);
        let newest = entry.0;
        if (p.position.ts(), p.seq) >= (newest.position.ts(), newest.seq) {
            entry.0 = p;
        }
    }
    latest.into_values().collect()
}
