//! The memory a trail store holds does not grow with the variety of batch
//! sizes it is given. A binary of its own, so that no other test allocates
//! while the process's resident memory is measured.
//!
//! Every batch size from 1 to `driver.max_batch_items` is appended once, in a
//! shuffled order, one commit each, by as many concurrent appenders as the
//! default pool has connections (so every connection of the pool sees a share
//! of the sizes, as under a live load where the writer's commits, the drivers'
//! `last_seq` lookups and the history API take turns on the pool). The anonymous
//! resident memory (`RssAnon`) after the pass must stay within a few MB of what
//! it was before, on the embedded SQLite store as on PostgreSQL.

mod support;

use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use sqlx::{Connection, PgConnection};

use fleethub::config::Settings;
use fleethub::domain::{DriverId, DriverKey, FleetId, Position, Timestamp, TrailPoint};
use fleethub::trails::{PgTrailStore, SqliteTrailStore, TrailQuery, TrailStore};
use support::TestDb;

/// How much the anonymous resident memory may grow over one pass.
const MAX_GROWTH_KB: i64 = 8 * 1024;
/// Distinct drivers the batches cycle through.
const DRIVERS: usize = 300;

/// `RssAnon` of this process, in kB: the heap and every other anonymous
/// mapping, not the binary's or the SQLite file's pages.
fn rss_anon_kb() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The hub's defaults: the pool size and the largest batch a driver may send.
fn defaults() -> (u32, usize) {
    let settings = Settings::load_from(None, std::iter::empty()).unwrap();
    (
        settings.database.max_connections,
        settings.driver.max_batch_items,
    )
}

/// A batch of `size` fixes, each of its own (driver, seq), all in the last
/// day (inside the PostgreSQL partitions).
fn batch(first: usize, size: usize, now_ms: i64) -> Vec<TrailPoint> {
    let fleet = FleetId::parse("acme").unwrap();
    (first..first + size)
        .map(|n| {
            let driver = DriverId::parse(&format!("d{:03}", n % DRIVERS)).unwrap();
            let seq = (n / DRIVERS + 1) as u64;
            let position = Position::new(
                -12.05 - (n % DRIVERS) as f64 * 0.001,
                -77.04 + seq as f64 * 0.0001,
                Timestamp::from_millis(now_ms - 86_000_000 + seq as i64 * 100),
                Some(8.5),
                Some(90.0),
                Some(5.0),
            )
            .unwrap();
            TrailPoint {
                driver,
                fleet: fleet.clone(),
                seq,
                position,
                extras: Default::default(),
            }
        })
        .collect()
}

/// Appends one batch of every size in `sizes`, in order, one commit each, as
/// the trail writer does on SQLite (one append at a time); returns the rows
/// appended.
async fn pass(store: &dyn TrailStore, sizes: &[usize], mut first: usize) -> usize {
    let now_ms = Timestamp::now().as_millis();
    for &size in sizes {
        store.append(&batch(first, size, now_ms)).await.unwrap();
        first += size;
    }
    sizes.iter().sum()
}

/// Opens every connection of the pool: `pool` lookups at once, each waiting
/// for a connection of its own, until `open` reports the pool is full.
async fn fill_pool<F, Fut>(store: &Arc<dyn TrailStore>, pool: usize, open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = usize>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let driver = key("d000");
    loop {
        let opened = open().await;
        if opened >= pool {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pool opened only {opened} of {pool} connections"
        );
        let lookups: Vec<_> = (0..pool)
            .map(|_| {
                let (store, driver) = (store.clone(), driver.clone());
                tokio::spawn(async move { store.last_seq(&driver).await.unwrap() })
            })
            .collect();
        for l in lookups {
            l.await.unwrap();
        }
    }
}

/// With every connection of the pool open and warmed up, appends one batch
/// of every size (shuffled) twice; returns RssAnon in kB before, after the
/// first pass and after the second.
async fn measure<F, Fut>(
    store: Arc<dyn TrailStore>,
    pool: usize,
    max_batch: usize,
    open: F,
) -> (i64, i64, i64)
where
    F: Fn() -> Fut,
    Fut: Future<Output = usize>,
{
    fill_pool(&store, pool, open).await;
    // Every connection twice through the append path with the largest batch,
    // so that the baseline holds what does not depend on the variety of
    // sizes: the connections' fixed statements, SQLite's page cache of each
    // connection at the size the largest batch takes (bounded by its
    // `cache_size`, 2 MiB by default), the client's buffers at their largest.
    let mut first = pass(&*store, &vec![max_batch; pool * 2], 0).await;
    let before = rss_anon_kb();

    let mut sizes: Vec<usize> = (1..=max_batch).collect();
    sizes.shuffle(&mut rand::rngs::StdRng::seed_from_u64(15));
    first += pass(&*store, &sizes, first).await;
    let after = rss_anon_kb();
    first += pass(&*store, &sizes, first).await;
    let again = rss_anon_kb();

    // Every row appended is stored, once, whatever the shapes it went in.
    assert_eq!(stored_rows(&*store).await, first);
    (before, after, again)
}

/// Driver `id` of the fleet the batches are appended for.
fn key(id: &str) -> DriverKey {
    DriverKey::new(
        FleetId::parse("acme").unwrap(),
        DriverId::parse(id).unwrap(),
    )
}

/// Rows stored for all the drivers the batches cycle through.
async fn stored_rows(store: &dyn TrailStore) -> usize {
    let mut rows = 0;
    for d in 0..DRIVERS {
        let query = TrailQuery {
            driver: key(&format!("d{d:03}")),
            from: Timestamp::from_millis(i64::MIN),
            to: Timestamp::from_millis(i64::MAX),
            limit: usize::MAX,
        };
        rows += store.trail(&query).await.unwrap().len();
    }
    rows
}

/// Connections this process holds to the SQLite file (each opens it once).
fn sqlite_connections(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

/// Connections open to the test database, other than the one asking.
async fn pg_connections(db: &TestDb) -> usize {
    let mut conn = PgConnection::connect(&db.url()).await.unwrap();
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    usize::try_from(open).unwrap()
}

fn report(backend: &str, (before, after, again): (i64, i64, i64)) -> i64 {
    eprintln!(
        "{backend}: RssAnon {:.1} MB before, {:.1} MB after one pass (+{:.1} MB), {:.1} MB after a second (+{:.1} MB)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 / 1024.0,
        again as f64 / 1024.0,
        (again - after) as f64 / 1024.0,
    );
    after.max(again) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appending_every_batch_size_holds_flat_memory_on_sqlite_as_on_postgres() {
    let (pool, max_batch) = defaults();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trails.db");
    let sqlite = SqliteTrailStore::open(&path, pool).await.unwrap();
    sqlite.migrate().await.unwrap();
    let sqlite_growth = report(
        "sqlite",
        measure(Arc::new(sqlite), pool as usize, max_batch, || async {
            sqlite_connections(&path)
        })
        .await,
    );

    let db = TestDb::create().await;
    let pg = PgTrailStore::connect(&db.url(), pool).await.unwrap();
    pg.migrate().await.unwrap();
    pg.prepare_partitions(90).await.unwrap();
    let pg_growth = report(
        "postgres",
        measure(Arc::new(pg), pool as usize, max_batch, || {
            pg_connections(&db)
        })
        .await,
    );

    assert!(
        sqlite_growth <= MAX_GROWTH_KB,
        "the SQLite store grew by {sqlite_growth} kB (PostgreSQL: {pg_growth} kB)"
    );
    assert!(
        pg_growth <= MAX_GROWTH_KB,
        "the PostgreSQL store grew by {pg_growth} kB"
    );
}
