//! PostgreSQL backend: daily partitions, group commits as one statement.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use parking_lot::Mutex;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Postgres};

use super::reads::{SqlReads, TrailReads};
use super::{DAY_MS, StoreError, TrailStore, Turn, latest_per_driver, retention_cutoff, seq_to_db};
use crate::alerts::persist::{self, Planned, StateRow};
use crate::alerts::store::insert_events;
use crate::alerts::{AlertStore, Evaluator, Event, SqlAlerts};
use crate::devices::{DeviceStore, SqlDevices};
use crate::domain::{Seq, Timestamp, TrailPoint};
use crate::geofences::{GeofenceStore, SqlGeofences};
use crate::webhooks::{SqlWebhooks, WebhookStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A pool waits this long for a connection before the call fails (and the
/// writer retries): long enough for a busy pool, short enough to notice an outage.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Fixes may arrive up to a week late (offline buffers), so start-up creates
/// partitions this many days back...
const PARTITION_DAYS_BACK: i64 = 8;
/// ...and this many days ahead, renewed hourly by maintenance.
const PARTITION_DAYS_AHEAD: i64 = 3;

/// One group commit in one statement (so one round trip, atomic without a
/// transaction block): the batch's positions, a fix already stored being
/// skipped, and one row per driver of the batch. A driver's `last_seq` only
/// grows and its last position only moves to a newer fix, so the order of
/// commits is irrelevant. (A data-modifying `WITH` runs whether or not the
/// outer statement reads it.)
const APPEND: &str = concat!(
    r#"
WITH new_positions AS (
    INSERT INTO positions (driver_id, fleet_id, seq, ts, lat, lon, speed, heading, acc)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::float8[],
                         $6::float8[], $7::float8[], $8::float8[], $9::float8[])
    ON CONFLICT DO NOTHING
)
INSERT INTO drivers AS d (driver_id, fleet_id, last_seq, last_ts, last_lat, last_lon)
SELECT * FROM UNNEST($10::text[], $11::text[], $12::int8[], $13::int8[], $14::float8[], $15::float8[])
"#,
    merge_driver_row!()
);

// Alert states (see `crate::alerts::persist`). Every driver to evaluate
// gets a row first (a placeholder when it has none), so that the lock below
// finds one: two commits meeting on a driver's first fixes wait for each
// other on the insert instead of both starting fresh.
const FRESH_STATES: &str = r#"
INSERT INTO alert_state (fleet_id, driver_id, last_ts, last_seq, last_lat, last_lon, last_recv, state)
SELECT f, d, -1, 0, 0, 0, $3, '{}' FROM UNNEST($1::text[], $2::text[]) AS k(f, d)
ON CONFLICT (fleet_id, driver_id) DO NOTHING
"#;

// Locked in key order, the order every commit locks them in.
const LOCK_STATES: &str = r#"
SELECT s.fleet_id, s.driver_id, s.last_ts, s.last_seq, s.last_lat, s.last_lon, s.state
FROM alert_state s JOIN UNNEST($1::text[], $2::text[]) AS k(f, d)
  ON s.fleet_id = k.f AND s.driver_id = k.d
ORDER BY s.fleet_id, s.driver_id
FOR UPDATE OF s
"#;

const WRITE_STATES: &str = r#"
UPDATE alert_state s SET last_ts = u.ts, last_seq = u.seq, last_lat = u.lat, last_lon = u.lon,
    last_recv = $8, state = u.state
FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::float8[], $6::float8[], $7::text[])
    AS u(f, d, ts, seq, lat, lon, state)
WHERE s.fleet_id = u.f AND s.driver_id = u.d
"#;

/// Two appends at once keep both cores busy: one backend inserts while the
/// other waits for its WAL flush.
const CONCURRENT_APPENDS: usize = 2;

pub struct PgTrailStore {
    pool: PgPool,
    reads: SqlReads<Postgres>,
    devices: SqlDevices<Postgres>,
    geofences: SqlGeofences<Postgres>,
    webhooks: SqlWebhooks<Postgres>,
    alerts: SqlAlerts<Postgres>,
    /// Connections kept by the writer's commits from one commit to the next:
    /// going through the pool each time would add two round trips per commit
    /// (sqlx pings a connection when it is handed out and when it comes back).
    /// A connection whose commit failed is not kept.
    committers: Mutex<Vec<PoolConnection<Postgres>>>,
}

impl PgTrailStore {
    /// Opens a pool. Every connection runs with `synchronous_commit = on`
    /// whatever the server default, because acks promise the WAL is on disk.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url.parse().context("parsing DATABASE_URL")?;
        let options = options
            .options([("synchronous_commit", "on")])
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .context("connecting to PostgreSQL")?;
        Ok(Self {
            reads: SqlReads::new(pool.clone()),
            devices: SqlDevices::new(pool.clone()),
            geofences: SqlGeofences::new(pool.clone()),
            webhooks: SqlWebhooks::new(pool.clone()),
            alerts: SqlAlerts::new(pool.clone()),
            pool,
            committers: Mutex::new(Vec::with_capacity(CONCURRENT_APPENDS)),
        })
    }

    /// The pool, for tools (benchmarks, tests) that need raw access.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .context("applying the PostgreSQL migrations")
    }

    /// Creates the partitions around today that fixes may land in.
    pub async fn prepare_partitions(&self, retention_days: u32) -> Result<u32, StoreError> {
        let back = PARTITION_DAYS_BACK.min(i64::from(retention_days));
        let today = Timestamp::now().as_millis().div_euclid(DAY_MS);
        self.ensure_partitions(
            Timestamp::from_millis((today - back) * DAY_MS),
            Timestamp::from_millis((today + PARTITION_DAYS_AHEAD) * DAY_MS),
        )
        .await
    }

    /// Creates the daily partitions covering `from..=to` that are missing
    /// (moving rows the default partition holds for those days); returns how
    /// many it created.
    pub async fn ensure_partitions(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<u32, StoreError> {
        let mut created = 0;
        for day in from.as_millis().div_euclid(DAY_MS)..=to.as_millis().div_euclid(DAY_MS) {
            created += u32::from(self.ensure_day(day).await?);
        }
        Ok(created)
    }

    async fn ensure_day(&self, day: i64) -> Result<bool, StoreError> {
        let created: bool = sqlx::query_scalar(
            "SELECT fleethub_ensure_day_partition(DATE '1970-01-01' + $1::int4)",
        )
        .bind(
            i32::try_from(day)
                .map_err(|_| StoreError::Corrupt(format!("day {day} out of range")))?,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(created)
    }

    /// Gives the fixes that fell into the default partition a partition of
    /// their own, for the days still within retention.
    async fn rehome_default_rows(&self, cutoff_ms: i64) -> Result<u32, StoreError> {
        let days: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT div(ts, 86400000)::int8 FROM positions_default WHERE ts >= $1",
        )
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut created = 0;
        for day in days {
            created += u32::from(self.ensure_day(day).await?);
        }
        Ok(created)
    }
}

/// A point's place in the primary key `(fleet_id, driver_id, ts, seq)`.
fn pk_order(p: &TrailPoint) -> (&str, &str, Timestamp, Seq) {
    (p.fleet.as_str(), p.driver.as_str(), p.position.ts(), p.seq)
}

/// The batch as column arrays, the shape UNNEST takes.
#[derive(Default)]
struct Columns<'a> {
    driver: Vec<&'a str>,
    fleet: Vec<&'a str>,
    seq: Vec<i64>,
    ts: Vec<i64>,
    lat: Vec<f64>,
    lon: Vec<f64>,
    speed: Vec<Option<f64>>,
    heading: Vec<Option<f64>>,
    acc: Vec<Option<f64>>,
}

impl<'a> Columns<'a> {
    fn of_points(points: &[&'a TrailPoint]) -> Result<Self, StoreError> {
        let mut c = Columns::default();
        for p in points.iter().copied() {
            c.driver.push(p.driver.as_str());
            c.fleet.push(p.fleet.as_str());
            c.seq.push(seq_to_db(p.seq)?);
            c.ts.push(p.position.ts().as_millis());
            c.lat.push(p.position.lat());
            c.lon.push(p.position.lon());
            c.speed.push(p.position.speed());
            c.heading.push(p.position.heading());
            c.acc.push(p.position.acc());
        }
        Ok(c)
    }

    /// One row per driver: highest seq, newest fix (speed etc. unused).
    fn of_drivers(points: &'a [TrailPoint]) -> Result<Self, StoreError> {
        let mut c = Columns::default();
        for (p, max_seq) in latest_per_driver(points) {
            c.driver.push(p.driver.as_str());
            c.fleet.push(p.fleet.as_str());
            c.seq.push(seq_to_db(max_seq)?);
            c.ts.push(p.position.ts().as_millis());
            c.lat.push(p.position.lat());
            c.lon.push(p.position.lon());
        }
        Ok(c)
    }
}

/// [`APPEND`] with the batch's columns bound.
fn append_query<'q>(
    p: Columns<'q>,
    d: Columns<'q>,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(APPEND)
        .bind(p.driver)
        .bind(p.fleet)
        .bind(p.seq)
        .bind(p.ts)
        .bind(p.lat)
        .bind(p.lon)
        .bind(p.speed)
        .bind(p.heading)
        .bind(p.acc)
        .bind(d.driver)
        .bind(d.fleet)
        .bind(d.seq)
        .bind(d.ts)
        .bind(d.lat)
        .bind(d.lon)
}

/// Alert state rows as column arrays.
#[derive(Default)]
struct StateColumns<'a> {
    fleet: Vec<&'a str>,
    driver: Vec<&'a str>,
    ts: Vec<i64>,
    seq: Vec<i64>,
    lat: Vec<f64>,
    lon: Vec<f64>,
    state: Vec<&'a str>,
}

impl<'a> StateColumns<'a> {
    fn push(&mut self, fleet: &'a str, driver: &'a str, row: &'a StateRow) {
        self.fleet.push(fleet);
        self.driver.push(driver);
        self.ts.push(row.last_ts);
        self.seq.push(row.last_seq);
        self.lat.push(row.last_lat);
        self.lon.push(row.last_lon);
        self.state.push(&row.state);
    }
}

#[async_trait]
impl TrailStore for PgTrailStore {
    /// Positions and the drivers' rows in one statement ([`APPEND`]), which is
    /// atomic on its own: no transaction block, one round trip. Rows go in
    /// primary-key order: index inserts stay local, and concurrent appends
    /// take locks in one order, so they wait for each other but never deadlock.
    async fn append(&self, points: &[TrailPoint]) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let mut sorted: Vec<&TrailPoint> = points.iter().collect();
        sorted.sort_unstable_by(|a, b| pk_order(a).cmp(&pk_order(b)));
        let p = Columns::of_points(&sorted)?;
        let d = Columns::of_drivers(points)?;
        let kept = self.committers.lock().pop();
        let mut conn = match kept {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        append_query(p, d).execute(&mut *conn).await?;
        let mut kept = self.committers.lock();
        if kept.len() < CONCURRENT_APPENDS {
            kept.push(conn);
        }
        Ok(())
    }

    /// [`APPEND`] and the alert steps in one transaction (see the trait).
    async fn append_evaluated(
        &self,
        points: &[TrailPoint],
        evaluator: &dyn Evaluator,
        turn: &mut Turn,
    ) -> Result<Vec<Event>, StoreError> {
        let planned = Planned::new(evaluator, points);
        if planned.is_empty() {
            turn.pass();
            self.append(points).await?;
            return Ok(Vec::new());
        }
        let mut sorted: Vec<&TrailPoint> = points.iter().collect();
        sorted.sort_unstable_by(|a, b| pk_order(a).cmp(&pk_order(b)));
        let p = Columns::of_points(&sorted)?;
        let d = Columns::of_drivers(points)?;
        // Waiting before taking any lock: the batch before may still need
        // the `drivers` rows this one's APPEND would lock.
        turn.wait().await;
        let now = Timestamp::now();
        let mut conn = self.pool.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        append_query(p, d).execute(&mut *tx).await?;
        let fleets: Vec<&str> = planned.drivers.keys().map(|k| k.fleet().as_str()).collect();
        let drivers: Vec<&str> = planned
            .drivers
            .keys()
            .map(|k| k.driver().as_str())
            .collect();
        sqlx::query(FRESH_STATES)
            .bind(&fleets)
            .bind(&drivers)
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query_as::<_, (String, String, i64, i64, f64, f64, String)>(LOCK_STATES)
            .bind(&fleets)
            .bind(&drivers)
            .fetch_all(&mut *tx)
            .await?;
        turn.pass();
        let stored = rows
            .into_iter()
            .filter_map(|(f, d, last_ts, last_seq, last_lat, last_lon, state)| {
                let key = planned.key_of(&f, &d)?;
                let row = StateRow {
                    last_ts,
                    last_seq,
                    last_lat,
                    last_lon,
                    state,
                };
                Some((key, row))
            })
            .collect();
        let evaluated = persist::evaluate(evaluator, &planned, stored)?;
        let mut s = StateColumns::default();
        for (key, row) in &evaluated.states {
            s.push(key.fleet().as_str(), key.driver().as_str(), row);
        }
        sqlx::query(WRITE_STATES)
            .bind(s.fleet)
            .bind(s.driver)
            .bind(s.ts)
            .bind(s.seq)
            .bind(s.lat)
            .bind(s.lon)
            .bind(s.state)
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?;
        let stored = insert_events::<Postgres>(&mut tx, evaluated.events, now).await?;
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

    /// Partition upkeep, then retention: creates the partitions ahead,
    /// re-homes default-partition rows, drops the partitions wholly older
    /// than the cutoff. Returns the partitions dropped.
    async fn apply_retention(&self, retention_days: u32) -> Result<u64, StoreError> {
        let cutoff = retention_cutoff(Timestamp::now(), retention_days);
        self.prepare_partitions(retention_days).await?;
        self.rehome_default_rows(cutoff).await?;
        let dropped: i32 = sqlx::query_scalar("SELECT fleethub_drop_partitions_before($1)")
            .bind(cutoff)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(dropped).unwrap_or(0))
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn max_concurrent_appends(&self) -> usize {
        CONCURRENT_APPENDS
    }
}
