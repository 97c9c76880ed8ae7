//! The ingest paths side by side, against one hub in one run: positions per
//! second through the WebSocket protocol, through OsmAnd over keep-alive
//! HTTP (Traccar Client's protocol) and through OwnTracks over MQTT, each
//! durable: a position counts once the hub has acknowledged it, which it
//! does only after the trail commit (a WebSocket `ack`, an HTTP 200, the
//! hub's PUBACK to the broker, seen in its `stored` count).
//!
//! Every path gets the same number of devices, each sending as fast as its
//! protocol lets it while waiting for durability: a WebSocket driver keeps
//! up to `--ws-window` positions unacknowledged (cumulative acks), an OsmAnd
//! phone one request at a time on its own keep-alive connection, and the
//! MQTT publishers hand the broker `--mqtt-messages` QoS 1 messages as fast
//! as it takes them; the hub's rate is then the count over the time until
//! the last one is stored.
//!
//! The devices are registered through the API first (`POST
//! /api/v1/devices`, as an admin). Their tracks start spread across Lima and
//! move north 1 m per fix, one fix per 100 ms (one per second over MQTT,
//! whose `tst` is in seconds) of fix time starting an hour ago, so no input
//! filter drops them.
//!
//! `--fences N` first creates N geofences over Lima (polygons of 50
//! vertices, `loadtest::zones`) in the devices' fleet, so that every stored
//! fix is evaluated against them: the fence benchmark.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use loadtest::net;
use loadtest::procstat;
use loadtest::token::{Role, mint};
use loadtest::zones::ZoneShape;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const FLEET: &str = "bench";
/// Where the tracks start: the south-west of Lima (the tracks spread east
/// over 0.15 degrees and drive north, inside the city the fences cover).
const ORIGIN: (f64, f64) = (-12.17, -77.11);
/// The east-west spread of the tracks' starts, degrees.
const SPREAD_DEG: f64 = 0.15;
/// One fix's move, in degrees of latitude (about 1.1 m).
const STEP_DEG: f64 = 1e-5;

#[derive(Parser, Debug)]
#[command(about = "Positions per second through each ingest path, durable")]
struct Args {
    /// The hub's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:18090")]
    url: String,
    /// The hub's JWT secret (the devices are registered as an admin).
    #[arg(long, env = "FLEETHUB_JWT_SECRET")]
    secret: String,
    /// Devices per path.
    #[arg(long, default_value_t = 300)]
    devices: usize,
    /// How long the WebSocket and OsmAnd paths are measured.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Positions a WebSocket driver keeps unacknowledged.
    #[arg(long, default_value_t = 16)]
    ws_window: usize,
    /// The broker the hub consumes OwnTracks from, `host:port`.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// Messages published over MQTT.
    #[arg(long, default_value_t = 60_000)]
    mqtt_messages: usize,
    /// MQTT publisher connections sharing the devices.
    #[arg(long, default_value_t = 4)]
    mqtt_publishers: usize,
    /// The paths to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "ws,osmand,mqtt")]
    paths: Vec<String>,
    /// The hub's PostgreSQL database: an MQTT message counts once its row is
    /// there (`psql` is asked), not when the hub says `stored` (which a
    /// redelivered duplicate is too).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// The hub's PID, for its CPU per position.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Where to write the JSON report.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Geofences to create over Lima in the devices' fleet before measuring.
    #[arg(long, default_value_t = 0)]
    fences: usize,
}

/// One path's result.
#[derive(Debug, serde::Serialize)]
struct PathResult {
    path: String,
    devices: usize,
    positions: u64,
    seconds: f64,
    per_sec: f64,
    /// The hub's CPU over the measurement, per position, in microseconds.
    hub_cpu_us_per_position: Option<f64>,
    /// Send to acknowledgement, in milliseconds (not for MQTT: the broker
    /// acknowledges the publisher, the hub the broker).
    latency_ms_p50: Option<f64>,
    latency_ms_p99: Option<f64>,
    /// Messages the hub left unacked for the broker to send again.
    mqtt_redelivered: Option<u64>,
}

/// Fix number `k` of device `i`: its place and its fix time.
fn fix(i: usize, k: u64, start_ms: i64, step_ms: i64) -> (f64, f64, i64) {
    let lat = ORIGIN.0 + STEP_DEG * k as f64;
    let lon = ORIGIN.1 + SPREAD_DEG * (i % 1000) as f64 / 1000.0;
    (lat, lon, start_ms + step_ms * k as i64)
}

fn now_ms() -> i64 {
    loadtest::driver::now_ms()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds")
}

fn hub_cpu(pid: Option<u32>) -> Option<f64> {
    procstat::sample(pid?).ok().map(|s| s.cpu_secs)
}

/// Registers `devices` devices of `protocol`, named `<prefix>-<i>`, driven
/// by drivers `<prefix>-d<i>`; returns their keys in order.
async fn register(
    http: &reqwest::Client,
    args: &Args,
    protocol: &str,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let admin = mint(
        &args.secret,
        "bench-admin",
        Role::Admin,
        None,
        Duration::from_secs(3600),
    );
    let mut keys = Vec::with_capacity(args.devices);
    for i in 0..args.devices {
        let mut body = json!({
            "device_id": format!("{prefix}-{i}"),
            "driver": format!("{prefix}-d{i}"),
            "fleet": FLEET,
            "protocol": protocol,
        });
        if protocol == "osmand" {
            body["speed_unit"] = "kmh".into();
        }
        let resp = http
            .post(format!("{}/api/v1/devices", args.url))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().as_u16() == 201,
            "registering {prefix}-{i}: {}",
            resp.status()
        );
        let device: Value = resp.json().await?;
        let key = device["key"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no key for {prefix}-{i}"))?;
        keys.push(key.to_owned());
    }
    Ok(keys)
}

/// Creates `args.fences` zones over Lima in the bench fleet, 8 requests at a time.
async fn create_fences(http: &reqwest::Client, args: &Args) -> anyhow::Result<()> {
    let admin = mint(
        &args.secret,
        "bench-admin",
        Role::Admin,
        None,
        Duration::from_secs(3600),
    );
    let lima = loadtest::city::City::lima().bbox;
    let started = Instant::now();
    let features = loadtest::zones::zones(args.fences, &lima, ZoneShape::default(), 42);
    let requests = futures_util::stream::iter(features.into_iter().map(|mut feature| {
        feature["properties"]["fleet"] = FLEET.into();
        let req = http
            .post(format!("{}/api/v1/geofences", args.url))
            .bearer_auth(&admin)
            .json(&feature);
        async move {
            let resp = req.send().await?;
            anyhow::ensure!(
                resp.status().as_u16() == 201,
                "creating a fence: {}",
                resp.status()
            );
            Ok(())
        }
    }));
    let results: Vec<anyhow::Result<()>> = requests.buffer_unordered(8).collect().await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    println!(
        "{} geofences of 50 vertices created over Lima in {:.1} s",
        args.fences,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What a path's clients counted.
#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    latency: std::sync::Mutex<Option<Histogram<u64>>>,
}

impl Tally {
    fn merge(&self, h: &Histogram<u64>) {
        let mut all = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        match all.as_mut() {
            Some(all) => {
                let _ = all.add(h);
            }
            None => *all = Some(h.clone()),
        }
    }

    fn result(&self, path: &str, args: &Args, seconds: f64, cpu: Option<f64>) -> PathResult {
        let positions = self.acked.load(Ordering::Relaxed);
        let latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let ms = |q: f64| {
            latency
                .as_ref()
                .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
        };
        PathResult {
            path: path.to_owned(),
            devices: args.devices,
            positions,
            seconds,
            per_sec: positions as f64 / seconds,
            hub_cpu_us_per_position: cpu.map(|c| c * 1e6 / positions.max(1) as f64),
            latency_ms_p50: ms(0.5),
            latency_ms_p99: ms(0.99),
            mqtt_redelivered: None,
        }
    }
}

/// One WebSocket driver: up to `window` positions in flight, until `until`;
/// counts what was acknowledged before it.
async fn ws_driver(i: usize, args: Arc<Args>, tally: Arc<Tally>, until: Instant) {
    let token = mint(
        &args.secret,
        &format!("ws-d{i}"),
        Role::Driver,
        Some(FLEET),
        Duration::from_secs(3600),
    );
    let base = args.url.replacen("http", "ws", 1);
    let url = net::endpoint(&base, "/ws/driver", &token);
    let Ok(ws) = net::connect(&url, None, None).await else {
        tracing::warn!(driver = i, "could not connect");
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let start_ms = now_ms() - 3_600_000;
    let mut sent_at = std::collections::VecDeque::new();
    let (mut next, mut acked) = (1u64, 0u64);
    let mut h = histogram();
    while Instant::now() < until {
        while sent_at.len() < args.ws_window {
            let (lat, lon, ts) = fix(i, next, start_ms, 100);
            let pos = json!({"type":"pos","seq":next,"ts":ts,"lat":lat,"lon":lon,"speed":10.0});
            if tx.send(Message::text(pos.to_string())).await.is_err() {
                return;
            }
            sent_at.push_back((next, Instant::now()));
            next += 1;
        }
        let frame = tokio::select! {
            frame = rx.next() => frame,
            _ = tokio::time::sleep_until(until.into()) => break,
        };
        let Some(Ok(Message::Text(text))) = frame else {
            if matches!(frame, None | Some(Err(_))) {
                return;
            }
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if v["type"] != "ack" {
            continue;
        }
        let seq = v["seq"].as_u64().unwrap_or(0);
        while let Some(&(s, at)) = sent_at.front()
            && s <= seq
        {
            let _ = h.record(at.elapsed().as_micros() as u64);
            sent_at.pop_front();
        }
        tally
            .acked
            .fetch_add(seq.saturating_sub(acked), Ordering::Relaxed);
        acked = acked.max(seq);
    }
    tally.merge(&h);
}

/// One OsmAnd phone: one request at a time over its keep-alive connection.
async fn osmand_phone(
    i: usize,
    key: String,
    http: reqwest::Client,
    args: Arc<Args>,
    tally: Arc<Tally>,
    until: Instant,
) {
    let start_ms = now_ms() - 3_600_000;
    let mut h = histogram();
    let id = format!("osm-{i}");
    for k in 1u64.. {
        if Instant::now() >= until {
            break;
        }
        let (lat, lon, ts) = fix(i, k, start_ms, 100);
        let at = Instant::now();
        let resp = http
            .get(format!("{}/ingest/osmand", args.url))
            .query(&[
                ("id", id.as_str()),
                ("key", key.as_str()),
                ("lat", &lat.to_string()),
                ("lon", &lon.to_string()),
                ("timestamp", &ts.to_string()),
                ("speed", "36"),
                ("bearing", "0"),
                ("accuracy", "5"),
            ])
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() && Instant::now() < until => {
                let _ = h.record(at.elapsed().as_micros() as u64);
                tally.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) if !r.status().is_success() => {
                tracing::warn!(phone = i, status = %r.status(), "osmand refused");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(phone = i, error = %e, "osmand request failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tally.merge(&h);
}

async fn run_ws(args: &Arc<Args>) -> PathResult {
    let tally = Arc::new(Tally::default());
    let cpu = hub_cpu(args.server_pid);
    let until = Instant::now() + args.duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.devices)
        .map(|i| tokio::spawn(ws_driver(i, Arc::clone(args), Arc::clone(&tally), until)))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let seconds = started
        .elapsed()
        .as_secs_f64()
        .min(args.duration.as_secs_f64());
    let cpu = hub_cpu(args.server_pid).zip(cpu).map(|(b, a)| b - a);
    tally.result("websocket", args, seconds, cpu)
}

async fn run_osmand(args: &Arc<Args>, http: &reqwest::Client) -> anyhow::Result<PathResult> {
    let keys = register(http, args, "osmand", "osm").await?;
    let tally = Arc::new(Tally::default());
    // Connections are opened before the clock starts, as phones that have
    // been sending for a while.
    let warm: Vec<_> = (0..args.devices)
        .map(|_| http.get(format!("{}/healthz", args.url)).send())
        .collect();
    futures_util::future::join_all(warm).await;
    let cpu = hub_cpu(args.server_pid);
    let until = Instant::now() + args.duration;
    let tasks: Vec<_> = keys
        .into_iter()
        .enumerate()
        .map(|(i, key)| {
            let (args, tally) = (Arc::clone(args), Arc::clone(&tally));
            tokio::spawn(osmand_phone(i, key, http.clone(), args, tally, until))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let cpu = hub_cpu(args.server_pid).zip(cpu).map(|(b, a)| b - a);
    Ok(tally.result(
        "osmand (HTTP keep-alive)",
        args,
        args.duration.as_secs_f64(),
        cpu,
    ))
}

/// The hub's `fleethub_mqtt_messages_total{outcome="..."}`.
async fn mqtt_count(http: &reqwest::Client, args: &Args, outcome: &str) -> anyhow::Result<u64> {
    let admin = mint(
        &args.secret,
        "bench-admin",
        Role::Admin,
        None,
        Duration::from_secs(600),
    );
    let text = http
        .get(format!("{}/metrics", args.url))
        .bearer_auth(admin)
        .send()
        .await?
        .text()
        .await?;
    let name = format!("fleethub_mqtt_messages_total{{outcome=\"{outcome}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

/// One publisher: QoS 1 messages for devices `i ≡ n (mod publishers)`,
/// `per_device` each, as fast as the broker takes them.
async fn mqtt_publisher(n: usize, args: Arc<Args>, per_device: u64) -> anyhow::Result<()> {
    let (host, port) = args
        .mqtt
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--mqtt is host:port"))?;
    let mut options = MqttOptions::new(format!("bench-pub-{n}"), host, port.parse()?);
    options.set_inflight(200).set_clean_session(true);
    let (client, mut events) = AsyncClient::new(options, 1024);
    let devices: Vec<usize> = (n..args.devices).step_by(args.mqtt_publishers).collect();
    let total = per_device * devices.len() as u64;
    let publish = tokio::spawn(async move {
        let start_ms = now_ms() - 3_600_000;
        for k in 1..=per_device {
            for &i in &devices {
                let (lat, lon, ts) = fix(i, k, start_ms, 1000);
                let body = json!({"_type":"location","lat":lat,"lon":lon,"tst":ts / 1000,"acc":5,"vel":36,"cog":0,"tid":"bm"});
                let topic = format!("owntracks/ot-{i}/phone");
                client
                    .publish(topic, QoS::AtLeastOnce, false, body.to_string())
                    .await?;
            }
        }
        anyhow::Ok(client)
    });
    let mut puback = 0;
    while puback < total {
        if let Event::Incoming(Packet::PubAck(_)) = events.poll().await? {
            puback += 1;
        }
    }
    let client = publish.await??;
    let _ = client.disconnect().await;
    Ok(())
}

async fn run_mqtt(args: &Arc<Args>, http: &reqwest::Client) -> anyhow::Result<PathResult> {
    register(http, args, "owntracks", "ot").await?;
    let per_device = (args.mqtt_messages / args.devices).max(1) as u64;
    let total = per_device * args.devices as u64;
    let stored_before = mqtt_stored(http, args).await?;
    let redelivered_before = redelivered(http, args).await?;
    let cpu = hub_cpu(args.server_pid);
    let started = Instant::now();
    let publishers: Vec<_> = (0..args.mqtt_publishers)
        .map(|n| tokio::spawn(mqtt_publisher(n, Arc::clone(args), per_device)))
        .collect();
    let deadline = started + Duration::from_secs(600);
    loop {
        let stored = mqtt_stored(http, args).await? - stored_before;
        if stored >= total {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {stored} of {total} MQTT messages stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = hub_cpu(args.server_pid).zip(cpu).map(|(b, a)| b - a);
    for p in publishers {
        p.await??;
    }
    let tally = Tally::default();
    tally.acked.store(total, Ordering::Relaxed);
    let mut result = tally.result("owntracks (MQTT QoS 1)", args, seconds, cpu);
    result.mqtt_redelivered = Some(redelivered(http, args).await? - redelivered_before);
    Ok(result)
}

/// The OwnTracks positions stored: rows in the trail store when the
/// database is known, the hub's `stored` count otherwise.
async fn mqtt_stored(http: &reqwest::Client, args: &Args) -> anyhow::Result<u64> {
    let Some(url) = args.database_url.clone() else {
        return mqtt_count(http, args, "stored").await;
    };
    let sql = format!(
        "select count(*) from positions where fleet_id = '{FLEET}' and driver_id >= 'ot-' and driver_id < 'ot.'"
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("psql")
            .args(["-tA", &url, "-c", &sql])
            .output()
    })
    .await??;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// Messages the hub did not ack (busy, storage, rate): the broker resends them.
async fn redelivered(http: &reqwest::Client, args: &Args) -> anyhow::Result<u64> {
    let mut n = 0;
    for outcome in ["busy", "not_stored", "rate_limited"] {
        let count = mqtt_count(http, args, outcome).await?;
        tracing::info!(outcome, count, "not acked so far");
        n += count;
    }
    Ok(n)
}

fn print(r: &PathResult) {
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".into(), |v| format!("{v:.1}{unit}"));
    println!(
        "{:<26} {:>5} devices {:>8} positions in {:>5.1} s: {:>7.0}/s  hub CPU {:>6}/position  latency p50 {:>8} p99 {:>8}{}",
        r.path,
        r.devices,
        r.positions,
        r.seconds,
        r.per_sec,
        opt(r.hub_cpu_us_per_position, " µs"),
        opt(r.latency_ms_p50, " ms"),
        opt(r.latency_ms_p99, " ms"),
        r.mqtt_redelivered.map_or(String::new(), |n| format!(
            "  (not acked, redelivered: {n})"
        )),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let _ = net::raise_nofile_limit();
    let args = Arc::new(Args::parse());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.devices)
        .build()?;
    if args.fences > 0 {
        create_fences(&http, &args).await?;
    }
    let mut results = Vec::new();
    for path in &args.paths {
        let result = match path.as_str() {
            "ws" => run_ws(&args).await,
            "osmand" => run_osmand(&args, &http).await?,
            "mqtt" => run_mqtt(&args, &http).await?,
            other => anyhow::bail!("unknown path {other}: ws, osmand or mqtt"),
        };
        print(&result);
        results.push(result);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}
