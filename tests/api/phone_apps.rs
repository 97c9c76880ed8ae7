//! Phone apps end to end: the device registry over HTTP, Traccar Client /
//! OsmAnd and OwnTracks posting positions with real requests, and their
//! positions reaching dashboards and trails like a WebSocket driver's.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{TestApp, now_ms, spawn_app, spawn_app_with};
use fleethub::auth::Role;

/// Knots to m/s, as the hub converts them.
const MPS_PER_KNOT: f64 = 1852.0 / 3600.0;
/// Around Berlin, where every fix of these tests is.
const BBOX: [f64; 4] = [13.0, 52.0, 14.0, 53.0];

fn dispatcher(app: &TestApp, fleet: &str) -> String {
    app.token(Role::Dispatcher, "disp", Some(fleet))
}

fn admin(app: &TestApp) -> String {
    app.token(Role::Admin, "ops", None)
}

/// A time a whole number of seconds ago, in milliseconds (so Unix seconds say it exactly).
fn secs_ago(secs: i64) -> i64 {
    (now_ms() / 1000 - secs) * 1000
}

async fn json_of(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn register(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    let res = app
        .http
        .post(app.url("/api/v1/devices"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    json_of(res).await
}

/// Registers `id` for driver `driver` of `fleet`; returns its key.
async fn device(app: &TestApp, fleet: &str, driver: &str, id: &str, protocol: &str) -> String {
    let body = json!({"device_id": id, "driver": driver, "protocol": protocol});
    let (status, answer) = register(app, &dispatcher(app, fleet), body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["key"].as_str().expect("a key").to_owned()
}

async fn osmand_get(app: &TestApp, query: &str) -> (StatusCode, Value) {
    let res = app
        .http
        .get(app.url(&format!("/ingest/osmand?{query}")))
        .send()
        .await
        .expect("request");
    json_of(res).await
}

async fn trail(app: &TestApp, fleet: &str, driver: &str, from: i64) -> Vec<Value> {
    let url = app.url(&format!("/api/v1/drivers/{driver}/trail?from={from}"));
    let res = app
        .http
        .get(url)
        .bearer_auth(dispatcher(app, fleet))
        .send()
        .await
        .expect("request");
    let (status, body) = json_of(res).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["points"].as_array().cloned().expect("points")
}

/// `ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn iso_8601(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn keys_of(item: &Value) -> BTreeSet<String> {
    item.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn devices_are_managed_within_their_fleet() {
    let app = spawn_app().await;
    let (acme, beta) = (dispatcher(&app, "acme"), dispatcher(&app, "beta"));
    let (status, created) = register(
        &app,
        &acme,
        json!({"device_id": "p1", "driver": "d1", "protocol": "osmand"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["fleet"], "acme");
    assert_eq!(created["speed_unit"], "knots");
    let key = created["key"].as_str().unwrap().to_owned();
    assert_eq!(key.len(), 43);

    // Device ids are unique across fleets.
    let again =
        json!({"device_id": "p1", "driver": "d9", "fleet": "beta", "protocol": "owntracks"});
    let (status, body) = register(&app, &admin(&app), again).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "device_exists");
    // A dispatcher registers in its own fleet only; an admin must name one.
    let elsewhere =
        json!({"device_id": "p2", "driver": "d1", "fleet": "beta", "protocol": "osmand"});
    assert_eq!(
        register(&app, &acme, elsewhere).await.0,
        StatusCode::FORBIDDEN
    );
    let no_fleet = json!({"device_id": "p2", "driver": "d1", "protocol": "osmand"});
    assert_eq!(
        register(&app, &admin(&app), no_fleet).await.0,
        StatusCode::BAD_REQUEST
    );
    let bad_unit =
        json!({"device_id": "p2", "driver": "d1", "protocol": "osmand", "speed_unit": "furlongs"});
    assert_eq!(
        register(&app, &acme, bad_unit).await.0,
        StatusCode::BAD_REQUEST
    );
    // Tokens first: none, or a driver's.
    let res = app
        .http
        .post(app.url("/api/v1/devices"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let driver = app.token(Role::Driver, "d1", Some("acme"));
    let (status, _) = register(&app, &driver, json!({})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let list = |token: String, query: &'static str| {
        let req = app
            .http
            .get(app.url(&format!("/api/v1/devices{query}")))
            .bearer_auth(token);
        async move { json_of(req.send().await.unwrap()).await }
    };
    let (status, mine) = list(acme.clone(), "").await;
    assert_eq!(status, StatusCode::OK);
    let devices = mine["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["device_id"], "p1");
    assert!(devices[0].get("key").is_none(), "a list never shows keys");
    assert!(!mine.to_string().contains(&key));
    let (_, theirs) = list(beta.clone(), "").await;
    assert_eq!(theirs["devices"], json!([]));
    assert_eq!(
        list(beta.clone(), "?fleet=acme").await.0,
        StatusCode::FORBIDDEN
    );
    let (_, all) = list(admin(&app), "?fleet=acme").await;
    assert_eq!(all["devices"].as_array().unwrap().len(), 1);

    // Another fleet's dispatcher cannot rotate nor delete it.
    let rotate = |token: String| {
        let req = app
            .http
            .post(app.url("/api/v1/devices/p1/key"))
            .bearer_auth(token);
        async move { json_of(req.send().await.unwrap()).await }
    };
    let delete = |token: String| {
        let req = app
            .http
            .delete(app.url("/api/v1/devices/p1"))
            .bearer_auth(token);
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(rotate(beta.clone()).await.0, StatusCode::NOT_FOUND);
    assert_eq!(delete(beta.clone()).await, StatusCode::NOT_FOUND);

    let ts = secs_ago(30);
    let fix = |key: &str| format!("id=p1&lat=52.5&lon=13.4&timestamp={}&key={key}", ts / 1000);
    assert_eq!(osmand_get(&app, &fix(&key)).await.0, StatusCode::OK);
    let (status, rotated) = rotate(acme.clone()).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    let (status, body) = osmand_get(&app, &fix(&key)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old key is refused");
    assert_eq!(error_code(&body), "device_key_invalid");
    assert_eq!(osmand_get(&app, &fix(&new_key)).await.0, StatusCode::OK);

    assert_eq!(delete(acme.clone()).await, StatusCode::NO_CONTENT);
    assert_eq!(delete(acme.clone()).await, StatusCode::NOT_FOUND);
    let (status, body) = osmand_get(&app, &fix(&new_key)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a deleted device is refused");
    assert_eq!(error_code(&body), "unknown_device");
}

#[tokio::test]
async fn an_osmand_fix_reaches_dashboards_like_a_websocket_one_and_lands_in_the_trail() {
    let app = spawn_app().await;
    let key = device(&app, "acme", "d1", "p1", "osmand").await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("berlin", BBOX).await;

    // A WebSocket driver's fix, for the shape of an item.
    let ts = secs_ago(20);
    let mut ws = app.driver("d2", "acme").await;
    ws.client
        .send(&json!({"type":"pos","seq":1,"ts":ts,"lat":52.4,"lon":13.3,"speed":1.0,"heading":2.0,"acc":3.0}))
        .await;
    ws.ack_covering(1).await;
    let items = dash.items_until("d2").await;
    let ws_item = items
        .iter()
        .rev()
        .find(|i| i["driver"] == "d2")
        .unwrap()
        .clone();

    // Key in the query, Unix seconds, speed in knots.
    let query = format!(
        "id=p1&lat=52.5&lon=13.4&timestamp={}&speed=10&bearing=90&accuracy=5&altitude=40&batt=77&key={key}",
        ts / 1000
    );
    let (status, body) = osmand_get(&app, &query).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = dash.items_until_ts("d1", ts).await;
    let item = items.iter().rev().find(|i| i["driver"] == "d1").unwrap();
    assert_eq!(keys_of(item), keys_of(&ws_item), "{item} vs {ws_item}");
    assert_eq!(item["fleet"], "acme");
    let speed = item["speed"].as_f64().unwrap();
    assert!((speed - 10.0 * MPS_PER_KNOT).abs() < 1e-9, "{speed}");

    let points = trail(&app, "acme", "d1", ts - 1000).await;
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0]["ts"], ts);
    assert_eq!(
        points[0]["seq"], ts,
        "the seq of an app without one is its fix time"
    );
    assert!((points[0]["speed"].as_f64().unwrap() - 10.0 * MPS_PER_KNOT).abs() < 1e-9);
    assert_eq!(points[0]["heading"], 90.0);
}

#[tokio::test]
async fn osmand_takes_every_framing_time_format_and_key_placement() {
    let app = spawn_app().await;
    let key = device(&app, "acme", "d1", "p1", "osmand").await;
    let (t_ms, t_iso, t_json) = (secs_ago(50) + 123, secs_ago(40), secs_ago(30) + 500);

    // Form body, milliseconds, `location=lat,lon`, the key as Basic password.
    let res = app
        .http
        .post(app.url("/ingest/osmand"))
        .basic_auth("p1", Some(&key))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!(
            "id=p1&location=52.51%2C13.41&timestamp={t_ms}&speed=0"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // POST with the query only, ISO 8601, `deviceid`.
    let iso = iso_8601(t_iso).replace(".000Z", "+00:00");
    let url = app.url(&format!(
        "/ingest/osmand?deviceid=p1&lat=52.52&lon=13.42&timestamp={}&key={key}",
        iso.replace('+', "%2B")
    ));
    let res = app.http.post(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Traccar Client's JSON, ISO 8601 with milliseconds, speed in m/s.
    let iso_ms = iso_8601(t_json);
    let body = json!({"device_id": "p1", "location": {"timestamp": iso_ms, "is_moving": true,
        "coords": {"latitude": 52.53, "longitude": 13.43, "accuracy": 4.0, "speed": 3.5,
                   "heading": 180.0, "altitude": 35.0},
        "battery": {"level": 0.8, "is_charging": false}}});
    let res = app
        .http
        .post(app.url(&format!("/ingest/osmand?key={key}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let points = trail(&app, "acme", "d1", t_ms - 1000).await;
    let got: Vec<(i64, f64)> = points
        .iter()
        .map(|p| (p["ts"].as_i64().unwrap(), p["lat"].as_f64().unwrap()))
        .collect();
    assert_eq!(got, vec![(t_ms, 52.51), (t_iso, 52.52), (t_json, 52.53)]);
    assert_eq!(points[2]["speed"], 3.5, "JSON speed is m/s already");
}

#[tokio::test]
async fn osmand_refusals_carry_the_error_body() {
    let app = spawn_app().await;
    let key = device(&app, "acme", "d1", "p1", "osmand").await;
    let ts = secs_ago(10) / 1000;
    let cases = [
        (
            format!("id=nobody&lat=52.5&lon=13.4&timestamp={ts}&key={key}"),
            404,
            "unknown_device",
        ),
        (
            format!("id=p1&lat=52.5&lon=13.4&timestamp={ts}&key=wrong"),
            401,
            "device_key_invalid",
        ),
        (
            format!("id=p1&lat=52.5&lon=13.4&timestamp={ts}"),
            401,
            "device_key_missing",
        ),
        (
            format!("id=p1&lon=13.4&timestamp={ts}&key={key}"),
            400,
            "invalid_position",
        ),
        (
            format!("id=p1&lat=north&lon=13.4&key={key}"),
            400,
            "invalid_position",
        ),
        (
            format!("id=p1&lat=91&lon=13.4&timestamp={ts}&key={key}"),
            400,
            "invalid_position",
        ),
        (
            format!("id=p1&lat=52.5&lon=13.4&timestamp=yesterday&key={key}"),
            400,
            "invalid_position",
        ),
    ];
    for (query, status, code) in cases {
        let (got, body) = osmand_get(&app, &query).await;
        assert_eq!(got.as_u16(), status, "{query}: {body}");
        assert_eq!(error_code(&body), code, "{query}");
        assert!(body["error"]["message"].is_string());
    }
    // One fix a request: a body past 16 KiB is not read on.
    let res = app
        .http
        .post(app.url(&format!("/ingest/osmand?id=p1&key={key}")))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("lat=52.5&lon=13.4&pad={}", "x".repeat(20 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("fleethub_device_refusals_total")
                && l.contains("code=\"device_key_invalid\"")
                && l.contains("protocol=\"osmand\"")),
        "{metrics}"
    );
    // An OwnTracks device is not an OsmAnd one, whatever its key.
    let other = device(&app, "acme", "d2", "phone2", "owntracks").await;
    let query = format!("id=phone2&lat=52.5&lon=13.4&key={other}");
    assert_eq!(osmand_get(&app, &query).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_resent_fix_is_stored_once() {
    let app = spawn_app().await;
    let key = device(&app, "acme", "d1", "p1", "osmand").await;
    let ts = secs_ago(15);
    let query = format!("id=p1&lat=52.5&lon=13.4&timestamp={}&key={key}", ts / 1000);
    for _ in 0..3 {
        assert_eq!(osmand_get(&app, &query).await.0, StatusCode::OK);
    }
    let points = trail(&app, "acme", "d1", ts - 1000).await;
    assert_eq!(points.len(), 1, "{points:?}");
}

async fn owntracks(app: &TestApp, user: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    let res = app
        .http
        .post(app.url("/ingest/owntracks"))
        .basic_auth(user, Some(key))
        .header("X-Limit-U", "someone")
        .header("X-Limit-D", "phone")
        .json(body)
        .send()
        .await
        .unwrap();
    json_of(res).await
}

#[tokio::test]
async fn owntracks_locations_are_stored_and_shown_and_other_messages_ignored() {
    let app = spawn_app().await;
    let key = device(&app, "acme", "d3", "ot1", "owntracks").await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("berlin", BBOX).await;
    let ts = secs_ago(25);

    let location = json!({"_type": "location", "lat": 52.45, "lon": 13.35, "tst": ts / 1000,
        "acc": 12, "alt": 40, "vel": 36, "cog": 270, "batt": 80, "tid": "ot", "t": "u",
        "created_at": ts / 1000 + 1});
    let (status, body) = owntracks(&app, "ot1", &key, &location).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!([]));
    let items = dash.items_until_ts("d3", ts).await;
    let item = items
        .iter()
        .rev()
        .find(|i| i["driver"] == "d3")
        .unwrap()
        .clone();
    assert!(
        (item["speed"].as_f64().unwrap() - 10.0).abs() < 1e-9,
        "36 km/h is 10 m/s"
    );
    // The same item as a WebSocket driver's.
    let mut ws = app.driver("d4", "acme").await;
    ws.client
        .send(&json!({"type":"pos","seq":1,"ts":ts,"lat":52.4,"lon":13.3,"speed":1.0,"heading":2.0,"acc":3.0}))
        .await;
    ws.ack_covering(1).await;
    let items = dash.items_until("d4").await;
    let ws_item = items.iter().rev().find(|i| i["driver"] == "d4").unwrap();
    assert_eq!(keys_of(&item), keys_of(ws_item), "{item} vs {ws_item}");

    let transition = json!({"_type": "transition", "event": "enter", "desc": "depot",
        "tst": ts / 1000 + 5, "lat": 52.0, "lon": 13.0, "acc": 10});
    let (status, body) = owntracks(&app, "ot1", &key, &transition).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!([]));
    // The device name may come as `?d=` too.
    let res = app
        .http
        .post(app.url("/ingest/owntracks?u=someone&d=phone"))
        .basic_auth("ot1", Some(&key))
        .json(&location)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "a resend is answered like the first"
    );

    let points = trail(&app, "acme", "d3", ts - 1000).await;
    assert_eq!(
        points.len(),
        1,
        "the transition is ignored, the resend stored once"
    );
    assert_eq!(points[0]["lat"], 52.45);
    assert_eq!(points[0]["acc"], 12.0);

    let (status, body) = owntracks(&app, "ot1", "wrong", &location).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "device_key_invalid");
    let res = app
        .http
        .post(app.url("/ingest/owntracks"))
        .json(&location)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = owntracks(&app, "ot1", &key, &json!({"lat": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// What another node of a cluster sees: a device deleted in the database
/// behind this node's back is refused once its cached copy is 5 s old.
#[tokio::test]
async fn a_device_deleted_elsewhere_is_refused_within_the_cache_ttl() {
    let app = spawn_app().await;
    let key = device(&app, "acme", "d1", "p1", "osmand").await;
    let ts = secs_ago(60);
    let query = format!("id=p1&lat=52.5&lon=13.4&timestamp={}&key={key}", ts / 1000);
    assert_eq!(osmand_get(&app, &query).await.0, StatusCode::OK);
    let id = fleethub::devices::DeviceId::parse("p1").unwrap();
    let fleet = fleethub::domain::FleetId::parse("acme").unwrap();
    let deleted = app.state.store.devices().delete(&id, &fleet).await.unwrap();
    assert!(deleted);
    let start = std::time::Instant::now();
    loop {
        let (status, _) = osmand_get(&app, &query).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            start.elapsed() < fleethub::devices::registry::CACHE_TTL + Duration::from_secs(2),
            "still taken after the cache's TTL"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_osmand_listener_serves_the_protocol_alone() {
    let app = spawn_app_with(|s| s.ingest.osmand_listen = "127.0.0.1:0".into()).await;
    let port = app.osmand_port.expect("the OsmAnd listener");
    let key = device(&app, "acme", "d1", "p1", "osmand").await;
    let ts = secs_ago(5);
    let url = format!(
        "http://127.0.0.1:{port}/ingest/osmand?id=p1&lat=52.5&lon=13.4&timestamp={}&key={key}",
        ts / 1000
    );
    let res = app.http.get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .http
        .get(format!("http://127.0.0.1:{port}/api/v1/drivers"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(trail(&app, "acme", "d1", ts - 1000).await.len(), 1);
}

#[tokio::test]
async fn devices_and_osmand_work_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trails.db");
    let app = spawn_app_with(|s| {
        s.database.url = SecretString::from(String::new());
        s.database.sqlite_path = path.to_string_lossy().into_owned();
    })
    .await;
    let key = device(&app, "acme", "d1", "p1", "osmand").await;
    let (status, _) = register(
        &app,
        &dispatcher(&app, "beta"),
        json!({"device_id": "p1", "driver": "d1", "protocol": "osmand"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let ts = secs_ago(5);
    let query = format!("id=p1&lat=52.5&lon=13.4&timestamp={ts}&speed=2&key={key}");
    assert_eq!(osmand_get(&app, &query).await.0, StatusCode::OK);
    let points = trail(&app, "acme", "d1", ts - 1000).await;
    assert_eq!(points.len(), 1);
    assert_eq!(points[0]["seq"], ts);
    let res = app
        .http
        .delete(app.url("/api/v1/devices/p1"))
        .bearer_auth(admin(&app))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_phone_app_is_rate_limited_as_its_driver() {
    let app = spawn_app_with(|s| {
        s.driver.rate_per_sec = 1;
        s.driver.rate_burst = 2;
    })
    .await;
    let key = device(&app, "acme", "d1", "p1", "osmand").await;
    // The burst of 2 is taken at once; the bucket refills one a second, so
    // of the next few requests (well within a second) some are refused.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let ts = secs_ago(30 - i);
        let query = format!("id=p1&lat=52.5&lon=13.4&timestamp={ts}&key={key}");
        let (status, body) = osmand_get(&app, &query).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(error_code(&body), "rate_limited");
        }
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses[..2], [200, 200], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
}

/// With the database gone the trail queue fills: the app is told 503
/// `storage_unavailable` (it keeps the fix and retries), and what was
/// waiting is answered once the database is back.
#[tokio::test]
async fn osmand_answers_503_when_storage_is_unavailable() {
    let proxy = crate::proxy::Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let port = proxy.port;
    let app = spawn_app_with(|s| {
        use secrecy::ExposeSecret;
        s.database.url = crate::helpers::via_port(s.database.url.expose_secret(), port).into();
        s.trails.queue_capacity = 3;
    })
    .await;
    let key = device(&app, "acme", "d1", "p1", "osmand").await;
    let fix = |secs: i64| {
        let ts = secs_ago(secs) / 1000;
        app.url(&format!(
            "/ingest/osmand?id=p1&lat=52.5&lon=13.4&timestamp={ts}&key={key}"
        ))
    };
    assert_eq!(
        app.http.get(fix(60)).send().await.unwrap().status(),
        StatusCode::OK
    );
    proxy.cut();
    let waiting: Vec<_> = (0..3)
        .map(|i| {
            let request = app.http.get(fix(50 - i));
            tokio::spawn(async move { request.send().await.map(|r| r.status()) })
        })
        .collect();
    crate::helpers::eventually("the trail queue is full", || async {
        app.state.writer.queued() >= 3
    })
    .await;
    let res = app.http.get(fix(40)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (_, body) = json_of(res).await;
    assert_eq!(error_code(&body), "storage_unavailable");
    proxy.restore();
    for request in waiting {
        let status = request.await.unwrap().unwrap();
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status}"
        );
    }
    // The app's retry is taken.
    crate::helpers::eventually("the retry is stored", || async {
        app.http.get(fix(40)).send().await.map(|r| r.status()).ok() == Some(StatusCode::OK)
    })
    .await;
}
