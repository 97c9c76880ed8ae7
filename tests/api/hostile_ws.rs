//! Hostile WebSocket peers. Every frame the hub cannot take ends the session
//! with its close code (1007 invalid UTF-8, 1009 too big, 1002 a broken
//! frame, 1008 a dashboard that lets its control frames pile up), and the
//! hub's socket is released, for drivers and dashboards alike: counted on the
//! real binary's `/proc/<pid>/fd`. Tokens whose times are wrong are refused
//! before the upgrade.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::helpers::*;
use fleethub::auth::Role;

const MIB: usize = 1024 * 1024;

/// What a hostile peer sends after its handshake.
#[derive(Debug, Clone, Copy)]
enum Hostile {
    /// A text frame whose payload is not UTF-8.
    InvalidUtf8,
    /// One text frame of this many bytes.
    BigFrame(usize),
    /// A text message of `total` bytes in fragments of `fragment` bytes.
    Fragments { total: usize, fragment: usize },
    /// A frame with a reserved opcode.
    ReservedOpcode,
    /// This many pings in one burst, never reading the pongs.
    Pings(usize),
    /// This many `subscribe` with the same id in one burst, never reading the snapshots.
    Subscribes(usize),
}

fn text_frame(payload: Vec<u8>, opcode: Data, last: bool) -> Message {
    Message::Frame(Frame::message(payload, OpCode::Data(opcode), last))
}

impl Hostile {
    fn frames(self) -> Vec<Message> {
        match self {
            Hostile::InvalidUtf8 => {
                vec![text_frame(
                    b"{\"type\":\"pos\",\"x\":\"\xff\xfe\"}".to_vec(),
                    Data::Text,
                    true,
                )]
            }
            Hostile::BigFrame(n) => vec![Message::text("x".repeat(n))],
            Hostile::Fragments { total, fragment } => {
                let count = total / fragment;
                (0..count)
                    .map(|i| {
                        let opcode = if i == 0 { Data::Text } else { Data::Continue };
                        text_frame(vec![b' '; fragment], opcode, i == count - 1)
                    })
                    .collect()
            }
            Hostile::ReservedOpcode => vec![text_frame(b"{}".to_vec(), Data::Reserved(3), true)],
            Hostile::Pings(n) => (0..n)
                .map(|_| Message::Ping(vec![7u8; 125].into()))
                .collect(),
            Hostile::Subscribes(n) => (0..n)
                .map(|_| {
                    let frame =
                        json!({"type":"subscribe","id":"same","bbox":[-78.0,-13.0,-76.0,-11.0]});
                    Message::text(frame.to_string())
                })
                .collect(),
        }
    }
}

/// Sends the hostile frames in one burst, from a task of their own (the hub
/// may stop reading a frame it refuses; the sender must not block the reader),
/// then reads until the hub closes. Returns how it ended and the (still
/// open) client half, so the hub, not the client, has to release the socket.
async fn attack(client: Client, hostile: Hostile) -> (Ended, impl Send) {
    let (mut tx, mut rx) = client.ws.split();
    let sender = tokio::spawn(async move {
        for frame in hostile.frames() {
            if tx.feed(frame).await.is_err() {
                break;
            }
        }
        let _ = tx.flush().await;
        tx
    });
    let ended = loop {
        let msg = tokio::time::timeout(DEADLINE, rx.next())
            .await
            .unwrap_or_else(|_| panic!("{hostile:?}: no close before the deadline"));
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => {
                break Ended::Closed(u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) => break Ended::Closed(1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break Ended::Dropped,
        }
    };
    (ended, (rx, sender))
}

async fn driver_client(hub: &ChildHub, sub: &str) -> Client {
    let token = hub.token(Role::Driver, sub, Some("acme"));
    let mut client = Client::connect(&hub.ws_url("/ws/driver", &token)).await;
    client.next_of("welcome").await;
    client
}

async fn dashboard_client(hub: &ChildHub) -> Client {
    let token = hub.token(Role::Dispatcher, "disp", Some("acme"));
    let mut client = Client::connect(&hub.ws_url("/ws/dashboard", &token)).await;
    client.next_of("hello").await;
    client
}

#[tokio::test]
async fn a_driver_sending_broken_frames_gets_its_close_code_and_loses_its_socket() {
    let hub = ChildHub::start(&[]).await;
    hub.connections_back_to(0, "an idle hub").await;
    let cases = [
        (Hostile::InvalidUtf8, 1007, "invalid UTF-8"),
        (Hostile::BigFrame(2 * MIB), 1009, "message too big"),
        (
            Hostile::Fragments {
                total: 2 * MIB,
                fragment: 64 * 1024,
            },
            1009,
            "message too big",
        ),
        (Hostile::ReservedOpcode, 1002, "protocol error"),
    ];
    for (i, (hostile, code, reason)) in cases.into_iter().enumerate() {
        let client = driver_client(&hub, &format!("d{i}")).await;
        assert_eq!(hub.connections(), 1);
        let (ended, _still_open) = attack(client, hostile).await;
        assert_eq!(ended, Ended::Closed(code, reason.into()), "{hostile:?}");
        hub.connections_back_to(0, &format!("driver, {hostile:?}"))
            .await;
    }
    // The hub still serves drivers.
    let mut d = driver_client(&hub, "after").await;
    d.send(&json!({"type":"pos","seq":1,"ts":now_ms(),"lat":-12.0,"lon":-77.0}))
        .await;
    assert_eq!(d.next_of("ack").await["seq"], 1);
}

#[tokio::test]
async fn a_dashboard_sending_broken_frames_gets_its_close_code_and_loses_its_socket() {
    let hub = ChildHub::start(&[]).await;
    hub.connections_back_to(0, "an idle hub").await;
    let cases = [
        (Hostile::InvalidUtf8, 1007, "invalid UTF-8"),
        // Over the dashboard's 16 KiB.
        (Hostile::BigFrame(20 * 1024), 1009, "message too big"),
        (Hostile::BigFrame(2 * MIB), 1009, "message too big"),
        (
            Hostile::Fragments {
                total: 2 * MIB,
                fragment: 8 * 1024,
            },
            1009,
            "message too big",
        ),
        (Hostile::ReservedOpcode, 1002, "protocol error"),
    ];
    for (hostile, code, reason) in cases {
        let client = dashboard_client(&hub).await;
        assert_eq!(hub.connections(), 1);
        let (ended, _still_open) = attack(client, hostile).await;
        assert_eq!(ended, Ended::Closed(code, reason.into()), "{hostile:?}");
        hub.connections_back_to(0, &format!("dashboard, {hostile:?}"))
            .await;
    }
}

#[tokio::test]
async fn a_dashboard_that_lets_its_control_frames_pile_up_is_closed_not_left_half_alive() {
    let hub = ChildHub::start(&[]).await;
    // Drivers in the box, so that each snapshot carries something.
    let mut drivers = Vec::new();
    for i in 0..20 {
        let mut d = driver_client(&hub, &format!("d{i}")).await;
        let lat = -12.0 - i as f64 * 0.001;
        d.send(&json!({"type":"pos","seq":1,"ts":now_ms(),"lat":lat,"lon":-77.0}))
            .await;
        d.next_of("ack").await;
        drivers.push(d);
    }
    hub.connections_back_to(20, "the drivers only").await;
    for hostile in [Hostile::Pings(100), Hostile::Subscribes(100)] {
        let client = dashboard_client(&hub).await;
        let (ended, _still_open) = attack(client, hostile).await;
        assert_eq!(
            ended,
            Ended::Closed(1008, "too many unread frames".into()),
            "{hostile:?}"
        );
        hub.connections_back_to(20, &format!("dashboard, {hostile:?}"))
            .await;
    }
    // Nobody else was affected: a new dashboard gets its snapshot.
    let mut dash = DashboardClient {
        client: dashboard_client(&hub).await,
    };
    let snapshot = dash.subscribe("main", [-78.0, -13.0, -76.0, -11.0]).await;
    assert_eq!(snapshot["drivers"].as_array().map(Vec::len), Some(20));
}

// ---- tokens whose times are wrong ----

fn now_secs() -> u64 {
    (now_ms() / 1000) as u64
}

/// A token signed with the test secret, with `extra` claims over a valid driver's.
fn token_with(role: &str, extra: Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let mut claims = json!({"sub":"d1","role":role,"fleet":"acme","exp":now_secs() + 3600});
    for (k, v) in extra.as_object().expect("claims") {
        claims[k] = v.clone();
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

/// The handshake's answer: the status and the error code of its body.
async fn handshake(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => (101, String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body: Value = res
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (res.status().as_u16(), code)
        }
        Err(e) => panic!("handshake failed otherwise: {e}"),
    }
}

#[tokio::test]
async fn tokens_not_yet_valid_from_the_future_or_expiring_after_year_9999_are_refused() {
    let app = spawn_app().await;
    let later = now_secs() + 3600;
    let bad_times = [
        ("nbf in an hour", json!({"nbf": later})),
        ("iat in an hour", json!({"iat": later})),
        ("exp 2^64 - 1", json!({"exp": u64::MAX})),
        ("exp after year 9999", json!({"exp": 253_402_300_800u64})),
    ];
    for (what, claims) in bad_times {
        for (path, role) in [("/ws/driver", "driver"), ("/ws/dashboard", "dispatcher")] {
            let token = token_with(role, claims.clone());
            let answer = handshake(&app.ws_url(path, &token)).await;
            assert_eq!(answer, (401, "token_invalid".into()), "{what} on {path}");
        }
        let token = token_with("driver", claims.clone());
        let res = app
            .http
            .get(app.url("/api/v1/me"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status().as_u16(), 401, "{what} on /api/v1/me");
        let body: Value = res.json().await.expect("JSON error body");
        assert_eq!(body["error"]["code"], "token_invalid", "{what}");
    }
    // The same claims with sane times are accepted, and stay open.
    let good = token_with(
        "driver",
        json!({"nbf": now_secs() - 10, "iat": now_secs(), "exp": now_secs() + 3600}),
    );
    let mut client = Client::connect(&app.ws_url("/ws/driver", &good)).await;
    client.next_of("welcome").await;
    client
        .send(&json!({"type":"pos","seq":1,"ts":now_ms(),"lat":-12.0,"lon":-77.0}))
        .await;
    assert_eq!(client.next_of("ack").await["seq"], 1);
}
