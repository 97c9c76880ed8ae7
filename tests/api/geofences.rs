//! Geofences end to end: the REST endpoints with real requests, on
//! PostgreSQL and on SQLite, the fleet scoping, the validation answers, and
//! the in-memory index kept in step with every change and reloaded when the
//! hub starts again.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, TestDb, admin, call, dispatcher, spawn_app_in};
use fleethub::auth::Role;
use fleethub::domain::FleetId;

async fn start(backend: Backend<'_>, db: TestDb) -> TestApp {
    spawn_app_in(db, |s| backend.configure(s)).await
}

async fn create(app: &TestApp, token: &str, feature: &Value) -> (StatusCode, Value) {
    call(app, Method::POST, "/api/v1/geofences", token, Some(feature)).await
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

fn feature(geometry: Value, properties: Value) -> Value {
    json!({"type": "Feature", "geometry": geometry, "properties": properties})
}

/// A square zone around Berlin's centre.
fn zone() -> Value {
    feature(
        json!({"type": "Polygon", "coordinates": [[[13.3, 52.4], [13.5, 52.4], [13.5, 52.6], [13.3, 52.6], [13.3, 52.4]]]}),
        json!({"name": "centre", "speed_limit_kmh": 30}),
    )
}

fn depot() -> Value {
    feature(
        json!({"type": "Point", "coordinates": [13.05, 52.05]}),
        json!({"name": "depot", "radius_m": 150, "dwell_secs": 900}),
    )
}

fn route() -> Value {
    feature(
        json!({"type": "LineString", "coordinates": [[13.0, 52.5], [13.2, 52.5], [13.2, 52.7]]}),
        json!({"name": "route 7", "width_m": 50}),
    )
}

fn fleet(name: &str) -> FleetId {
    FleetId::parse(name).expect("a valid fleet")
}

/// The fences of `fleet` in the hub's index that hold `(lon, lat)`.
fn indexed_at(app: &TestApp, name: &str, lon: f64, lat: f64) -> Vec<String> {
    let Some(fences) = app.state.geofences.index().fleet(&fleet(name)) else {
        return Vec::new();
    };
    fences
        .containing(geo::Point::new(lon, lat))
        .map(|f| f.props().name.clone())
        .collect()
}

fn id_of(body: &Value) -> String {
    body["id"].as_str().expect("an id").to_owned()
}

async fn each_shape_is_created_listed_read_replaced_and_deleted(app: &TestApp) {
    let acme = dispatcher(app, "acme");
    let mut ids = Vec::new();
    for shape in [zone(), depot(), route()] {
        let (status, body) = create(app, &acme, &shape).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["type"], "Feature");
        assert_eq!(body["geometry"], shape["geometry"]);
        assert_eq!(body["properties"]["fleet"], "acme");
        assert_eq!(body["properties"]["name"], shape["properties"]["name"]);
        assert!(
            body["properties"]["created_at"].as_i64().is_some(),
            "{body}"
        );
        ids.push(id_of(&body));
    }
    assert_eq!(indexed_at(app, "acme", 13.4, 52.5), ["centre"]);
    assert_eq!(indexed_at(app, "acme", 13.05, 52.05), ["depot"]);
    assert_eq!(indexed_at(app, "acme", 13.1, 52.5001), ["route 7"]);

    let (status, list) = call(app, Method::GET, "/api/v1/geofences", &acme, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["type"], "FeatureCollection");
    assert_eq!(list["features"].as_array().map(Vec::len), Some(3));

    let depot_id = &ids[1];
    let path = format!("/api/v1/geofences/{depot_id}");
    let (status, got) = call(app, Method::GET, &path, &acme, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["properties"]["dwell_secs"], 900);

    // PUT takes what GET gave, changed: a larger circle, moved, renamed.
    let mut changed = got.clone();
    changed["geometry"]["coordinates"] = json!([13.06, 52.06]);
    changed["properties"]["radius_m"] = json!(2000);
    changed["properties"]["name"] = json!("big depot");
    let (status, put) = call(app, Method::PUT, &path, &acme, Some(&changed)).await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["id"], depot_id.as_str());
    assert_eq!(put["properties"]["fleet"], "acme");
    assert_eq!(
        put["properties"]["created_at"],
        got["properties"]["created_at"]
    );
    assert_eq!(put["properties"]["radius_m"], 2000.0);
    assert_eq!(call(app, Method::GET, &path, &acme, None).await.1, put);
    assert_eq!(indexed_at(app, "acme", 13.05, 52.05), ["big depot"]);
    assert_eq!(indexed_at(app, "acme", 13.06, 52.075), ["big depot"]);
    // A PUT is validated like a create.
    changed["properties"]["radius_m"] = json!(0);
    let (status, body) = call(app, Method::PUT, &path, &acme, Some(&changed)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_geofence");

    let (status, _) = call(app, Method::DELETE, &path, &acme, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(indexed_at(app, "acme", 13.05, 52.05).is_empty());
    for method in [Method::GET, Method::DELETE] {
        let (status, body) = call(app, method, &path, &acme, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&body), "unknown_geofence");
    }
    let (status, body) = call(app, Method::PUT, &path, &acme, Some(&depot())).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "unknown_geofence")
    );
}

async fn a_fleet_never_sees_another_fleets_fences(app: &TestApp) {
    let (acme, beta) = (dispatcher(app, "acme"), dispatcher(app, "beta"));
    let (_, body) = create(app, &acme, &zone()).await;
    let path = format!("/api/v1/geofences/{}", id_of(&body));
    // Beta's dispatcher: the same 404 as for a fence that does not exist.
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(&zone())),
        (Method::DELETE, None),
    ] {
        let (status, answer) = call(app, method, &path, &beta, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        assert_eq!(error_code(&answer), "unknown_geofence");
    }
    let (_, list) = call(app, Method::GET, "/api/v1/geofences", &beta, None).await;
    assert_eq!(list["features"], json!([]));
    let (status, _) = call(
        app,
        Method::GET,
        "/api/v1/geofences?fleet=acme",
        &beta,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut elsewhere = zone();
    elsewhere["properties"]["fleet"] = json!("acme");
    assert_eq!(
        create(app, &beta, &elsewhere).await.0,
        StatusCode::FORBIDDEN
    );
    // The fence is untouched, and beta's index has nothing.
    let (status, _) = call(app, Method::GET, &path, &acme, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(indexed_at(app, "beta", 13.4, 52.5).is_empty());

    // An admin names the fleet, and sees every fleet's fences.
    let admin = admin(app);
    let (status, body) = create(app, &admin, &depot()).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_geofence")
    );
    let mut for_beta = depot();
    for_beta["properties"]["fleet"] = json!("beta");
    let (status, body) = create(app, &admin, &for_beta).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["properties"]["fleet"], "beta");
    assert_eq!(indexed_at(app, "beta", 13.05, 52.05), ["depot"]);
    let count = |list: Value| list["features"].as_array().map_or(0, Vec::len);
    let all = call(app, Method::GET, "/api/v1/geofences", &admin, None)
        .await
        .1;
    assert_eq!(count(all), 2);
    let of_beta = call(
        app,
        Method::GET,
        "/api/v1/geofences?fleet=beta",
        &admin,
        None,
    )
    .await
    .1;
    assert_eq!(count(of_beta), 1);
    // An admin's PUT keeps the fence's fleet.
    let beta_path = format!("/api/v1/geofences/{}", id_of(&body));
    let mut moved = depot();
    moved["properties"]["fleet"] = json!("acme");
    let (status, _) = call(app, Method::PUT, &beta_path, &admin, Some(&moved)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(app, Method::DELETE, &beta_path, &admin, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Drivers have no say; callers without a token are not read at all.
    let driver = app.token(Role::Driver, "d1", Some("acme"));
    assert_eq!(create(app, &driver, &zone()).await.0, StatusCode::FORBIDDEN);
    let (status, _) = call(app, Method::GET, "/api/v1/geofences", &driver, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(app, Method::GET, &path, &driver, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let res = app
        .http
        .get(app.url("/api/v1/geofences"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

async fn invalid_fences_are_refused_with_the_problem_named(app: &TestApp) {
    let acme = dispatcher(app, "acme");
    let polygon = |ring: Value| {
        feature(
            json!({"type": "Polygon", "coordinates": [ring]}),
            json!({"name": "x"}),
        )
    };
    let point = |coordinates: Value, props: Value| {
        feature(json!({"type": "Point", "coordinates": coordinates}), props)
    };
    let cases = [
        (
            "unclosed ring",
            polygon(json!([
                [13.0, 52.0],
                [14.0, 52.0],
                [14.0, 53.0],
                [13.0, 53.0]
            ])),
            "not closed",
        ),
        (
            "bow-tie",
            polygon(json!([
                [13.0, 52.0],
                [14.0, 53.0],
                [14.0, 52.0],
                [13.0, 53.0],
                [13.0, 52.0]
            ])),
            "self-intersection",
        ),
        (
            "too many positions",
            polygon(json!(vec![
                [13.0, 52.0];
                fleethub::geofences::fence::MAX_VERTICES + 1
            ])),
            "at most",
        ),
        (
            "radius 0",
            point(json!([13.0, 52.0]), json!({"name": "x", "radius_m": 0})),
            "radius_m",
        ),
        (
            "negative width",
            feature(
                json!({"type": "LineString", "coordinates": [[13.0, 52.0], [13.1, 52.0]]}),
                json!({"name": "x", "width_m": -10}),
            ),
            "width_m",
        ),
        (
            "latitude 91",
            point(json!([13.0, 91.0]), json!({"name": "x", "radius_m": 10})),
            "latitude 91",
        ),
        (
            "a null coordinate",
            point(json!([13.0, null]), json!({"name": "x", "radius_m": 10})),
            "numbers",
        ),
        (
            "no coordinates",
            feature(
                json!({"type": "Point"}),
                json!({"name": "x", "radius_m": 10}),
            ),
            "coordinates",
        ),
        (
            "no name",
            point(json!([13.0, 52.0]), json!({"radius_m": 10})),
            "name",
        ),
        (
            "an empty name",
            point(json!([13.0, 52.0]), json!({"name": " ", "radius_m": 10})),
            "name",
        ),
        (
            "a circle without radius",
            point(json!([13.0, 52.0]), json!({"name": "x"})),
            "radius_m",
        ),
        (
            "an unknown property",
            point(
                json!([13.0, 52.0]),
                json!({"name": "x", "radius_m": 10, "colour": "red"}),
            ),
            "colour",
        ),
        (
            "an id of the client's",
            json!({"type": "Feature", "id": "mine", "geometry": {"type": "Point", "coordinates": [13.0, 52.0]}, "properties": {"name": "x", "radius_m": 10}}),
            "id",
        ),
    ];
    for (what, body, named) in cases {
        let (status, answer) = create(app, &acme, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {answer}");
        assert_eq!(error_code(&answer), "invalid_geofence", "{what}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(named), "{what}: {message}");
    }
    // Not JSON at all; a body past the hub's bound.
    let res = app
        .http
        .post(app.url("/api/v1/geofences"))
        .bearer_auth(&acme)
        .body("{\"type\":")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.unwrap();
    assert_eq!(error_code(&body), "bad_json");
    let huge = "x".repeat(app.state.settings.ws.max_frame_bytes + 1);
    let big = point(json!([13.0, 52.0]), json!({"name": huge, "radius_m": 10}));
    let (status, answer) = create(app, &acme, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&answer), "payload_too_large");
    // Nothing of it was kept.
    let (_, list) = call(app, Method::GET, "/api/v1/geofences", &acme, None).await;
    assert_eq!(list["features"], json!([]));
    assert!(app.state.geofences.index().is_empty());
}

/// Fences outlive the hub: stored, and back in the index at the next start.
async fn fences_survive_a_restart(backend: Backend<'_>) {
    let app = start(backend, TestDb::create().await).await;
    let acme = dispatcher(&app, "acme");
    let (_, zone_body) = create(&app, &acme, &zone()).await;
    let (_, route_body) = create(&app, &acme, &route()).await;
    let db = app.stopped().await;

    let app = start(backend, db).await;
    let acme = dispatcher(&app, "acme");
    assert_eq!(app.state.geofences.index().len(), 2);
    assert_eq!(indexed_at(&app, "acme", 13.4, 52.5), ["centre"]);
    assert_eq!(indexed_at(&app, "acme", 13.1, 52.5001), ["route 7"]);
    for body in [zone_body, route_body] {
        let path = format!("/api/v1/geofences/{}", id_of(&body));
        let (status, got) = call(&app, Method::GET, &path, &acme, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got, body, "read back as it was created");
    }
}

/// Each scenario on a fresh hub of each backend.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let app = super::start(super::Backend::Postgres, super::TestDb::create().await).await;
                    super::$name(&app).await;
                }
            )+
        }
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("trails.db");
                    let app = super::start(super::Backend::Sqlite(&path), super::TestDb::create().await).await;
                    super::$name(&app).await;
                }
            )+
        }
    };
}

on_both_backends!(
    each_shape_is_created_listed_read_replaced_and_deleted,
    a_fleet_never_sees_another_fleets_fences,
    invalid_fences_are_refused_with_the_problem_named,
);

#[tokio::test]
async fn fences_survive_a_restart_on_postgres() {
    fences_survive_a_restart(Backend::Postgres).await;
}

#[tokio::test]
async fn fences_survive_a_restart_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    fences_survive_a_restart(Backend::Sqlite(&dir.path().join("trails.db"))).await;
}
