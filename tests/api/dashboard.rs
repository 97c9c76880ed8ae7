use crate::helpers::*;

const LIMA: [f64; 4] = [-77.2, -12.3, -76.8, -11.9];

#[tokio::test]
async fn a_dashboard_receives_positions_inside_its_box_and_none_outside() {
    let app = spawn_app().await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("main", LIMA).await;
    let mut outside = app.driver("far", "acme").await;
    let mut inside = app.driver("near", "acme").await;
    let t = now_ms();
    // Acked means published: the outside position is fanned out (or not) before the inside one.
    outside.publish(1, t, 48.85, 2.35).await;
    inside.publish(1, t, -12.05, -77.04).await;
    let items = dash.items_until("near").await;
    assert!(
        item_of(&items, "far").is_none(),
        "nothing from outside the box"
    );
    let near = item_of(&items, "near").unwrap();
    assert_eq!(near["fleet"], "acme");
    assert_eq!(near["lat"], -12.05);
    assert_eq!(near["lon"], -77.04);
    assert_eq!(near["ts"], t);
    assert_eq!(near["speed"], 5.0);
    assert_eq!(near["heading"], 90.0);
}

#[tokio::test]
async fn subscribing_sends_a_snapshot_of_the_last_positions_inside_the_box() {
    let app = spawn_app().await;
    let mut a = app.driver("a", "acme").await;
    let mut b = app.driver("b", "acme").await;
    let t = now_ms();
    a.publish(1, t, -12.05, -77.04).await;
    a.publish(2, t + 1000, -12.06, -77.05).await;
    b.publish(1, t, 48.85, 2.35).await;
    let mut dash = app.dashboard(Some("acme")).await;
    let snapshot = dash.subscribe("main", LIMA).await;
    assert_eq!(snapshot["id"], "main");
    let drivers = snapshot["drivers"].as_array().unwrap();
    assert_eq!(drivers.len(), 1, "{snapshot}");
    assert_eq!(drivers[0]["driver"], "a");
    assert_eq!(
        drivers[0]["ts"],
        t + 1000,
        "the last position, not an older one"
    );
    assert_eq!(drivers[0]["status"], "online");
}

#[tokio::test]
async fn a_dispatcher_sees_only_its_fleet_and_an_admin_sees_all() {
    let app = spawn_app().await;
    let mut acme = app.dashboard(Some("acme")).await;
    let mut admin = app.dashboard(None).await;
    acme.subscribe("main", LIMA).await;
    admin.subscribe("main", LIMA).await;
    let mut other = app.driver("rival", "zeta").await;
    let mut ours = app.driver("ours", "acme").await;
    let t = now_ms();
    other.publish(1, t, -12.05, -77.04).await;
    ours.publish(1, t, -12.05, -77.04).await;
    let seen = acme.items_until("ours").await;
    assert!(
        item_of(&seen, "rival").is_none(),
        "another fleet stays hidden"
    );
    let mut admin_seen = admin.items_until("ours").await;
    if item_of(&admin_seen, "rival").is_none() {
        admin_seen.extend(admin.items_until("rival").await);
    }
    assert!(item_of(&admin_seen, "rival").is_some());
    // The same holds for snapshots.
    let mut late_acme = app.dashboard(Some("acme")).await;
    let snap = late_acme.subscribe("x", LIMA).await;
    let ids: Vec<_> = snap["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["driver"].clone())
        .collect();
    assert_eq!(ids, vec!["ours"]);
}

#[tokio::test]
async fn a_box_across_the_antimeridian_sees_both_sides() {
    let app = spawn_app().await;
    let mut dash = app.dashboard(Some("fiji")).await;
    dash.subscribe("pacific", [179.0, -19.0, -179.0, -17.0])
        .await;
    let mut east = app.driver("east", "fiji").await;
    let mut west = app.driver("west", "fiji").await;
    let mut away = app.driver("away", "fiji").await;
    let t = now_ms();
    away.publish(1, t, -18.0, 0.0).await;
    east.publish(1, t, -18.0, 179.5).await;
    west.publish(1, t, -18.0, -179.5).await;
    let mut items = dash.items_until("west").await;
    if item_of(&items, "east").is_none() {
        items.extend(dash.items_until("east").await);
    }
    assert!(item_of(&items, "away").is_none());
}

#[tokio::test]
async fn a_driver_that_disconnects_is_shown_offline() {
    let app = spawn_app().await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("main", LIMA).await;
    let mut d = app.driver("d1", "acme").await;
    d.publish(1, now_ms(), -12.05, -77.04).await;
    drop(d);
    let status = dash.client.next_of("status").await;
    assert_eq!(status["driver"], "d1");
    assert_eq!(status["fleet"], "acme", "a driver is its fleet and its id");
    assert_eq!(status["status"], "offline");
}

#[tokio::test]
async fn a_silent_driver_goes_offline_and_comes_back_online() {
    let app = spawn_app_with(|s| s.driver.offline_after_secs = 1).await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("main", LIMA).await;
    let mut d = app.driver("d1", "acme").await;
    d.publish(1, now_ms(), -12.05, -77.04).await;
    let status = dash.client.next_of("status").await;
    assert_eq!(status["status"], "offline");
    d.publish(2, now_ms(), -12.05, -77.04).await;
    let status = dash.client.next_of("status").await;
    assert_eq!(status["status"], "online");
}

#[tokio::test]
async fn bad_subscriptions_get_error_codes_and_the_dashboard_carries_on() {
    let app = spawn_app_with(|s| s.dashboard.max_subscriptions = 2).await;
    let mut dash = app.dashboard(Some("acme")).await;
    let cases = [
        (
            r#"{"type":"subscribe","id":"a","bbox":[0,10,1,5]}"#,
            "invalid_bbox",
        ),
        (
            r#"{"type":"subscribe","id":"a","bbox":[0,1]}"#,
            "invalid_bbox",
        ),
        (
            r#"{"type":"subscribe","id":"","bbox":[0,0,1,1]}"#,
            "invalid_id",
        ),
        (r#"{"type":"zoom"}"#, "unknown_type"),
        ("nope", "bad_json"),
    ];
    for (frame, code) in cases {
        dash.client.send_text(frame).await;
        assert_eq!(dash.client.next_of("error").await["code"], code, "{frame}");
    }
    dash.subscribe("a", LIMA).await;
    dash.subscribe("b", LIMA).await;
    dash.client
        .send_text(r#"{"type":"subscribe","id":"c","bbox":[0,0,1,1]}"#)
        .await;
    assert_eq!(
        dash.client.next_of("error").await["code"],
        "too_many_subscriptions"
    );
    // Replacing an id is not a new subscription, and unsubscribe frees a slot.
    dash.subscribe("a", [0.0, 0.0, 1.0, 1.0]).await;
    dash.client
        .send_text(r#"{"type":"unsubscribe","id":"b"}"#)
        .await;
    dash.subscribe("c", LIMA).await;
    eventually("two subscriptions in the index", || async {
        app.state.subscriptions.subscription_count() == 2
    })
    .await;
}

#[tokio::test]
async fn a_closed_dashboard_leaves_nothing_in_the_index() {
    let app = spawn_app().await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("main", LIMA).await;
    assert_eq!(app.state.subscriptions.subscription_count(), 1);
    drop(dash);
    eventually("the subscription is removed", || async {
        app.state.subscriptions.subscription_count() == 0
    })
    .await;
}

#[tokio::test]
async fn with_a_batching_interval_a_driver_is_coalesced_to_its_newest_position() {
    let app = spawn_app_with(|s| s.fanout.interval_ms = 300).await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("main", LIMA).await;
    let mut d = app.driver("d1", "acme").await;
    let t = now_ms();
    for seq in 1..=20u64 {
        d.send_pos(seq, t + seq as i64, -12.05, -77.04).await;
    }
    d.ack_covering(20).await;
    let items = dash.items_until_ts("d1", t + 20).await;
    assert!(
        items.len() < 20,
        "intermediate positions were coalesced: {}",
        items.len()
    );
}

#[tokio::test]
async fn each_position_reaches_a_dashboard_once_and_a_driver_leaving_the_box_is_seen_leaving() {
    let app = spawn_app().await;
    let mut dash = app.dashboard(Some("acme")).await;
    dash.subscribe("main", LIMA).await;
    let mut d = app.driver("d1", "acme").await;
    let t = now_ms();
    for seq in 1..=5u64 {
        d.publish(seq, t + seq as i64, -12.05 - seq as f64 * 0.001, -77.04)
            .await;
    }
    // The last fix is outside the box: it is delivered so the marker leaves the view.
    d.publish(6, t + 6, 48.85, 2.35).await;
    let items = dash.items_until_ts("d1", t + 6).await;
    let ts: Vec<i64> = items.iter().filter_map(|i| i["ts"].as_i64()).collect();
    assert_eq!(
        ts,
        (1..=6).map(|s| t + s).collect::<Vec<_>>(),
        "once each, in order"
    );
}
