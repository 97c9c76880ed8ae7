use fleethub::auth::Role;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["ready"], true);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_hub_counters() {
    let app = spawn_app().await;
    let mut d = app.driver("d1", "acme").await;
    d.publish(1, now_ms(), -12.05, -77.04).await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "fleethub_connections",
        "fleethub_positions_received_total",
        "fleethub_ack_latency_seconds_bucket",
        "fleethub_dashboard_queued_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn the_drivers_api_is_fleet_scoped_and_filters_by_bbox() {
    let app = spawn_app().await;
    let mut a = app.driver("a", "acme").await;
    let mut p = app.driver("p", "acme").await;
    let mut z = app.driver("z", "zeta").await;
    let t = now_ms();
    a.publish(1, t, -12.05, -77.04).await;
    p.publish(1, t, 48.85, 2.35).await;
    z.publish(1, t, -12.05, -77.04).await;
    let get = |token: String, query: &'static str| {
        let req = app
            .http
            .get(app.url(&format!("/api/v1/drivers{query}")))
            .bearer_auth(token);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let ids = |v: &Value| {
        let mut ids: Vec<String> = v["drivers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["driver"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let acme = app.token(Role::Dispatcher, "x", Some("acme"));
    assert_eq!(ids(&get(acme.clone(), "").await), ["a", "p"]);
    assert_eq!(ids(&get(acme, "?bbox=-78,-13,-76,-11").await), ["a"]);
    let admin = app.token(Role::Admin, "ops", None);
    assert_eq!(
        ids(&get(admin.clone(), "?bbox=-78,-13,-76,-11").await),
        ["a", "z"]
    );
    let listing = get(admin.clone(), "?bbox=-78,-13,-76,-11").await;
    assert_eq!(listing["drivers"][0]["status"], "online");
    assert!(listing["drivers"][0]["last_seen"].is_i64());
    let bad = app
        .http
        .get(app.url("/api/v1/drivers?bbox=1,2,3"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_bbox"
    );
}

#[tokio::test]
async fn the_subscriptions_api_shows_each_dashboards_boxes() {
    let app = spawn_app().await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("view", [-77.2, -12.3, -76.8, -11.9]).await;
    let admin = app.token(Role::Admin, "ops", None);
    let body: Value = app
        .http
        .get(app.url("/api/v1/subscriptions"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dash0 = &body["dashboards"][0];
    assert_eq!(dash0["fleet"], "acme");
    assert_eq!(dash0["subscriptions"][0]["id"], "view");
    assert_eq!(dash0["subscriptions"][0]["bbox"][0], -77.2);
}
