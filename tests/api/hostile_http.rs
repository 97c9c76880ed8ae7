//! Hostile input over HTTP and at the WebSocket handshake: a gzip bomb, the
//! full batch at the limit on both paths, JSON error bodies for every error,
//! the connection caps, the Origin check; and TLS to PostgreSQL.

use std::io::Write;
use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;

use crate::helpers::*;
use fleethub::auth::{Authenticator, Role};

/// A handshake's outcome: 101 and the socket, or the refusal's status and JSON body.
enum Handshake {
    Upgraded(Box<Ws>),
    Refused(u16, Value),
}

impl Handshake {
    fn refusal(&self) -> (u16, String) {
        match self {
            Handshake::Upgraded(_) => (101, String::new()),
            Handshake::Refused(status, body) => (
                *status,
                body["error"]["code"]
                    .as_str()
                    .unwrap_or("<no JSON code>")
                    .to_owned(),
            ),
        }
    }

    fn socket(self) -> Ws {
        match self {
            Handshake::Upgraded(ws) => *ws,
            Handshake::Refused(status, body) => panic!("refused with {status}: {body}"),
        }
    }
}

fn request(url: &str, origin: Option<&str>) -> Request {
    let mut req = url.into_client_request().expect("a WebSocket URL");
    if let Some(origin) = origin {
        req.headers_mut()
            .insert("origin", origin.parse().expect("an origin header"));
    }
    req
}

/// Opens a WebSocket from `source` (a loopback address: each is another client address).
async fn handshake_from(source: IpAddr, req: Request, port: u16) -> Handshake {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind((source, 0).into())
        .expect("bind the source address");
    let stream = socket
        .connect(([127, 0, 0, 1], port).into())
        .await
        .expect("tcp connect");
    match tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await {
        Ok((ws, _)) => Handshake::Upgraded(Box::new(ws)),
        Err(WsError::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Handshake::Refused(resp.status().as_u16(), body)
        }
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

async fn handshake(app: &TestApp, req: Request) -> Handshake {
    handshake_from([127, 0, 0, 1].into(), req, app.port).await
}

async fn metrics_text(app: &TestApp) -> String {
    let res = app.http.get(app.url("/metrics")).send().await.unwrap();
    res.text().await.unwrap()
}

// ---- #5: the full batch at the limit, on both paths ----

/// `count` fixes from `first_seq`, every optional field present and every
/// number at full double precision (17 significant digits).
fn full_precision_items(first_seq: u64, count: u64) -> Vec<Value> {
    let start = now_ms() - 3_600_000;
    (0..count)
        .map(|i| {
            let f = i as f64;
            json!({
                "seq": first_seq + i,
                "ts": start + (i as i64) * 1000,
                "lat": -9.405674514969299 - f * 1.234_567_890_123_457e-6,
                "lon": -77.04123456789012 + f * 2.345_678_901_234_568e-6,
                "speed": 8.123456789012345 + f * 1e-9,
                "heading": 271.1234567890123 - f * 1e-9,
                "acc": 4.567890123456789 + f * 1e-9,
            })
        })
        .collect()
}

#[tokio::test]
async fn a_full_batch_at_full_precision_is_taken_on_both_paths_and_one_item_more_is_refused() {
    let app = spawn_app().await;
    let max = app.state.settings.driver.max_batch_items as u64;
    assert_eq!(max, 1000, "the documented default");
    let full = full_precision_items(1, max);
    let frame = json!({"type": "batch", "items": full}).to_string();
    assert!(
        frame.len() > 150_000,
        "a full batch at full precision: {} bytes",
        frame.len()
    );

    // WebSocket: acked whole, no error.
    let mut d = app.driver("ws-driver", "acme").await;
    d.client.send_text(&frame).await;
    let seen = d.ack_covering(max).await;
    assert!(
        seen.iter().all(|f| f["type"] != "error"),
        "no error on the way: {seen:?}"
    );
    // One item more: refused as a batch, with its seq, the socket still open.
    let over = full_precision_items(max + 1, max + 1);
    d.client
        .send(&json!({"type": "batch", "items": over}))
        .await;
    let err = d.client.next_of("error").await;
    assert_eq!(err["code"], "batch_too_large", "{err}");
    assert_eq!(err["seq"], 2 * max + 1);

    // HTTP: the same items, stored and acked.
    let token = app.token(Role::Driver, "http-driver", Some("acme"));
    let res = app
        .http
        .post(app.url("/api/v1/positions"))
        .bearer_auth(&token)
        .json(&json!({"items": full}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["ack"], max, "{answer}");
    assert_eq!(answer["rejected"], json!([]));
    let res = app
        .http
        .post(app.url("/api/v1/positions"))
        .bearer_auth(&token)
        .json(&json!({"items": over}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let answer: Value = res.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "batch_too_large", "{answer}");
}

// ---- #2: the gzip bomb, against the real binary ----

/// The built hub as a child process, so its memory is its own.
struct HubProcess {
    child: tokio::process::Child,
    port: u16,
}

impl HubProcess {
    async fn start(db: &TestDb) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleethub"))
            .arg("serve")
            .env("DATABASE_URL", db.url())
            .env("FLEETHUB_LISTEN", format!("127.0.0.1:{port}"))
            .env("FLEETHUB_JWT_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the fleethub binary starts");
        let http = http_client();
        let healthz = format!("http://127.0.0.1:{port}/healthz");
        eventually("the hub process to answer /healthz", || {
            let req = http.get(&healthz).send();
            async move { req.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        Self { child, port }
    }

    /// Resident memory, from `/proc/<pid>/status`.
    fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("the hub is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

fn gzip(bytes: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for chunk in bytes {
        encoder.write_all(&chunk).unwrap();
    }
    encoder.finish().unwrap()
}

async fn post_gzip(
    http: &reqwest::Client,
    port: u16,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = http
        .post(format!("http://127.0.0.1:{port}/api/v1/positions"))
        .header(CONTENT_TYPE, "application/json")
        .header(CONTENT_ENCODING, "gzip")
        .body(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.expect("the hub answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_without_a_token_unread_and_with_one_inflated_only_to_the_bound() {
    // 200 MiB of zeros: about 200 KiB gzipped.
    let bomb = tokio::task::spawn_blocking(|| gzip((0..200).map(|_| vec![0u8; 1 << 20])))
        .await
        .unwrap();
    assert!(bomb.len() < 256 << 10, "the bomb is {} bytes", bomb.len());
    let db = TestDb::create().await;
    let hub = HubProcess::start(&db).await;
    let http = http_client();
    let token = Authenticator::new(SECRET.as_bytes())
        .issue("d1", Role::Driver, Some("acme"), Duration::from_secs(600))
        .unwrap();
    // A gzipped batch is read as any other (and warms the path up).
    let fix = json!({"items": [{"seq": 1, "ts": now_ms(), "lat": -12.05, "lon": -77.04}]});
    let small = gzip(std::iter::once(fix.to_string().into_bytes()));
    let (status, answer) = post_gzip(&http, hub.port, Some(&token), small).await;
    assert_eq!((status, &answer["ack"]), (200, &json!(1)), "{answer}");

    let start = hub.rss_kib();
    let bombs = |rounds: usize| {
        let (http, token, bomb) = (&http, &token, &bomb);
        async move {
            for _ in 0..rounds {
                let (status, answer) = post_gzip(http, hub.port, None, bomb.clone()).await;
                assert_eq!(status, 401);
                assert_eq!(answer["error"]["code"], "token_missing");
                let (status, answer) = post_gzip(http, hub.port, Some(token), bomb.clone()).await;
                assert_eq!(status, 413);
                assert_eq!(answer["error"]["code"], "payload_too_large");
            }
        }
    };
    // The first requests of a kind settle the allocator's pools (a few MB
    // once); from then on a bomb costs nothing that stays.
    bombs(2).await;
    let before = hub.rss_kib();
    bombs(10).await;
    let after = hub.rss_kib();
    eprintln!(
        "hub RSS: {start} KiB at start, {before} KiB after 4 bombs, {after} KiB after 20 more"
    );
    let settled = before.saturating_sub(start);
    // One-time: the allocator's pools and the inflater's buffers (a bomb once took
    // 174 MB before the bound); measured 4-8 MB here.
    assert!(settled < 16 * 1024, "the first bombs took {settled} KiB");
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "20 bombs took {} KiB",
        after.saturating_sub(before)
    );
    // Still serving.
    let (status, _) = post_gzip(
        &http,
        hub.port,
        Some(&token),
        gzip(std::iter::once(b"{\"items\":[]}".to_vec())),
    )
    .await;
    assert_eq!(status, 200);
}

// ---- #8: every error answers with the JSON body ----

async fn json_error(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{status} answered {content_type}"
    );
    let body: Value = res.json().await.expect("a JSON body");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{body}");
    (status, code, message.to_owned())
}

#[tokio::test]
async fn every_http_error_answers_with_the_json_body_and_a_stable_code() {
    let app = spawn_app().await;
    let driver = app.token(Role::Driver, "d1", Some("acme"));
    let dispatcher = app.token(Role::Dispatcher, "disp", Some("acme"));

    // A wrong method: 405 with Allow.
    for (method, path, allow) in [
        (reqwest::Method::POST, "/api/v1/drivers", "GET"),
        (reqwest::Method::GET, "/api/v1/positions", "POST"),
        (reqwest::Method::DELETE, "/ws/dashboard", "GET"),
    ] {
        let res = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        let allowed = res
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(allowed.as_deref(), Some(allow), "{method} {path}");
        let (status, code, _) = json_error(res).await;
        assert_eq!(
            (status, code.as_str()),
            (405, "method_not_allowed"),
            "{method} {path}"
        );
    }
    // Unknown paths under /api/, whatever the method; the dashboard's files keep their fallback.
    for method in [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
    ] {
        let res = app
            .http
            .request(method, app.url("/api/v1/nope"))
            .send()
            .await
            .unwrap();
        let (status, code, _) = json_error(res).await;
        assert_eq!((status, code.as_str()), (404, "not_found"));
    }
    let res = app
        .http
        .get(app.url("/no-such-page.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_error(res).await.0, 404);
    let res = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);

    // actix's query extractor.
    let res = app
        .http
        .get(app.url("/api/v1/drivers/d1/trail?limit=abc"))
        .bearer_auth(&dispatcher)
        .send()
        .await
        .unwrap();
    let (status, code, _) = json_error(res).await;
    assert_eq!((status, code.as_str()), (400, "invalid_query"));

    // A body over the bound, said by its length or not; an encoding the hub does not read.
    let limit = app.state.settings.ws.max_frame_bytes;
    let res = app
        .http
        .post(app.url("/api/v1/positions"))
        .bearer_auth(&driver)
        .header(CONTENT_TYPE, "application/json")
        .body(vec![b' '; limit + 1])
        .send()
        .await
        .unwrap();
    let (status, code, _) = json_error(res).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    let res = app
        .http
        .post(app.url("/api/v1/positions"))
        .bearer_auth(&driver)
        .header(CONTENT_ENCODING, "br")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, code, _) = json_error(res).await;
    assert_eq!((status, code.as_str()), (415, "unsupported_encoding"));

    // A WebSocket endpoint asked without the upgrade.
    let res = app
        .http
        .get(app.url("/ws/driver"))
        .bearer_auth(&driver)
        .send()
        .await
        .unwrap();
    let (status, code, _) = json_error(res).await;
    assert_eq!((status, code.as_str()), (400, "bad_request"));
}

// ---- #9: connection caps, answered before the upgrade ----

#[tokio::test]
async fn dashboards_per_token_are_capped_with_429_and_a_closed_one_frees_its_place() {
    let app = spawn_app_with(|s| s.ws.max_connections_per_token = 2).await;
    let token = app.token(Role::Dispatcher, "disp", Some("acme"));
    let url = app.ws_url("/ws/dashboard", &token);
    let first = handshake(&app, request(&url, None)).await.socket();
    let _second = handshake(&app, request(&url, None)).await.socket();
    let third = handshake(&app, request(&url, None)).await;
    assert_eq!(third.refusal(), (429, "too_many_connections".into()));
    // Another token of the same dispatcher is another count.
    let other = app.token(Role::Admin, "ops", None);
    let _admin = handshake(&app, request(&app.ws_url("/ws/dashboard", &other), None))
        .await
        .socket();
    assert!(
        metrics_text(&app)
            .await
            .contains(r#"fleethub_connections_refused_total{reason="per_token"}"#)
    );
    drop(first);
    eventually("the closed dashboard's place to be free", || {
        let req = request(&url, None);
        let app = &app;
        async move { matches!(handshake(app, req).await, Handshake::Upgraded(_)) }
    })
    .await;
}

#[tokio::test]
async fn connections_per_client_address_are_capped_with_429() {
    let app = spawn_app_with(|s| s.ws.max_connections_per_ip = 2).await;
    let _a = app.driver("a", "acme").await;
    let _b = app.dashboard(Some("acme")).await;
    let token = app.token(Role::Driver, "c", Some("acme"));
    let url = app.ws_url("/ws/driver", &token);
    let refused = handshake(&app, request(&url, None)).await;
    assert_eq!(refused.refusal(), (429, "too_many_connections".into()));
    // An unauthenticated handshake from that address is refused as well, before its token is read.
    let anonymous = handshake(
        &app,
        request(&app.url("/ws/driver").replace("http", "ws"), None),
    )
    .await;
    assert_eq!(anonymous.refusal(), (429, "too_many_connections".into()));
    // Another address is another count.
    let elsewhere = handshake_from([127, 0, 0, 2].into(), request(&url, None), app.port).await;
    assert!(matches!(elsewhere, Handshake::Upgraded(_)));
    assert!(
        metrics_text(&app)
            .await
            .contains(r#"fleethub_connections_refused_total{reason="per_ip"}"#)
    );
}

#[tokio::test]
async fn connections_on_the_node_are_capped_with_503_and_every_ended_session_gives_its_place_back()
{
    let app = spawn_app_with(|s| s.ws.max_connections = 2).await;
    let mut a = app.driver("a", "acme").await;
    let b = app.dashboard(Some("acme")).await;
    let token = app.token(Role::Driver, "c", Some("acme"));
    let url = app.ws_url("/ws/driver", &token);
    let refused = handshake(&app, request(&url, None)).await;
    assert_eq!(refused.refusal(), (503, "server_busy".into()));
    assert_eq!(app.state.admission.open_connections(), 2);
    // A driver that closes, and a dashboard that just goes away.
    a.client.ws.close(None).await.unwrap();
    drop(b);
    let admission = &app.state.admission;
    eventually("both places to be free", || async {
        admission.open_connections() == 0
    })
    .await;
    let _c = handshake(&app, request(&url, None)).await.socket();
    assert!(
        metrics_text(&app)
            .await
            .contains(r#"fleethub_connections_refused_total{reason="total"}"#)
    );
}

// ---- #10: Origin ----

#[tokio::test]
async fn websocket_origins_other_than_the_hubs_own_and_the_listed_ones_get_403() {
    let app =
        spawn_app_with(|s| s.ws.allowed_origins = vec!["https://ops.example.com".into()]).await;
    let own = format!("http://127.0.0.1:{}", app.port);
    let driver = app.token(Role::Driver, "d1", Some("acme"));
    let dispatcher = app.token(Role::Dispatcher, "disp", Some("acme"));
    for url in [
        app.ws_url("/ws/driver", &driver),
        app.ws_url("/ws/dashboard", &dispatcher),
    ] {
        for origin in [None, Some(own.as_str()), Some("https://ops.example.com")] {
            let ws = handshake(&app, request(&url, origin)).await;
            assert!(matches!(ws, Handshake::Upgraded(_)), "{origin:?} on {url}");
        }
        for origin in ["http://evil.example", "http://127.0.0.1:1", "null"] {
            let refused = handshake(&app, request(&url, Some(origin))).await;
            assert_eq!(
                refused.refusal(),
                (403, "origin_not_allowed".into()),
                "{origin} on {url}"
            );
        }
    }
    assert!(
        metrics_text(&app)
            .await
            .contains(r#"fleethub_connections_refused_total{reason="origin"}"#)
    );
}

// ---- TLS to PostgreSQL ----

#[tokio::test]
async fn with_sslmode_require_the_hub_stores_over_tls() {
    let app = spawn_app_with(|s| {
        let url = format!("{}?sslmode=require", s.database.url.expose_secret());
        s.database.url = url.into();
    })
    .await;
    let mut d = app.driver("d1", "acme").await;
    d.publish(1, now_ms(), -12.05, -77.04).await;
    let url = app.state.settings.database.url.expose_secret().to_owned();
    let database = url
        .rsplit_once('/')
        .and_then(|(_, db)| db.split_once('?'))
        .map(|(db, _)| db.to_owned())
        .unwrap();
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&pg_admin_url()).await.unwrap();
    let encrypted: Vec<bool> = sqlx::query_scalar(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
    )
    .bind(&database)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        !encrypted.is_empty(),
        "the hub holds connections to {database}"
    );
    assert!(encrypted.iter().all(|&ssl| ssl), "{encrypted:?}");
}
