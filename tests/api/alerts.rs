//! Geofence events and alert rules end to end, on PostgreSQL and on SQLite:
//! real drivers over WebSocket, fixes in crafted tracks, events read back
//! through `GET /api/v1/events` and live from a dashboard. Events are stored
//! in the transaction that stores the fix causing them, so once a fix is
//! acked its events are listed: no waiting, except for `offline`, which a
//! sweep raises.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    Backend, DriverClient, TestApp, TestDb, call, dispatcher, eventually, now_ms, spawn_app_in,
};
use fleethub::auth::Role;

/// Runs `scenario` on a hub over PostgreSQL, then on one over SQLite.
macro_rules! on_both_backends {
    ($pg:ident, $sqlite:ident, $scenario:ident) => {
        #[tokio::test]
        async fn $pg() {
            $scenario(Backend::Postgres).await;
        }

        #[tokio::test]
        async fn $sqlite() {
            let dir = tempfile::tempdir().expect("temp dir");
            $scenario(Backend::Sqlite(&dir.path().join("trails.db"))).await;
        }
    };
}

async fn start(backend: Backend<'_>, db: TestDb) -> TestApp {
    spawn_app_in(db, |s| backend.configure(s)).await
}

/// The origin of every track: central Lima.
const LAT0: f64 = -12.05;
const LON0: f64 = -77.04;
const M_PER_DEG: f64 = 111_195.0;

/// The point `x` metres east and `y` metres north of the origin, as [lon, lat].
fn xy(x: f64, y: f64) -> [f64; 2] {
    let lon = LON0 + x / (M_PER_DEG * LAT0.to_radians().cos());
    [lon, LAT0 + y / M_PER_DEG]
}

/// A square fence from (x, y) to (x + size, y + size), in metres.
fn square(name: &str, x: f64, y: f64, size: f64, extra: Value) -> Value {
    let ring = [
        xy(x, y),
        xy(x + size, y),
        xy(x + size, y + size),
        xy(x, y + size),
        xy(x, y),
    ];
    let mut props = json!({"name": name});
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    json!({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props})
}

async fn create_fence(app: &TestApp, token: &str, feature: &Value) -> String {
    let (status, body) = call(app, Method::POST, "/api/v1/geofences", token, Some(feature)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().expect("fence id").to_owned()
}

/// A fix frame `x`, `y` metres from the origin, `secs` after `t0`.
fn fix(seq: u64, t0: i64, secs: i64, x: f64, y: f64, speed: f64) -> Value {
    let [lon, lat] = xy(x, y);
    json!({"seq": seq, "ts": t0 + secs * 1000, "lat": lat, "lon": lon, "speed": speed})
}

async fn send(driver: &mut DriverClient, frame: Value) {
    let mut frame = frame;
    if frame.get("type").is_none() {
        frame["type"] = json!("pos");
    }
    let top = frame["seq"].as_u64().expect("seq");
    driver.client.send(&frame).await;
    driver.ack_covering(top).await;
}

/// The kinds of the fleet's stored events for `driver`, oldest first.
async fn kinds(app: &TestApp, token: &str, driver: &str) -> Vec<String> {
    events(app, token, driver)
        .await
        .iter()
        .rev()
        .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The stored events of `driver`, newest first, as the API lists them.
async fn events(app: &TestApp, token: &str, driver: &str) -> Vec<Value> {
    let path = format!("/api/v1/events?driver={driver}&from=0&limit=1000");
    let (status, body) = call(app, Method::GET, &path, token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().cloned().unwrap_or_default()
}

async fn put_rules(app: &TestApp, token: &str, rules: Value) {
    let (status, body) = call(app, Method::PUT, "/api/v1/alert-rules", token, Some(&rules)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// An hour ago: tracks run forward from there, inside the accepted window.
fn t0() -> i64 {
    now_ms() - 3_600_000
}

async fn enter_dwell_exit(backend: Backend<'_>) {
    let app = start(backend, TestDb::create().await).await;
    let token = dispatcher(&app, "acme");
    let depot = create_fence(
        &app,
        &token,
        &square("Depot", 0.0, 0.0, 200.0, json!({"dwell_secs": 60})),
    )
    .await;
    let mut dash = app.dashboard(Some("acme")).await;
    let mut d = app.driver("d1", "acme").await;
    let t = t0();
    send(&mut d, fix(1, t, 0, -300.0, 100.0, 5.0)).await;
    send(&mut d, fix(2, t, 30, 100.0, 100.0, 0.0)).await;
    send(&mut d, fix(3, t, 60, 100.0, 100.0, 0.0)).await;
    send(&mut d, fix(4, t, 100, 100.0, 100.0, 0.0)).await;
    send(&mut d, fix(5, t, 130, 400.0, 100.0, 10.0)).await;
    assert_eq!(
        kinds(&app, &token, "d1").await,
        ["geofence_enter", "geofence_dwell", "geofence_exit"]
    );
    let live = dash.client.next_of("event").await;
    assert_eq!(live["kind"], "geofence_enter");
    assert_eq!(live["driver"], "d1");
    assert_eq!(live["fleet"], "acme");
    assert_eq!(live["geofence"], depot.as_str());
    assert_eq!(live["details"]["name"], "Depot");
    assert_eq!(live["ts"], t + 30_000);
    assert_eq!(live["seq"], 2);
    let listed = events(&app, &token, "d1").await;
    let enter = listed.last().expect("the enter");
    assert_eq!(enter["id"], live["id"]);
    // An app that lost its acks reconnects and resends the whole track: nothing new.
    drop(d);
    let mut d = app.driver("d1", "acme").await;
    let items: Vec<Value> = [
        (0, -300.0),
        (30, 100.0),
        (60, 100.0),
        (100, 100.0),
        (130, 400.0),
    ]
    .iter()
    .enumerate()
    .map(|(i, (secs, x))| fix(i as u64 + 1, t, *secs, *x, 100.0, 0.0))
    .collect();
    send(&mut d, json!({"type": "batch", "seq": 5, "items": items})).await;
    assert_eq!(events(&app, &token, "d1").await.len(), 3);
}

on_both_backends!(
    enter_dwell_and_exit_on_postgres,
    enter_dwell_and_exit_on_sqlite,
    enter_dwell_exit
);

async fn sparse_fixes_across_a_small_fence(backend: Backend<'_>) {
    let app = start(backend, TestDb::create().await).await;
    let token = dispatcher(&app, "acme");
    create_fence(
        &app,
        &token,
        &square("Gate", 950.0, -50.0, 100.0, json!({})),
    )
    .await;
    let mut d = app.driver("d1", "acme").await;
    let t = t0();
    send(&mut d, fix(1, t, 0, 0.0, 0.0, 15.0)).await;
    send(&mut d, fix(2, t, 120, 2_000.0, 0.0, 15.0)).await;
    send(&mut d, fix(3, t, 240, 4_000.0, 0.0, 15.0)).await;
    let listed = events(&app, &token, "d1").await;
    let kinds: Vec<&str> = listed.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["geofence_cross"]);
    assert_eq!(listed[0]["details"]["name"], "Gate");
    assert_eq!(listed[0]["seq"], 2);
}

on_both_backends!(
    a_sparse_track_across_a_fence_crosses_it_on_postgres,
    a_sparse_track_across_a_fence_crosses_it_on_sqlite,
    sparse_fixes_across_a_small_fence
);

async fn late_fix(backend: Backend<'_>) {
    let app = start(backend, TestDb::create().await).await;
    let token = dispatcher(&app, "acme");
    create_fence(&app, &token, &square("Depot", 0.0, 0.0, 200.0, json!({}))).await;
    let mut d = app.driver("d1", "acme").await;
    let t = t0();
    send(&mut d, fix(1, t, 0, -500.0, 100.0, 5.0)).await;
    send(&mut d, fix(2, t, 60, -400.0, 100.0, 5.0)).await;
    // Older than the newest, and inside the fence: stored, but no enter (and
    // then no exit at the next fix).
    send(&mut d, fix(3, t, 30, 100.0, 100.0, 5.0)).await;
    send(&mut d, fix(4, t, 90, -350.0, 100.0, 5.0)).await;
    assert!(kinds(&app, &token, "d1").await.is_empty());
}

on_both_backends!(
    a_late_fix_raises_nothing_on_postgres,
    a_late_fix_raises_nothing_on_sqlite,
    late_fix
);

async fn restart_between_enter_and_exit(backend: Backend<'_>) {
    let app = start(backend, TestDb::create().await).await;
    let token = dispatcher(&app, "acme");
    create_fence(&app, &token, &square("Depot", 0.0, 0.0, 200.0, json!({}))).await;
    let t = t0();
    {
        let mut d = app.driver("d1", "acme").await;
        send(&mut d, fix(1, t, 0, -300.0, 100.0, 5.0)).await;
        send(&mut d, fix(2, t, 30, 100.0, 100.0, 5.0)).await;
    }
    let db = app.stopped().await;
    let app = start(backend, db).await;
    let mut d = app.driver("d1", "acme").await;
    // The app resends what it had not seen acked, then goes on.
    send(&mut d, fix(2, t, 30, 100.0, 100.0, 5.0)).await;
    send(&mut d, fix(3, t, 60, 150.0, 100.0, 5.0)).await;
    send(&mut d, fix(4, t, 90, 500.0, 100.0, 5.0)).await;
    send(&mut d, fix(5, t, 120, 900.0, 100.0, 5.0)).await;
    assert_eq!(
        kinds(&app, &token, "d1").await,
        ["geofence_enter", "geofence_exit"]
    );
}

on_both_backends!(
    a_restart_between_enter_and_exit_gives_one_exit_on_postgres,
    a_restart_between_enter_and_exit_gives_one_exit_on_sqlite,
    restart_between_enter_and_exit
);

async fn buffered_batch(backend: Backend<'_>) {
    let app = start(backend, TestDb::create().await).await;
    let token = dispatcher(&app, "acme");
    create_fence(&app, &token, &square("Depot", 0.0, 0.0, 200.0, json!({}))).await;
    let mut d = app.driver("d1", "acme").await;
    let t = t0();
    // 100 fixes buffered offline, 20 m apart: through the fence, and back.
    let mut items = Vec::new();
    for i in 0..50u64 {
        items.push(fix(
            i + 1,
            t,
            i as i64 * 4,
            -490.0 + i as f64 * 20.0,
            100.0,
            5.0,
        ));
    }
    for i in 0..50u64 {
        items.push(fix(
            51 + i,
            t,
            200 + i as i64 * 4,
            490.0 - i as f64 * 20.0,
            100.0,
            5.0,
        ));
    }
    // Sent newest first: the hub evaluates them in fix order whatever the order sent.
    items.reverse();
    send(&mut d, json!({"type": "batch", "seq": 100, "items": items})).await;
    let listed = events(&app, &token, "d1").await;
    let mut kinds_seqs: Vec<(String, u64)> = listed
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_owned(),
                e["seq"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    kinds_seqs.reverse();
    // In at x = 10 (seq 26), out at x = 210 (seq 36), in at x = 190 (seq 66), out at x = -10 (seq 76).
    assert_eq!(
        kinds_seqs,
        [
            ("geofence_enter".to_owned(), 26),
            ("geofence_exit".to_owned(), 36),
            ("geofence_enter".to_owned(), 66),
            ("geofence_exit".to_owned(), 76),
        ]
    );
}

on_both_backends!(
    an_offline_batch_gives_its_events_in_fix_order_on_postgres,
    an_offline_batch_gives_its_events_in_fix_order_on_sqlite,
    buffered_batch
);

async fn overspeed_and_idle(backend: Backend<'_>) {
    let app = start(backend, TestDb::create().await).await;
    let token = dispatcher(&app, "acme");
    put_rules(
        &app,
        &token,
        json!({"overspeed_kmh": 90, "overspeed_min_secs": 10, "idle_after_secs": 120}),
    )
    .await;
    let mut d = app.driver("d1", "acme").await;
    let t = t0();
    let fast = 30.0; // 108 km/h
    // Above the limit for 5 s only, then for 15 s: one overspeed.
    send(&mut d, fix(1, t, 0, 0.0, 0.0, fast)).await;
    send(&mut d, fix(2, t, 5, 150.0, 0.0, fast)).await;
    send(&mut d, fix(3, t, 8, 240.0, 0.0, 10.0)).await;
    send(&mut d, fix(4, t, 20, 400.0, 0.0, fast)).await;
    send(&mut d, fix(5, t, 28, 640.0, 0.0, fast)).await;
    send(&mut d, fix(6, t, 35, 850.0, 0.0, fast)).await;
    send(&mut d, fix(7, t, 40, 1_000.0, 0.0, fast)).await;
    // Then stopped for three minutes: one idle.
    for (i, secs) in [60, 120, 180, 240].iter().enumerate() {
        send(&mut d, fix(8 + i as u64, t, *secs, 1_050.0, 0.0, 0.0)).await;
    }
    let listed = events(&app, &token, "d1").await;
    let kinds: Vec<&str> = listed
        .iter()
        .rev()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["overspeed", "idle"]);
    let overspeed = &listed[1];
    assert_eq!(overspeed["seq"], 6);
    assert_eq!(overspeed["details"]["limit_kmh"], 90.0);
    assert_eq!(overspeed["details"]["since"], t + 20_000);
    let idle = &listed[0];
    assert_eq!(idle["seq"], 10);
    assert_eq!(idle["details"]["secs"], 120);
}

on_both_backends!(
    overspeed_with_a_minimum_duration_and_idle_on_postgres,
    overspeed_with_a_minimum_duration_and_idle_on_sqlite,
    overspeed_and_idle
);

async fn offline_and_sos(backend: Backend<'_>) {
    let app = start(backend, TestDb::create().await).await;
    let token = dispatcher(&app, "acme");
    put_rules(&app, &token, json!({"offline_after_secs": 1})).await;
    let mut dash = app.dashboard(Some("acme")).await;
    let mut other = app.dashboard(Some("beta")).await;
    let mut d = app.driver("d1", "acme").await;
    let now = now_ms();
    let [lon, lat] = xy(10.0, 20.0);
    send(
        &mut d,
        json!({"type": "sos", "seq": 1, "ts": now, "lat": lat, "lon": lon}),
    )
    .await;
    let sos = dash.client.next_of("event").await;
    assert_eq!(sos["kind"], "sos");
    assert_eq!(sos["seq"], 1);
    assert_eq!(sos["lat"], lat);
    // Silent from now on: one offline, after the limit.
    eventually("an offline event", || async {
        kinds(&app, &token, "d1").await == ["sos", "offline"]
    })
    .await;
    let offline = dash.client.next_of("event").await;
    assert_eq!(offline["kind"], "offline");
    assert!(offline["ts"].as_i64().unwrap_or(0) >= now + 1_000);
    // Another fleet's dashboard saw none of it.
    let beta = dispatcher(&app, "beta");
    assert!(kinds(&app, &beta, "d1").await.is_empty());
    let (status, _) = call(&app, Method::GET, "/api/v1/events?fleet=acme", &beta, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Speaking again and going silent again: a second offline.
    send(&mut d, fix(2, now_ms() - 100_000, 100, 10.0, 20.0, 0.0)).await;
    eventually("a second offline event", || async {
        kinds(&app, &token, "d1").await == ["sos", "offline", "offline"]
    })
    .await;
    let mut frames = 0;
    while let Ok(frame) =
        tokio::time::timeout(std::time::Duration::from_millis(200), other.client.next()).await
    {
        assert_ne!(frame["type"], "event", "beta's dashboard got {frame}");
        frames += 1;
        assert!(frames < 100);
    }
}

on_both_backends!(
    sos_and_offline_on_postgres,
    sos_and_offline_on_sqlite,
    offline_and_sos
);

#[tokio::test]
async fn alert_rules_are_read_checked_and_scoped() {
    let app = start(Backend::Postgres, TestDb::create().await).await;
    let token = dispatcher(&app, "acme");
    let (status, body) = call(&app, Method::GET, "/api/v1/alert-rules", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"fleet": "acme", "overspeed_kmh": null, "overspeed_min_secs": null,
               "idle_after_secs": null, "offline_after_secs": null, "low_battery_pct": null})
    );
    let rules = json!({"overspeed_kmh": 90, "overspeed_min_secs": 10, "idle_after_secs": 600,
                       "offline_after_secs": 300, "low_battery_pct": 15});
    put_rules(&app, &token, rules.clone()).await;
    let (_, body) = call(&app, Method::GET, "/api/v1/alert-rules", &token, None).await;
    assert_eq!(body["overspeed_kmh"], 90.0);
    assert_eq!(body["offline_after_secs"], 300);
    for (bad, code) in [
        (json!({"overspeed_kmh": -1}), "invalid_alert_rules"),
        (json!({"low_battery_pct": 150}), "invalid_alert_rules"),
        (json!({"overspeed": 90}), "bad_json"),
    ] {
        let (status, body) =
            call(&app, Method::PUT, "/api/v1/alert-rules", &token, Some(&bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["error"]["code"], code, "{bad}");
    }
    let (status, _) = call(
        &app,
        Method::GET,
        "/api/v1/alert-rules?fleet=beta",
        &token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let admin = app.token(Role::Admin, "ops", None);
    let (status, body) = call(&app, Method::GET, "/api/v1/alert-rules", &admin, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = call(
        &app,
        Method::GET,
        "/api/v1/alert-rules?fleet=acme",
        &admin,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["low_battery_pct"], 15.0);
    let (status, _) = call(&app, Method::GET, "/api/v1/events?kind=nope", &token, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let res = app
        .http
        .get(app.url("/api/v1/events"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}
