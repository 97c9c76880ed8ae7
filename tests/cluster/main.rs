//! Cluster tests (issue 12): two real hub processes sharing one fresh
//! PostgreSQL database, kept in sync through a real `redis-server` of their
//! own (or a three-master Redis Cluster), each test with its own key prefix.
//! Failures are provoked for real: `kill -9` of a node, Redis killed and
//! restarted, its pub/sub connections cut, Redis stalled.
//!
//! Needs `redis-server` and `redis-cli` (Redis 7) on the PATH and PostgreSQL
//! on 127.0.0.1:5432 (trust auth; `FLEETHUB_TEST_PG` overrides): without
//! them the tests fail, they never skip.

#[path = "../api/helpers.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;

mod alerts;
mod failover;
mod geofences;
mod harness;
mod live;
mod liveness;
mod outage;
mod takeover;
mod tls;
mod traffic;

use std::time::Duration;

use harness::*;

/// The harness itself: Redis starts, answers, dies and comes back on its
/// port; a Redis Cluster forms; two nodes share one database.
#[tokio::test]
async fn the_harness_runs_redis_a_redis_cluster_and_two_nodes_on_one_database() {
    let mut redis = Redis::start().await;
    assert!(redis.cli(&["SET", "k", "v"]).await.contains("OK"));
    assert!(redis.info_cpu().await >= 0.0);
    let pid = redis.pid();
    redis.kill().await;
    assert!(
        !ping(redis.port, Duration::from_millis(200)).await,
        "killed"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "redis-server {pid} is gone"
    );
    redis.restart().await;
    assert!(
        redis.cli(&["GET", "k"]).await.trim().is_empty(),
        "a fresh, empty Redis"
    );

    let cluster = RedisCluster::start().await;
    assert_eq!(cluster.url().split(',').count(), 3);

    let mut pair = Pair::start().await;
    for node in [&pair.a, &pair.b] {
        let (status, _) = node.get_json("/healthz", "").await;
        assert_eq!(status, 200);
        assert_eq!(node.readyz().await["database"], "ok");
    }
    // One database: what A stores, B's welcome knows.
    let mut d = pair.a.driver("h1", "acme", IN_LIMA).await;
    d.step().await;
    let on_b = pair.b.driver("h1", "acme", IN_LIMA).await;
    assert_eq!(on_b.welcome_last_seq(), 1);
    drop(on_b);
    let pid = pair.a.pid();
    pair.a.kill9().await;
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "node a ({pid}) is gone"
    );
    pair.a.restart().await;
    let again = pair.a.driver("h1", "acme", IN_LIMA).await;
    assert_eq!(again.welcome_last_seq(), 1);
}
