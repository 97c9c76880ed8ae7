//! `spawn_app` starts the real hub on port 0 and hands back typed clients.

use std::time::Duration;

use actix_web::web;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use fleethub::auth::{Authenticator, Role};
use fleethub::config::Settings;
use fleethub::domain::{DriverId, DriverKey, FleetId, Timestamp};
use fleethub::startup::{AppState, Application};

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub port: u16,
    /// The OsmAnd listener's port, when `ingest.osmand_listen` is set.
    pub osmand_port: Option<u16>,
    pub state: web::Data<AppState>,
    pub http: reqwest::Client,
    auth: Authenticator,
    /// The hub's run, ended by [`TestApp::stopped`].
    run: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Dropped with the app: the test's database goes with it.
    _db: TestDb,
}

/// The PostgreSQL the tests use; override with `FLEETHUB_TEST_PG`.
pub fn pg_admin_url() -> String {
    std::env::var("FLEETHUB_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh PostgreSQL database for one test, dropped when the test ends.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        use sqlx::{Connection, Executor};
        let name = format!("fleethub_test_{:016x}", rand::random::<u64>());
        let admin = pg_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL is required for the tests and is not reachable at {admin}: {e}")
            });
        let sql = format!(r#"CREATE DATABASE "{name}""#);
        conn.execute(sqlx::AssertSqlSafe(sql))
            .await
            .expect("create the test database");
        TestDb { name }
    }

    pub fn url(&self) -> String {
        let admin = pg_admin_url();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        format!("{base}/{}", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside async; a short-lived runtime on its own thread does the cleanup.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::{Connection, Executor};
                if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
                    let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
                    let _ = conn.execute(sqlx::AssertSqlSafe(sql)).await;
                }
            });
        })
        .join();
    }
}

/// Test settings: a real secret (not dev mode), port 0, immediate fan-out.
pub fn test_settings() -> Settings {
    let env = [
        ("FLEETHUB_LISTEN", "127.0.0.1:0"),
        ("FLEETHUB_JWT_SECRET", SECRET),
        ("FLEETHUB_NODE_ID", "test-node"),
        ("FLEETHUB_FANOUT__INTERVAL_MS", "0"),
    ];
    Settings::load_from(
        None,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .expect("test settings load")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The test database's URL through a local port (a [`crate::proxy::Proxy`]).
pub fn via_port(url: &str, port: u16) -> String {
    url.replace("127.0.0.1:5432", &format!("127.0.0.1:{port}"))
}

/// The real hub on port 0, trails in a fresh PostgreSQL database.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_in(TestDb::create().await, configure).await
}

/// The real hub on port 0, trails in `db` (one a stopped hub left, say).
pub async fn spawn_app_in(db: TestDb, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    settings.database.url = db.url().into();
    configure(&mut settings);
    let app = Application::build(settings).await.expect("the hub starts");
    let port = app.port();
    let osmand_port = app.osmand_port();
    let state = app.state();
    let run = tokio::spawn(app.run_until_stopped());
    TestApp {
        port,
        osmand_port,
        state,
        http: http_client(),
        auth: Authenticator::new(SECRET.as_bytes()),
        run,
        _db: db,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn token(&self, role: Role, sub: &str, fleet: Option<&str>) -> String {
        self.auth
            .issue(sub, role, fleet, Duration::from_secs(3600))
            .expect("token")
    }

    /// Registers phone-app device `id` (`osmand` or `owntracks`) for
    /// `driver` of `fleet`, as that fleet's dispatcher; returns its key.
    pub async fn register_device(
        &self,
        fleet: &str,
        driver: &str,
        id: &str,
        protocol: &str,
    ) -> String {
        let body = json!({"device_id": id, "driver": driver, "protocol": protocol});
        let res = self
            .http
            .post(self.url("/api/v1/devices"))
            .bearer_auth(self.token(Role::Dispatcher, "disp", Some(fleet)))
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(
            res.status(),
            reqwest::StatusCode::CREATED,
            "device {id} registered"
        );
        let answer: Value = res.json().await.expect("a JSON answer");
        answer["key"].as_str().expect("a key").to_owned()
    }

    pub fn ws_url(&self, path: &str, token: &str) -> String {
        format!("ws://127.0.0.1:{}{path}?access_token={token}", self.port)
    }

    /// A driver of `fleet`, connected and past its `welcome`.
    pub async fn driver(&self, sub: &str, fleet: &str) -> DriverClient {
        let token = self.token(Role::Driver, sub, Some(fleet));
        let mut client = Client::connect(&self.ws_url("/ws/driver", &token)).await;
        let welcome = client.next_of("welcome").await;
        DriverClient { client, welcome }
    }

    /// A dashboard for `fleet` (`None`: an admin), past its `hello`.
    pub async fn dashboard(&self, fleet: Option<&str>) -> DashboardClient {
        let token = match fleet {
            Some(f) => self.token(Role::Dispatcher, "disp", Some(f)),
            None => self.token(Role::Admin, "ops", None),
        };
        let mut client = Client::connect(&self.ws_url("/ws/dashboard", &token)).await;
        client.next_of("hello").await;
        DashboardClient { client }
    }

    pub async fn stop(&self) {
        self.state.shutdown.cancel();
    }

    /// Stops the hub and waits until it has (sessions closed, trail queue
    /// flushed); hands back its database, for a hub started after it.
    pub async fn stopped(self) -> TestDb {
        self.state.shutdown.cancel();
        let run = tokio::time::timeout(Duration::from_secs(30), self.run).await;
        assert!(
            matches!(run, Ok(Ok(Ok(())))),
            "the hub did not stop cleanly"
        );
        self._db
    }
}

/// A plain HTTP client. reqwest has rustls without a provider of its own
/// (the hub's webhooks choose ring), so the process's default is named first.
pub fn http_client() -> reqwest::Client {
    fleethub::webhooks::delivery::install_crypto_provider();
    reqwest::Client::new()
}

/// Polls `check` until it holds, failing the test at the deadline.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

/// How the hub keys driver `driver` of `fleet`.
pub fn driver_key(fleet: &str, driver: &str) -> DriverKey {
    DriverKey::new(
        FleetId::parse(fleet).expect("a valid fleet"),
        DriverId::parse(driver).expect("a valid driver id"),
    )
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw WebSocket client that reads JSON frames with a deadline.
pub struct Client {
    pub ws: Ws,
}

/// How a connection ended, as seen by the client.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Closed(u16, String),
    Dropped,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client { ws }
    }

    pub async fn send(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send frame");
    }

    /// A client with a tiny receive buffer, so that not reading fills the
    /// socket quickly instead of after megabytes of kernel buffering.
    pub async fn connect_with_small_buffer(url: &str, port: u16) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("tcp connect");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("websocket handshake");
        Client { ws }
    }

    /// The next JSON text frame (pings are answered by the client library).
    pub async fn next(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("a frame before the deadline")
                .expect("the socket is open")
                .expect("a valid frame");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
                Message::Close(c) => panic!("unexpected close: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Skips frames until one of the given `type` arrives.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let v = self.next().await;
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Reads until the server closes the connection, ignoring other frames.
    pub async fn ended(&mut self) -> Ended {
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("the close before the deadline");
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Ended::Closed(u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => return Ended::Closed(1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Ended::Dropped,
            }
        }
    }
}

pub struct DriverClient {
    pub client: Client,
    pub welcome: Value,
}

impl DriverClient {
    pub async fn send_pos(&mut self, seq: u64, ts: i64, lat: f64, lon: f64) {
        self.client
            .send(&json!({"type":"pos","seq":seq,"ts":ts,"lat":lat,"lon":lon,"speed":5.0,"heading":90}))
            .await;
    }

    /// Reads until an ack covers `seq`; returns the frames seen on the way.
    pub async fn ack_covering(&mut self, seq: u64) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let v = self.client.next().await;
            if v["type"] == "ack" && v["seq"].as_u64().unwrap_or(0) >= seq {
                seen.push(v);
                return seen;
            }
            seen.push(v);
        }
    }

    /// Sends a position and waits until it is acked.
    pub async fn publish(&mut self, seq: u64, ts: i64, lat: f64, lon: f64) {
        self.send_pos(seq, ts, lat, lon).await;
        self.ack_covering(seq).await;
    }
}

pub struct DashboardClient {
    pub client: Client,
}

impl DashboardClient {
    pub async fn subscribe(&mut self, id: &str, bbox: [f64; 4]) -> Value {
        self.client
            .send(&json!({"type":"subscribe","id":id,"bbox":bbox}))
            .await;
        self.client.next_of("snapshot").await
    }

    /// Reads position items until `driver` shows up; returns every item seen.
    pub async fn items_until(&mut self, driver: &str) -> Vec<Value> {
        self.items_until_item(|i| i["driver"] == driver).await
    }

    /// Reads position items until `driver` shows up with fix time `ts`.
    pub async fn items_until_ts(&mut self, driver: &str, ts: i64) -> Vec<Value> {
        self.items_until_item(|i| i["driver"] == driver && i["ts"] == ts)
            .await
    }

    /// Every item received, oldest first, up to the batch holding one that matches.
    async fn items_until_item(&mut self, found: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut items = Vec::new();
        loop {
            let v = self.client.next().await;
            if v["type"] != "positions" {
                continue;
            }
            let batch = v["items"].as_array().cloned().unwrap_or_default();
            let done = batch.iter().any(&found);
            // Items in a batch are newest first.
            items.extend(batch.into_iter().rev());
            if done {
                return items;
            }
        }
    }
}

/// The lead item of a driver in a list of items.
pub fn item_of<'a>(items: &'a [Value], driver: &str) -> Option<&'a Value> {
    items.iter().find(|i| i["driver"] == driver)
}

// ---- the real binary as a child process ----

/// The built `fleethub` binary (or the one `FLEETHUB_TEST_BIN` names, e.g. an
/// older build to compare with) as a child process on its own port and
/// database: for what must be measured on the hub process alone, its sockets
/// and its memory.
pub struct ChildHub {
    child: tokio::process::Child,
    pub port: u16,
    auth: Authenticator,
    _db: TestDb,
}

impl ChildHub {
    /// Starts the hub with the test secret, a fresh database and `env` on
    /// top; returns once it answers `/healthz`.
    pub async fn start(env: &[(&str, &str)]) -> ChildHub {
        let db = TestDb::create().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let bin = std::env::var("FLEETHUB_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_fleethub").to_owned());
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("serve")
            .env("DATABASE_URL", db.url())
            .env("FLEETHUB_LISTEN", format!("127.0.0.1:{port}"))
            .env("FLEETHUB_JWT_SECRET", SECRET)
            .env("FLEETHUB_NODE_ID", "child-hub")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        for (key, value) in env {
            cmd.env(key, value);
        }
        let hub = ChildHub {
            child: cmd.spawn().expect("the fleethub binary starts"),
            port,
            auth: Authenticator::new(SECRET.as_bytes()),
            _db: db,
        };
        let http = http_client();
        let healthz = hub.url("/healthz");
        let start = tokio::time::Instant::now();
        loop {
            if let Ok(res) = http.get(&healthz).send().await
                && res.status().is_success()
            {
                return hub;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the hub process did not answer /healthz"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the hub process is running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws_url(&self, path: &str, token: &str) -> String {
        format!("ws://127.0.0.1:{}{path}?access_token={token}", self.port)
    }

    pub fn token(&self, role: Role, sub: &str, fleet: Option<&str>) -> String {
        self.auth
            .issue(sub, role, fleet, Duration::from_secs(3600))
            .expect("token")
    }

    /// The connections the hub process holds: every socket descriptor it
    /// has but its listener and its own outgoing connections (PostgreSQL),
    /// so a socket already closed on the wire but still held counts too, and
    /// a duplicated descriptor counts once.
    pub fn connections(&self) -> usize {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return 0;
        };
        let held: std::collections::HashSet<u64> = fds
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter_map(|link| socket_inode(&link.to_string_lossy()))
            .collect();
        // Read after the descriptors, so a socket the hub opened meanwhile
        // (a database connection, say) is not taken for one on its port.
        held.intersection(&connections_on(self.port)).count()
    }

    /// Waits until the hub holds `n` connections on its port.
    pub async fn connections_back_to(&self, n: usize, what: &str) {
        let start = tokio::time::Instant::now();
        loop {
            let now = self.connections();
            if now == n {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{what}: the hub holds {now} connections on its port, {n} expected"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The inodes of the TCP connections (not the listener) on local `port`.
fn connections_on(port: u16) -> std::collections::HashSet<u64> {
    const LISTEN: &str = "0A";
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let local_port = cols
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let listening = cols.get(3) == Some(&LISTEN);
            if let Some(inode) = cols.get(9).and_then(|i| i.parse::<u64>().ok())
                && local_port == Some(port)
                && !listening
            {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

// ---- the REST API, as a fleet's dispatcher or an admin ----

/// Which database a test's hub keeps its trails (and what lives beside
/// them: devices, fences, events) in.
#[derive(Clone, Copy)]
pub enum Backend<'a> {
    Postgres,
    Sqlite(&'a std::path::Path),
}

impl Backend<'_> {
    pub fn configure(self, settings: &mut Settings) {
        if let Backend::Sqlite(path) = self {
            settings.database.url = secrecy::SecretString::from(String::new());
            settings.database.sqlite_path = path.to_string_lossy().into_owned();
        }
    }
}

pub fn dispatcher(app: &TestApp, fleet: &str) -> String {
    app.token(Role::Dispatcher, "disp", Some(fleet))
}

pub fn admin(app: &TestApp) -> String {
    app.token(Role::Admin, "ops", None)
}

/// One request with `token` and an optional JSON body; the status and the
/// JSON answer (`Null` when there is none).
pub async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (reqwest::StatusCode, Value) {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(body);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}
