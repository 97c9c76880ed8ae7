//! Coordinates come back exactly as sent. Fixes at full double precision go in
//! over the WebSocket and over `POST /api/v1/positions`, in batches and one at
//! a time, and every double reads back bit for bit through the trail API, the
//! dashboard's `positions` frames and a subscription's `snapshot`, on
//! PostgreSQL and on SQLite.
//!
//! The shortest decimal of a random double often has 17 significant digits,
//! and a JSON parser that is not round-trip exact reads some of those as the
//! neighbouring double (`-9.405674514969299` as `-9.4056745149693`).

use rand::{Rng, SeedableRng};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::*;
use fleethub::auth::Role;

/// Fixes per driver: enough that some of their doubles are ones an inexact
/// parser gets wrong (about 6 % of random doubles).
const FIXES: u64 = 300;
/// Fixes per driver sent one at a time and each awaited on the dashboard.
const LIVE: usize = 100;
/// Items per WebSocket `batch` frame, well inside the frame size limit.
const PER_FRAME: usize = 100;
/// A double the default (not round-trip) parser reads as its neighbour.
const KNOWN_HARD: f64 = -9.405674514969299;

/// One fix as sent: every double drawn at full precision within its range.
#[derive(Debug, Clone, Copy)]
struct Fix {
    seq: u64,
    ts: i64,
    lat: f64,
    lon: f64,
    speed: f64,
    heading: f64,
    acc: f64,
}

impl Fix {
    fn to_json(self) -> Value {
        json!({
            "seq": self.seq, "ts": self.ts, "lat": self.lat, "lon": self.lon,
            "speed": self.speed, "heading": self.heading, "acc": self.acc,
        })
    }
}

fn fixes(seed: u64, start: i64) -> Vec<Fix> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (1..=FIXES)
        .map(|seq| Fix {
            seq,
            ts: start + seq as i64 * 1000,
            lat: if seq == 1 {
                KNOWN_HARD
            } else {
                rng.random_range(-90.0..90.0)
            },
            lon: if seq == 2 {
                KNOWN_HARD
            } else {
                rng.random_range(-180.0..180.0)
            },
            speed: rng.random_range(0.0..150.0),
            heading: rng.random_range(0.0..360.0),
            acc: rng.random_range(0.0..100.0),
        })
        .collect()
}

/// `field` of `value` is exactly `sent`, bit for bit.
fn assert_exact(value: &Value, field: &str, sent: f64, what: &str) {
    let got = value[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: no number {field} in {value}"));
    assert_eq!(
        got.to_bits(),
        sent.to_bits(),
        "{what}: {field} sent as {sent:?} came back as {got:?}"
    );
}

/// Checks the fields a dashboard item or snapshot entry carries.
fn assert_view_exact(view: &Value, sent: &Fix, what: &str) {
    for (field, value) in [
        ("lat", sent.lat),
        ("lon", sent.lon),
        ("speed", sent.speed),
        ("heading", sent.heading),
    ] {
        assert_exact(view, field, value, what);
    }
}

/// Every dashboard item of `driver` matches the fix of the same `ts`; returns
/// how many were checked.
fn check_items(items: &[Value], driver: &str, sent: &[Fix]) -> usize {
    let mut checked = 0;
    for item in items.iter().filter(|i| i["driver"] == driver) {
        let ts = item["ts"].as_i64().expect("ts");
        let fix = sent
            .iter()
            .find(|f| f.ts == ts)
            .unwrap_or_else(|| panic!("{driver}: an item of a fix never sent: {item}"));
        assert_view_exact(
            item,
            fix,
            &format!("positions frame of {driver} seq {}", fix.seq),
        );
        checked += 1;
    }
    checked
}

async fn trail_is_exact(app: &TestApp, driver: &str, start: i64, sent: &[Fix]) {
    let url = app.url(&format!(
        "/api/v1/drivers/{driver}/trail?fleet=acme&from={start}&limit={FIXES}"
    ));
    let res = app
        .http
        .get(&url)
        .bearer_auth(app.token(Role::Admin, "ops", None))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let trail: Value = res.json().await.unwrap();
    let points = trail["points"].as_array().expect("points");
    assert_eq!(points.len(), sent.len(), "{driver}: every fix is stored");
    for (point, fix) in points.iter().zip(sent) {
        assert_eq!(point["seq"], fix.seq, "{driver}: the trail is in seq order");
        let what = format!("trail of {driver} seq {}", fix.seq);
        for (field, value) in [
            ("lat", fix.lat),
            ("lon", fix.lon),
            ("speed", fix.speed),
            ("heading", fix.heading),
            ("acc", fix.acc),
        ] {
            assert_exact(point, field, value, &what);
        }
    }
}

async fn full_precision_fixes_come_back_bit_for_bit(app: TestApp) {
    let start = now_ms() - 600_000;
    let over_ws = fixes(1, start);
    let over_http = fixes(2, start);
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("world", [-180.0, -90.0, 180.0, 90.0]).await;

    // Over the WebSocket, in batch frames.
    let mut d = app.driver("ws-driver", "acme").await;
    for chunk in over_ws.chunks(PER_FRAME) {
        let items: Vec<Value> = chunk.iter().map(|f| f.to_json()).collect();
        d.client
            .send(&json!({"type": "batch", "items": items}))
            .await;
    }
    d.ack_covering(FIXES).await;

    // Over HTTP, in one request.
    let items: Vec<Value> = over_http.iter().map(|f| f.to_json()).collect();
    let res = app
        .http
        .post(app.url("/api/v1/positions"))
        .bearer_auth(app.token(Role::Driver, "http-driver", Some("acme")))
        .json(&json!({ "items": items }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["ack"], FIXES, "{answer}");

    // The dashboard's positions frames, up to each driver's last fix.
    let last_ts = start + FIXES as i64 * 1000;
    let mut items = dash.items_until_ts("ws-driver", last_ts).await;
    if !items
        .iter()
        .any(|i| i["driver"] == "http-driver" && i["ts"] == last_ts)
    {
        items.extend(dash.items_until_ts("http-driver", last_ts).await);
    }
    let checked =
        check_items(&items, "ws-driver", &over_ws) + check_items(&items, "http-driver", &over_http);
    assert!(checked >= 2, "each driver's last fix reached the dashboard");

    // A batch shows a dashboard only its newest fix per driver: live fixes,
    // one at a time, reach it every one.
    let live_ws = fixes(3, start);
    let live_http = fixes(4, start);
    let mut d = app.driver("ws-live", "acme").await;
    let http_live = app.token(Role::Driver, "http-live", Some("acme"));
    for (ws_fix, http_fix) in live_ws.iter().zip(&live_http).take(LIVE) {
        let mut frame = ws_fix.to_json();
        frame["type"] = json!("pos");
        d.client.send(&frame).await;
        let items = dash.items_until_ts("ws-live", ws_fix.ts).await;
        assert!(check_items(&items, "ws-live", &live_ws) >= 1);

        let res = app
            .http
            .post(app.url("/api/v1/positions"))
            .bearer_auth(&http_live)
            .json(&json!({ "items": [http_fix.to_json()] }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let items = dash.items_until_ts("http-live", http_fix.ts).await;
        assert!(check_items(&items, "http-live", &live_http) >= 1);
    }

    // A new subscription's snapshot: each driver's last fix.
    let snapshot = dash.subscribe("again", [-180.0, -90.0, 180.0, 90.0]).await;
    let drivers = snapshot["drivers"].as_array().expect("drivers");
    for (driver, sent) in [
        ("ws-driver", &over_ws[..]),
        ("http-driver", &over_http[..]),
        ("ws-live", &live_ws[..LIVE]),
        ("http-live", &live_http[..LIVE]),
    ] {
        let view = item_of(drivers, driver).unwrap_or_else(|| panic!("{driver} in {snapshot}"));
        let last = sent.last().unwrap();
        assert_eq!(view["ts"], last.ts);
        assert_view_exact(view, last, &format!("snapshot of {driver}"));
    }

    // The trail API, every fix of both.
    trail_is_exact(&app, "ws-driver", start, &over_ws).await;
    trail_is_exact(&app, "http-driver", start, &over_http).await;
}

#[tokio::test]
async fn full_precision_fixes_come_back_bit_for_bit_on_postgres() {
    full_precision_fixes_come_back_bit_for_bit(spawn_app().await).await;
}

#[tokio::test]
async fn full_precision_fixes_come_back_bit_for_bit_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trails.db");
    let app = spawn_app_with(|s| {
        s.database.url = SecretString::from(String::new());
        s.database.sqlite_path = path.to_string_lossy().into_owned();
    })
    .await;
    full_precision_fixes_come_back_bit_for_bit(app).await;
}
