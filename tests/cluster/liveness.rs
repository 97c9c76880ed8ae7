//! Node liveness: a node killed with SIGKILL, and a node restarted under the
//! same id (a new incarnation), leave no ghost online on the other node.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::helpers::Ended;

/// Drivers d1 and d2 on A, seen live by `dash` on B.
async fn two_drivers_on_a_seen_on_b(pair: &Pair, dash: &mut Watcher) -> (Driver, Driver) {
    dash.subscribe("lima", LIMA).await;
    let mut d1 = pair.a.driver("d1", "acme", IN_LIMA).await;
    let mut d2 = pair
        .a
        .driver("d2", "acme", (IN_LIMA.0 + 0.01, IN_LIMA.1))
        .await;
    d1.step_until_seen_by(dash, Duration::from_secs(5)).await;
    d2.step_until_seen_by(dash, Duration::from_secs(5)).await;
    assert_eq!(dash.status_of("acme", "d1"), Some("online"));
    assert_eq!(dash.status_of("acme", "d2"), Some("online"));
    (d1, d2)
}

/// Waits until B's dashboard and B's listing show d1 offline, within 10 s of
/// `since`, and checks that d2 stays online in both.
async fn d1_offline_d2_online_on_b(pair: &Pair, dash: &mut Watcher, since: Instant) {
    let left = Duration::from_secs(10).saturating_sub(since.elapsed());
    dash.until("B's dashboard shows d1 offline within 10 s", left, |w| {
        w.status_of("acme", "d1") == Some("offline")
    })
    .await;
    eprintln!(
        "d1 offline on B's dashboard {:?} after the kill",
        since.elapsed()
    );
    let left = Duration::from_secs(10).saturating_sub(since.elapsed());
    wait_until(left, "B's listing shows d1 offline", || async {
        let rows = pair.b.drivers(Some("acme"), None).await;
        row_of(&rows, "acme", "d1").is_some_and(|r| r["status"] == "offline")
    })
    .await;
    assert_eq!(
        dash.status_of("acme", "d2"),
        Some("online"),
        "d2 reconnected: it stays online; frames: {}",
        dash.last_frames(8)
    );
    let rows = pair.b.drivers(Some("acme"), None).await;
    let d2 = row_of(&rows, "acme", "d2").expect("B lists d2");
    assert_eq!(d2["status"], "online", "{d2}");
    // A fresh dashboard on B agrees.
    let mut fresh = pair.b.dashboard(Some("acme")).await;
    let snap = fresh.subscribe("lima", LIMA).await;
    let drivers = snap["drivers"].as_array().cloned().unwrap_or_default();
    let status = |d: &str| row_of(&drivers, "acme", d).map(|r| r["status"].clone());
    assert_eq!(status("d1"), Some("offline".into()), "{snap}");
    assert_eq!(status("d2"), Some("online".into()), "{snap}");
    // No ghost comes back: for longer than a node timeout (5 s), B's
    // listing and snapshots keep d1 offline and d2 online.
    let watch = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while watch.elapsed() < Duration::from_secs(6) {
        tick.tick().await;
        let rows = pair.b.drivers(Some("acme"), None).await;
        let listed = |d: &str| row_of(&rows, "acme", d).map(|r| r["status"].clone());
        assert_eq!(
            (listed("d1"), listed("d2")),
            (Some("offline".into()), Some("online".into())),
            "B's listing {:?} after the kill: {rows:?}",
            since.elapsed()
        );
        let snap = fresh.subscribe("lima", LIMA).await;
        let drivers = snap["drivers"].as_array().cloned().unwrap_or_default();
        let shown = |d: &str| row_of(&drivers, "acme", d).map(|r| r["status"].clone());
        assert_eq!(
            (shown("d1"), shown("d2")),
            (Some("offline".into()), Some("online".into())),
            "B's snapshot {:?} after the kill: {snap}",
            since.elapsed()
        );
    }
    assert_eq!(dash.status_of("acme", "d1"), Some("offline"));
    assert_eq!(dash.status_of("acme", "d2"), Some("online"));
}

#[tokio::test]
async fn after_kill_9_of_node_a_its_drivers_show_offline_on_node_b_within_10_s_except_those_that_moved()
 {
    let mut pair = Pair::start().await;
    let mut dash = pair.b.dashboard(Some("acme")).await;
    let (_d1, mut d2) = two_drivers_on_a_seen_on_b(&pair, &mut dash).await;

    // d2 moves to B before A dies.
    let mut d2b = pair.b.driver("d2", "acme", d2.at).await;
    d2b.last_ts = d2.last_ts;
    assert_eq!(d2.ended().await, Ended::Closed(4001, "replaced".into()));
    let (_, ts, _) = d2b.step().await;
    dash.until("d2's position from B", Duration::from_secs(5), |w| {
        w.seen.get(&key("acme", "d2")).is_some_and(|s| s.ts >= ts)
    })
    .await;

    pair.a.kill9().await;
    let killed = Instant::now();
    d1_offline_d2_online_on_b(&pair, &mut dash, killed).await;
    // d2 is still served by B.
    d2b.step().await;
}

#[tokio::test]
async fn a_node_restarted_under_the_same_id_leaves_no_ghost_of_its_old_drivers() {
    let mut pair = Pair::start().await;
    let mut dash = pair.b.dashboard(Some("acme")).await;
    let (_d1, d2) = two_drivers_on_a_seen_on_b(&pair, &mut dash).await;

    // kill -9, then at once the same node id again: its heartbeat never
    // stops, only its incarnation changes.
    pair.a.kill9().await;
    let killed = Instant::now();
    pair.a.restart().await;
    eprintln!("A restarted {:?} after the kill", killed.elapsed());
    // Its link up (a driver that connects before is another test's matter:
    // outage::a_driver_that_reconnects_while_redis_is_down_...).
    wait_until(
        Duration::from_secs(5),
        "the new A linked through Redis",
        || async { pair.a.readyz().await["cluster"] == "ok" },
    )
    .await;
    // d2 comes back to the new A; d1 does not.
    let old_seq = d2.seq;
    let mut d2 = {
        let mut again = pair.a.driver("d2", "acme", d2.at).await;
        again.last_ts = d2.last_ts;
        again
    };
    assert_eq!(d2.welcome_last_seq(), old_seq);
    // Live delivery across nodes is at most once: it keeps sending until seen.
    d2.step_until_seen_by(&mut dash, Duration::from_secs(5))
        .await;
    d1_offline_d2_online_on_b(&pair, &mut dash, killed).await;
    // The new A does not show its old incarnation's d1 online either.
    let rows = pair.a.drivers(Some("acme"), None).await;
    if let Some(d1) = row_of(&rows, "acme", "d1") {
        assert_eq!(d1["status"], "offline", "{d1}");
    }
}
