//! Webhooks end to end: the REST endpoints with real requests, on
//! PostgreSQL and on SQLite, and deliveries of a driver's real SOS to a real
//! HTTP receiver the test starts on 127.0.0.1, which checks every signature
//! with the webhook's secret: retries until it answers 2xx, a dead letter
//! when it never does, and the dead letter replayed once it does.

use std::sync::Arc;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{TestApp, TestDb, admin, call, dispatcher, eventually, now_ms, spawn_app_in};
use fleethub::alerts::{Event, EventFix, EventKind};
use fleethub::auth::Role;
use fleethub::config::Settings;
use fleethub::domain::{DriverId, FleetId, Timestamp};

/// Where a test's hub keeps its data, and how the test reads it back.
enum Db {
    Postgres(String),
    Sqlite(std::path::PathBuf),
}

impl Db {
    fn configure(&self, settings: &mut Settings) {
        if let Db::Sqlite(path) = self {
            settings.database.url = SecretString::from(String::new());
            settings.database.sqlite_path = path.to_string_lossy().into_owned();
        }
    }

    /// The status of delivery `id`, `None` when there is no such row.
    async fn status(&self, id: &str) -> Option<String> {
        use sqlx::Connection;
        const SQL: &str = "SELECT status FROM webhook_deliveries WHERE id = $1";
        match self {
            Db::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
                sqlx::query_scalar(SQL)
                    .bind(id)
                    .fetch_optional(&mut conn)
                    .await
                    .expect("sql")
            }
            Db::Sqlite(path) => {
                let url = format!("sqlite://{}", path.display());
                let mut conn = sqlx::SqliteConnection::connect(&url)
                    .await
                    .expect("connect");
                sqlx::query_scalar(SQL)
                    .bind(id)
                    .fetch_optional(&mut conn)
                    .await
                    .expect("sql")
            }
        }
    }
}

/// A hub on `backend` ("postgres" or "sqlite"), with `configure` applied.
async fn start(
    backend: &str,
    dir: &tempfile::TempDir,
    configure: impl FnOnce(&mut Settings),
) -> (TestApp, Db) {
    let pg = TestDb::create().await;
    let db = match backend {
        "sqlite" => Db::Sqlite(dir.path().join("hub.db")),
        _ => Db::Postgres(pg.url()),
    };
    let app = spawn_app_in(pg, |s| {
        db.configure(s);
        configure(s);
    })
    .await;
    (app, db)
}

/// Deliveries retried within milliseconds, so a test sees them all.
fn fast_retries(s: &mut Settings) {
    s.webhooks.first_retry_ms = 20;
    s.webhooks.max_retry_ms = 50;
    s.webhooks.poll_ms = 20;
    s.webhooks.timeout_ms = 2_000;
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("")
}

// ---------------------------------------------------------------------------
// The REST endpoints.

async fn create_list_delete(backend: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, _db) = start(backend, &dir, |_| {}).await;
    let acme = dispatcher(&app, "acme");
    let beta = dispatcher(&app, "beta");

    let (status, created) = call(
        &app,
        Method::POST,
        "/api/v1/webhooks",
        &acme,
        Some(&json!({"url": "https://example.com/hook?x=1", "kinds": ["sos", "geofence_enter"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["fleet"], "acme");
    assert_eq!(created["url"], "https://example.com/hook?x=1");
    assert_eq!(created["kinds"], json!(["sos", "geofence_enter"]));
    assert!(created["created_at"].as_i64().is_some());
    let secret = created["secret"].as_str().expect("a secret");
    assert_eq!(secret.len(), 43, "32 bytes, URL-safe base64");

    // Every kind when none is named; an admin names the fleet.
    let (status, all_kinds) = call(
        &app,
        Method::POST,
        "/api/v1/webhooks",
        &admin(&app),
        Some(&json!({"url": "http://10.0.0.9:8000/", "fleet": "beta"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{all_kinds}");
    assert_eq!(all_kinds["fleet"], "beta");
    assert_eq!(all_kinds["kinds"], json!([]));

    // Lists never show a secret; a dispatcher sees its own fleet's only.
    let (status, list) = call(&app, Method::GET, "/api/v1/webhooks", &acme, None).await;
    assert_eq!(status, StatusCode::OK);
    let hooks = list["webhooks"].as_array().expect("a list");
    assert_eq!(hooks.len(), 1, "{list}");
    assert_eq!(hooks[0]["id"], id.as_str());
    assert!(!list.to_string().contains(secret), "a secret in {list}");
    assert!(hooks[0].get("secret").is_none());
    let (_, list) = call(&app, Method::GET, "/api/v1/webhooks", &admin(&app), None).await;
    assert_eq!(list["webhooks"].as_array().map(Vec::len), Some(2), "{list}");
    let (_, list) = call(
        &app,
        Method::GET,
        "/api/v1/webhooks?fleet=beta",
        &admin(&app),
        None,
    )
    .await;
    assert_eq!(list["webhooks"].as_array().map(Vec::len), Some(1), "{list}");
    let (status, answer) = call(
        &app,
        Method::GET,
        "/api/v1/webhooks?fleet=acme",
        &beta,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(code(&answer), "forbidden");

    // Another fleet's dispatcher cannot delete it: 404 as for none.
    let path = format!("/api/v1/webhooks/{id}");
    let (status, answer) = call(&app, Method::DELETE, &path, &beta, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&answer), "unknown_webhook");
    let (status, _) = call(&app, Method::DELETE, &path, &acme, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, answer) = call(&app, Method::DELETE, &path, &acme, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&answer), "unknown_webhook");
    let (_, list) = call(&app, Method::GET, "/api/v1/webhooks", &acme, None).await;
    assert_eq!(list["webhooks"], json!([]));
    // An admin deletes any fleet's.
    let path = format!("/api/v1/webhooks/{}", all_kinds["id"].as_str().unwrap());
    let (status, _) = call(&app, Method::DELETE, &path, &admin(&app), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn webhooks_are_created_listed_without_secrets_and_deleted_on_postgres() {
    create_list_delete("postgres").await;
}

#[tokio::test]
async fn webhooks_are_created_listed_without_secrets_and_deleted_on_sqlite() {
    create_list_delete("sqlite").await;
}

#[tokio::test]
async fn bad_webhooks_are_refused_with_their_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, _db) = start("postgres", &dir, |_| {}).await;
    let acme = dispatcher(&app, "acme");
    let long = format!("https://example.com/{}", "a".repeat(2_100));
    for (body, expected) in [
        (json!({"url": "ftp://example.com/"}), "invalid_webhook"),
        (json!({"url": "not a url"}), "invalid_webhook"),
        (json!({"url": long}), "invalid_webhook"),
        (
            json!({"url": "https://u:p@example.com/"}),
            "invalid_webhook",
        ),
        (
            json!({"url": "https://example.com/", "kinds": ["sos", "fire"]}),
            "invalid_webhook",
        ),
        (
            json!({"url": "https://example.com/", "kinds": "sos"}),
            "bad_json",
        ),
        (
            json!({"url": "https://example.com/", "extra": 1}),
            "bad_json",
        ),
        (json!({"kinds": []}), "bad_json"),
    ] {
        let (status, answer) =
            call(&app, Method::POST, "/api/v1/webhooks", &acme, Some(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert_eq!(code(&answer), expected, "{body} -> {answer}");
    }
    // A dispatcher names its own fleet only; an admin must name one.
    let (status, answer) = call(
        &app,
        Method::POST,
        "/api/v1/webhooks",
        &acme,
        Some(&json!({"url": "https://example.com/", "fleet": "beta"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, answer) = call(
        &app,
        Method::POST,
        "/api/v1/webhooks",
        &admin(&app),
        Some(&json!({"url": "https://example.com/"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&answer), "invalid_webhook");
    // Drivers have no say; no token, no say.
    let driver = app.token(Role::Driver, "d1", Some("acme"));
    let (status, _) = call(&app, Method::GET, "/api/v1/webhooks", &driver, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let res = app
        .http
        .post(app.url("/api/v1/webhooks"))
        .json(&json!({"url": "https://example.com/"}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // At most 20 per fleet.
    for n in 0..20 {
        let body = json!({"url": format!("https://example.com/{n}")});
        let (status, _) = call(&app, Method::POST, "/api/v1/webhooks", &acme, Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let body = json!({"url": "https://example.com/21"});
    let (status, answer) = call(&app, Method::POST, "/api/v1/webhooks", &acme, Some(&body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&answer), "too_many_webhooks");
    // The dead letters are the admins'.
    let (status, _) = call(
        &app,
        Method::GET,
        "/api/v1/webhooks/dead-letters",
        &acme,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, answer) = call(
        &app,
        Method::POST,
        "/api/v1/webhooks/dead-letters/nope.nope/replay",
        &admin(&app),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&answer), "unknown_dead_letter");
    let (status, answer) = call(
        &app,
        Method::GET,
        "/api/v1/webhooks/dead-letters?limit=0",
        &admin(&app),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}

// ---------------------------------------------------------------------------
// Deliveries to a real receiver.

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Received {
    delivery: String,
    idempotency: String,
    user_agent: String,
    body: Value,
    /// The signature checked with the secret, over the raw body.
    signed: bool,
    /// What the receiver answered.
    status: u16,
}

#[derive(Default)]
struct ReceiverState {
    secret: Mutex<String>,
    /// Answer 500 to this many more requests, then 200.
    failures_left: Mutex<u32>,
    /// Never answer at all.
    hang: std::sync::atomic::AtomicBool,
    received: Mutex<Vec<Received>>,
}

/// A real HTTP server on 127.0.0.1 that checks each delivery's signature.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    server: actix_web::dev::ServerHandle,
}

impl Receiver {
    async fn start(failures: u32) -> Receiver {
        let state = Arc::new(ReceiverState::default());
        *state.failures_left.lock() = failures;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/hook", web::post().to(receive))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .disable_signals()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            state,
            server: handle,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.server.stop(false));
    }
}

fn header(req: &HttpRequest, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Checks `t=<secs>,v1=<hex>` against HMAC-SHA256(secret, "<t>.<body>"),
/// written here from the documented scheme, not with the hub's code.
fn verify(secret: &str, signature: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in signature.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let fresh = t
        .parse::<i64>()
        .is_ok_and(|t| (now_ms() / 1000 - t).abs() < 300);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    fresh && expected == v1
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    if state.hang.load(std::sync::atomic::Ordering::SeqCst) {
        state.received.lock().push(Received {
            delivery: header(&req, "fleethub-delivery"),
            idempotency: header(&req, "idempotency-key"),
            user_agent: header(&req, "user-agent"),
            body: Value::Null,
            signed: false,
            status: 0,
        });
        std::future::pending::<()>().await;
    }
    let secret = state.secret.lock().clone();
    let signed = header(&req, "content-type") == "application/json"
        && verify(&secret, &header(&req, "fleethub-signature"), &body);
    let status = {
        let mut left = state.failures_left.lock();
        if *left > 0 {
            *left -= 1;
            500
        } else {
            200
        }
    };
    state.received.lock().push(Received {
        delivery: header(&req, "fleethub-delivery"),
        idempotency: header(&req, "idempotency-key"),
        user_agent: header(&req, "user-agent"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signed,
        status,
    });
    match status {
        500 => HttpResponse::InternalServerError().body("receiver down"),
        _ => HttpResponse::Ok().finish(),
    }
}

/// Registers `receiver` as an `sos` webhook of acme; returns its id.
async fn register(app: &TestApp, receiver: &Receiver) -> String {
    let (status, created) = call(
        app,
        Method::POST,
        "/api/v1/webhooks",
        &dispatcher(app, "acme"),
        Some(&json!({"url": receiver.url, "kinds": ["sos"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    *receiver.state.secret.lock() = created["secret"].as_str().expect("secret").to_owned();
    created["id"].as_str().expect("id").to_owned()
}

/// Driver d1 of acme sends an SOS frame, acked once stored with its event
/// and the event's outbox rows; the id of the delivery to `webhook`, from
/// the event's id (derived from its cause, as the hub derives it).
async fn raise_sos(app: &TestApp, webhook: &str) -> String {
    let mut driver = app.driver("d1", "acme").await;
    let now = now_ms();
    driver
        .client
        .send(&json!({"type": "sos", "seq": 1, "ts": now, "lat": -12.05, "lon": -77.04}))
        .await;
    driver.ack_covering(1).await;
    let event = Event::new(
        EventKind::Sos,
        &FleetId::parse("acme").unwrap(),
        &DriverId::parse("d1").unwrap(),
        EventFix {
            ts: Timestamp::from_millis(now),
            seq: Some(1),
            lat: -12.05,
            lon: -77.04,
        },
        None,
        json!({}),
    );
    format!("{}.{webhook}", event.id)
}

async fn retried_until_delivered(backend: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, db) = start(backend, &dir, fast_retries).await;
    let receiver = Receiver::start(2).await;
    let webhook = register(&app, &receiver).await;
    // Webhooks that do not want this event: another kind, another fleet.
    let mut others = Vec::new();
    for (fleet, kinds) in [("acme", json!(["geofence_enter"])), ("beta", json!([]))] {
        let (status, other) = call(
            &app,
            Method::POST,
            "/api/v1/webhooks",
            &dispatcher(&app, fleet),
            Some(&json!({"url": receiver.url, "kinds": kinds})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        others.push(other["id"].as_str().expect("id").to_owned());
    }
    let delivery = raise_sos(&app, &webhook).await;

    eventually("the delivery is delivered", || async {
        db.status(&delivery).await.as_deref() == Some("delivered")
    })
    .await;
    let got = receiver.received();
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 500, 200], "{got:?}");
    for r in &got {
        assert!(r.signed, "a bad signature: {r:?}");
        assert_eq!(r.delivery, delivery);
        assert_eq!(r.idempotency, delivery, "the same key on every attempt");
        assert!(r.user_agent.starts_with("fleethub/"), "{r:?}");
        assert_eq!(r.body["type"], "event");
        assert_eq!(r.body["kind"], "sos");
        assert_eq!(r.body["fleet"], "acme");
        assert_eq!(r.body["driver"], "d1");
        assert_eq!(r.body["seq"], 1);
        assert_eq!(r.body["lat"], -12.05);
        assert_eq!(delivery.split('.').next(), r.body["id"].as_str());
    }
    // Delivered: the row is no longer pending, so no sender takes it again.
    assert_eq!(receiver.received().len(), 3);
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for outcome in ["delivered", "retry"] {
        let line = format!("fleethub_webhook_deliveries_total{{outcome=\"{outcome}\"}}");
        assert!(metrics.contains(&line), "no {line}");
    }
    let event = delivery.split('.').next().unwrap_or("");
    for other in others {
        assert_eq!(db.status(&format!("{event}.{other}")).await, None);
    }
    let (_, dead) = call(
        &app,
        Method::GET,
        "/api/v1/webhooks/dead-letters",
        &admin(&app),
        None,
    )
    .await;
    assert_eq!(dead["dead_letters"], json!([]));
}

#[tokio::test]
async fn a_failing_receiver_gets_the_event_again_until_it_takes_it_on_postgres() {
    retried_until_delivered("postgres").await;
}

#[tokio::test]
async fn a_failing_receiver_gets_the_event_again_until_it_takes_it_on_sqlite() {
    retried_until_delivered("sqlite").await;
}

async fn dead_letter_replayed(backend: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, db) = start(backend, &dir, |s| {
        fast_retries(s);
        s.webhooks.max_attempts = 3;
    })
    .await;
    let receiver = Receiver::start(u32::MAX).await;
    let webhook = register(&app, &receiver).await;
    let delivery = raise_sos(&app, &webhook).await;

    eventually("the delivery is a dead letter", || async {
        db.status(&delivery).await.as_deref() == Some("dead")
    })
    .await;
    assert_eq!(receiver.received().len(), 3, "max_attempts attempts");
    let (status, dead) = call(
        &app,
        Method::GET,
        "/api/v1/webhooks/dead-letters?limit=10",
        &admin(&app),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let letters = dead["dead_letters"].as_array().expect("a list");
    assert_eq!(letters.len(), 1, "{dead}");
    let letter = &letters[0];
    assert_eq!(letter["id"], delivery.as_str());
    assert_eq!(letter["webhook"], webhook.as_str());
    assert_eq!(letter["url"], receiver.url.as_str());
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["event"]["kind"], "sos");
    let error = letter["last_error"].as_str().unwrap_or("");
    assert!(error.contains("500"), "{letter}");
    assert!(letter["failed_at"].as_i64() >= letter["created_at"].as_i64());

    // The receiver is fixed; the dead letter is replayed and arrives.
    *receiver.state.failures_left.lock() = 0;
    let path = format!("/api/v1/webhooks/dead-letters/{delivery}/replay");
    let (status, answer) = call(&app, Method::POST, &path, &admin(&app), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    eventually("the replayed delivery arrives", || async {
        receiver.received().iter().any(|r| r.status == 200)
    })
    .await;
    eventually("the delivery is delivered", || async {
        db.status(&delivery).await.as_deref() == Some("delivered")
    })
    .await;
    let got = receiver.received();
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.iter().all(|r| r.signed && r.idempotency == delivery));
    let (_, dead) = call(
        &app,
        Method::GET,
        "/api/v1/webhooks/dead-letters",
        &admin(&app),
        None,
    )
    .await;
    assert_eq!(dead["dead_letters"], json!([]));
    // A delivered one is no dead letter to replay.
    let (status, answer) = call(&app, Method::POST, &path, &admin(&app), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&answer), "unknown_dead_letter");
}

#[tokio::test]
async fn a_dead_letter_is_listed_and_replayed_on_postgres() {
    dead_letter_replayed("postgres").await;
}

#[tokio::test]
async fn a_dead_letter_is_listed_and_replayed_on_sqlite() {
    dead_letter_replayed("sqlite").await;
}

/// Two hubs on one PostgreSQL database, both sending: every delivery is
/// claimed by one of them and arrives once.
#[tokio::test]
async fn two_hubs_on_one_database_send_each_delivery_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Hub a sends one at a time, so that hub b takes its share.
    let (a, db) = start("postgres", &dir, |s| {
        fast_retries(s);
        s.webhooks.concurrency = 1;
    })
    .await;
    let Db::Postgres(url) = &db else {
        unreachable!("a PostgreSQL hub")
    };
    let url = url.clone();
    let b = spawn_app_in(TestDb::create().await, |s| {
        fast_retries(s);
        s.database.url = SecretString::from(url);
    })
    .await;
    let receiver = Receiver::start(0).await;
    let webhook = register(&a, &receiver).await;
    let mut deliveries = Vec::new();
    for n in 0..20 {
        let mut driver = a.driver(&format!("d{n}"), "acme").await;
        let now = now_ms();
        driver
            .client
            .send(&json!({"type": "sos", "seq": 1, "ts": now, "lat": 1.0, "lon": 2.0}))
            .await;
        driver.ack_covering(1).await;
        let event = Event::new(
            EventKind::Sos,
            &FleetId::parse("acme").unwrap(),
            &DriverId::parse(&format!("d{n}")).unwrap(),
            EventFix {
                ts: Timestamp::from_millis(now),
                seq: Some(1),
                lat: 1.0,
                lon: 2.0,
            },
            None,
            json!({}),
        );
        deliveries.push(format!("{}.{webhook}", event.id));
    }
    for delivery in &deliveries {
        eventually("every delivery is delivered", || async {
            db.status(delivery).await.as_deref() == Some("delivered")
        })
        .await;
    }
    let got = receiver.received();
    let mut ids: Vec<&str> = got.iter().map(|r| r.delivery.as_str()).collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = deliveries.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "each delivery exactly once");
    assert!(got.iter().all(|r| r.signed));
    drop(b);
}

/// A receiver that never answers costs one timeout per attempt, then the
/// delivery is a dead letter that says so.
#[tokio::test]
async fn a_receiver_that_never_answers_times_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, db) = start("postgres", &dir, |s| {
        fast_retries(s);
        s.webhooks.timeout_ms = 300;
        s.webhooks.max_attempts = 2;
    })
    .await;
    let receiver = Receiver::start(0).await;
    receiver
        .state
        .hang
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let webhook = register(&app, &receiver).await;
    let delivery = raise_sos(&app, &webhook).await;
    eventually("the delivery is a dead letter", || async {
        db.status(&delivery).await.as_deref() == Some("dead")
    })
    .await;
    assert_eq!(receiver.received().len(), 2);
    let (_, dead) = call(
        &app,
        Method::GET,
        "/api/v1/webhooks/dead-letters",
        &admin(&app),
        None,
    )
    .await;
    assert_eq!(dead["dead_letters"][0]["last_error"], "timed out", "{dead}");
}

/// Deleting a webhook deletes its deliveries: a pending one is never sent.
#[tokio::test]
async fn a_deleted_webhook_takes_its_pending_deliveries_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, db) = start("sqlite", &dir, |s| {
        // One failed attempt, then a retry far beyond the test.
        s.webhooks.first_retry_ms = 3_600_000;
        s.webhooks.poll_ms = 20;
    })
    .await;
    let receiver = Receiver::start(u32::MAX).await;
    let webhook = register(&app, &receiver).await;
    let delivery = raise_sos(&app, &webhook).await;
    eventually("the first attempt failed", || async {
        db.status(&delivery).await.as_deref() == Some("pending") && !receiver.received().is_empty()
    })
    .await;
    let path = format!("/api/v1/webhooks/{webhook}");
    let (status, _) = call(&app, Method::DELETE, &path, &dispatcher(&app, "acme"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(db.status(&delivery).await, None);
}
