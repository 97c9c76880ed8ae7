//! Events on several nodes: each is produced once, whichever node stores
//! the fix and however the driver moves between nodes; it reaches the
//! dashboards of every node; `offline`, swept by both nodes, is raised once.

use std::time::Duration;

use fleethub::auth::Role;
use serde_json::{Value, json};

use crate::harness::*;
use crate::helpers::now_ms;

/// A square of about 220 m around (lat, lon).
fn square(lat: f64, lon: f64) -> Value {
    let d = 0.001;
    json!({
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[
            [lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d], [lon - d, lat - d]
        ]]},
        "properties": {"name": "depot"},
    })
}

/// Sends one fix `secs` after `t0` at `lon` (on the depot's latitude) and waits for its ack.
async fn fix_at(d: &mut Driver, seq: u64, t0: i64, secs: i64, lon: f64) {
    let (lat, _) = IN_LIMA;
    d.conn
        .client
        .send(&json!({"type": "pos", "seq": seq, "ts": t0 + secs * 1000, "lat": lat, "lon": lon}))
        .await;
    d.conn.ack_covering(seq).await;
}

async fn kinds(node: &Node, token: &str) -> Vec<String> {
    let (status, body) = node
        .get_json("/api/v1/events?driver=d1&from=0", token)
        .await;
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().cloned().unwrap_or_default();
    events
        .iter()
        .rev()
        .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn events_of(watcher: &Watcher, kind: &str) -> usize {
    watcher
        .frames
        .iter()
        .filter(|f| f["type"] == "event" && f["kind"] == kind)
        .count()
}

#[tokio::test]
async fn events_are_produced_once_across_nodes_and_reach_every_nodes_dashboards() {
    let pair = Pair::start().await;
    let dispatcher = token(Role::Dispatcher, "ops", Some("acme"));
    let (lat, lon) = IN_LIMA;
    let created = pair
        .b
        .http
        .post(pair.b.url("/api/v1/geofences"))
        .bearer_auth(&dispatcher)
        .json(&square(lat, lon))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 201);
    wait_until(Duration::from_secs(10), "A holds B's fence", || async {
        pair.a.metric("fleethub_geofences").await == 1.0
    })
    .await;
    let mut on_b = pair.b.dashboard(Some("acme")).await;
    let mut on_a = pair.a.dashboard(Some("acme")).await;

    // Enters through A: stored once, seen live on both nodes.
    let t0 = now_ms() - 600_000;
    let mut d = pair.a.driver("d1", "acme", IN_LIMA).await;
    fix_at(&mut d, 1, t0, 0, lon - 0.01).await;
    fix_at(&mut d, 2, t0, 10, lon).await;
    on_b.until(
        "B's dashboard shows the enter",
        Duration::from_secs(10),
        |w| events_of(w, "geofence_enter") == 1,
    )
    .await;
    on_a.until(
        "A's dashboard shows the enter",
        Duration::from_secs(10),
        |w| events_of(w, "geofence_enter") == 1,
    )
    .await;

    // The driver's app moves to B and resends the fix A stored, then leaves.
    drop(d);
    let mut d = pair.b.driver("d1", "acme", IN_LIMA).await;
    fix_at(&mut d, 2, t0, 10, lon).await;
    fix_at(&mut d, 3, t0, 20, lon + 0.0005).await;
    fix_at(&mut d, 4, t0, 30, lon + 0.01).await;
    assert_eq!(
        kinds(&pair.a, &dispatcher).await,
        ["geofence_enter", "geofence_exit"]
    );
    on_a.until(
        "A's dashboard shows the exit",
        Duration::from_secs(10),
        |w| events_of(w, "geofence_exit") == 1,
    )
    .await;

    // Both nodes sweep for silent drivers; the offline is raised once.
    let put = pair
        .a
        .http
        .put(pair.a.url("/api/v1/alert-rules"))
        .bearer_auth(&dispatcher)
        .json(&json!({"offline_after_secs": 1}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 200);
    drop(d);
    wait_until(Duration::from_secs(15), "one offline event", || async {
        kinds(&pair.b, &dispatcher)
            .await
            .iter()
            .filter(|k| *k == "offline")
            .count()
            == 1
    })
    .await;
    on_a.until(
        "A's dashboard shows the offline",
        Duration::from_secs(10),
        |w| events_of(w, "offline") == 1,
    )
    .await;
    on_b.until(
        "B's dashboard shows the offline",
        Duration::from_secs(10),
        |w| events_of(w, "offline") == 1,
    )
    .await;
    // Each event is counted by the node that stored it: three in all.
    let raised = pair
        .a
        .metric_opt("fleethub_events_total")
        .await
        .unwrap_or(0.0)
        + pair
            .b
            .metric_opt("fleethub_events_total")
            .await
            .unwrap_or(0.0);
    assert_eq!(raised, 3.0, "each event stored by one node only");
    assert_eq!(
        kinds(&pair.b, &dispatcher).await,
        ["geofence_enter", "geofence_exit", "offline"]
    );
}
