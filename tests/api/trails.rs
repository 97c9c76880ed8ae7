//! Trails end to end: durable acks through a real `kill -9`, `welcome.last_seq`,
//! resends stored once, the history API, the HTTP upload, and a database
//! outage seen from drivers and dashboards.

#[path = "../support/mod.rs"]
mod support;

use std::process::Stdio;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::*;
use fleethub::auth::{Authenticator, Role};
use support::{PG_HOST, Proxy, TestDb};

fn fix(seq: u64, ts: i64) -> Value {
    json!({"seq": seq, "ts": ts, "lat": -12.05, "lon": -77.04 + seq as f64 * 0.0001, "speed": 8.0})
}

fn seqs_of(trail: &Value) -> Vec<u64> {
    trail["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["seq"].as_u64().expect("seq"))
        .collect()
}

async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    let res = http
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Sends `seqs` as batches of 50 and waits for the ack of the last.
async fn publish_all(d: &mut DriverClient, seqs: std::ops::RangeInclusive<u64>, start: i64) {
    let last = *seqs.end();
    let items: Vec<Value> = seqs.map(|s| fix(s, start + s as i64 * 1000)).collect();
    for chunk in items.chunks(50) {
        d.client
            .send(&json!({"type": "batch", "items": chunk}))
            .await;
    }
    d.ack_covering(last).await;
}

// ---- a real process, killed with SIGKILL ----

/// Where the child hub keeps its trails.
enum Backend<'a> {
    Postgres(&'a TestDb),
    Sqlite(&'a std::path::Path),
}

/// The built `fleethub` binary, serving on its own port.
struct HubProcess {
    child: tokio::process::Child,
    port: u16,
}

impl HubProcess {
    async fn start(backend: &Backend<'_>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleethub"));
        cmd.arg("serve")
            .env_remove("DATABASE_URL")
            .env("FLEETHUB_LISTEN", format!("127.0.0.1:{port}"))
            .env("FLEETHUB_JWT_SECRET", SECRET)
            .env("FLEETHUB_NODE_ID", "kill-test")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        match backend {
            Backend::Postgres(db) => cmd.env("DATABASE_URL", db.url()),
            Backend::Sqlite(path) => cmd.env("FLEETHUB_DATABASE__SQLITE_PATH", path),
        };
        let hub = Self {
            child: cmd.spawn().expect("the fleethub binary starts"),
            port,
        };
        let http = http_client();
        let healthz = format!("http://127.0.0.1:{port}/healthz");
        support::eventually(
            Duration::from_secs(30),
            "the hub process to answer /healthz",
            || {
                let req = http.get(&healthz).send();
                async move { req.await.is_ok_and(|r| r.status().is_success()) }
            },
        )
        .await;
        hub
    }

    async fn driver(&self, sub: &str, fleet: &str) -> DriverClient {
        let token = token(Role::Driver, sub, Some(fleet));
        let mut client = Client::connect(&format!(
            "ws://127.0.0.1:{}/ws/driver?access_token={token}",
            self.port
        ))
        .await;
        let welcome = client.next_of("welcome").await;
        DriverClient { client, welcome }
    }

    /// SIGKILL: no shutdown, no flush, nothing but what is on disk survives.
    async fn kill_9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("the hub exits");
    }
}

fn token(role: Role, sub: &str, fleet: Option<&str>) -> String {
    Authenticator::new(SECRET.as_bytes())
        .issue(sub, role, fleet, Duration::from_secs(3600))
        .expect("token")
}

async fn acked_positions_survive_kill_9(backend: Backend<'_>) {
    let start = now_ms() - 600_000;
    let hub = HubProcess::start(&backend).await;
    let mut d = hub.driver("d1", "acme").await;
    publish_all(&mut d, 1..=300, start).await;
    hub.kill_9().await;

    let hub = HubProcess::start(&backend).await;
    let d = hub.driver("d1", "acme").await;
    assert_eq!(
        d.welcome["last_seq"], 300,
        "the app resends only what is missing"
    );
    let url = format!(
        "http://127.0.0.1:{}/api/v1/drivers/d1/trail?from={start}",
        hub.port
    );
    let (status, trail) = get_json(
        &http_client(),
        &url,
        &token(Role::Dispatcher, "disp", Some("acme")),
    )
    .await;
    assert_eq!(status, 200, "{trail}");
    assert_eq!(seqs_of(&trail), (1..=300).collect::<Vec<_>>());
    hub.kill_9().await;
}

#[tokio::test]
async fn acked_positions_survive_a_kill_9_of_the_hub_on_postgres() {
    let db = TestDb::create().await;
    acked_positions_survive_kill_9(Backend::Postgres(&db)).await;
}

#[tokio::test]
async fn acked_positions_survive_a_kill_9_of_the_hub_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    acked_positions_survive_kill_9(Backend::Sqlite(&dir.path().join("trails.db"))).await;
}

// ---- in-process ----

#[tokio::test]
async fn a_reconnecting_driver_learns_its_last_stored_seq_and_resends_are_stored_once() {
    let app = spawn_app().await;
    let start = now_ms() - 60_000;
    let mut d = app.driver("d1", "acme").await;
    publish_all(&mut d, 1..=5, start).await;
    drop(d);

    let mut d = app.driver("d1", "acme").await;
    assert_eq!(d.welcome["last_seq"], 5);
    // An app unsure of what arrived resends a little more than needed.
    publish_all(&mut d, 3..=8, start).await;

    let url = app.url(&format!("/api/v1/drivers/d1/trail?fleet=acme&from={start}"));
    let (_, trail) = get_json(&app.http, &url, &app.token(Role::Admin, "ops", None)).await;
    assert_eq!(seqs_of(&trail), vec![1, 2, 3, 4, 5, 6, 7, 8]);
}

#[tokio::test]
async fn the_trail_is_json_with_a_summary_filtered_by_from_and_to() {
    let app = spawn_app().await;
    let start = now_ms() - 60_000;
    let mut d = app.driver("d1", "acme").await;
    publish_all(&mut d, 1..=10, start).await;
    let token = app.token(Role::Dispatcher, "disp", Some("acme"));

    let url = app.url(&format!(
        "/api/v1/drivers/d1/trail?from={}&to={}",
        start + 3000,
        start + 6000
    ));
    let (status, trail) = get_json(&app.http, &url, &token).await;
    assert_eq!(status, 200);
    assert_eq!(seqs_of(&trail), vec![3, 4, 5, 6]);
    assert_eq!(trail["driver"], "d1");
    assert_eq!(trail["fleet"], "acme");
    let p = &trail["points"][0];
    assert_eq!(
        (p["ts"].as_i64(), p["lat"].as_f64(), p["speed"].as_f64()),
        (Some(start + 3000), Some(-12.05), Some(8.0))
    );
    let s = &trail["summary"];
    assert_eq!(s["points"], 4);
    assert_eq!(s["duration_s"], 3.0);
    let distance = s["distance_m"].as_f64().unwrap();
    assert!(
        (distance - 32.7).abs() < 0.5,
        "3 steps of 0.0001° at 12°S: {distance}"
    );
    assert_eq!(s["max_speed_mps"], 8.0);

    // RFC 3339 bounds mean the same thing as milliseconds.
    let rfc = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let url = app.url(&format!(
        "/api/v1/drivers/d1/trail?from={}&to={}&limit=2",
        rfc(start + 3000),
        rfc(start + 6000)
    ));
    let (_, trail) = get_json(&app.http, &url, &token).await;
    assert_eq!(seqs_of(&trail), vec![3, 4]);
    assert_eq!(trail["truncated"], true);
}

#[tokio::test]
async fn the_trail_as_geojson_is_a_linestring_in_lon_lat_order_with_timestamps() {
    let app = spawn_app().await;
    let start = now_ms() - 60_000;
    let mut d = app.driver("d1", "acme").await;
    publish_all(&mut d, 1..=3, start).await;
    let url = app.url(&format!(
        "/api/v1/drivers/d1/trail?fleet=acme&from={start}&format=geojson"
    ));
    let res = app
        .http
        .get(&url)
        .bearer_auth(app.token(Role::Admin, "ops", None))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "application/geo+json");
    let f: Value = res.json().await.unwrap();

    assert_eq!(f["type"], "Feature");
    assert_eq!(f["geometry"]["type"], "LineString");
    let first = &f["geometry"]["coordinates"][0];
    assert_eq!(first[0].as_f64(), Some(-77.04 + 0.0001), "longitude first");
    assert_eq!(first[1].as_f64(), Some(-12.05), "latitude second");
    assert_eq!(f["geometry"]["coordinates"].as_array().unwrap().len(), 3);
    assert_eq!(f["properties"]["driver"], "d1");
    assert_eq!(
        f["properties"]["timestamps"],
        json!([start + 1000, start + 2000, start + 3000])
    );
    assert_eq!(f["properties"]["summary"]["points"], 3);
}

#[tokio::test]
async fn simplification_reduces_a_noisy_straight_line() {
    let app = spawn_app().await;
    let start = now_ms() - 300_000;
    let mut d = app.driver("d1", "acme").await;
    // 200 fixes heading east, jittering ±2 m north and south.
    let items: Vec<Value> = (1..=200u64)
        .map(|s| {
            let jitter = if s % 2 == 0 { 0.000018 } else { -0.000018 };
            json!({"seq": s, "ts": start + s as i64 * 1000, "lat": -12.05 + jitter, "lon": -77.04 + s as f64 * 0.0001})
        })
        .collect();
    for chunk in items.chunks(50) {
        d.client
            .send(&json!({"type": "batch", "items": chunk}))
            .await;
    }
    d.ack_covering(200).await;
    let token = app.token(Role::Admin, "ops", None);

    let url = app.url(&format!(
        "/api/v1/drivers/d1/trail?fleet=acme&from={start}&simplify=10"
    ));
    let (_, simple) = get_json(&app.http, &url, &token).await;
    assert_eq!(
        seqs_of(&simple),
        vec![1, 200],
        "a straight line keeps its ends"
    );
    let url = app.url(&format!("/api/v1/drivers/d1/trail?fleet=acme&from={start}"));
    let (_, full) = get_json(&app.http, &url, &token).await;
    assert_eq!(seqs_of(&full).len(), 200);
    assert_eq!(
        simple["summary"]["distance_m"], full["summary"]["distance_m"],
        "the trip is measured on every fix"
    );
}

#[tokio::test]
async fn a_dispatcher_sees_only_its_own_fleets_trails() {
    let app = spawn_app().await;
    let mut d = app.driver("d1", "acme").await;
    publish_all(&mut d, 1..=1, now_ms() - 10_000).await;
    let url = app.url("/api/v1/drivers/d1/trail");

    let (status, body) = get_json(
        &app.http,
        &url,
        &app.token(Role::Dispatcher, "disp", Some("other")),
    )
    .await;
    assert_eq!(
        status, 404,
        "another fleet's driver looks like no driver: {body}"
    );
    let (status, _) = get_json(
        &app.http,
        &app.url("/api/v1/drivers/nobody/trail?fleet=acme"),
        &app.token(Role::Admin, "ops", None),
    )
    .await;
    assert_eq!(status, 404);
    // Connected but nothing stored yet: an empty trail for its fleet, nothing for others.
    let _quiet = app.driver("d2", "acme").await;
    let quiet_url = app.url("/api/v1/drivers/d2/trail");
    let (status, body) = get_json(
        &app.http,
        &quiet_url,
        &app.token(Role::Dispatcher, "disp", Some("acme")),
    )
    .await;
    assert_eq!((status, seqs_of(&body)), (200, vec![]), "{body}");
    let (status, _) = get_json(
        &app.http,
        &quiet_url,
        &app.token(Role::Dispatcher, "disp", Some("other")),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = get_json(
        &app.http,
        &url,
        &app.token(Role::Driver, "d1", Some("acme")),
    )
    .await;
    assert_eq!(status, 403, "drivers do not read trails");
    let admin_url = format!("{url}?fleet=acme");
    let admin = app.token(Role::Admin, "ops", None);
    let (status, body) = get_json(&app.http, &admin_url, &admin).await;
    assert_eq!((status, seqs_of(&body)), (200, vec![1]));
    let (status, body) = get_json(
        &app.http,
        &format!("{admin_url}&from=tomorrow"),
        &app.token(Role::Admin, "ops", None),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_query"))
    );
}

#[tokio::test]
async fn positions_posted_over_http_are_acked_after_the_commit_and_shown_live() {
    let app = spawn_app().await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("all", [-180.0, -90.0, 180.0, 90.0]).await;
    let start = now_ms() - 60_000;
    let mut items: Vec<Value> = (1..=20).map(|s| fix(s, start + s as i64 * 1000)).collect();
    items.push(json!({"seq": 21, "ts": start + 21_000, "lat": 91.0, "lon": 0.0}));
    let post = |body: Value, token: String| {
        app.http
            .post(app.url("/api/v1/positions"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };

    let res = post(
        json!({"items": items}),
        app.token(Role::Driver, "d1", Some("acme")),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["ack"], 20);
    assert_eq!(answer["rejected"][0]["seq"], 21);
    assert_eq!(answer["rejected"][0]["code"], "invalid_position");
    // Acked means stored: the store answers at once.
    let d1 = driver_key("acme", "d1");
    assert_eq!(app.state.store.last_seq(&d1).await.unwrap(), 20);
    let seen = dash.items_until_ts("d1", start + 20_000).await;
    assert!(
        item_of(&seen, "d1").is_some(),
        "fan-out carries HTTP uploads too"
    );

    let res = post(
        json!({"items": items}),
        app.token(Role::Dispatcher, "x", Some("acme")),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403);
    let too_many: Vec<Value> = (1..=1001).map(|s| fix(s, start)).collect();
    let res = post(
        json!({"items": too_many}),
        app.token(Role::Driver, "d1", Some("acme")),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "batch_too_large"
    );
}

#[tokio::test]
async fn posting_positions_over_http_is_rate_limited_per_driver() {
    let app = spawn_app_with(|s| {
        s.driver.rate_burst = 10;
        s.driver.rate_per_sec = 1;
    })
    .await;
    let start = now_ms() - 60_000;
    let post = |driver: &str, seqs: std::ops::RangeInclusive<u64>| {
        let items: Vec<Value> = seqs.map(|s| fix(s, start + s as i64 * 1000)).collect();
        app.http
            .post(app.url("/api/v1/positions"))
            .bearer_auth(app.token(Role::Driver, driver, Some("acme")))
            .json(&json!({ "items": items }))
            .send()
    };
    assert_eq!(post("d1", 1..=10).await.unwrap().status(), 200);
    let res = post("d1", 11..=15).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
    // Nothing of the refused request was taken; another driver has its own bucket.
    let d1 = driver_key("acme", "d1");
    assert_eq!(app.state.store.last_seq(&d1).await.unwrap(), 10);
    assert_eq!(post("d2", 1..=10).await.unwrap().status(), 200);
}

// ---- a database outage, seen from the apps ----

#[tokio::test]
async fn a_database_outage_keeps_fan_out_freezes_acks_and_recovers_without_loss() {
    let db = TestDb::create().await;
    let proxy = Proxy::start(PG_HOST).await;
    let app = spawn_app_with(|s| {
        s.database.url = SecretString::from(db.url_via(proxy.addr));
        s.trails.queue_capacity = 100;
        s.trails.flush_max_rows = 20;
    })
    .await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("all", [-180.0, -90.0, 180.0, 90.0]).await;
    let start = now_ms() - 600_000;
    let mut d = app.driver("d1", "acme").await;
    publish_all(&mut d, 1..=10, start).await;

    proxy.cut();
    // Up to the queue's room the fixes are taken (not acked), beyond it refused.
    let items: Vec<Value> = (11..=200)
        .map(|s| fix(s, start + s as i64 * 1000))
        .collect();
    for chunk in items.chunks(10) {
        d.client
            .send(&json!({"type": "batch", "items": chunk}))
            .await;
    }
    let mut acked_during_outage = Vec::new();
    let refusal = loop {
        let frame = d.client.next().await;
        match frame["type"].as_str() {
            Some("ack") => acked_during_outage.push(frame["seq"].as_u64().unwrap()),
            Some("error") => break frame,
            _ => {}
        }
    };
    assert_eq!(refusal["code"], "storage_unavailable");
    assert!(
        acked_during_outage.iter().all(|&s| s <= 10),
        "acks froze: {acked_during_outage:?}"
    );
    // Live fan-out goes on: the dashboard sees the newest fix.
    dash.items_until_ts("d1", start + 200_000).await;
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "readiness reports the outage");
    let d1 = driver_key("acme", "d1");

    proxy.restore();
    // The app resends from its last ack; everything ends acked and stored once.
    eventually("the queue to drain", || {
        let queued = app.state.writer.queued();
        async move { queued == 0 }
    })
    .await;
    drop(d);
    let mut d = app.driver("d1", "acme").await;
    let last = d.welcome["last_seq"].as_u64().unwrap();
    assert!(last >= 10, "{last}");
    publish_all(&mut d, (last + 1)..=200, start).await;
    assert_eq!(app.state.store.last_seq(&d1).await.unwrap(), 200);
    let url = app.url(&format!(
        "/api/v1/drivers/d1/trail?fleet=acme&from={start}&limit=1000"
    ));
    let (_, trail) = get_json(&app.http, &url, &app.token(Role::Admin, "ops", None)).await;
    assert_eq!(seqs_of(&trail), (1..=200).collect::<Vec<_>>());
}
