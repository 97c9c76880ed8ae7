//! The input filters on every ingest path: the same script of fixes goes in
//! over the WebSocket, `POST /api/v1/positions`, OsmAnd and OwnTracks; each
//! filtered fix is answered as taken (acked, 200, `[]`), never reaches the
//! trail or a dashboard, and is counted by reason.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{DashboardClient, TestApp, now_ms, spawn_app_with};
use fleethub::auth::Role;
use fleethub::config::FleetFilterSettings;

/// Around Berlin, where every fix of these tests is.
const BBOX: [f64; 4] = [13.0, 52.0, 14.0, 53.0];
const REASONS: [&str; 5] = ["zero", "accuracy", "duplicate", "speed", "distance"];

/// Accuracy and jumps filtered for everyone; fleet `acme` also drops fixes
/// closer than 20 m to its drivers' last.
async fn filtered_app() -> TestApp {
    spawn_app_with(|s| {
        s.filters.max_accuracy_m = 50.0;
        s.filters.max_speed_kmh = 300.0;
        let edge = FleetFilterSettings {
            min_distance_m: Some(20.0),
            ..Default::default()
        };
        s.filters.fleets.insert("acme".into(), edge);
    })
    .await
}

#[derive(Clone, Copy)]
struct Fix {
    ts: i64,
    lat: f64,
    lon: f64,
    acc: f64,
    /// The reason it is filtered for, `None` when it is kept.
    filtered: Option<&'static str>,
}

/// The fixes every path sends, in order, from `t0` (whole seconds, so the
/// apps' Unix seconds say it exactly).
fn script(t0: i64) -> Vec<Fix> {
    let fix = |secs: i64, lat: f64, lon: f64, acc: f64, filtered| Fix {
        ts: t0 + secs * 1000,
        lat,
        lon,
        acc,
        filtered,
    };
    vec![
        fix(0, 52.5, 13.4, 5.0, None),
        fix(1, 0.0, 0.0, 5.0, Some("zero")),
        fix(2, 52.5005, 13.4, 500.0, Some("accuracy")),
        fix(0, 52.5, 13.4, 5.0, Some("duplicate")),
        // 11 km in 3 s.
        fix(3, 52.6, 13.4, 5.0, Some("speed")),
        // About 11 m from the first fix, a minute later.
        fix(60, 52.5001, 13.4, 5.0, Some("distance")),
        // 1.1 km in two minutes: kept.
        fix(120, 52.51, 13.4, 5.0, None),
    ]
}

fn kept_times(script: &[Fix]) -> Vec<i64> {
    script
        .iter()
        .filter(|f| f.filtered.is_none())
        .map(|f| f.ts)
        .collect()
}

/// Whole seconds, `secs` ago, in milliseconds.
fn secs_ago(secs: i64) -> i64 {
    (now_ms() / 1000 - secs) * 1000
}

fn wire(seq: u64, f: &Fix) -> Value {
    json!({"seq": seq, "ts": f.ts, "lat": f.lat, "lon": f.lon, "acc": f.acc})
}

async fn metrics(app: &TestApp) -> String {
    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    res.text().await.unwrap()
}

/// The filtered counter of `reason` (0 before its first sample).
fn filtered_count(metrics: &str, reason: &str) -> u64 {
    let series = format!("fleethub_positions_filtered_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn trail_times(app: &TestApp, fleet: &str, driver: &str, from: i64) -> Vec<i64> {
    let url = app.url(&format!("/api/v1/drivers/{driver}/trail?from={from}"));
    let token = app.token(Role::Dispatcher, "disp", Some(fleet));
    let res = app.http.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let points = body["points"].as_array().cloned().expect("points");
    points.iter().filter_map(|p| p["ts"].as_i64()).collect()
}

/// Each fix in its own `pos` frame, each answered by an ack covering it
/// (filtered ones included) and by nothing else.
async fn over_websocket(app: &TestApp, driver: &str, script: &[Fix]) {
    let mut ws = app.driver(driver, "acme").await;
    for (seq, f) in (1..).zip(script) {
        let mut frame = wire(seq, f);
        frame["type"] = json!("pos");
        ws.client.send(&frame).await;
        let seen = ws.ack_covering(seq).await;
        assert!(seen.iter().all(|v| v["type"] == "ack"), "{seen:?}");
    }
}

/// The whole script in one batch: acked up to its last seq, nothing rejected.
async fn over_http(app: &TestApp, driver: &str, script: &[Fix]) {
    let items: Vec<Value> = (1..).zip(script).map(|(seq, f)| wire(seq, f)).collect();
    let token = app.token(Role::Driver, driver, Some("acme"));
    let res = app
        .http
        .post(app.url("/api/v1/positions"))
        .bearer_auth(token)
        .json(&json!({"items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["ack"], script.len() as u64, "{answer}");
    assert_eq!(answer["rejected"], json!([]), "{answer}");
}

/// One OsmAnd GET per fix, each answered 200.
async fn over_osmand(app: &TestApp, driver: &str, script: &[Fix]) {
    let key = app.register_device("acme", driver, "osm1", "osmand").await;
    for f in script {
        let query = format!(
            "id=osm1&key={key}&lat={}&lon={}&timestamp={}&accuracy={}",
            f.lat,
            f.lon,
            f.ts / 1000,
            f.acc
        );
        let url = app.url(&format!("/ingest/osmand?{query}"));
        let res = app.http.get(url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{:?}", f.filtered);
    }
}

/// One OwnTracks location per fix, each answered 200 with `[]`.
async fn over_owntracks(app: &TestApp, driver: &str, script: &[Fix]) {
    let key = app
        .register_device("acme", driver, "ot1", "owntracks")
        .await;
    for f in script {
        let location = json!({"_type": "location", "lat": f.lat, "lon": f.lon,
            "tst": f.ts / 1000, "acc": f.acc, "tid": "ot"});
        let res = app
            .http
            .post(app.url("/ingest/owntracks"))
            .basic_auth("ot1", Some(&key))
            .header("X-Limit-D", "phone")
            .json(&location)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{:?}", f.filtered);
        assert_eq!(res.json::<Value>().await.unwrap(), json!([]));
    }
}

/// Every item the dashboard is sent until each of `drivers` shows up at `ts`.
async fn items_until_all(dash: &mut DashboardClient, drivers: &[&str], ts: i64) -> Vec<Value> {
    let mut waiting: BTreeSet<&str> = drivers.iter().copied().collect();
    let mut items = Vec::new();
    while !waiting.is_empty() {
        let frame = dash.client.next_of("positions").await;
        for item in frame["items"].as_array().cloned().unwrap_or_default() {
            if item["ts"] == ts {
                waiting.retain(|d| item["driver"] != *d);
            }
            items.push(item);
        }
    }
    items
}

#[tokio::test]
async fn each_filter_on_every_path_is_acked_but_neither_stored_nor_shown() {
    let app = filtered_app().await;
    let before = metrics(&app).await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("berlin", BBOX).await;
    let t0 = secs_ago(600);
    let script = script(t0);
    let paths = ["over-ws", "over-http", "over-osmand", "over-owntracks"];

    over_websocket(&app, paths[0], &script).await;
    over_http(&app, paths[1], &script).await;
    over_osmand(&app, paths[2], &script).await;
    over_owntracks(&app, paths[3], &script).await;

    let kept = kept_times(&script);
    for driver in paths {
        // Every path answers after the commit: the trail is final here.
        let times = trail_times(&app, "acme", driver, t0 - 1000).await;
        assert_eq!(times, kept, "{driver}'s trail holds the kept fixes only");
    }
    let last = *kept.last().expect("a kept fix");
    let items = items_until_all(&mut dash, &paths, last).await;
    for item in &items {
        assert!(
            kept.contains(&item["ts"].as_i64().unwrap_or(0)),
            "a filtered fix was shown: {item}"
        );
    }
    let after = metrics(&app).await;
    for reason in REASONS {
        // Other tests of this binary may count too: at least one per path.
        // Except duplicates from the phone apps: their seq is the fix time,
        // so the same fix again is a resend, which the trail deduplicates
        // (stored once, as checked above), not a new seq to filter.
        let paths = if reason == "duplicate" { 2 } else { 4 };
        let counted = filtered_count(&after, reason) - filtered_count(&before, reason);
        assert!(counted >= paths, "{reason}: {counted} counted");
    }
}

#[tokio::test]
async fn the_distance_filter_applies_to_the_fleet_that_overrides_it_only() {
    let app = filtered_app().await;
    let t0 = secs_ago(600);
    let (first, near) = (t0, t0 + 60_000);
    for fleet in ["acme", "beta"] {
        let mut ws = app.driver("d1", fleet).await;
        ws.client
            .send(&json!({"type": "pos", "seq": 1, "ts": first, "lat": 52.5, "lon": 13.4}))
            .await;
        ws.client
            .send(&json!({"type": "pos", "seq": 2, "ts": near, "lat": 52.5001, "lon": 13.4}))
            .await;
        ws.ack_covering(2).await;
    }
    let acme = trail_times(&app, "acme", "d1", t0 - 1000).await;
    assert_eq!(acme, [first], "acme drops fixes within 20 m");
    let beta = trail_times(&app, "beta", "d1", t0 - 1000).await;
    assert_eq!(beta, [first, near], "beta has no distance filter");
}

#[tokio::test]
async fn a_parked_driver_whose_fixes_are_all_filtered_is_still_online() {
    let app = spawn_app_with(|s| {
        s.driver.offline_after_secs = 1;
        s.filters.min_distance_m = 50.0;
    })
    .await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("main", BBOX).await;
    let mut d = app.driver("d1", "acme").await;
    d.publish(1, now_ms(), 52.5, 13.4).await;
    let status = dash.client.next_of("status").await;
    assert_eq!(status["status"], "offline", "silent for offline_after_secs");
    // Parked: 1 m away, filtered, acked, not stored; but the driver is there.
    d.publish(2, now_ms(), 52.50001, 13.4).await;
    let status = dash.client.next_of("status").await;
    assert_eq!(status["status"], "online");
}
