//! OwnTracks over MQTT against the machine's real Mosquitto (127.0.0.1:1883;
//! the tests fail loudly without it). Each test has its own topic prefix and
//! client ids, so they run side by side on one broker; a real MQTT client
//! (rumqttc) plays the phone.

use fleethub::auth::Role;
use fleethub::config::Settings;
use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::helpers::{DEADLINE, TestApp, eventually, now_ms, spawn_app_in, spawn_app_with};

const BROKER: &str = "mqtt://127.0.0.1:1883";
/// Around Berlin, where every fix of these tests is.
const BBOX: [f64; 4] = [13.0, 52.0, 14.0, 53.0];

/// A test's own names on the shared broker.
struct Names {
    prefix: String,
    hub_id: String,
}

impl Names {
    fn new() -> Self {
        let tag = format!("{:08x}", rand::random::<u32>());
        Names {
            prefix: format!("fhtest-{tag}"),
            hub_id: format!("fhtest-hub-{tag}"),
        }
    }

    /// The hub's MQTT settings for this test.
    fn configure(&self) -> impl FnOnce(&mut Settings) + use<> {
        let (prefix, hub_id) = (self.prefix.clone(), self.hub_id.clone());
        move |s: &mut Settings| {
            s.mqtt.url = SecretString::from(BROKER);
            s.mqtt.topic_prefix = prefix;
            s.mqtt.client_id = hub_id;
        }
    }

    fn topic(&self, user: &str) -> String {
        format!("{}/{user}/pixel", self.prefix)
    }
}

/// A phone publishing with QoS 1: each publish returns once the broker has
/// acknowledged it (it is then the broker's to deliver).
struct Phone {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<Result<(), String>>,
}

impl Phone {
    async fn connect() -> Phone {
        let id = format!("fhtest-phone-{:08x}", rand::random::<u32>());
        let options = MqttOptions::new(id, "127.0.0.1", 1883);
        let (client, mut events) = AsyncClient::new(options, 16);
        let (tx, acks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let sent = match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => tx.send(Ok(())),
                    Ok(_) => continue,
                    Err(e) => tx.send(Err(format!(
                        "Mosquitto is required on 127.0.0.1:1883 for the MQTT tests: {e}"
                    ))),
                };
                if sent.is_err() {
                    return;
                }
            }
        });
        Phone { client, acks }
    }

    async fn publish(&mut self, topic: &str, payload: &Value) {
        self.publish_all(topic, std::slice::from_ref(payload)).await;
    }

    /// Publishes every payload without waiting, then waits for the broker's acks.
    async fn publish_all(&mut self, topic: &str, payloads: &[Value]) {
        for payload in payloads {
            self.client
                .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
                .await
                .expect("the phone's client takes the message");
        }
        for _ in payloads {
            self.broker_ack().await;
        }
    }

    async fn broker_ack(&mut self) {
        let ack = tokio::time::timeout(DEADLINE, self.acks.recv())
            .await
            .expect("the broker acknowledges the message in time")
            .expect("the phone's connection is running");
        if let Err(e) = ack {
            panic!("{e}");
        }
    }
}

/// An OwnTracks location `secs` seconds ago.
fn location(secs_ago: i64, lat: f64, lon: f64) -> Value {
    let tst = now_ms() / 1000 - secs_ago;
    json!({"_type": "location", "lat": lat, "lon": lon, "tst": tst, "acc": 5, "vel": 36, "cog": 90, "tid": "px"})
}

async fn readyz(app: &TestApp) -> Value {
    let res = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    res.json().await.unwrap_or(Value::Null)
}

/// Waits until the hub is connected and its subscription confirmed.
async fn subscribed(app: &TestApp) {
    eventually("the hub subscribes on the broker", || async {
        readyz(app).await["mqtt"] == "ok"
    })
    .await;
}

/// Registers OwnTracks device `id` for driver `driver` of fleet `acme`.
async fn register(app: &TestApp, id: &str, driver: &str) {
    app.register_device("acme", driver, id, "owntracks").await;
}

async fn trail(app: &TestApp, driver: &str) -> Vec<Value> {
    let from = now_ms() - 3_600_000;
    let res = app
        .http
        .get(app.url(&format!("/api/v1/drivers/{driver}/trail?from={from}")))
        .bearer_auth(app.token(Role::Dispatcher, "disp", Some("acme")))
        .send()
        .await
        .expect("request");
    // 404 until the driver has a first point.
    if res.status() == StatusCode::NOT_FOUND {
        return Vec::new();
    }
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap_or(Value::Null);
    body["points"].as_array().cloned().unwrap_or_default()
}

/// `fleethub_mqtt_messages_total{outcome}` (the recorder is process-wide:
/// it counts every hub of the test binary).
async fn counted(app: &TestApp, outcome: &str) -> f64 {
    let page = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let series = format!("fleethub_mqtt_messages_total{{outcome=\"{outcome}\"}}");
    page.lines()
        .filter_map(|l| l.strip_prefix(&series))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Ends the hub's session on the broker, so the tests leave none behind.
async fn forget_session(client_id: &str) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", 1883);
    options.set_clean_session(true);
    let (client, mut events) = AsyncClient::new(options, 4);
    let _ = tokio::time::timeout(DEADLINE, async {
        while let Ok(event) = events.poll().await {
            if matches!(event, Event::Incoming(Packet::ConnAck(_))) {
                let _ = client.try_disconnect();
            }
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                return;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_location_published_over_mqtt_reaches_dashboards_and_the_trail() {
    let names = Names::new();
    let app = spawn_app_with(names.configure()).await;
    subscribed(&app).await;
    register(&app, "phone1", "d1").await;
    let mut dashboard = app.dashboard(Some("acme")).await;
    dashboard.subscribe("s1", BBOX).await;

    let mut phone = Phone::connect().await;
    phone
        .publish(&names.topic("phone1"), &location(5, 52.51, 13.41))
        .await;

    let items = dashboard.items_until("d1").await;
    let item = items.iter().rev().find(|i| i["driver"] == "d1").unwrap();
    assert_eq!(
        (item["lat"].as_f64(), item["lon"].as_f64()),
        (Some(52.51), Some(13.41))
    );
    // 36 km/h is 10 m/s, as on every other path.
    assert_eq!(item["speed"].as_f64(), Some(10.0));
    eventually("the fix is in the trail", || async {
        trail(&app, "d1").await.len() == 1
    })
    .await;
    assert_eq!(trail(&app, "d1").await[0]["lat"], 52.51);

    app.stopped().await;
    forget_session(&names.hub_id).await;
}

#[tokio::test]
async fn positions_published_while_the_hub_is_down_are_stored_once_it_is_back() {
    let names = Names::new();
    let app = spawn_app_with(names.configure()).await;
    subscribed(&app).await;
    register(&app, "phone1", "d1").await;
    let db = app.stopped().await;

    // The hub is gone; its session on the broker keeps what comes meanwhile.
    let mut phone = Phone::connect().await;
    for i in 0..5 {
        let fix = location(60 - i * 10, 52.5 + i as f64 * 0.01, 13.4);
        phone.publish(&names.topic("phone1"), &fix).await;
    }

    let app = spawn_app_in(db, names.configure()).await;
    eventually("the five positions are in the trail", || async {
        trail(&app, "d1").await.len() == 5
    })
    .await;
    let lats: Vec<f64> = trail(&app, "d1")
        .await
        .iter()
        .filter_map(|p| p["lat"].as_f64())
        .collect();
    assert_eq!(lats, [52.5, 52.51, 52.52, 52.53, 52.54]);

    app.stopped().await;
    forget_session(&names.hub_id).await;
}

#[tokio::test]
async fn unregistered_users_and_other_message_types_are_dropped_and_counted() {
    let names = Names::new();
    let app = spawn_app_with(names.configure()).await;
    subscribed(&app).await;
    register(&app, "phone1", "d1").await;
    app.register_device("acme", "d2", "osm1", "osmand").await;
    let unregistered = counted(&app, "unregistered").await;
    let ignored = counted(&app, "ignored").await;
    let wrong_protocol = counted(&app, "wrong_protocol").await;

    let mut phone = Phone::connect().await;
    phone
        .publish(&names.topic("stranger"), &location(5, 52.5, 13.4))
        .await;
    let transition = json!({"_type": "transition", "event": "enter", "desc": "depot",
        "tst": now_ms() / 1000, "lat": 52.5, "lon": 13.4, "acc": 5, "t": "c"});
    phone.publish(&names.topic("phone1"), &transition).await;
    // An OsmAnd device's id is no OwnTracks user.
    phone
        .publish(&names.topic("osm1"), &location(4, 52.5, 13.4))
        .await;
    phone
        .publish(&names.topic("phone1"), &location(3, 52.52, 13.42))
        .await;

    eventually("the stranger's message is counted", || async {
        counted(&app, "unregistered").await > unregistered
    })
    .await;
    eventually("the transition is counted", || async {
        counted(&app, "ignored").await > ignored
    })
    .await;
    eventually("the OsmAnd device's message is counted", || async {
        counted(&app, "wrong_protocol").await > wrong_protocol
    })
    .await;
    eventually("the location is in the trail", || async {
        !trail(&app, "d1").await.is_empty()
    })
    .await;
    let points = trail(&app, "d1").await;
    assert_eq!(points.len(), 1, "only the location is stored: {points:?}");
    assert_eq!(points[0]["lat"], 52.52);
    assert!(trail(&app, "d2").await.is_empty());

    // Dropped messages were acked: a restarted hub is not sent them again.
    let stored = counted(&app, "stored").await;
    let db = app.stopped().await;
    let app = spawn_app_in(db, names.configure()).await;
    subscribed(&app).await;
    phone
        .publish(&names.topic("phone1"), &location(1, 52.53, 13.43))
        .await;
    eventually("the next location is stored", || async {
        trail(&app, "d1").await.len() == 2
    })
    .await;
    assert_eq!(counted(&app, "unregistered").await, unregistered + 1.0);
    assert!(counted(&app, "stored").await > stored);

    app.stopped().await;
    forget_session(&names.hub_id).await;
}

/// With the database gone the trail queue fills: a message the hub cannot
/// store is not acked, so the broker sends it again, and it is stored once
/// the database is back.
#[tokio::test]
async fn a_message_not_stored_is_not_acked_and_comes_back() {
    let names = Names::new();
    let proxy = crate::proxy::Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let port = proxy.port;
    let configure = names.configure();
    let app = spawn_app_with(|s| {
        use secrecy::ExposeSecret;
        configure(s);
        s.database.url = crate::helpers::via_port(s.database.url.expose_secret(), port).into();
        s.trails.queue_capacity = 2;
    })
    .await;
    subscribed(&app).await;
    register(&app, "phone1", "d1").await;
    let mut phone = Phone::connect().await;
    let topic = names.topic("phone1");
    phone.publish(&topic, &location(60, 52.5, 13.4)).await;
    eventually("the first fix is in the trail", || async {
        trail(&app, "d1").await.len() == 1
    })
    .await;

    let not_stored = counted(&app, "not_stored").await;
    proxy.cut();
    for i in 1..=4 {
        let fix = location(60 - i * 10, 52.5 + i as f64 * 0.01, 13.4);
        phone.publish(&topic, &fix).await;
    }
    eventually("a message is refused for storage", || async {
        counted(&app, "not_stored").await > not_stored
    })
    .await;
    proxy.restore();
    eventually("every fix is in the trail", || async {
        trail(&app, "d1").await.len() == 5
    })
    .await;

    app.stopped().await;
    forget_session(&names.hub_id).await;
}

/// The broker link goes down and comes back on its own: `/readyz` shows it
/// (`degraded`, the status unchanged), and positions flow again after it.
#[tokio::test]
async fn the_hub_reconnects_to_the_broker_by_itself() {
    let names = Names::new();
    let proxy = crate::proxy::Proxy::start("127.0.0.1:1883".parse().unwrap()).await;
    let port = proxy.port;
    let configure = names.configure();
    let app = spawn_app_with(|s| {
        configure(s);
        s.mqtt.url = SecretString::from(format!("mqtt://127.0.0.1:{port}"));
    })
    .await;
    subscribed(&app).await;
    register(&app, "phone1", "d1").await;

    proxy.cut();
    eventually("the link shows degraded", || async {
        readyz(&app).await["mqtt"] == "degraded"
    })
    .await;
    let res = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the broker does not make the hub unready"
    );
    proxy.restore();
    subscribed(&app).await;

    let mut phone = Phone::connect().await;
    phone
        .publish(&names.topic("phone1"), &location(5, 52.5, 13.4))
        .await;
    eventually("the fix is in the trail", || async {
        trail(&app, "d1").await.len() == 1
    })
    .await;

    app.stopped().await;
    forget_session(&names.hub_id).await;
}

/// With `mqtt.shared`, hubs subscribed to the same shared subscription
/// take each message once between them.
#[tokio::test]
async fn with_a_shared_subscription_each_message_is_taken_by_one_hub() {
    let names = Names::new();
    let hubs = [
        spawn_app_with(|s| {
            names.configure()(s);
            s.mqtt.shared = true;
            s.mqtt.client_id = format!("{}-a", names.hub_id);
        })
        .await,
        spawn_app_with(|s| {
            names.configure()(s);
            s.mqtt.shared = true;
            s.mqtt.client_id = format!("{}-b", names.hub_id);
        })
        .await,
    ];
    for hub in &hubs {
        subscribed(hub).await;
        // Each hub has its own database here: the device is in both.
        register(hub, "phone1", "d1").await;
    }
    let mut phone = Phone::connect().await;
    for i in 0..6 {
        let fix = location(60 - i * 10, 52.5 + i as f64 * 0.01, 13.4);
        phone.publish(&names.topic("phone1"), &fix).await;
    }
    let stored = || async {
        let mut n = 0;
        for hub in &hubs {
            n += trail(hub, "d1").await.len();
        }
        n
    };
    eventually("the six positions are stored", || async {
        stored().await >= 6
    })
    .await;
    assert_eq!(stored().await, 6, "no message is taken by both hubs");

    let [a, b] = hubs;
    a.stopped().await;
    b.stopped().await;
    forget_session(&format!("{}-a", names.hub_id)).await;
    forget_session(&format!("{}-b", names.hub_id)).await;
}

/// A burst larger than `mqtt.max_inflight`: what is past the bound is left
/// unacked and comes back, and every position is stored once.
#[tokio::test]
async fn a_burst_past_the_in_flight_bound_is_stored_whole() {
    let names = Names::new();
    let configure = names.configure();
    let app = spawn_app_with(|s| {
        configure(s);
        s.mqtt.max_inflight = 32;
    })
    .await;
    subscribed(&app).await;
    register(&app, "phone1", "d1").await;
    let mut phone = Phone::connect().await;
    let fixes: Vec<Value> = (0..100)
        .map(|i| location(600 - i * 5, 52.5, 13.4))
        .collect();
    phone.publish_all(&names.topic("phone1"), &fixes).await;
    eventually("the hundred positions are in the trail", || async {
        trail(&app, "d1").await.len() == 100
    })
    .await;

    app.stopped().await;
    forget_session(&names.hub_id).await;
}

#[tokio::test]
async fn the_input_filters_apply_to_mqtt_as_to_every_path() {
    let names = Names::new();
    let app = spawn_app_with(names.configure()).await;
    subscribed(&app).await;
    register(&app, "phone1", "d1").await;
    let filtered = |page: String| -> f64 {
        let series = "fleethub_positions_filtered_total{reason=\"zero\"}";
        page.lines()
            .filter_map(|l| l.strip_prefix(series))
            .find_map(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let metrics = || async {
        let res = app.http.get(app.url("/metrics")).send().await;
        res.expect("metrics").text().await.unwrap_or_default()
    };
    let before = filtered(metrics().await);

    let mut phone = Phone::connect().await;
    // (0, 0): what a GPS chip without a fix sends; dropped by `filters.zero`.
    phone
        .publish(&names.topic("phone1"), &location(10, 0.0, 0.0))
        .await;
    phone
        .publish(&names.topic("phone1"), &location(5, 52.51, 13.41))
        .await;
    eventually("the kept fix is in the trail", || async {
        !trail(&app, "d1").await.is_empty()
    })
    .await;
    let points = trail(&app, "d1").await;
    assert_eq!(points.len(), 1, "the (0, 0) fix is not stored: {points:?}");
    assert_eq!(points[0]["lat"], 52.51);
    assert!(filtered(metrics().await) > before, "the drop is counted");

    app.stopped().await;
    forget_session(&names.hub_id).await;
}
