//! Traffic between nodes follows what is watched: a node with no dashboards
//! receives no position messages, however much the other node's drivers send.

use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn a_node_without_dashboards_receives_no_position_messages() {
    let pair = Pair::start().await;
    // A watches its own drivers; B has no dashboard at all.
    let mut dash_a = pair.a.dashboard(None).await;
    dash_a.subscribe("world", WORLD).await;
    let channels_before = pair.b.metric("fleethub_cluster_channels").await;
    let messages_before = pair
        .b
        .metric("fleethub_cluster_messages_received_total")
        .await;

    let mut drivers = Vec::new();
    for i in 0..20 {
        let fleet = if i % 2 == 0 { "acme" } else { "zeta" };
        let at = if i % 4 < 2 { IN_LIMA } else { IN_PARIS };
        drivers.push(pair.a.driver(&format!("d{i}"), fleet, at).await);
    }
    let committed_before = pair
        .a
        .metric("fleethub_trail_committed_positions_total")
        .await;
    for _ in 0..10 {
        for d in drivers.iter_mut() {
            d.send_next().await;
        }
        for d in drivers.iter_mut() {
            let seq = d.seq;
            d.conn.ack_covering(seq).await;
        }
    }
    // A handled them all and showed them to its own dashboard.
    assert!(
        pair.a
            .metric("fleethub_trail_committed_positions_total")
            .await
            - committed_before
            >= 200.0
    );
    let newest: Vec<_> = drivers
        .iter()
        .map(|d| (d.fleet.clone(), d.id.clone(), d.last_ts))
        .collect();
    dash_a
        .until(
            "A's dashboard shows every driver's newest fix",
            Duration::from_secs(5),
            |w| {
                newest
                    .iter()
                    .all(|(f, d, ts)| w.seen.get(&key(f, d)).is_some_and(|s| s.ts == *ts))
            },
        )
        .await;
    // A's batches were flushed (flush_ms) long before its dashboard had the
    // last of them; anything sent to B would be there by now.
    let published = pair
        .a
        .metric("fleethub_cluster_positions_published_total")
        .await;
    let messages_after = pair
        .b
        .metric("fleethub_cluster_messages_received_total")
        .await;
    let received = pair
        .b
        .metric("fleethub_cluster_positions_received_total")
        .await;
    eprintln!(
        "A published {published} positions; B received {received} positions in {} messages",
        messages_after - messages_before
    );
    assert_eq!(received, 0.0, "B, without dashboards, received positions");
    assert_eq!(
        messages_after, messages_before,
        "B, without dashboards, received position messages"
    );
    assert_eq!(
        pair.b.metric("fleethub_cluster_channels").await,
        channels_before,
        "B subscribed to position channels without a dashboard"
    );
    assert_eq!(
        pair.b.metric("fleethub_cluster_remote_drivers").await,
        0.0,
        "B holds remote drivers without a dashboard"
    );
    // No position channel in Redis has a subscriber but A's own (if A listens to its own).
    let pos_channels = pair
        .b_redis_pubsub_channels(&format!("{}:pos:*", pair.prefix))
        .await;
    for ch in &pos_channels {
        let numsub = pair.redis_numsub(ch).await;
        assert!(
            numsub <= 1,
            "{ch} has {numsub} subscribers: B subscribed to it"
        );
    }

    // The counter works: once B has a dashboard on Lima, it receives.
    let mut dash_b = pair.b.dashboard(Some("acme")).await;
    dash_b.subscribe("lima", LIMA).await;
    let d0 = &mut drivers[0];
    assert_eq!((d0.fleet.as_str(), d0.at.0), ("acme", IN_LIMA.0));
    d0.step_until_seen_by(&mut dash_b, Duration::from_secs(5))
        .await;
    wait_until(
        Duration::from_secs(2),
        "B counts received positions",
        || async {
            pair.b
                .metric("fleethub_cluster_positions_received_total")
                .await
                > 0.0
        },
    )
    .await;
}

impl Pair {
    async fn b_redis_pubsub_channels(&self, pattern: &str) -> Vec<String> {
        let Bus::Single(redis) = &self.bus else {
            unreachable!()
        };
        redis
            .cli(&["PUBSUB", "CHANNELS", pattern])
            .await
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    async fn redis_numsub(&self, channel: &str) -> u64 {
        let Bus::Single(redis) = &self.bus else {
            unreachable!()
        };
        let out = redis.cli(&["PUBSUB", "NUMSUB", channel]).await;
        out.lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn a_dashboard_that_stops_reading_does_not_hold_up_what_its_node_hears_from_redis() {
    let pair = Pair::start().await;
    // On B: a dashboard that never reads (a tiny receive buffer) and one that does.
    let t = pair
        .b
        .token(fleethub::auth::Role::Dispatcher, "stuck", Some("acme"));
    let mut stuck = crate::helpers::Client::connect_with_small_buffer(
        &pair.b.ws_url("/ws/dashboard", &t),
        pair.b.port,
    )
    .await;
    stuck
        .send(&serde_json::json!({"type": "subscribe", "id": "lima", "bbox": LIMA}))
        .await;
    let mut dash = pair.b.dashboard(Some("acme")).await;
    dash.subscribe("lima", LIMA).await;
    let mut drivers = Vec::new();
    for i in 0..50 {
        let at = (IN_LIMA.0 + 0.001 * i as f64, IN_LIMA.1);
        drivers.push(pair.a.driver(&format!("s{i}"), "acme", at).await);
    }
    drivers[0]
        .step_until_seen_by(&mut dash, Duration::from_secs(5))
        .await;
    let resubscribed = pair.b.metric("fleethub_cluster_resubscribes_total").await;
    let received = pair
        .b
        .metric("fleethub_cluster_positions_received_total")
        .await;
    // Four seconds of every driver sending as fast as it is acked: the
    // reading dashboard keeps up, B keeps hearing its own probe.
    let flood = std::time::Instant::now();
    let mut rounds = 0;
    while flood.elapsed() < Duration::from_secs(4) {
        for d in drivers.iter_mut() {
            d.send_next().await;
        }
        for d in drivers.iter_mut() {
            let seq = d.seq;
            d.conn.ack_covering(seq).await;
        }
        rounds += 1;
        let newest: Vec<(String, i64)> =
            drivers.iter().map(|d| (d.id.clone(), d.last_ts)).collect();
        dash.until(
            "B's reading dashboard shows this round's positions",
            Duration::from_secs(1),
            |w| {
                newest
                    .iter()
                    .all(|(id, ts)| w.seen.get(&key("acme", id)).is_some_and(|s| s.ts >= *ts))
            },
        )
        .await;
    }
    let heard = pair
        .b
        .metric("fleethub_cluster_positions_received_total")
        .await
        - received;
    eprintln!("{rounds} rounds of 50 positions; B received {heard} positions");
    assert!(heard > 0.0);
    assert_eq!(
        pair.b.metric("fleethub_cluster_resubscribes_total").await,
        resubscribed,
        "B rebuilt its pub/sub connection: its probe went unheard behind the stuck dashboard"
    );
    assert_eq!(
        pair.b.metric_opt("fleethub_cluster_link_up").await,
        Some(1.0)
    );
    assert!(
        pair.b.metric("fleethub_coalesced_drops_total").await > 0.0,
        "the stuck dashboard's queue coalesced (it did fill up)"
    );
    drop(stuck);
}
