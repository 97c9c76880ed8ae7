//! Real parts for trail tests: a fresh PostgreSQL database per test (dropped
//! afterwards, even when the test panics) and a TCP proxy the test can cut.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use fleethub::domain::{DriverId, FleetId, Position, Seq, Timestamp, TrailPoint};

/// Where the machine's PostgreSQL listens (trust auth).
pub const PG_HOST: &str = "127.0.0.1:5432";
pub const PG_USER: &str = "postgres";

fn admin_url() -> String {
    format!("postgres://{PG_USER}@{PG_HOST}/postgres")
}

/// A database that exists for one test.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    /// Creates `fleethub_test_<random>`. Panics with a clear message when
    /// PostgreSQL is not reachable: these tests never skip.
    pub async fn create() -> Self {
        let name = format!("fleethub_test_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL must be running at {PG_HOST} (user {PG_USER}, trust auth): {e}")
            });
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("creating the test database");
        Self { name }
    }

    pub fn url(&self) -> String {
        format!("postgres://{PG_USER}@{PG_HOST}/{}", self.name)
    }

    /// The URL of this database reached through `addr` (a proxy).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        format!("postgres://{PG_USER}@{addr}/{}", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside async context (and maybe while panicking), so use
        // a runtime of its own on a thread of its own.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut admin = PgConnection::connect(&admin_url()).await?;
                admin
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// A TCP proxy in front of PostgreSQL. `cut` closes every open connection
/// and refuses new ones (as a network outage would); `restore` lets them through.
pub struct Proxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(upstream: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(true);
        let watch = up.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let up = watch.subscribe();
                if *up.borrow() {
                    tokio::spawn(pipe(client, upstream, up));
                }
                // When cut, `client` is dropped here: the connection is refused.
            }
        });
        Self { addr, up }
    }

    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

async fn pipe(mut client: TcpStream, upstream: &str, mut up: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = up.wait_for(|up| !*up) => {}
    }
}

/// Polls `check` until it holds, panicking with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A fix on a straight line heading east from Lima, one per second.
pub fn point(driver: &str, fleet: &str, seq: Seq, ts_ms: i64) -> TrailPoint {
    let lon = -77.04 + seq as f64 * 0.0001;
    TrailPoint {
        driver: DriverId::parse(driver).unwrap(),
        fleet: FleetId::parse(fleet).unwrap(),
        seq,
        position: Position::new(
            -12.05,
            lon,
            Timestamp::from_millis(ts_ms),
            Some(8.5),
            Some(90.0),
            Some(5.0),
        )
        .unwrap(),
        extras: Default::default(),
    }
}

/// Points `seqs` of one driver, a second apart from `start_ms`.
pub fn points(
    driver: &str,
    fleet: &str,
    seqs: std::ops::RangeInclusive<Seq>,
    start_ms: i64,
) -> Vec<TrailPoint> {
    seqs.map(|s| point(driver, fleet, s, start_ms + s as i64 * 1000))
        .collect()
}
