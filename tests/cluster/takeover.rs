//! One owner per driver across nodes: takeover with 4001, `welcome.last_seq`
//! and exactly-once trails across it; a driver flapping between the nodes.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;
use crate::helpers::{Ended, now_ms};

#[tokio::test]
async fn a_driver_moving_from_a_to_b_closes_its_session_on_a_with_4001_and_its_trail_has_no_duplicate()
 {
    let pair = Pair::start().await;
    let from = now_ms() - 1000;
    let mut dash = pair.b.dashboard(Some("acme")).await;
    dash.subscribe("lima", LIMA).await;
    let mut on_a = pair.a.driver("d1", "acme", IN_LIMA).await;
    assert_eq!(on_a.welcome_last_seq(), 0);
    for _ in 1..=5 {
        on_a.step().await;
    }
    assert_eq!(on_a.seq, 5);

    // The same driver connects to B (its app lost A and found B).
    let moved = Instant::now();
    let mut on_b = pair.b.driver("d1", "acme", on_a.at).await;
    assert_eq!(
        on_b.welcome_last_seq(),
        5,
        "B's welcome counts what A stored: {}",
        on_b.conn.welcome
    );
    let ended = on_a.ended().await;
    let took = moved.elapsed();
    assert_eq!(ended, Ended::Closed(4001, "replaced".into()));
    assert!(
        took < Duration::from_secs(1),
        "A closed the replaced session {took:?} after the driver connected to B"
    );
    eprintln!("A closed the replaced session {took:?} after the driver connected to B");

    // The app resends from seq 3 (it had not seen the acks of 3..5), then 6..8.
    let mut items: Vec<_> = on_a.sent[2..]
        .iter()
        .map(|&(seq, ts, lat, lon)| json!({"seq": seq, "ts": ts, "lat": lat, "lon": lon}))
        .collect();
    on_b.seq = 5;
    on_b.last_ts = on_a.last_ts;
    for _ in 6..=8 {
        on_b.seq += 1;
        on_b.last_ts += 1000;
        on_b.at.1 += 0.0001;
        items
            .push(json!({"seq": on_b.seq, "ts": on_b.last_ts, "lat": on_b.at.0, "lon": on_b.at.1}));
    }
    on_b.conn
        .client
        .send(&json!({"type": "batch", "items": items}))
        .await;
    on_b.conn.ack_covering(8).await;
    assert_eq!(
        pair.b.trail_seqs("d1", "acme", from).await,
        (1..=8).collect::<Vec<u64>>(),
        "every seq once"
    );
    assert_eq!(
        pair.a.trail_seqs("d1", "acme", from).await,
        (1..=8).collect::<Vec<u64>>()
    );

    // B's dashboard ends with the driver online at its newest fix; one session in the cluster.
    let last = on_b.last_ts;
    dash.until(
        "the driver at its newest fix on B",
        Duration::from_secs(5),
        |w| {
            w.seen
                .get(&key("acme", "d1"))
                .is_some_and(|s| s.ts == last && s.status == "online")
        },
    )
    .await;
    wait_until(
        Duration::from_secs(5),
        "one driver session: on B",
        || async {
            metric_with(
                &pair.a.metrics_text().await,
                "fleethub_connections",
                r#"kind="driver""#,
            ) == 0.0
                && metric_with(
                    &pair.b.metrics_text().await,
                    "fleethub_connections",
                    r#"kind="driver""#,
                ) == 1.0
        },
    )
    .await;
    let takeovers = pair.a.metric("fleethub_cluster_takeovers_total").await
        + pair.b.metric("fleethub_cluster_takeovers_total").await;
    assert!(
        takeovers >= 1.0,
        "fleethub_cluster_takeovers_total counts the takeover"
    );
}

#[tokio::test]
async fn a_driver_flapping_between_nodes_ends_with_one_live_session_the_newest() {
    let pair = Pair::start().await;
    let from = now_ms() - 1000;
    let nodes = [&pair.a, &pair.b, &pair.a, &pair.b];
    let mut sessions: Vec<Driver> = Vec::new();
    let mut at = IN_LIMA;
    let mut last_ts = 0;
    for node in nodes {
        let mut d = node.driver("f1", "acme", at).await;
        d.last_ts = last_ts;
        // One position on each, acked, before moving on: quick flapping.
        d.step().await;
        at = d.at;
        last_ts = d.last_ts;
        sessions.push(d);
    }
    let mut newest = sessions.pop().expect("four sessions");
    for (i, mut old) in sessions.into_iter().enumerate() {
        let ended = old.ended().await;
        assert_eq!(
            ended,
            Ended::Closed(4001, "replaced".into()),
            "session {} (on {}) was replaced",
            i + 1,
            if i % 2 == 0 { "A" } else { "B" }
        );
    }
    // No ping-pong: the newest session outlives several heartbeats and
    // ownership re-checks, its positions acked (a close fails the step).
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(3) {
        tick.tick().await;
        let (_, _, took) = newest.step().await;
        assert!(took < Duration::from_secs(1), "an ack took {took:?}");
    }
    assert_eq!(
        metric_with(
            &pair.a.metrics_text().await,
            "fleethub_connections",
            r#"kind="driver""#
        ),
        0.0,
        "no driver session left on A"
    );
    assert_eq!(
        metric_with(
            &pair.b.metrics_text().await,
            "fleethub_connections",
            r#"kind="driver""#
        ),
        1.0,
        "one driver session on B"
    );
    let seqs = pair.b.trail_seqs("f1", "acme", from).await;
    assert_eq!(seqs, (1..=newest.seq).collect::<Vec<u64>>());
    // Both nodes list it once, online.
    for node in [&pair.a, &pair.b] {
        let rows = node.drivers(Some("acme"), None).await;
        let rows: Vec<_> = rows.iter().filter(|r| r["driver"] == "f1").collect();
        assert_eq!(rows.len(), 1, "node {} lists f1 once: {rows:?}", node.id);
        assert_eq!(rows[0]["status"], "online", "on node {}", node.id);
    }
}
