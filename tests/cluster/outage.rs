//! Redis failing under the nodes, provoked for real against the test's own
//! redis-server: killed and restarted, its pub/sub connections dropped (by
//! `CLIENT KILL` and by the output-buffer limit), stalled by `DEBUG SLEEP`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::helpers::now_ms;

/// A driver on A seen live by a dashboard on A and one on B.
struct Scene {
    pair: Pair,
    from: i64,
    d: Driver,
    dash_a: Watcher,
    dash_b: Watcher,
}

async fn scene() -> Scene {
    scene_on(Pair::start().await).await
}

async fn scene_on(pair: Pair) -> Scene {
    let from = now_ms() - 1000;
    let mut dash_a = pair.a.dashboard(Some("acme")).await;
    dash_a.subscribe("lima", LIMA).await;
    let mut dash_b = pair.b.dashboard(Some("acme")).await;
    dash_b.subscribe("lima", LIMA).await;
    let mut d = pair.a.driver("d1", "acme", IN_LIMA).await;
    d.step_until_seen_by(&mut dash_b, Duration::from_secs(5))
        .await;
    Scene {
        pair,
        from,
        d,
        dash_a,
        dash_b,
    }
}

impl Scene {
    /// One position on A: acked within `ack_limit` and shown on A's own
    /// dashboard within a second.
    async fn local_step(&mut self, ack_limit: Duration) {
        let (seq, ts, took) = self.d.step().await;
        assert!(
            took < ack_limit,
            "seq {seq} was acked after {took:?} (limit {ack_limit:?})"
        );
        self.dash_a
            .until(
                "A's own dashboard shows its driver",
                Duration::from_secs(1),
                |w| w.seen.get(&key("acme", "d1")).and_then(|s| s.live_ts) >= Some(ts),
            )
            .await;
    }

    /// Resubscriptions counted by both nodes.
    async fn resubscribes(&self) -> f64 {
        self.pair
            .a
            .metric("fleethub_cluster_resubscribes_total")
            .await
            + self
                .pair
                .b
                .metric("fleethub_cluster_resubscribes_total")
                .await
    }

    /// Every position the driver had acked is in the shared trail, once.
    async fn trail_is_complete(&self) {
        let seqs = self.pair.b.trail_seqs("d1", "acme", self.from).await;
        assert_eq!(seqs, (1..=self.d.seq).collect::<Vec<u64>>());
    }
}

#[tokio::test]
async fn redis_killed_and_restarted_local_service_goes_on_and_cross_node_delivery_resumes_within_5_s()
 {
    let mut s = scene().await;
    wait_until(Duration::from_secs(5), "A's cluster link is up", || async {
        s.pair.a.metric_opt("fleethub_cluster_link_up").await == Some(1.0)
    })
    .await;
    assert_eq!(s.pair.a.readyz().await["cluster"], "ok");
    let dropped_before = s.pair.a.metric("fleethub_cluster_dropped_total").await;

    s.pair.redis().kill().await;
    let down = Instant::now();
    // Local service is unaffected: acks and A's own dashboard.
    for _ in 0..10 {
        s.local_step(Duration::from_secs(1)).await;
    }
    for node in [&s.pair.a, &s.pair.b] {
        wait_until(
            Duration::from_secs(5),
            &format!("node {}'s /readyz says the cluster is degraded", node.id),
            || async {
                let r = node.readyz().await;
                r["cluster"] == "degraded"
            },
        )
        .await;
        // The node itself stays ready: it serves its own clients.
        assert_eq!(node.readyz().await["ready"], true);
        wait_until(
            Duration::from_secs(5),
            &format!("node {}'s fleethub_cluster_link_up is 0", node.id),
            || async { node.metric_opt("fleethub_cluster_link_up").await == Some(0.0) },
        )
        .await;
    }
    for _ in 0..5 {
        s.local_step(Duration::from_secs(1)).await;
    }
    assert!(
        s.pair.a.metric("fleethub_cluster_dropped_total").await > dropped_before,
        "positions made while the link was down are counted as dropped"
    );
    let snapshots_before = s
        .dash_b
        .frames
        .iter()
        .filter(|f| f["type"] == "snapshot")
        .count();
    eprintln!("Redis was down for {:?}", down.elapsed());

    s.pair.redis().restart().await;
    // Measured from the moment Redis answers PING again.
    let back = Instant::now();
    let took =
        s.d.step_until_seen_by(&mut s.dash_b, Duration::from_secs(5))
            .await;
    eprintln!("cross-node delivery resumed {took:?} after Redis came back");
    assert!(back.elapsed() < Duration::from_secs(5));
    // B re-snapshots its dashboard's region, so no stale remote position stays.
    s.dash_b
        .until(
            "a fresh snapshot on B's dashboard after the reconnect",
            Duration::from_secs(5),
            |w| w.frames.iter().filter(|f| f["type"] == "snapshot").count() > snapshots_before,
        )
        .await;
    for node in [&s.pair.a, &s.pair.b] {
        wait_until(
            Duration::from_secs(5),
            &format!("node {}'s link is up again", node.id),
            || async {
                node.metric_opt("fleethub_cluster_link_up").await == Some(1.0)
                    && node.readyz().await["cluster"] == "ok"
            },
        )
        .await;
    }
    // The shared state was republished: B's listing has A's driver at its newest fix.
    let last = s.d.last_ts;
    wait_until(
        Duration::from_secs(5),
        "B lists A's driver at its newest fix",
        || async {
            let rows = s.pair.b.drivers(Some("acme"), None).await;
            row_of(&rows, "acme", "d1").is_some_and(|r| r["ts"] == last)
        },
    )
    .await;
    s.trail_is_complete().await;
}

#[tokio::test]
async fn pubsub_connections_killed_by_redis_are_rebuilt_and_cross_node_delivery_resumes() {
    let s = &mut scene().await;
    let resubscribed = s.pair.b.metric("fleethub_cluster_resubscribes_total").await;
    let killed = s
        .pair
        .redis()
        .cli(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .await;
    assert!(
        killed.trim().parse::<u32>().is_ok_and(|n| n >= 2),
        "CLIENT KILL TYPE pubsub killed each node's pub/sub connection (and only those): {killed}"
    );
    let at = Instant::now();
    // Local service never stopped.
    s.local_step(Duration::from_secs(1)).await;
    let took =
        s.d.step_until_seen_by(&mut s.dash_b, Duration::from_secs(6))
            .await;
    eprintln!("cross-node delivery resumed {took:?} after CLIENT KILL TYPE pubsub");
    assert!(at.elapsed() < Duration::from_secs(6));
    wait_until(
        Duration::from_secs(2),
        "B counts a resubscription",
        || async { s.pair.b.metric("fleethub_cluster_resubscribes_total").await > resubscribed },
    )
    .await;
    s.trail_is_complete().await;
}

#[tokio::test]
async fn a_pubsub_connection_cut_at_its_output_buffer_limit_is_rebuilt_and_delivery_resumes() {
    let s = &mut scene().await;
    // A listens to its own region too (its dashboard): either node's
    // connection may be the one cut.
    let resubscribed = s.resubscribes().await;
    // Redis 7.0 logs each client it cuts at its output-buffer limit.
    let cuts = |log: String| log.matches("overcoming of output buffer limits").count();
    let cut_before = cuts(s.pair.redis().log());
    s.pair
        .redis()
        .cli(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 1kb 1kb 0",
        ])
        .await;
    // Many drivers on A in B's region: one Redis message carries many
    // positions, more than 1 KiB, and B's subscriber connection is cut.
    let mut crowd = Vec::new();
    for i in 0..30 {
        let at = (IN_LIMA.0 + 0.001 * i as f64, IN_LIMA.1);
        crowd.push(s.pair.a.driver(&format!("c{i}"), "acme", at).await);
    }
    let flood = Instant::now();
    loop {
        for d in crowd.iter_mut() {
            d.send_next().await;
        }
        for d in crowd.iter_mut() {
            let seq = d.seq;
            d.conn.ack_covering(seq).await;
        }
        if cuts(s.pair.redis().log()) > cut_before {
            break;
        }
        assert!(
            flood.elapsed() < Duration::from_secs(10),
            "Redis did not cut a pub/sub connection at its output-buffer limit"
        );
    }
    let at = Instant::now();
    s.pair
        .redis()
        .cli(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 32mb 8mb 60",
        ])
        .await;
    s.local_step(Duration::from_secs(1)).await;
    let took =
        s.d.step_until_seen_by(&mut s.dash_b, Duration::from_secs(6))
            .await;
    eprintln!("cross-node delivery resumed {took:?} after the output-buffer cut");
    assert!(at.elapsed() < Duration::from_secs(6));
    wait_until(
        Duration::from_secs(2),
        "a node counts a resubscription",
        || async { s.resubscribes().await > resubscribed },
    )
    .await;
    // Every crowd driver ends at its newest fix on B's dashboard (snapshot or live).
    let newest: Vec<(String, i64)> = crowd.iter().map(|d| (d.id.clone(), d.last_ts)).collect();
    s.dash_b
        .until(
            "B's dashboard converges to every crowd driver's newest fix",
            Duration::from_secs(10),
            |w| {
                newest
                    .iter()
                    .all(|(id, ts)| w.seen.get(&key("acme", id)).is_some_and(|s| s.ts >= *ts))
            },
        )
        .await;
    s.trail_is_complete().await;
}

#[tokio::test]
async fn a_redis_stalled_by_debug_sleep_does_not_delay_local_acks_and_delivery_resumes_after() {
    let s = &mut scene().await;
    let port = s.pair.redis().port;
    let mut sleeper = tokio::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "DEBUG", "SLEEP", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-cli starts");
    // Redis is stalled once a PING goes unanswered.
    wait_until(Duration::from_secs(2), "Redis stalls", || async {
        !ping(port, Duration::from_millis(200)).await
    })
    .await;
    let stalled = Instant::now();
    // While it sleeps: positions every 100 ms, each acked within a second
    // and shown on A's own dashboard.
    let mut during = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while stalled.elapsed() < Duration::from_millis(2000) {
        tick.tick().await;
        s.local_step(Duration::from_secs(1)).await;
        if sleeper.try_wait().expect("the sleeper").is_none() {
            during += 1;
        }
    }
    assert!(
        during >= 10,
        "only {during} positions were acked while Redis slept"
    );
    let status = sleeper.wait().await.expect("DEBUG SLEEP returns");
    assert!(status.success());
    let woke = Instant::now();
    let took =
        s.d.step_until_seen_by(&mut s.dash_b, Duration::from_secs(5))
            .await;
    eprintln!(
        "{during} positions acked during the stall; cross-node delivery resumed {took:?} after it"
    );
    assert!(woke.elapsed() < Duration::from_secs(5));
    s.trail_is_complete().await;
}

#[tokio::test]
async fn a_driver_that_reconnects_while_redis_is_down_is_seen_on_other_nodes_once_it_is_back() {
    let mut s = scene().await;
    // The driver's app loses its socket while Redis is down and comes back
    // to the same node: its claim cannot reach Redis.
    s.pair.redis().kill().await;
    wait_until(Duration::from_secs(5), "A's link is down", || async {
        s.pair.a.readyz().await["cluster"] == "degraded"
    })
    .await;
    let (at, last_ts) = (s.d.at, s.d.last_ts);
    drop(std::mem::replace(
        &mut s.d,
        s.pair.a.driver("d1", "acme", at).await,
    ));
    s.d.last_ts = last_ts;
    s.local_step(Duration::from_secs(1)).await;
    s.pair.redis().restart().await;
    let back = Instant::now();
    let took =
        s.d.step_until_seen_by(&mut s.dash_b, Duration::from_secs(5))
            .await;
    eprintln!(
        "the driver reconnected during the outage was seen on B {took:?} after Redis came back"
    );
    assert!(back.elapsed() < Duration::from_secs(5));
    // And it stays the one session: A's ownership re-check does not evict it.
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while back.elapsed() < Duration::from_secs(3) {
        tick.tick().await;
        s.local_step(Duration::from_secs(1)).await;
    }
    s.trail_is_complete().await;
}

#[tokio::test]
async fn a_driver_that_reconnects_after_redis_restarted_empty_is_seen_on_other_nodes() {
    let mut s = scene().await;
    // The driver reconnects to A a few times: B has heard of it at a later epoch.
    for _ in 0..3 {
        let (at, last_ts) = (s.d.at, s.d.last_ts);
        drop(std::mem::replace(
            &mut s.d,
            s.pair.a.driver("d1", "acme", at).await,
        ));
        s.d.last_ts = last_ts;
        s.d.step_until_seen_by(&mut s.dash_b, Duration::from_secs(5))
            .await;
    }
    // Redis restarts empty (no persistence), and the link comes back...
    s.pair.redis().kill().await;
    s.pair.redis().restart().await;
    wait_until(Duration::from_secs(5), "A's link is back", || async {
        s.pair.a.readyz().await["cluster"] == "ok"
    })
    .await;
    // ...then the driver's app reconnects to A once more.
    let (at, last_ts) = (s.d.at, s.d.last_ts);
    drop(std::mem::replace(
        &mut s.d,
        s.pair.a.driver("d1", "acme", at).await,
    ));
    s.d.last_ts = last_ts;
    let took =
        s.d.step_until_seen_by(&mut s.dash_b, Duration::from_secs(5))
            .await;
    eprintln!("the driver reconnected after the empty restart was seen on B after {took:?}");
    s.trail_is_complete().await;
}

#[tokio::test]
async fn a_pubsub_connection_that_goes_deaf_while_open_is_caught_by_the_probe_and_rebuilt() {
    let (pair, proxy) = Pair::start_behind_proxy().await;
    let s = &mut scene_on(pair).await;
    let resubscribed = s.resubscribes().await;
    // Both nodes' pub/sub connections stay open and hear nothing; their
    // command connections work: a node that looks healthy but is deaf.
    let deafened = proxy.deafen_pubsub();
    assert!(deafened >= 2, "{deafened} pub/sub connections deafened");
    let at = Instant::now();
    // Local service goes on meanwhile.
    s.local_step(Duration::from_secs(1)).await;
    // The probe (probe_timeout_ms, 3 s) notices, the connection is rebuilt,
    // cross-node delivery resumes.
    let took =
        s.d.step_until_seen_by(&mut s.dash_b, Duration::from_secs(8))
            .await;
    eprintln!("cross-node delivery resumed {took:?} after the pub/sub connections went deaf");
    assert!(at.elapsed() < Duration::from_secs(8));
    wait_until(
        Duration::from_secs(2),
        "a node counts a resubscription",
        || async { s.resubscribes().await > resubscribed },
    )
    .await;
    s.trail_is_complete().await;
}
