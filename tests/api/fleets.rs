//! Fleets are isolated even when they name their drivers alike: driver `d1`
//! of `acme` and driver `d1` of `beta` are two drivers, in every place the
//! hub keeps or shows one (sessions, welcome, listing, dashboards, trails,
//! reconnects).

use fleethub::auth::Role;
use serde_json::{Value, json};

use crate::helpers::*;

/// Where each fleet's `d1` drives: far apart, so a fix shows whose it is.
const LIMA: (f64, f64) = (-12.05, -77.04);
const PARIS: (f64, f64) = (48.85, 2.35);

/// Sends fixes `seqs` at `place`, fix `s` at `start + s` seconds (the same
/// seqs and times in both fleets), and waits for the ack of the last.
async fn drive(
    d: &mut DriverClient,
    seqs: std::ops::RangeInclusive<u64>,
    start: i64,
    place: (f64, f64),
) {
    for s in seqs {
        let lon = place.1 + s as f64 * 0.0001;
        d.publish(s, start + s as i64 * 1000, place.0, lon).await;
    }
}

async fn get(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let res = app
        .http
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `(fleet, driver, lat)` of each driver a listing or a batch of items holds.
fn who(items: &[Value]) -> Vec<(String, String, f64)> {
    let mut all: Vec<_> = items
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            (
                s("fleet"),
                s("driver"),
                d["lat"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    all.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    all
}

fn seqs_of(trail: &Value) -> Vec<u64> {
    let points = trail["points"].as_array().expect("points");
    points
        .iter()
        .map(|p| p["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn two_fleets_with_the_same_driver_id_never_meet() {
    let app = spawn_app().await;
    let world = [-180.0, -90.0, 180.0, 90.0];
    let mut acme_dash = app.dashboard(Some("acme")).await;
    let mut beta_dash = app.dashboard(Some("beta")).await;
    acme_dash.subscribe("all", world).await;
    beta_dash.subscribe("all", world).await;
    let start = now_ms() - 60_000;

    // Both online at once, with the same seqs and fix times.
    let mut acme = app.driver("d1", "acme").await;
    assert_eq!(acme.welcome["last_seq"], 0);
    drive(&mut acme, 1..=3, start, LIMA).await;
    let mut beta = app.driver("d1", "beta").await;
    assert_eq!(beta.welcome["last_seq"], 0, "not acme's last seq");
    assert_eq!(beta.welcome["fleet"], "beta");
    drive(&mut beta, 1..=2, start, PARIS).await;

    // Sessions: beta's d1 replaced nothing; acme's d1 is still acked.
    drive(&mut acme, 4..=4, start, LIMA).await;
    assert_eq!(app.state.registry.len(), 2, "one session per fleet's d1");

    // Listing: each fleet's dispatcher sees its own d1 only; an admin both.
    let acme_token = app.token(Role::Dispatcher, "disp", Some("acme"));
    let beta_token = app.token(Role::Dispatcher, "disp", Some("beta"));
    let admin = app.token(Role::Admin, "ops", None);
    let listed = |body: &Value| who(body["drivers"].as_array().expect("drivers"));
    let (_, body) = get(&app, "/api/v1/drivers", &acme_token).await;
    assert_eq!(listed(&body), vec![("acme".into(), "d1".into(), LIMA.0)]);
    let (_, body) = get(&app, "/api/v1/drivers", &beta_token).await;
    assert_eq!(listed(&body), vec![("beta".into(), "d1".into(), PARIS.0)]);
    let (_, body) = get(&app, "/api/v1/drivers", &admin).await;
    assert_eq!(
        listed(&body),
        vec![
            ("acme".into(), "d1".into(), LIMA.0),
            ("beta".into(), "d1".into(), PARIS.0)
        ]
    );

    // Dashboards: each sees only its own fleet's d1, up to its newest fix.
    let seen = acme_dash.items_until_ts("d1", start + 4000).await;
    assert!(
        who(&seen)
            .iter()
            .all(|w| *w == ("acme".into(), "d1".into(), LIMA.0)),
        "acme's dashboard: {seen:?}"
    );
    let seen = beta_dash.items_until_ts("d1", start + 2000).await;
    assert!(
        who(&seen)
            .iter()
            .all(|w| *w == ("beta".into(), "d1".into(), PARIS.0)),
        "beta's dashboard: {seen:?}"
    );

    // Trails: each fleet's d1 holds exactly its own fixes.
    let trail = |fleet: Option<&str>| match fleet {
        Some(f) => format!("/api/v1/drivers/d1/trail?fleet={f}&from={start}"),
        None => format!("/api/v1/drivers/d1/trail?from={start}"),
    };
    let lats = |t: &Value| -> Vec<f64> {
        let points = t["points"].as_array().expect("points");
        points.iter().filter_map(|p| p["lat"].as_f64()).collect()
    };
    let (status, t) = get(&app, &trail(None), &acme_token).await;
    assert_eq!(
        (status, seqs_of(&t), &t["fleet"]),
        (200, vec![1, 2, 3, 4], &json!("acme"))
    );
    assert_eq!(lats(&t), vec![LIMA.0; 4]);
    let (status, t) = get(&app, &trail(None), &beta_token).await;
    assert_eq!(
        (status, seqs_of(&t), &t["fleet"]),
        (200, vec![1, 2], &json!("beta"))
    );
    assert_eq!(lats(&t), vec![PARIS.0; 2]);
    // An admin names the fleet, and must.
    let (status, t) = get(&app, &trail(Some("acme")), &admin).await;
    assert_eq!(
        (status, seqs_of(&t), &t["fleet"]),
        (200, vec![1, 2, 3, 4], &json!("acme"))
    );
    let (status, t) = get(&app, &trail(Some("beta")), &admin).await;
    assert_eq!(
        (status, seqs_of(&t), &t["fleet"]),
        (200, vec![1, 2], &json!("beta"))
    );
    let (status, body) = get(&app, &trail(None), &admin).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_query")),
        "{body}"
    );
    let (status, _) = get(&app, &trail(Some("gamma")), &admin).await;
    assert_eq!(status, 404, "no d1 in gamma");
    // Naming another fleet gets a dispatcher what an unknown driver gets.
    let (status, body) = get(&app, &trail(Some("beta")), &acme_token).await;
    let (_, unknown) = get(&app, "/api/v1/drivers/nobody/trail", &acme_token).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], unknown["error"]["code"]);

    // Reconnects: each welcome reports its own fleet's last seq, whoever is online.
    drop(acme);
    let mut acme = app.driver("d1", "acme").await;
    assert_eq!(acme.welcome["last_seq"], 4);
    drop(beta);
    let mut beta = app.driver("d1", "beta").await;
    assert_eq!(beta.welcome["last_seq"], 2);
    drive(&mut beta, 3..=3, start, PARIS).await;
    drive(&mut acme, 5..=5, start, LIMA).await;
    let (_, t) = get(&app, &trail(None), &beta_token).await;
    assert_eq!(seqs_of(&t), vec![1, 2, 3]);
}
