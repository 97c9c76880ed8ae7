//! The WebSocket and HTTP paths share one ingest pipeline: the same bad
//! input gets the same codes (and, where no framing is involved, the same
//! messages) on both.

use serde_json::{Value, json};

use crate::helpers::{DriverClient, TestApp, now_ms, spawn_app_with};
use fleethub::auth::Role;

/// A refusal as either path reports it: seq, code, message.
type Refusal = (Option<u64>, String, String);

fn refusal(seq: &Value, code: &Value, message: &Value) -> Refusal {
    (
        seq.as_u64(),
        code.as_str().unwrap_or_default().to_owned(),
        message.as_str().unwrap_or_default().to_owned(),
    )
}

/// Sends a `batch` frame and reads the next `count` error frames.
async fn over_websocket(driver: &mut DriverClient, items: &[Value], count: usize) -> Vec<Refusal> {
    driver
        .client
        .send(&json!({"type": "batch", "items": items}))
        .await;
    read_errors(driver, count).await
}

async fn read_errors(driver: &mut DriverClient, count: usize) -> Vec<Refusal> {
    let mut errors = Vec::new();
    while errors.len() < count {
        let frame = driver.client.next_of("error").await;
        errors.push(refusal(&frame["seq"], &frame["code"], &frame["message"]));
    }
    errors
}

/// Posts the items; a refused request is one refusal (its body carries no seq).
async fn over_http(app: &TestApp, driver: &str, body: String) -> (u16, Vec<Refusal>) {
    let res = app
        .http
        .post(app.url("/api/v1/positions"))
        .bearer_auth(app.token(Role::Driver, driver, Some("acme")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the hub answers");
    let status = res.status().as_u16();
    let answer: Value = res.json().await.expect("a JSON answer");
    let refusals = match status {
        200 => answer["rejected"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| refusal(&r["seq"], &r["code"], &r["message"]))
            .collect(),
        _ => vec![refusal(
            &Value::Null,
            &answer["error"]["code"],
            &answer["error"]["message"],
        )],
    };
    (status, refusals)
}

fn without_seq(refusals: Vec<Refusal>) -> Vec<Refusal> {
    refusals.into_iter().map(|(_, c, m)| (None, c, m)).collect()
}

#[tokio::test]
async fn the_same_bad_input_gets_the_same_codes_over_websocket_and_http() {
    let app = spawn_app_with(|s| {
        s.driver.rate_per_sec = 1;
        s.driver.rate_burst = 20;
    })
    .await;
    // One driver per path: the rate limit is per driver, whatever the path.
    let mut ws = app.driver("over-ws", "acme").await;
    let start = now_ms() - 60_000;

    // Fixes refused one by one: same seq, code and message on both paths.
    let bad = vec![
        json!({"ts": start, "lat": 1.0, "lon": 1.0}),
        json!({"seq": 2, "ts": start, "lat": 91.0, "lon": 1.0}),
        json!({"seq": 3, "ts": now_ms() + 3_600_000, "lat": 1.0, "lon": 1.0}),
        json!({"seq": 9_007_199_254_740_993_u64, "ts": start, "lat": 1.0, "lon": 1.0}),
        json!({"seq": 5, "ts": start, "lon": 1.0}),
    ];
    let from_ws = over_websocket(&mut ws, &bad, bad.len()).await;
    let (status, from_http) = over_http(&app, "over-http", json!({"items": bad}).to_string()).await;
    assert_eq!(
        status, 200,
        "a batch with bad fixes is answered item by item"
    );
    assert_eq!(from_ws, from_http);
    assert!(
        from_ws
            .iter()
            .all(|(_, code, _)| code == "invalid_position")
    );

    // A batch over the limit: refused whole, same code and message.
    let too_many: Vec<Value> = (1..=1001)
        .map(|s| json!({"seq": s, "ts": start + s as i64, "lat": 1.0, "lon": 1.0}))
        .collect();
    let from_ws = over_websocket(&mut ws, &too_many, 1).await;
    assert_eq!(
        from_ws[0].0,
        Some(1001),
        "answered under the batch's highest seq"
    );
    let (status, from_http) =
        over_http(&app, "over-http", json!({"items": too_many}).to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(without_seq(from_ws), from_http);
    assert_eq!(from_http[0].1, "batch_too_large");

    // Over the driver's rate (more than a full bucket holds): refused whole,
    // same code and message.
    let burst: Vec<Value> = (10..35)
        .map(|s| json!({"seq": s, "ts": start + s as i64, "lat": 1.0, "lon": 1.0}))
        .collect();
    let from_ws = over_websocket(&mut ws, &burst, 1).await;
    let (status, from_http) =
        over_http(&app, "over-http", json!({"items": burst}).to_string()).await;
    assert_eq!(status, 429);
    assert_eq!(without_seq(from_ws), from_http);
    assert_eq!(from_http[0].1, "rate_limited");

    // Not JSON the hub can read: the same code (the message names the framing).
    ws.client
        .send_text(r#"{"type":"batch","items":[{"seq":"one"}]}"#)
        .await;
    let from_ws = read_errors(&mut ws, 1).await;
    let (status, from_http) =
        over_http(&app, "over-http", r#"{"items":[{"seq":"one"}]}"#.into()).await;
    assert_eq!(status, 400);
    assert_eq!(from_ws[0].1, "bad_json");
    assert_eq!(from_http[0].1, "bad_json");
}
