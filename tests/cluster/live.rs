//! Cross-node live delivery, snapshots and listings; fleet isolation and
//! region filtering across nodes; the same through a Redis Cluster.

use std::time::Duration;

use crate::harness::*;

/// A driver on A, a dashboard on B: live positions, then B's snapshot and
/// B's listing (with and without a box) show A's driver.
/// Returns the dashboards and the driver, still connected.
async fn a_driver_on_a_is_seen_on_b(pair: &Pair) -> (Watcher, Watcher, Driver) {
    let mut dash = pair.b.dashboard(Some("acme")).await;
    assert_eq!(dash.hello["node"], "b", "the dashboard is on node B");
    dash.subscribe("lima", LIMA).await;
    let mut d1 = pair.a.driver("d1", "acme", IN_LIMA).await;

    // Live delivery is at most once: B's subscription reaches Redis a little
    // after its snapshot, so the driver keeps sending until one gets through.
    let took = d1
        .step_until_seen_by(&mut dash, Duration::from_secs(5))
        .await;
    eprintln!("first cross-node position seen after {took:?}");
    // Once through, every next position is delivered live, quickly.
    for _ in 0..5 {
        let (_, ts, _) = d1.step().await;
        let took = dash
            .until(
                "the next position of A's driver on B's dashboard",
                Duration::from_secs(2),
                |w| w.seen.get(&key("acme", "d1")).and_then(|s| s.live_ts) >= Some(ts),
            )
            .await;
        assert!(
            took < Duration::from_secs(1),
            "a position took {took:?} from A to B"
        );
    }
    let last = d1.last_ts;
    let seen = &dash.seen[&key("acme", "d1")];
    assert_eq!(seen.lat, d1.at.0);
    assert_eq!(seen.lon, d1.at.1);

    // A dashboard that subscribes on B afterwards gets A's driver in its
    // snapshot, at its newest position (shared state is written in batches).
    let mut late = pair.b.dashboard(Some("acme")).await;
    let start = std::time::Instant::now();
    loop {
        let snap = late.subscribe("lima", LIMA).await;
        let drivers = snap["drivers"].as_array().cloned().unwrap_or_default();
        if row_of(&drivers, "acme", "d1")
            .is_some_and(|r| r["ts"] == last && r["status"] == "online")
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "B's snapshot does not hold A's driver at its newest fix ({last}): {snap}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // B's listing answers for the whole cluster, with or without a box.
    let rows = pair.b.drivers(Some("acme"), None).await;
    let row = row_of(&rows, "acme", "d1").unwrap_or_else(|| panic!("B lists A's driver: {rows:?}"));
    assert_eq!(row["ts"], last, "{row}");
    assert_eq!(row["status"], "online", "{row}");
    assert!(row["last_seen"].as_i64().is_some(), "{row}");
    let rows = pair.b.drivers(Some("acme"), Some(LIMA)).await;
    assert!(row_of(&rows, "acme", "d1").is_some(), "bbox=Lima: {rows:?}");
    let rows = pair.b.drivers(Some("acme"), Some(PARIS)).await;
    assert!(
        row_of(&rows, "acme", "d1").is_none(),
        "bbox=Paris: {rows:?}"
    );
    let rows = pair.b.drivers(Some("zeta"), None).await;
    assert!(
        row_of(&rows, "acme", "d1").is_none(),
        "another fleet: {rows:?}"
    );
    (dash, late, d1)
}

#[tokio::test]
async fn a_driver_on_node_a_is_seen_live_in_snapshots_and_listings_on_node_b() {
    let pair = Pair::start().await;
    a_driver_on_a_is_seen_on_b(&pair).await;
}

#[tokio::test]
async fn cross_node_delivery_works_through_a_three_master_redis_cluster_with_sharded_pubsub() {
    let pair = Pair::start_on_redis_cluster().await;
    let _still_watching = a_driver_on_a_is_seen_on_b(&pair).await;
    // The position channels were sharded channels (SSUBSCRIBE): B's
    // subscription shows on one of the masters.
    let Bus::Cluster(cluster) = &pair.bus else {
        unreachable!()
    };
    let mut sharded = Vec::new();
    for node in &cluster.nodes {
        let out = node
            .cli(&["PUBSUB", "SHARDCHANNELS", &format!("{}:pos:*", pair.prefix)])
            .await;
        sharded.extend(
            out.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned),
        );
    }
    assert!(
        !sharded.is_empty(),
        "no sharded position channel is subscribed on any master"
    );
}

#[tokio::test]
async fn fleets_and_regions_stay_apart_across_nodes_and_an_admin_sees_every_fleet() {
    let pair = Pair::start().await;
    // On B: a dispatcher of acme on Lima, one on Paris, an admin on both.
    let mut acme_lima = pair.b.dashboard(Some("acme")).await;
    acme_lima.subscribe("lima", LIMA).await;
    let mut acme_paris = pair.b.dashboard(Some("acme")).await;
    acme_paris.subscribe("paris", PARIS).await;
    let mut admin = pair.b.dashboard(None).await;
    admin.subscribe("lima", LIMA).await;
    admin.subscribe("paris", PARIS).await;
    // On A: acme's driver in Lima, acme's in Paris, zeta's in Lima (same id as acme's).
    let mut x_lima = pair.a.driver("x1", "acme", IN_LIMA).await;
    let mut x_paris = pair.a.driver("x2", "acme", IN_PARIS).await;
    let mut y_lima = pair.a.driver("x1", "zeta", IN_LIMA).await;

    // Until the admin has seen all three live (so each reached B)...
    let limit = Duration::from_secs(5);
    let start = std::time::Instant::now();
    loop {
        y_lima.step().await;
        x_lima.step().await;
        x_paris.step().await;
        let (y, xl, xp) = (y_lima.last_ts, x_lima.last_ts, x_paris.last_ts);
        let all = admin
            .try_until(Duration::from_millis(100), |w| {
                let live = |f: &str, d: &str| w.seen.get(&key(f, d)).and_then(|s| s.live_ts);
                live("zeta", "x1") >= Some(y)
                    && live("acme", "x1") >= Some(xl)
                    && live("acme", "x2") >= Some(xp)
            })
            .await;
        if all {
            break;
        }
        assert!(
            start.elapsed() < limit,
            "the admin on B did not see all three drivers of A"
        );
    }
    // ...then a last position of each acme driver, after everything of zeta's:
    // once a dispatcher has it, anything that leaked would have arrived before.
    let (_, xl, _) = x_lima.step().await;
    let (_, xp, _) = x_paris.step().await;
    acme_lima
        .until(
            "acme's Lima driver, live on B",
            Duration::from_secs(5),
            |w| w.seen.get(&key("acme", "x1")).and_then(|s| s.live_ts) >= Some(xl),
        )
        .await;
    acme_paris
        .until(
            "acme's Paris driver, live on B",
            Duration::from_secs(5),
            |w| w.seen.get(&key("acme", "x2")).and_then(|s| s.live_ts) >= Some(xp),
        )
        .await;
    admin
        .until(
            "both acme drivers on the admin's dashboard",
            Duration::from_secs(5),
            |w| {
                w.seen.get(&key("acme", "x1")).and_then(|s| s.live_ts) >= Some(xl)
                    && w.seen.get(&key("acme", "x2")).and_then(|s| s.live_ts) >= Some(xp)
            },
        )
        .await;

    assert!(
        !acme_lima.ever_shown("zeta", "x1"),
        "zeta's driver reached acme's dispatcher on B"
    );
    assert!(
        !acme_paris.ever_shown("zeta", "x1"),
        "zeta's driver reached acme's dispatcher on B"
    );
    assert!(
        !acme_lima.ever_shown("acme", "x2"),
        "a Paris driver reached B's Lima dashboard"
    );
    assert!(
        !acme_paris.ever_shown("acme", "x1"),
        "a Lima driver reached B's Paris dashboard"
    );
    for f in acme_lima.frames.iter().chain(&acme_paris.frames) {
        if let Some(fleet) = f["fleet"].as_str() {
            assert_eq!(fleet, "acme", "{f}");
        }
        for item in f["items"].as_array().into_iter().flatten() {
            assert_eq!(item["fleet"], "acme", "{f}");
        }
    }

    // Snapshots and listings on B keep the same walls.
    let mut late = pair.b.dashboard(Some("acme")).await;
    let snap = late.subscribe("lima", LIMA).await;
    let drivers = snap["drivers"].as_array().cloned().unwrap_or_default();
    assert!(row_of(&drivers, "acme", "x1").is_some(), "{snap}");
    assert!(row_of(&drivers, "zeta", "x1").is_none(), "{snap}");
    assert!(row_of(&drivers, "acme", "x2").is_none(), "{snap}");
    let rows = pair.b.drivers(Some("acme"), None).await;
    assert!(row_of(&rows, "acme", "x1").is_some(), "{rows:?}");
    assert!(row_of(&rows, "acme", "x2").is_some(), "{rows:?}");
    assert!(row_of(&rows, "zeta", "x1").is_none(), "{rows:?}");
    let rows = pair.b.drivers(None, None).await;
    for (f, d) in [("acme", "x1"), ("acme", "x2"), ("zeta", "x1")] {
        assert!(
            row_of(&rows, f, d).is_some(),
            "the admin lists {f}/{d}: {rows:?}"
        );
    }
    let mut late_admin = pair.b.dashboard(None).await;
    let snap = late_admin.subscribe("world", WORLD).await;
    let drivers = snap["drivers"].as_array().cloned().unwrap_or_default();
    for (f, d) in [("acme", "x1"), ("acme", "x2"), ("zeta", "x1")] {
        assert!(
            row_of(&drivers, f, d).is_some(),
            "admin snapshot has {f}/{d}: {snap}"
        );
    }
}
