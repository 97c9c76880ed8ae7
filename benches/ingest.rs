//! Sustained trail ingest into PostgreSQL: positions per second through the
//! `TrailWriter` with durable acks (every submission resolved only after its
//! group commit), next to the raw `COPY` rate of the same rows into the same
//! table, measured in the same run.
//!
//! `cargo bench --bench ingest` (needs PostgreSQL at 127.0.0.1:5432, trust
//! auth; creates and drops its own database). Knobs, as environment
//! variables: `INGEST_DRIVERS` (default 2000), `INGEST_PER_DRIVER` (250),
//! `INGEST_BATCH` (fixes per submission, default 1: phones sending one fix
//! a second), `INGEST_QUEUE` (100000), `INGEST_FLUSH_ROWS` (50000),
//! `INGEST_FLUSH_MS` (20), `INGEST_ROUNDS` (2): the defaults are the
//! hub's.
//!
//! `INGEST_STORE=sqlite` runs the writer into the embedded SQLite store
//! instead (a fresh file per round, the hub's default pool size), with no
//! `COPY` to compare with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use tokio_util::sync::CancellationToken;

use fleethub::config::Settings;
use fleethub::config::TrailSettings;
use fleethub::domain::{DriverId, FleetId, Position, Timestamp, TrailPoint};
use fleethub::trails::{PgTrailStore, SqliteTrailStore, TrailStore, TrailWriter};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The rows: drivers moving east from Lima, one fix a second, the newest a
/// second ago (so every row lands in an existing daily partition).
fn rows(drivers: usize, per_driver: usize) -> Vec<TrailPoint> {
    let newest = Timestamp::now().as_millis() - 1000;
    let fleets: Vec<FleetId> = (0..10)
        .map(|f| FleetId::parse(&format!("fleet-{f}")).unwrap())
        .collect();
    let ids: Vec<DriverId> = (0..drivers)
        .map(|d| DriverId::parse(&format!("driver-{d:05}")).unwrap())
        .collect();
    let mut out = Vec::with_capacity(drivers * per_driver);
    // Interleaved by time, as a live fleet sends them.
    for s in 0..per_driver {
        for (d, id) in ids.iter().enumerate() {
            let ts = newest - ((per_driver - s) as i64) * 1000;
            let lat = -12.0 - d as f64 * 0.001;
            let lon = -77.0 + s as f64 * 0.0001;
            let position = Position::new(
                lat,
                lon,
                Timestamp::from_millis(ts),
                Some(8.3),
                Some(90.0),
                Some(5.0),
            )
            .unwrap();
            out.push(TrailPoint {
                driver: id.clone(),
                fleet: fleets[d % fleets.len()].clone(),
                seq: s as u64 + 1,
                position,
                extras: Default::default(),
            });
        }
    }
    out
}

/// The same rows as COPY text.
fn copy_text(points: &[TrailPoint]) -> Vec<u8> {
    use std::fmt::Write;
    let mut text = String::with_capacity(points.len() * 80);
    for p in points {
        let pos = &p.position;
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            p.driver,
            p.fleet,
            p.seq,
            pos.ts().as_millis(),
            pos.lat(),
            pos.lon(),
            pos.speed().unwrap_or_default(),
            pos.heading().unwrap_or_default(),
            pos.acc().unwrap_or_default()
        );
    }
    text.into_bytes()
}

async fn raw_copy(store: &PgTrailStore, text: &[u8]) -> Duration {
    let mut conn = store.pool().acquire().await.unwrap();
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw("COPY positions (driver_id, fleet_id, seq, ts, lat, lon, speed, heading, acc) FROM STDIN")
        .await
        .unwrap();
    for chunk in text.chunks(1 << 20) {
        copy.send(chunk).await.unwrap();
    }
    copy.finish().await.unwrap();
    started.elapsed()
}

/// Submits every row through the writer (refused submissions wait for room
/// and retry, as a driver would resend) and waits for the last ack.
async fn through_writer(
    store: Arc<dyn TrailStore>,
    points: &[TrailPoint],
    batch: usize,
) -> (Duration, usize) {
    let settings = TrailSettings {
        retention_days: 90,
        queue_capacity: knob("INGEST_QUEUE", 100_000),
        flush_max_rows: knob("INGEST_FLUSH_ROWS", 50_000),
        flush_interval_ms: knob("INGEST_FLUSH_MS", 20) as u64,
    };
    let shutdown = CancellationToken::new();
    let (writer, task) = TrailWriter::spawn(store, &settings, shutdown.clone());
    let started = Instant::now();
    let mut acks = Vec::with_capacity(points.len() / batch + 1);
    let mut refusals = 0;
    for chunk in points.chunks(batch) {
        loop {
            match writer.try_submit(chunk.to_vec()) {
                Ok(ack) => {
                    acks.push(ack);
                    break;
                }
                Err(_) => {
                    refusals += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for ack in acks {
        ack.await.unwrap().unwrap();
    }
    let took = started.elapsed();
    shutdown.cancel();
    task.await.unwrap();
    (took, refusals)
}

async fn truncate(store: &PgTrailStore) {
    store
        .pool()
        .execute("TRUNCATE positions, drivers")
        .await
        .unwrap();
    store
        .pool()
        .execute("VACUUM ANALYZE positions")
        .await
        .unwrap();
}

async fn count(store: &PgTrailStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM positions")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

async fn bench(db_url: &str) {
    let (drivers, per_driver) = (knob("INGEST_DRIVERS", 2000), knob("INGEST_PER_DRIVER", 250));
    let batch = knob("INGEST_BATCH", 1).max(1);
    let points = rows(drivers, per_driver);
    let text = copy_text(&points);
    let n = points.len();
    let store = Arc::new(PgTrailStore::connect(db_url, 4).await.unwrap());
    store.migrate().await.unwrap();
    store.prepare_partitions(90).await.unwrap();
    println!("ingest: {n} positions ({drivers} drivers x {per_driver}), {batch} per submission");
    for round in 1..=knob("INGEST_ROUNDS", 2) {
        truncate(&store).await;
        let copy = raw_copy(&store, &text).await;
        assert_eq!(count(&store).await, n as i64);
        truncate(&store).await;
        let (writer, refusals) = through_writer(store.clone(), &points, batch).await;
        assert_eq!(count(&store).await, n as i64);
        let (c, w) = (rate(n, copy), rate(n, writer));
        println!(
            "round {round}: raw COPY {c:>9.0} rows/s ({:.2} s) | TrailWriter, durable acks {w:>9.0} positions/s ({:.2} s, {refusals} refusals) | writer/COPY = {:.2}",
            copy.as_secs_f64(),
            writer.as_secs_f64(),
            w / c
        );
    }
}

/// The writer into a fresh SQLite file per round, with the hub's default pool.
async fn bench_sqlite() {
    let (drivers, per_driver) = (knob("INGEST_DRIVERS", 2000), knob("INGEST_PER_DRIVER", 250));
    let batch = knob("INGEST_BATCH", 1).max(1);
    let pool = Settings::load_from(None, std::iter::empty())
        .unwrap()
        .database
        .max_connections;
    let points = rows(drivers, per_driver);
    let n = points.len();
    println!(
        "ingest into SQLite: {n} positions ({drivers} drivers x {per_driver}), {batch} per submission, pool of {pool}"
    );
    for round in 1..=knob("INGEST_ROUNDS", 2) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trails.db");
        let store = SqliteTrailStore::open(&path, pool).await.unwrap();
        store.migrate().await.unwrap();
        let (writer, refusals) = through_writer(Arc::new(store), &points, batch).await;
        let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM positions")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(stored, n as i64);
        println!(
            "round {round}: TrailWriter into SQLite, durable acks {:>9.0} positions/s ({:.2} s, {refusals} refusals)",
            rate(n, writer),
            writer.as_secs_f64(),
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("INGEST_STORE").is_ok_and(|s| s == "sqlite") {
        rt.block_on(bench_sqlite());
        return;
    }
    rt.block_on(async {
        let name = format!("fleethub_bench_{:08x}", rand::random::<u32>());
        let mut admin = PgConnection::connect(ADMIN_URL)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL must run at 127.0.0.1:5432 (trust auth): {e}"));
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let outcome = tokio::spawn(async move { bench(&url).await }).await;
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {name} WITH (FORCE)"
            )))
            .await
            .unwrap();
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    });
}
