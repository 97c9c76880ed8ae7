//! Real parts for the cluster tests: `redis-server` processes (one server, or a
//! three-master Redis Cluster) on free loopback ports, hub processes ("nodes")
//! sharing one fresh PostgreSQL database, and dashboards that keep what they
//! were shown.
//!
//! Nothing here skips: a missing `redis-server`, `redis-cli` or PostgreSQL
//! fails the test with a message saying what is missing. Everything started
//! is stopped by PID when the test ends (kill_on_drop), and the database is
//! dropped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Client, DriverClient, Ended, SECRET, TestDb, now_ms};
use fleethub::auth::{Authenticator, Role};

/// Lima, Peru (the map's default city) and Paris: two regions far apart.
pub const LIMA: [f64; 4] = [-77.2, -12.3, -76.8, -11.9];
pub const PARIS: [f64; 4] = [2.2, 48.8, 2.5, 48.95];
pub const WORLD: [f64; 4] = [-180.0, -90.0, 180.0, 90.0];
/// A point inside [`LIMA`] and one inside [`PARIS`].
pub const IN_LIMA: (f64, f64) = (-12.05, -77.04);
pub const IN_PARIS: (f64, f64) = (48.85, 2.35);

/// The heartbeat the tests give their nodes (the default is 1000 ms).
pub const HEARTBEAT_MS: &str = "500";

/// Polls `check` every 20 ms until it holds; fails the test after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A port P such that P and P + 10000 (a cluster node's bus port) are free.
fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = rand::random_range(20_000..40_000u16);
        if port_is_free(port) && port_is_free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair (P, P+10000) for a Redis Cluster node");
}

/// A unique key prefix for one test, so two tests never share a channel.
pub fn unique_prefix() -> String {
    format!("fhtest{:08x}", rand::random::<u32>())
}

/// The last `n` lines of a log file, for a failing test's output.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---- Redis ----

/// Sends `PING` on a fresh connection; true when `+PONG` comes back within `limit`.
pub async fn ping(port: u16, limit: Duration) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await?;
        Ok::<bool, std::io::Error>(&buf == b"+PONG\r\n")
    };
    matches!(tokio::time::timeout(limit, attempt).await, Ok(Ok(true)))
}

/// Runs `redis-cli -p port args...`; returns its stdout. Fails the test when
/// redis-cli is missing or does not answer within 30 s.
pub async fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("redis-cli -p {port} {args:?} did not finish within 30 s"))
    .unwrap_or_else(|e| panic!("redis-cli is required for the cluster tests: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A server process of the test (redis-server, a hub node), killed by PID.
struct Process {
    what: String,
    child: Option<Child>,
}

impl Process {
    fn new(what: String) -> Self {
        Self { what, child: None }
    }

    fn started(&mut self, child: Child) {
        assert!(self.child.is_none(), "{} is already running", self.what);
        self.child = Some(child);
    }

    /// How it ended, if it has.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .unwrap_or_else(|| panic!("{} is not running", self.what))
    }

    /// SIGKILL by PID; returns once the process is gone.
    async fn kill9(&mut self) {
        let what = &self.what;
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{what} is not running"));
        child
            .start_kill()
            .unwrap_or_else(|e| panic!("SIGKILL {what}: {e}"));
        child
            .wait()
            .await
            .unwrap_or_else(|e| panic!("{what} exits: {e}"));
    }
}

/// One `redis-server` on a loopback port, a child of the test.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    process: Process,
    /// Held by single servers; a cluster's nodes share their cluster's.
    _own_dir: Option<tempfile::TempDir>,
}

impl Redis {
    /// A plain server, no persistence, on a free port; returns once it answers PING.
    pub async fn start() -> Redis {
        Redis::start_with(Vec::new()).await
    }

    /// A plain server started with `extra` arguments.
    pub async fn start_with(extra: Vec<String>) -> Redis {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let mut redis = Redis {
            port,
            dir: dir.path().to_owned(),
            extra,
            process: Process::new(format!("redis-server on port {port}")),
            _own_dir: Some(dir),
        };
        redis.spawn().await;
        redis
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("redis-{}.log", self.port))
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            // DEBUG SLEEP stalls the server for the tests (Redis 7 refuses DEBUG by default).
            .args(["--enable-debug-command", "local"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("redis-server is required for the cluster tests and did not start: {e}")
        });
        self.process.started(child);
        self.wait_ping().await;
    }

    /// Waits until the server answers PING (at most 10 s).
    pub async fn wait_ping(&mut self) {
        let start = Instant::now();
        while !ping(self.port, Duration::from_millis(500)).await {
            if let Some(status) = self.process.exited() {
                panic!(
                    "redis-server on port {} exited ({status}):\n{}",
                    self.port,
                    tail(&self.log_path(), 20)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server on port {} does not answer PING:\n{}",
                self.port,
                tail(&self.log_path(), 20)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL by PID; returns once the process is gone.
    pub async fn kill(&mut self) {
        self.process.kill9().await;
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A command through `redis-cli -p P`.
    pub async fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args).await
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Seconds of CPU the server has used (system + user).
    pub async fn info_cpu(&self) -> f64 {
        let info = self.cli(&["INFO", "cpu"]).await;
        info.lines()
            .filter_map(|l| l.trim().split_once(':'))
            .filter(|(k, _)| *k == "used_cpu_sys" || *k == "used_cpu_user")
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum()
    }
}

/// Three masters in cluster mode, slots spread by `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_cluster_port();
            let mut node = Redis {
                port,
                dir: dir.path().to_owned(),
                extra: vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    dir.path()
                        .join(format!("nodes-{port}.conf"))
                        .display()
                        .to_string(),
                ],
                process: Process::new(format!("redis-server on port {port}")),
                _own_dir: None,
            };
            node.spawn().await;
            nodes.push(node);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = redis_cli(nodes[0].port, &args).await;
        assert!(
            out.contains("[OK] All 16384 slots covered"),
            "redis-cli --cluster create failed:\n{out}"
        );
        let cluster = RedisCluster { nodes, _dir: dir };
        for node in &cluster.nodes {
            let port = node.port;
            wait_until(
                Duration::from_secs(20),
                &format!("cluster_state:ok on node {port}"),
                || async move {
                    redis_cli(port, &["CLUSTER", "INFO"])
                        .await
                        .contains("cluster_state:ok")
                },
            )
            .await;
        }
        cluster
    }

    /// The seed URLs, comma-separated, as the hub reads them.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(Redis::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A TCP proxy in front of Redis that can make the pub/sub connections
/// going through it deaf: they stay open, Redis keeps sending, the node hears
/// nothing (a half-dead connection, a stuck middlebox). Connections opened
/// afterwards are left alone.
pub struct DeafProxy {
    pub port: u16,
    pubsub: Arc<Mutex<HashSet<u64>>>,
    muted: Arc<Mutex<HashSet<u64>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl DeafProxy {
    pub async fn start(upstream: u16) -> DeafProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a proxy port");
        let port = listener.local_addr().expect("the proxy's address").port();
        let pubsub = Arc::new(Mutex::new(HashSet::new()));
        let muted = Arc::new(Mutex::new(HashSet::new()));
        let (p, m) = (Arc::clone(&pubsub), Arc::clone(&muted));
        let accept = tokio::spawn(async move {
            let mut next = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                next += 1;
                tokio::spawn(proxy_one(next, client, upstream, p.clone(), m.clone()));
            }
        });
        DeafProxy {
            port,
            pubsub,
            muted,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Drops, from now on, what Redis sends on every pub/sub connection open
    /// now; returns how many.
    pub fn deafen_pubsub(&self) -> usize {
        let now: Vec<u64> = self.pubsub.lock().iter().copied().collect();
        self.muted.lock().extend(now.iter().copied());
        now.len()
    }
}

impl Drop for DeafProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn proxy_one(
    id: u64,
    client: tokio::net::TcpStream,
    upstream: u16,
    pubsub: Arc<Mutex<HashSet<u64>>>,
    muted: Arc<Mutex<HashSet<u64>>>,
) {
    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 16384];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let upper = buf[..n].to_ascii_uppercase();
            if upper.windows(9).any(|w| w == b"SUBSCRIBE") {
                pubsub.lock().insert(id);
            }
            sw.write_all(&buf[..n]).await?;
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16384];
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            if !muted.lock().contains(&id) {
                cw.write_all(&buf[..n]).await?;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

// ---- hub nodes ----

/// A hub process: the built `fleethub` binary with the cluster settings.
pub struct Node {
    pub id: String,
    pub port: u16,
    env: Vec<(String, String)>,
    log: PathBuf,
    process: Process,
    starts: u32,
    pub http: reqwest::Client,
}

impl Node {
    /// Starts a node named `id` on a free port with `env` (the database,
    /// Redis and cluster settings); returns once it answers `/healthz`.
    pub async fn start(id: &str, env: Vec<(String, String)>, log_dir: &Path) -> Node {
        let mut node = Node {
            id: id.to_owned(),
            port: free_port(),
            env,
            log: log_dir.join(format!("node-{id}.log")),
            process: Process::new(format!("node {id}")),
            starts: 0,
            http: {
                // The test process runs no hub, which would install it.
                fleethub::webhooks::delivery::install_crypto_provider();
                reqwest::Client::new()
            },
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        self.starts += 1;
        let bin = std::env::var("FLEETHUB_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_fleethub").to_owned());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the node's log file");
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env("FLEETHUB_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("FLEETHUB_JWT_SECRET", SECRET)
            .env("FLEETHUB_NODE_ID", &self.id)
            .env("FLEETHUB_FANOUT__INTERVAL_MS", "0")
            .env("FLEETHUB_CLUSTER__HEARTBEAT_MS", HEARTBEAT_MS)
            .env("RUST_LOG", "warn,fleethub=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.process
            .started(cmd.spawn().expect("the fleethub binary starts"));
        let healthz = self.url("/healthz");
        let start = Instant::now();
        loop {
            if let Ok(res) = self.http.get(&healthz).send().await
                && res.status().is_success()
            {
                return;
            }
            if let Some(status) = self.process.exited() {
                panic!(
                    "node {} exited at start-up ({status}):\n{}",
                    self.id,
                    tail(&self.log, 30)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "node {} did not answer /healthz within 30 s:\n{}",
                self.id,
                tail(&self.log, 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `kill -9`: no shutdown, no goodbye to Redis.
    pub async fn kill9(&mut self) {
        self.process.kill9().await;
    }

    /// Starts the node again under the same id and port (a new incarnation).
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws_base(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn ws_url(&self, path: &str, token: &str) -> String {
        format!("ws://127.0.0.1:{}{path}?access_token={token}", self.port)
    }

    pub fn token(&self, role: Role, sub: &str, fleet: Option<&str>) -> String {
        token(role, sub, fleet)
    }

    /// A driver of `fleet` connected to this node, past its `welcome`.
    pub async fn driver(&self, id: &str, fleet: &str, at: (f64, f64)) -> Driver {
        let t = self.token(Role::Driver, id, Some(fleet));
        let mut client = Client::connect(&self.ws_url("/ws/driver", &t)).await;
        let welcome = client.next_of("welcome").await;
        let last_seq = welcome["last_seq"].as_u64().expect("welcome.last_seq");
        Driver {
            id: id.to_owned(),
            fleet: fleet.to_owned(),
            conn: DriverClient { client, welcome },
            seq: last_seq,
            at,
            last_ts: 0,
            sent: Vec::new(),
        }
    }

    /// A dispatcher's dashboard of `fleet` (`None`: an admin's), past its `hello`.
    pub async fn dashboard(&self, fleet: Option<&str>) -> Watcher {
        let t = match fleet {
            Some(f) => self.token(Role::Dispatcher, "disp", Some(f)),
            None => self.token(Role::Admin, "ops", None),
        };
        let mut client = Client::connect(&self.ws_url("/ws/dashboard", &t)).await;
        let hello = client.next_of("hello").await;
        Watcher {
            client,
            hello,
            seen: HashMap::new(),
            frames: Vec::new(),
            ended: None,
        }
    }

    /// `GET path` with `token`: status and JSON body (Null when not JSON).
    pub async fn get_json(&self, path: &str, token: &str) -> (u16, Value) {
        let res = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on node {}: {e}", self.id));
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// `GET /api/v1/drivers[?bbox=]` as a dispatcher of `fleet` (admin: `None`).
    pub async fn drivers(&self, fleet: Option<&str>, bbox: Option<[f64; 4]>) -> Vec<Value> {
        let t = match fleet {
            Some(f) => self.token(Role::Dispatcher, "disp", Some(f)),
            None => self.token(Role::Admin, "ops", None),
        };
        let path = match bbox {
            Some([w, s, e, n]) => format!("/api/v1/drivers?bbox={w},{s},{e},{n}"),
            None => "/api/v1/drivers".to_owned(),
        };
        let (status, body) = self.get_json(&path, &t).await;
        assert_eq!(status, 200, "GET {path} on node {}: {body}", self.id);
        body["drivers"].as_array().cloned().expect("drivers")
    }

    /// The stored trail's seqs of `driver` of `fleet` since `from` (ms), read
    /// by a dispatcher of the fleet through the history API.
    pub async fn trail_seqs(&self, driver: &str, fleet: &str, from: i64) -> Vec<u64> {
        let t = self.token(Role::Dispatcher, "disp", Some(fleet));
        let path = format!("/api/v1/drivers/{driver}/trail?from={from}");
        let (status, body) = self.get_json(&path, &t).await;
        assert_eq!(status, 200, "GET {path} on node {}: {body}", self.id);
        body["points"]
            .as_array()
            .expect("points")
            .iter()
            .map(|p| p["seq"].as_u64().expect("seq"))
            .collect()
    }

    /// `/metrics` as text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /metrics on node {}: {e}", self.id))
            .text()
            .await
            .expect("metrics text")
    }

    /// A metric summed over its label sets; 0 when the node has not
    /// exported it (yet).
    pub async fn metric(&self, name: &str) -> f64 {
        metric_in(&self.metrics_text().await, name).unwrap_or(0.0)
    }

    /// A metric summed over its label sets; `None` when it is not exported.
    pub async fn metric_opt(&self, name: &str) -> Option<f64> {
        metric_in(&self.metrics_text().await, name)
    }

    /// `GET /readyz`'s body, whatever its status.
    pub async fn readyz(&self) -> Value {
        self.http
            .get(self.url("/readyz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /readyz on node {}: {e}", self.id))
            .json()
            .await
            .expect("readyz JSON")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of node {} ({} start(s)) ----\n{}",
                self.id,
                self.starts,
                tail(&self.log, 40)
            );
        }
    }
}

/// A token signed with the tests' secret.
pub fn token(role: Role, sub: &str, fleet: Option<&str>) -> String {
    Authenticator::new(SECRET.as_bytes())
        .issue(sub, role, fleet, Duration::from_secs(3600))
        .expect("token")
}

/// `name` summed over its label sets in a Prometheus text page.
pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if key.split('{').next() == Some(name)
            && let Ok(v) = value.trim().parse::<f64>()
        {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

/// `name` summed over the label sets that hold `label` (`kind="driver"`).
pub fn metric_with(text: &str, name: &str, label: &str) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((metric, labels)) = key.split_once('{') else {
            continue;
        };
        if metric == name
            && labels.contains(label)
            && let Ok(v) = value.trim().parse::<f64>()
        {
            sum += v;
        }
    }
    sum
}

// ---- a test's cluster: its database, its Redis, its two nodes ----

/// Where the nodes' Redis is.
pub enum Bus {
    Single(Box<Redis>),
    Cluster(RedisCluster),
}

/// One test's world: a fresh database, its own Redis, nodes A and B.
pub struct Pair {
    pub a: Node,
    pub b: Node,
    pub bus: Bus,
    pub prefix: String,
    pub db: TestDb,
    _logs: tempfile::TempDir,
}

/// The environment every node of a test shares.
pub fn node_env(
    db: &TestDb,
    redis_url: &str,
    prefix: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env = vec![
        ("DATABASE_URL".to_owned(), db.url()),
        ("REDIS_URL".to_owned(), redis_url.to_owned()),
        ("FLEETHUB_REDIS__KEY_PREFIX".to_owned(), prefix.to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

impl Pair {
    /// Two nodes on one plain Redis server of their own.
    pub async fn start() -> Pair {
        Pair::start_with(&[]).await
    }

    pub async fn start_with(extra: &[(&str, &str)]) -> Pair {
        let redis = Redis::start().await;
        let url = redis.url();
        Pair::on(Bus::Single(Box::new(redis)), url, extra).await
    }

    /// Two nodes reaching their Redis through a [`DeafProxy`].
    pub async fn start_behind_proxy() -> (Pair, DeafProxy) {
        let redis = Redis::start().await;
        let proxy = DeafProxy::start(redis.port).await;
        let pair = Pair::on(Bus::Single(Box::new(redis)), proxy.url(), &[]).await;
        (pair, proxy)
    }

    /// Two nodes on a three-master Redis Cluster with sharded pub/sub.
    pub async fn start_on_redis_cluster() -> Pair {
        let cluster = RedisCluster::start().await;
        let url = cluster.url();
        Pair::on(
            Bus::Cluster(cluster),
            url,
            &[
                ("FLEETHUB_REDIS__CLUSTER", "true"),
                ("FLEETHUB_REDIS__SHARDED", "true"),
            ],
        )
        .await
    }

    pub async fn on(bus: Bus, url: String, extra: &[(&str, &str)]) -> Pair {
        let db = TestDb::create().await;
        let prefix = unique_prefix();
        let logs = tempfile::tempdir().expect("a temporary directory");
        let env = node_env(&db, &url, &prefix, extra);
        // One after the other: the first applies the migrations.
        let a = Node::start("a", env.clone(), logs.path()).await;
        let b = Node::start("b", env, logs.path()).await;
        Pair {
            a,
            b,
            bus,
            prefix,
            db,
            _logs: logs,
        }
    }

    /// The plain Redis server (not for cluster tests).
    pub fn redis(&mut self) -> &mut Redis {
        match &mut self.bus {
            Bus::Single(r) => r,
            Bus::Cluster(_) => panic!("this test runs on a Redis Cluster"),
        }
    }
}

// ---- drivers ----

/// A driver connected to one node: its seq counter, its place, its newest fix.
pub struct Driver {
    pub id: String,
    pub fleet: String,
    pub conn: DriverClient,
    /// The highest seq sent so far (starts at `welcome.last_seq`).
    pub seq: u64,
    pub at: (f64, f64),
    /// The newest fix time sent.
    pub last_ts: i64,
    /// Every fix sent: (seq, ts, lat, lon), to resend.
    pub sent: Vec<(u64, i64, f64, f64)>,
}

impl Driver {
    pub fn welcome_last_seq(&self) -> u64 {
        self.conn.welcome["last_seq"].as_u64().expect("last_seq")
    }

    /// The next fix time: now, and always after the previous one.
    fn next_ts(&mut self) -> i64 {
        self.last_ts = now_ms().max(self.last_ts + 1);
        self.last_ts
    }

    /// Sends the next position (a little east of the last) without waiting.
    pub async fn send_next(&mut self) -> (u64, i64) {
        self.seq += 1;
        let ts = self.next_ts();
        self.at.1 += 0.00001;
        let (lat, lon) = self.at;
        self.sent.push((self.seq, ts, lat, lon));
        self.conn.send_pos(self.seq, ts, lat, lon).await;
        (self.seq, ts)
    }

    /// Sends the next position and waits for its ack; returns its seq, its
    /// fix time and how long the ack took.
    pub async fn step(&mut self) -> (u64, i64, Duration) {
        let start = Instant::now();
        let (seq, ts) = self.send_next().await;
        self.conn.ack_covering(seq).await;
        (seq, ts, start.elapsed())
    }

    /// Sends positions until `until` holds for the dashboard (checked for
    /// 100 ms after each ack), failing after `limit`; returns how long it took
    /// and the fix time that was seen.
    pub async fn step_until_seen_by(&mut self, dash: &mut Watcher, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let (_, ts, _) = self.step().await;
            let key = (self.fleet.clone(), self.id.clone());
            if dash
                .try_until(Duration::from_millis(100), |w| {
                    w.seen.get(&key).and_then(|s| s.live_ts) >= Some(ts)
                })
                .await
            {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "driver {}/{}'s positions did not reach the dashboard within {limit:?}",
                self.fleet,
                self.id
            );
        }
    }

    /// Waits for the server to close this driver's socket; returns how it ended.
    pub async fn ended(&mut self) -> Ended {
        self.conn.client.ended().await
    }
}

// ---- dashboards ----

/// What a dashboard was shown of one driver.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Newest fix time shown (snapshot or live).
    pub ts: i64,
    /// Newest fix time shown in a live `positions` frame.
    pub live_ts: Option<i64>,
    pub lat: f64,
    pub lon: f64,
    /// "online" or "offline", as the last snapshot, position or status said.
    pub status: String,
}

/// A dashboard socket that applies what it reads to a view of the map.
pub struct Watcher {
    pub client: Client,
    pub hello: Value,
    /// (fleet, driver) -> what the dashboard was shown last.
    pub seen: HashMap<(String, String), Seen>,
    /// Every frame read, in order.
    pub frames: Vec<Value>,
    /// How the socket ended, once it has.
    pub ended: Option<Ended>,
}

pub fn key(fleet: &str, driver: &str) -> (String, String) {
    (fleet.to_owned(), driver.to_owned())
}

impl Watcher {
    pub async fn subscribe(&mut self, id: &str, bbox: [f64; 4]) -> Value {
        self.client
            .send(&json!({"type": "subscribe", "id": id, "bbox": bbox}))
            .await;
        let mut snapshot = None;
        let found = self
            .try_until_frame(Duration::from_secs(10), |f| {
                if f["type"] == "snapshot" && f["id"] == id {
                    snapshot = Some(f.clone());
                    true
                } else {
                    false
                }
            })
            .await;
        assert!(found, "no snapshot for subscription {id} within 10 s");
        snapshot.expect("the snapshot")
    }

    fn apply(&mut self, frame: &Value) {
        let mut put = |item: &Value, live: bool, status: Option<&str>| {
            let (Some(fleet), Some(driver)) = (item["fleet"].as_str(), item["driver"].as_str())
            else {
                return;
            };
            let ts = item["ts"].as_i64().unwrap_or(0);
            let entry = self.seen.entry(key(fleet, driver)).or_insert(Seen {
                ts: 0,
                live_ts: None,
                lat: 0.0,
                lon: 0.0,
                status: String::new(),
            });
            if ts >= entry.ts {
                entry.ts = ts;
                entry.lat = item["lat"].as_f64().unwrap_or(entry.lat);
                entry.lon = item["lon"].as_f64().unwrap_or(entry.lon);
            }
            if live {
                entry.live_ts = entry.live_ts.max(Some(ts));
            }
            if let Some(status) = status {
                entry.status = status.to_owned();
            }
        };
        match frame["type"].as_str() {
            Some("snapshot") => {
                for item in frame["drivers"].as_array().into_iter().flatten() {
                    put(item, false, item["status"].as_str());
                }
            }
            Some("positions") => {
                for item in frame["items"].as_array().into_iter().flatten() {
                    put(item, true, Some("online"));
                }
            }
            Some("status") => {
                let (Some(fleet), Some(driver), Some(status)) = (
                    frame["fleet"].as_str(),
                    frame["driver"].as_str(),
                    frame["status"].as_str(),
                ) else {
                    return;
                };
                let entry = self.seen.entry(key(fleet, driver)).or_insert(Seen {
                    ts: 0,
                    live_ts: None,
                    lat: 0.0,
                    lon: 0.0,
                    status: String::new(),
                });
                entry.status = status.to_owned();
            }
            _ => {}
        }
    }

    /// Reads one frame within `limit`; `None` on timeout or when the socket ended.
    async fn read_one(&mut self, limit: Duration) -> Option<Value> {
        if self.ended.is_some() {
            return None;
        }
        loop {
            let msg = match tokio::time::timeout(limit, self.client.ws.next()).await {
                Err(_) => return None,
                Ok(m) => m,
            };
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("a JSON frame");
                    self.apply(&v);
                    self.frames.push(v.clone());
                    return Some(v);
                }
                Some(Ok(Message::Close(c))) => {
                    self.ended = Some(match c {
                        Some(f) => Ended::Closed(u16::from(f.code), f.reason.to_string()),
                        None => Ended::Closed(1005, String::new()),
                    });
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    self.ended = Some(Ended::Dropped);
                    return None;
                }
            }
        }
    }

    /// Reads frames until `check` holds for one of them; false after `limit`.
    async fn try_until_frame(
        &mut self,
        limit: Duration,
        mut check: impl FnMut(&Value) -> bool,
    ) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.read_one(left).await {
                Some(f) if check(&f) => return true,
                Some(_) => {}
                None if self.ended.is_some() => return false,
                None => {}
            }
        }
    }

    /// Reads frames until `check` holds of the view; false after `limit`
    /// (or when the socket ended).
    pub async fn try_until(&mut self, limit: Duration, check: impl Fn(&Watcher) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if check(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.ended.is_some() {
                return false;
            }
            self.read_one(left).await;
        }
    }

    /// Reads frames until `check` holds of the view; fails the test after
    /// `limit`. Returns how long it took.
    pub async fn until(
        &mut self,
        what: &str,
        limit: Duration,
        check: impl Fn(&Watcher) -> bool,
    ) -> Duration {
        let start = Instant::now();
        if !self.try_until(limit, check).await {
            panic!(
                "timed out after {limit:?} waiting for: {what} (socket: {:?}); last frames: {}",
                self.ended,
                self.last_frames(5)
            );
        }
        start.elapsed()
    }

    pub fn last_frames(&self, n: usize) -> String {
        let from = self.frames.len().saturating_sub(n);
        self.frames[from..]
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The driver's status as this dashboard shows it.
    pub fn status_of(&self, fleet: &str, driver: &str) -> Option<&str> {
        self.seen
            .get(&key(fleet, driver))
            .map(|s| s.status.as_str())
    }

    /// Whether any frame so far mentioned this driver (snapshot, positions or status).
    pub fn ever_shown(&self, fleet: &str, driver: &str) -> bool {
        self.frames.iter().any(|f| mentions(f, fleet, driver))
    }
}

/// Whether a dashboard frame carries anything about `driver` of `fleet`.
pub fn mentions(frame: &Value, fleet: &str, driver: &str) -> bool {
    let is = |v: &Value| v["fleet"] == fleet && v["driver"] == driver;
    match frame["type"].as_str() {
        Some("snapshot") => frame["drivers"].as_array().into_iter().flatten().any(is),
        Some("positions") => frame["items"].as_array().into_iter().flatten().any(is),
        Some("status") => is(frame),
        _ => false,
    }
}

/// A listing row of `driver` of `fleet`, if any.
pub fn row_of<'a>(rows: &'a [Value], fleet: &str, driver: &str) -> Option<&'a Value> {
    rows.iter()
        .find(|r| r["fleet"] == fleet && r["driver"] == driver)
}
