//! Geofences on several nodes: a fence created, changed or deleted through
//! one node is in every node's index (`fleethub_geofences`), and a node whose
//! link to Redis comes back reloads the fences it may have missed.

use std::time::Duration;

use fleethub::auth::Role;
use serde_json::{Value, json};

use crate::harness::*;

const FENCES: &str = "fleethub_geofences";

/// A depot in Lima, a circle of 200 m.
fn depot(radius_m: f64) -> Value {
    json!({
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [-77.03, -12.05]},
        "properties": {"name": "depot", "radius_m": radius_m},
    })
}

async fn fences_on(node: &Node, count: f64, what: &str) {
    wait_until(Duration::from_secs(10), what, || async {
        node.metric(FENCES).await == count
    })
    .await;
}

#[tokio::test]
async fn a_fence_changed_through_one_node_is_in_every_nodes_index() {
    let mut pair = Pair::start().await;
    let dispatcher = token(Role::Dispatcher, "ops", Some("acme"));
    let created = pair
        .a
        .http
        .post(pair.a.url("/api/v1/geofences"))
        .bearer_auth(&dispatcher)
        .json(&depot(200.0))
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 201);
    let fence: Value = created.json().await.expect("the fence");
    let id = fence["id"].as_str().expect("an id").to_owned();
    fences_on(&pair.a, 1.0, "A holds the fence it stored").await;
    fences_on(&pair.b, 1.0, "B reloads the fence A created").await;

    // Deleted through B: gone from A's index too.
    let deleted = pair
        .b
        .http
        .delete(pair.b.url(&format!("/api/v1/geofences/{id}")))
        .bearer_auth(&dispatcher)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(deleted.status(), 204);
    fences_on(&pair.a, 0.0, "A drops the fence B deleted").await;

    // A change while Redis is away reaches the other node when it is back.
    pair.redis().kill().await;
    let created = pair
        .a
        .http
        .post(pair.a.url("/api/v1/geofences"))
        .bearer_auth(&dispatcher)
        .json(&depot(300.0))
        .send()
        .await
        .expect("POST");
    assert_eq!(
        created.status(),
        201,
        "the database, not Redis, stores fences"
    );
    fences_on(
        &pair.a,
        1.0,
        "A holds the fence stored while Redis was away",
    )
    .await;
    assert_eq!(pair.b.metric(FENCES).await, 0.0, "B cannot know yet");
    pair.redis().restart().await;
    fences_on(&pair.b, 1.0, "B reloads once the links are back").await;
}
