use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_new_driver_is_welcomed_with_its_identity() {
    let app = spawn_app().await;
    let d = app.driver("d1", "acme").await;
    assert_eq!(d.welcome["driver"], "d1");
    assert_eq!(d.welcome["fleet"], "acme");
    assert_eq!(d.welcome["last_seq"], 0);
}

#[tokio::test]
async fn acks_are_cumulative_over_positions_and_batches() {
    let app = spawn_app().await;
    let mut d = app.driver("d1", "acme").await;
    let t = now_ms();
    d.send_pos(1, t, -12.05, -77.04).await;
    d.send_pos(2, t + 1000, -12.05, -77.04).await;
    let items: Vec<_> = (3..=10)
        .map(|s| json!({"seq": s, "ts": t + s as i64 * 1000, "lat": -12.05, "lon": -77.04}))
        .collect();
    d.client.send(&json!({"type":"batch","items":items})).await;
    let seen = d.ack_covering(10).await;
    let acks: Vec<u64> = seen.iter().filter_map(|v| v["seq"].as_u64()).collect();
    assert!(
        acks.windows(2).all(|w| w[0] < w[1]),
        "acks only grow: {acks:?}"
    );
    assert_eq!(acks.last(), Some(&10));
}

/// Every error code is answered with an error frame, and the connection goes on:
/// the next valid position is still acked.
#[tokio::test]
async fn every_bad_message_gets_its_error_code_and_the_connection_carries_on() {
    let app = spawn_app_with(|s| {
        s.driver.rate_per_sec = 1;
        s.driver.rate_burst = 40;
        s.driver.max_batch_items = 5;
    })
    .await;
    let mut d = app.driver("d1", "acme").await;
    let t = now_ms();
    let over = app.state.settings.ws.max_frame_bytes;
    let big = format!(r#"{{"type":"pos","pad":"{}"}}"#, "x".repeat(over));
    let too_many: Vec<_> = (100..106)
        .map(|s| json!({"seq": s, "ts": t, "lat": 0.0, "lon": 0.0}))
        .collect();
    let cases: Vec<(&str, String)> = vec![
        ("bad_json", "{not json".into()),
        ("unknown_type", json!({"type":"teleport"}).to_string()),
        (
            "invalid_position",
            json!({"type":"pos","seq":50,"ts":t,"lat":91.0,"lon":0.0}).to_string(),
        ),
        (
            "invalid_position",
            json!({"type":"pos","seq":51,"ts":t + 3_600_000,"lat":1.0,"lon":0.0}).to_string(),
        ),
        (
            "batch_too_large",
            json!({"type":"batch","items":too_many}).to_string(),
        ),
        ("frame_too_large", big),
        (
            "forbidden",
            json!({"type":"pos","driver":"d2","seq":52,"ts":t,"lat":0.0,"lon":0.0}).to_string(),
        ),
    ];
    let mut seq = 200;
    for (code, frame) in cases {
        d.client.send_text(&frame).await;
        let err = d.client.next_of("error").await;
        assert_eq!(err["code"], code, "for {frame:.60}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
        seq += 1;
        d.publish(seq, t + seq as i64, -12.05, -77.04).await;
    }
    // Rate limit: the bucket (burst 40, already partly used) runs dry within a batch of 5s.
    let mut limited = false;
    for round in 0..20 {
        let items: Vec<_> = (0..5)
            .map(|i| {
                seq += 1;
                json!({"seq": seq, "ts": t + 1000 + round * 10 + i, "lat": 0.0, "lon": 0.0})
            })
            .collect();
        d.client.send(&json!({"type":"batch","items":items})).await;
        let frames = d.ack_covering(seq).await;
        if frames.iter().any(|f| f["code"] == "rate_limited") {
            limited = true;
            break;
        }
    }
    assert!(limited, "the rate limit answered rate_limited");
}

#[tokio::test]
async fn sustained_abuse_closes_the_connection_with_1008() {
    let app = spawn_app_with(|s| {
        s.driver.abuse_per_sec = 1;
        s.driver.abuse_burst = 5;
    })
    .await;
    let mut d = app.driver("d1", "acme").await;
    for _ in 0..10 {
        d.client.send_text("garbage").await;
    }
    assert_eq!(
        d.client.ended().await,
        Ended::Closed(1008, "too many bad messages".into())
    );
}

#[tokio::test]
async fn a_second_connection_of_the_same_driver_replaces_the_first_with_4001() {
    let app = spawn_app().await;
    let mut first = app.driver("d1", "acme").await;
    let mut second = app.driver("d1", "acme").await;
    assert_eq!(
        first.client.ended().await,
        Ended::Closed(4001, "replaced".into())
    );
    // The replacement keeps working and stays registered.
    second.publish(1, now_ms(), -12.05, -77.04).await;
    assert_eq!(app.state.registry.len(), 1);
}

#[tokio::test]
async fn a_late_position_is_acked_but_never_moves_the_live_marker_back() {
    let app = spawn_app().await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("main", [-78.0, -13.0, -76.0, -11.0]).await;
    let mut d = app.driver("d1", "acme").await;
    let t = now_ms();
    d.publish(1, t, -12.0, -77.0).await;
    // An offline buffer flushed late: older fix time, higher seq.
    d.publish(2, t - 30_000, -12.5, -77.5).await;
    d.publish(3, t + 1000, -12.1, -77.1).await;
    let items = dash.items_until_ts("d1", t + 1000).await;
    let ts: Vec<i64> = items
        .iter()
        .filter(|i| i["driver"] == "d1")
        .filter_map(|i| i["ts"].as_i64())
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] < w[1]),
        "ts never decreases: {ts:?}"
    );
    assert!(!ts.contains(&(t - 30_000)));
    // The REST view agrees: the live marker is the newest fix.
    let token = app.token(fleethub::auth::Role::Dispatcher, "x", Some("acme"));
    let body: serde_json::Value = app
        .http
        .get(app.url("/api/v1/drivers"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["drivers"][0]["ts"], t + 1000);
}

#[tokio::test]
async fn shutdown_closes_driver_sessions_with_1001() {
    let app = spawn_app().await;
    let mut d = app.driver("d1", "acme").await;
    app.stop().await;
    assert_eq!(
        d.client.ended().await,
        Ended::Closed(1001, "server shutting down".into())
    );
}

/// With the database gone the trail queue fills, and the driver is told
/// `storage_unavailable` instead of losing anything; once it is back, acks resume.
#[tokio::test]
async fn a_full_trail_queue_answers_storage_unavailable_and_acks_resume_after_recovery() {
    let proxy = crate::proxy::Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let port = proxy.port;
    let app = spawn_app_with(|s| {
        use secrecy::ExposeSecret;
        s.database.url = via_port(s.database.url.expose_secret(), port).into();
        s.trails.queue_capacity = 3;
    })
    .await;
    let mut d = app.driver("d1", "acme").await;
    let t = now_ms();
    d.publish(1, t, -12.05, -77.04).await;
    proxy.cut();
    for seq in 2..=4 {
        d.send_pos(seq, t + seq as i64, -12.05, -77.04).await;
    }
    d.send_pos(5, t + 5, -12.05, -77.04).await;
    let err = d.client.next_of("error").await;
    assert_eq!(err["code"], "storage_unavailable");
    assert_eq!(err["seq"], 5);
    proxy.restore();
    eventually("the queue drains after recovery", || async {
        app.state.writer.queued() == 0
    })
    .await;
    d.send_pos(6, t + 6, -12.05, -77.04).await;
    let frames = d.ack_covering(6).await;
    assert!(frames.iter().all(|f| f["type"] == "ack"), "{frames:?}");
    let driver = crate::helpers::driver_key("acme", "d1");
    let stored = app.state.store.last_seq(&driver).await.unwrap();
    assert_eq!(stored, 6);
}

#[tokio::test]
async fn a_driver_that_closes_first_gets_its_close_answered() {
    let app = spawn_app().await;
    let mut d = app.driver("d1", "acme").await;
    d.client.ws.close(None).await.unwrap();
    assert_eq!(d.client.ended().await, Ended::Closed(1000, "bye".into()));
    eventually("the driver is unregistered", || async {
        app.state.registry.is_empty()
    })
    .await;
}
