//! The trail store and writer against the real databases: PostgreSQL on this
//! machine (a fresh database per test) and a SQLite file in a temp dir.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use fleethub::config::TrailSettings;
use fleethub::domain::{DriverId, DriverKey, FleetId, Seq, Timestamp, TrailPoint};
use fleethub::trails::TrailWriter;
use fleethub::trails::{
    DriverRecord, PgTrailStore, SqliteTrailStore, StoreError, TrailQuery, TrailReads, TrailStore,
};
use support::{PG_HOST, Proxy, TestDb, eventually, point, points};

const DAY_MS: i64 = 86_400_000;

async fn postgres(db: &TestDb) -> Arc<PgTrailStore> {
    let store = PgTrailStore::connect(&db.url(), 4).await.unwrap();
    store.migrate().await.unwrap();
    store.prepare_partitions(90).await.unwrap();
    Arc::new(store)
}

async fn sqlite(dir: &tempfile::TempDir) -> Arc<SqliteTrailStore> {
    let store = SqliteTrailStore::open(dir.path().join("trails.db"), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Arc::new(store)
}

/// Driver `driver` of fleet `fleet`.
fn key(fleet: &str, driver: &str) -> DriverKey {
    DriverKey::new(
        FleetId::parse(fleet).unwrap(),
        DriverId::parse(driver).unwrap(),
    )
}

/// Every stored fix of `driver` of fleet `f1`.
fn all_of(driver: &str) -> TrailQuery {
    all_of_in("f1", driver)
}

fn all_of_in(fleet: &str, driver: &str) -> TrailQuery {
    TrailQuery {
        driver: key(fleet, driver),
        from: Timestamp::from_millis(i64::MIN),
        to: Timestamp::from_millis(i64::MAX),
        limit: usize::MAX,
    }
}

fn seqs(points: &[TrailPoint]) -> Vec<Seq> {
    points.iter().map(|p| p.seq).collect()
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

fn trail_settings(queue_capacity: usize, flush_max_rows: usize) -> TrailSettings {
    TrailSettings {
        retention_days: 90,
        queue_capacity,
        flush_max_rows,
        flush_interval_ms: 5,
    }
}

// ---- the store contract, run on both backends ----

async fn a_resend_is_stored_once(store: Arc<dyn TrailStore>) {
    let start = now_ms() - 60_000;
    let batch = points("d1", "f1", 1..=5, start);
    store.append(&batch).await.unwrap();
    store.append(&batch).await.unwrap();
    store
        .append(&points("d1", "f1", 4..=7, start))
        .await
        .unwrap();

    let trail = store.trail(&all_of("d1")).await.unwrap();
    assert_eq!(seqs(&trail), vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(trail[0], batch[0], "a point reads back exactly as stored");
}

async fn last_seq_is_the_highest_stored(store: Arc<dyn TrailStore>) {
    let d1 = key("f1", "d1");
    assert_eq!(store.last_seq(&d1).await.unwrap(), 0);
    let start = now_ms() - 60_000;
    store
        .append(&points("d1", "f1", 1..=9, start))
        .await
        .unwrap();
    // An old fix resent late must not move last_seq back, nor the last position.
    store
        .append(&[point("d1", "f1", 3, start + 3000)])
        .await
        .unwrap();
    assert_eq!(store.last_seq(&d1).await.unwrap(), 9);
    let record = store.driver(&d1).await.unwrap().unwrap();
    assert_eq!(
        record,
        DriverRecord {
            driver: DriverId::parse("d1").unwrap(),
            fleet: FleetId::parse("f1").unwrap(),
            last_seq: 9,
            last_ts: Timestamp::from_millis(start + 9000),
            last_lat: -12.05,
            last_lon: point("d1", "f1", 9, 0).position.lon(),
        }
    );
    assert_eq!(store.driver(&key("f1", "nobody")).await.unwrap(), None);
}

async fn from_to_and_limit_filter_the_trail(store: Arc<dyn TrailStore>) {
    let start = now_ms() - 3_600_000;
    store
        .append(&points("d1", "f1", 1..=10, start))
        .await
        .unwrap();
    store
        .append(&points("d2", "f1", 1..=10, start))
        .await
        .unwrap();

    let mut q = all_of("d1");
    q.from = Timestamp::from_millis(start + 3000);
    q.to = Timestamp::from_millis(start + 6000);
    assert_eq!(
        seqs(&store.trail(&q).await.unwrap()),
        vec![3, 4, 5, 6],
        "from/to are inclusive"
    );
    q.limit = 2;
    assert_eq!(
        seqs(&store.trail(&q).await.unwrap()),
        vec![3, 4],
        "limit keeps the oldest"
    );

    let mut q = all_of("d1");
    q.driver = key("f2", "d1");
    assert!(
        store.trail(&q).await.unwrap().is_empty(),
        "another fleet sees nothing"
    );
    q.driver = key("f1", "d1");
    assert_eq!(store.trail(&q).await.unwrap().len(), 10);
}

async fn the_same_id_in_two_fleets_is_two_drivers(store: Arc<dyn TrailStore>) {
    let start = now_ms() - 60_000;
    // Same id, same fix times, same seqs: only the fleet tells them apart,
    // in one batch and across batches.
    let acme = points("d1", "acme", 1..=5, start);
    let beta = points("d1", "beta", 1..=3, start);
    let mixed: Vec<TrailPoint> = acme[..3].iter().chain(&beta).cloned().collect();
    store.append(&mixed).await.unwrap();
    store.append(&acme[3..]).await.unwrap();

    assert_eq!(store.last_seq(&key("acme", "d1")).await.unwrap(), 5);
    assert_eq!(store.last_seq(&key("beta", "d1")).await.unwrap(), 3);
    assert_eq!(store.last_seq(&key("gamma", "d1")).await.unwrap(), 0);
    assert_eq!(store.trail(&all_of_in("acme", "d1")).await.unwrap(), acme);
    assert_eq!(store.trail(&all_of_in("beta", "d1")).await.unwrap(), beta);
    let record = store.driver(&key("beta", "d1")).await.unwrap().unwrap();
    assert_eq!(
        (record.fleet.as_str(), record.last_seq, record.last_ts),
        ("beta", 3, Timestamp::from_millis(start + 3000))
    );
    assert_eq!(store.driver(&key("gamma", "d1")).await.unwrap(), None);

    // Dedup is per fleet: resending either stores nothing twice.
    store.append(&mixed).await.unwrap();
    store.append(&beta).await.unwrap();
    assert_eq!(store.trail(&all_of_in("acme", "d1")).await.unwrap(), acme);
    assert_eq!(store.trail(&all_of_in("beta", "d1")).await.unwrap(), beta);
    assert_eq!(store.last_seq(&key("acme", "d1")).await.unwrap(), 5);
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::TestDb::create().await;
                    super::$name(super::postgres(&db).await).await;
                }
            )*
        }
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(super::sqlite(&dir).await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    a_resend_is_stored_once,
    last_seq_is_the_highest_stored,
    from_to_and_limit_filter_the_trail,
    the_same_id_in_two_fleets_is_two_drivers,
);

// ---- retention ----

async fn partitions(store: &PgTrailStore) -> Vec<String> {
    sqlx::query(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'positions'::regclass ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect()
}

fn partition_of(ts_ms: i64) -> String {
    let day = ts_ms.div_euclid(DAY_MS);
    let date = time::Date::from_julian_day(2_440_588 + day as i32).unwrap();
    format!(
        "positions_{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

#[tokio::test]
async fn postgres_retention_drops_whole_old_partitions() {
    let db = TestDb::create().await;
    let store = postgres(&db).await;
    let old = now_ms() - 100 * DAY_MS;
    let recent = now_ms() - 60_000;
    store
        .ensure_partitions(Timestamp::from_millis(old), Timestamp::from_millis(old))
        .await
        .unwrap();
    store.append(&points("d1", "f1", 1..=3, old)).await.unwrap();
    store
        .append(&points("d1", "f1", 100..=102, recent - 100_000))
        .await
        .unwrap();
    assert!(partitions(&store).await.contains(&partition_of(old)));

    let dropped = store.apply_retention(90).await.unwrap();

    assert_eq!(dropped, 1);
    assert!(!partitions(&store).await.contains(&partition_of(old)));
    assert_eq!(
        seqs(&store.trail(&all_of("d1")).await.unwrap()),
        vec![100, 101, 102]
    );
    assert_eq!(
        store.last_seq(&key("f1", "d1")).await.unwrap(),
        102,
        "retention keeps last_seq"
    );
}

#[tokio::test]
async fn postgres_partitions_exist_ahead_and_late_fixes_get_their_own() {
    let db = TestDb::create().await;
    let store = postgres(&db).await;
    let today = now_ms();
    for day in [-1, 0, 1, 3] {
        assert!(
            partitions(&store)
                .await
                .contains(&partition_of(today + day * DAY_MS)),
            "day {day}"
        );
    }
    // A fix 30 days late has no partition: it lands in the default one, and
    // maintenance moves it into a partition of its own.
    let late = today - 30 * DAY_MS;
    store
        .append(&points("d1", "f1", 1..=2, late))
        .await
        .unwrap();
    let in_default: i64 = sqlx::query_scalar("SELECT count(*) FROM positions_default")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(in_default, 2);

    store.apply_retention(90).await.unwrap();

    let in_default: i64 = sqlx::query_scalar("SELECT count(*) FROM positions_default")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(in_default, 0);
    assert!(partitions(&store).await.contains(&partition_of(late)));
    assert_eq!(seqs(&store.trail(&all_of("d1")).await.unwrap()), vec![1, 2]);
    // The dedup key still holds across the move.
    store
        .append(&points("d1", "f1", 1..=2, late))
        .await
        .unwrap();
    assert_eq!(store.trail(&all_of("d1")).await.unwrap().len(), 2);
}

#[tokio::test]
async fn sqlite_retention_deletes_old_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    store
        .append(&points("d1", "f1", 1..=3, now_ms() - 100 * DAY_MS))
        .await
        .unwrap();
    store
        .append(&points("d1", "f1", 100..=102, now_ms() - 200_000))
        .await
        .unwrap();

    assert_eq!(store.apply_retention(90).await.unwrap(), 3);
    assert_eq!(
        seqs(&store.trail(&all_of("d1")).await.unwrap()),
        vec![100, 101, 102]
    );
}

// ---- migrating to the driver key (fleet, driver id) ----

/// The last migration before drivers were keyed by fleet and id.
const BEFORE_DRIVER_KEY: i64 = 1;

/// `points` as the VALUES of an INSERT into `positions`, the same text on both
/// backends (test data only: ids from the narrow alphabet, numbers).
fn position_values(points: &[TrailPoint]) -> String {
    let row = |p: &TrailPoint| {
        let f = |v: Option<f64>| v.map_or("NULL".to_owned(), |v| v.to_string());
        format!(
            "('{}', '{}', {}, {}, {}, {}, {}, {}, {})",
            p.driver,
            p.fleet,
            p.seq,
            p.position.ts().as_millis(),
            p.position.lat(),
            p.position.lon(),
            f(p.position.speed()),
            f(p.position.heading()),
            f(p.position.acc()),
        )
    };
    let rows: Vec<String> = points.iter().map(row).collect();
    format!(
        "INSERT INTO positions (driver_id, fleet_id, seq, ts, lat, lon, speed, heading, acc) VALUES {}",
        rows.join(", ")
    )
}

/// What the hub left at the old schema when acme's `d1` and beta's `d1`
/// collided: their fixes side by side (their fix times differ, or the old
/// dedup key would have dropped one), and one `drivers` record for both
/// (beta's, the newest fix, with the highest seq of either fleet).
struct OldData {
    acme_d1: Vec<TrailPoint>,
    beta_d1: Vec<TrailPoint>,
    /// 30 days late: in PostgreSQL's default partition.
    acme_d2: Vec<TrailPoint>,
}

impl OldData {
    fn new() -> Self {
        let start = now_ms() - 600_000;
        Self {
            acme_d1: points("d1", "acme", 1..=5, start),
            beta_d1: points("d1", "beta", 1..=2, start + 100_000),
            acme_d2: points("d2", "acme", 1..=2, now_ms() - 30 * DAY_MS),
        }
    }

    fn positions_sql(&self) -> String {
        let all: Vec<TrailPoint> = [&self.acme_d1, &self.beta_d1, &self.acme_d2]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        position_values(&all)
    }

    /// `updated_at` is a timestamp on PostgreSQL, milliseconds on SQLite.
    fn drivers_sql(&self, updated_at: &str) -> String {
        let beta = self.beta_d1.last().unwrap();
        let d2 = self.acme_d2.last().unwrap();
        format!(
            "INSERT INTO drivers (driver_id, fleet_id, last_seq, last_ts, last_lat, last_lon, updated_at) VALUES \
             ('d1', 'beta', 5, {}, {}, {}, {updated_at}), \
             ('d2', 'acme', 2, {}, {}, {}, {updated_at}), \
             ('d9', 'zeta', 4, 1000, 1.5, 2.5, {updated_at})",
            beta.position.ts().as_millis(),
            beta.position.lat(),
            beta.position.lon(),
            d2.position.ts().as_millis(),
            d2.position.lat(),
            d2.position.lon(),
        )
    }

    /// Everything is still there, each driver under its own fleet, and the
    /// new keys work: dedup per fleet, a third fleet's `d1` stored apart.
    async fn check_after_migrating(&self, store: &dyn TrailStore) {
        assert_eq!(
            store.trail(&all_of_in("acme", "d1")).await.unwrap(),
            self.acme_d1
        );
        assert_eq!(
            store.trail(&all_of_in("beta", "d1")).await.unwrap(),
            self.beta_d1
        );
        assert_eq!(
            store.trail(&all_of_in("acme", "d2")).await.unwrap(),
            self.acme_d2
        );
        // The shared record is split, each rebuilt from its fleet's own fixes.
        assert_eq!(store.last_seq(&key("acme", "d1")).await.unwrap(), 5);
        assert_eq!(store.last_seq(&key("beta", "d1")).await.unwrap(), 2);
        let acme = store.driver(&key("acme", "d1")).await.unwrap().unwrap();
        assert_eq!(acme.last_ts, self.acme_d1[4].position.ts());
        // Other records are kept as they were, the fleet included.
        assert_eq!(store.last_seq(&key("acme", "d2")).await.unwrap(), 2);
        let d9 = store.driver(&key("zeta", "d9")).await.unwrap().unwrap();
        assert_eq!(
            (d9.fleet.as_str(), d9.last_seq, d9.last_lat),
            ("zeta", 4, 1.5)
        );

        store.append(&self.acme_d1).await.unwrap();
        let gamma = points(
            "d1",
            "gamma",
            1..=5,
            self.acme_d1[0].position.ts().as_millis() - 1000,
        );
        store.append(&gamma).await.unwrap();
        assert_eq!(
            store.trail(&all_of_in("acme", "d1")).await.unwrap(),
            self.acme_d1
        );
        assert_eq!(store.trail(&all_of_in("gamma", "d1")).await.unwrap(), gamma);
        assert_eq!(store.last_seq(&key("gamma", "d1")).await.unwrap(), 5);
    }
}

#[tokio::test]
async fn postgres_migrating_to_the_driver_key_keeps_every_row() {
    let db = TestDb::create().await;
    let store = PgTrailStore::connect(&db.url(), 4).await.unwrap();
    sqlx::migrate!("./migrations/postgres")
        .run_to(BEFORE_DRIVER_KEY, store.pool())
        .await
        .unwrap();
    // Daily partitions exist at the old schema too: the new key must reach them.
    store.prepare_partitions(90).await.unwrap();
    let old = OldData::new();
    for sql in [old.positions_sql(), old.drivers_sql("now()")] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(store.pool())
            .await
            .unwrap();
    }

    store.migrate().await.unwrap();

    old.check_after_migrating(&store).await;
    // Partition upkeep still works under the new key: the late fixes move
    // out of the default partition, and the trail reads the same.
    store.apply_retention(90).await.unwrap();
    assert!(
        partitions(&store)
            .await
            .contains(&partition_of(old.acme_d2[0].position.ts().as_millis()))
    );
    assert_eq!(
        store.trail(&all_of_in("acme", "d2")).await.unwrap(),
        old.acme_d2
    );
}

#[tokio::test]
async fn sqlite_migrating_to_the_driver_key_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trails.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate!("./migrations/sqlite")
        .run_to(BEFORE_DRIVER_KEY, &pool)
        .await
        .unwrap();
    let old = OldData::new();
    for sql in [old.positions_sql(), old.drivers_sql("42")] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    let store = sqlite(&dir).await;

    old.check_after_migrating(store.as_ref()).await;
}

// ---- the writer ----

/// The real store, counting the commits that reach it.
struct Counting {
    inner: Arc<dyn TrailStore>,
    appends: AtomicUsize,
}

#[async_trait]
impl TrailStore for Counting {
    async fn append(&self, points: &[TrailPoint]) -> Result<(), StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.inner.append(points).await
    }
    fn reads(&self) -> &dyn TrailReads {
        self.inner.reads()
    }
    fn devices(&self) -> &dyn fleethub::devices::DeviceStore {
        self.inner.devices()
    }
    fn geofences(&self) -> &dyn fleethub::geofences::GeofenceStore {
        self.inner.geofences()
    }
    fn webhooks(&self) -> &dyn fleethub::webhooks::WebhookStore {
        self.inner.webhooks()
    }
    fn alerts(&self) -> &dyn fleethub::alerts::AlertStore {
        self.inner.alerts()
    }
    async fn append_evaluated(
        &self,
        points: &[TrailPoint],
        evaluator: &dyn fleethub::alerts::Evaluator,
        turn: &mut fleethub::trails::Turn,
    ) -> Result<Vec<fleethub::alerts::Event>, StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        self.inner.append_evaluated(points, evaluator, turn).await
    }
    async fn apply_retention(&self, days: u32) -> Result<u64, StoreError> {
        self.inner.apply_retention(days).await
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}

async fn the_writer_groups_commits_and_acks_only_what_is_stored(store: Arc<dyn TrailStore>) {
    let counting = Arc::new(Counting {
        inner: store.clone(),
        appends: AtomicUsize::new(0),
    });
    let shutdown = CancellationToken::new();
    let (writer, task) = TrailWriter::spawn(
        counting.clone(),
        &trail_settings(10_000, 500),
        shutdown.clone(),
    );
    let start = now_ms() - 600_000;
    let mut acks = Vec::new();
    for d in 0..20 {
        for seq in 1..=50 {
            let p = point(&format!("d{d}"), "f1", seq, start + seq as i64 * 1000);
            acks.push((d, seq, writer.try_submit(vec![p]).unwrap()));
        }
    }
    for (d, seq, ack) in acks {
        ack.await.unwrap().unwrap();
        // Acked means committed: another connection already sees it.
        let driver = key("f1", &format!("d{d}"));
        assert!(store.last_seq(&driver).await.unwrap() >= seq);
    }
    let commits = counting.appends.load(Ordering::SeqCst);
    assert!(
        commits <= 20,
        "1000 submissions took {commits} commits: not grouped"
    );
    assert_eq!(store.trail(&all_of("d7")).await.unwrap().len(), 50);
    assert_eq!(writer.queued(), 0);
    shutdown.cancel();
    task.await.unwrap();
}

async fn shutdown_flushes_what_is_queued(store: Arc<dyn TrailStore>) {
    let shutdown = CancellationToken::new();
    let mut settings = trail_settings(10_000, 100_000);
    settings.flush_interval_ms = 60_000; // only shutdown can flush this batch
    let (writer, task) = TrailWriter::spawn(store.clone(), &settings, shutdown.clone());
    let ack = writer
        .try_submit(points("d1", "f1", 1..=200, now_ms() - 600_000))
        .unwrap();
    shutdown.cancel();
    task.await.unwrap();
    ack.await.unwrap().unwrap();
    assert_eq!(store.trail(&all_of("d1")).await.unwrap().len(), 200);
    assert!(
        writer
            .try_submit(points("d1", "f1", 201..=201, now_ms()))
            .is_err(),
        "a stopped writer refuses"
    );
}

mod writer_on_postgres {
    #[tokio::test]
    async fn the_writer_groups_commits_and_acks_only_what_is_stored() {
        let db = super::TestDb::create().await;
        super::the_writer_groups_commits_and_acks_only_what_is_stored(super::postgres(&db).await)
            .await;
    }
    #[tokio::test]
    async fn shutdown_flushes_what_is_queued() {
        let db = super::TestDb::create().await;
        super::shutdown_flushes_what_is_queued(super::postgres(&db).await).await;
    }
}

mod writer_on_sqlite {
    #[tokio::test]
    async fn the_writer_groups_commits_and_acks_only_what_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        super::the_writer_groups_commits_and_acks_only_what_is_stored(super::sqlite(&dir).await)
            .await;
    }
    #[tokio::test]
    async fn shutdown_flushes_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        super::shutdown_flushes_what_is_queued(super::sqlite(&dir).await).await;
    }
}

#[tokio::test]
async fn a_database_outage_freezes_acks_fills_the_queue_then_drains_without_duplicates() {
    const CAPACITY: usize = 2_000;
    let db = TestDb::create().await;
    postgres(&db).await; // migrated directly, then the writer goes through the proxy
    let proxy = Proxy::start(PG_HOST).await;
    let store: Arc<dyn TrailStore> = Arc::new(
        PgTrailStore::connect(&db.url_via(proxy.addr), 2)
            .await
            .unwrap(),
    );
    let direct = postgres(&db).await;
    let shutdown = CancellationToken::new();
    let (writer, task) =
        TrailWriter::spawn(store, &trail_settings(CAPACITY, 100), shutdown.clone());
    let start = now_ms() - 3_600_000;
    let all = points("d1", "f1", 1..=3_000, start);

    // Before: acks flow.
    writer
        .try_submit(all[..100].to_vec())
        .unwrap()
        .await
        .unwrap()
        .unwrap();

    proxy.cut();
    let mut pending = Vec::new();
    pending.push(writer.try_submit(all[100..150].to_vec()).unwrap());
    eventually(
        Duration::from_secs(30),
        "the writer to notice the outage",
        || {
            let healthy = writer.healthy();
            async move { !healthy }
        },
    )
    .await;
    assert!(
        pending[0].try_recv().is_err(),
        "nothing is acked while the database is away"
    );

    // The queue fills, then refuses; it never holds more than its capacity.
    let mut next = 150;
    let mut refused = 0;
    while next < all.len() {
        match writer.try_submit(all[next..next + 10].to_vec()) {
            Ok(ack) => {
                pending.push(ack);
                next += 10;
            }
            Err(_) => {
                refused += 1;
                if refused == 100 {
                    break;
                }
            }
        }
        assert!(writer.queued() <= CAPACITY);
    }
    assert_eq!(writer.queued(), CAPACITY, "the queue is full");
    assert_eq!(refused, 100, "a full queue refuses");
    assert!(!writer.healthy());
    for ack in &mut pending {
        assert!(
            ack.try_recv().is_err(),
            "still nothing acked during the outage"
        );
    }
    let accepted = next;

    proxy.restore();
    for ack in pending {
        tokio::time::timeout(Duration::from_secs(60), ack)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    assert_eq!(writer.queued(), 0);
    eventually(
        Duration::from_secs(10),
        "the writer to report healthy",
        || {
            let healthy = writer.healthy();
            async move { healthy }
        },
    )
    .await;

    // The app resends everything it holds unacked (and some it holds acked):
    // the trail ends complete, each fix once.
    for chunk in all[accepted - 500..].chunks(100) {
        writer
            .try_submit(chunk.to_vec())
            .unwrap()
            .await
            .unwrap()
            .unwrap();
    }
    let trail = direct.trail(&all_of("d1")).await.unwrap();
    assert_eq!(seqs(&trail), (1..=3_000).collect::<Vec<_>>());
    shutdown.cancel();
    task.await.unwrap();
}
