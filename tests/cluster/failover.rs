//! Failover: 300 simulated drivers spread over two nodes, dashboards on
//! both; `kill -9` of one node. Light in-test clients that do what an app
//! does: take two hub URLs, move to the other when theirs fails, resend what
//! was not acked (`seq > welcome.last_seq`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sqlx::{Connection, Row};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;
use crate::helpers::{Ws, now_ms};
use fleethub::auth::Role;

const DRIVERS: usize = 300;
const FLEET: &str = "acme";
/// Each driver sends one fix a second for this long...
const RUN: Duration = Duration::from_secs(10);
/// ...and node A is killed this far into the run.
const KILL_AT: Duration = Duration::from_secs(4);

#[derive(Clone, Copy)]
struct Fix {
    seq: u64,
    ts: i64,
    lat: f64,
    lon: f64,
}

impl Fix {
    fn json(&self) -> Value {
        json!({"seq": self.seq, "ts": self.ts, "lat": self.lat, "lon": self.lon, "speed": 8.0})
    }
}

/// What one driver did.
struct DriverRun {
    id: String,
    sent: Vec<Fix>,
    /// Seqs a cumulative ack covered on the connection they were sent on.
    acked: BTreeSet<u64>,
    /// Seqs below a new connection's `welcome.last_seq`, not resent.
    stored_per_welcome: BTreeSet<u64>,
    /// From the first reconnect attempt to the new `welcome`, per failover.
    reconnects: Vec<Duration>,
    /// Index of the URL it ended on.
    node: usize,
}

async fn connect(url: &str) -> Option<(Ws, Value)> {
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .ok()?
    .ok()?;
    let welcome = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).ok()?;
                if v["type"] == "welcome" {
                    return Some(v);
                }
            }
        }
        None
    })
    .await
    .ok()??;
    Some((ws, welcome))
}

/// One simulated driver: a fix a second until `stop`, then until everything is acked.
async fn drive(
    i: usize,
    bases: [String; 2],
    connected: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> DriverRun {
    let id = format!("v{i:03}");
    let token = token(Role::Driver, &id, Some(FLEET));
    let url = |n: usize| format!("{}/ws/driver?access_token={token}", bases[n]);
    let mut run = DriverRun {
        id: id.clone(),
        sent: Vec::new(),
        acked: BTreeSet::new(),
        stored_per_welcome: BTreeSet::new(),
        reconnects: Vec::new(),
        node: i % 2,
    };
    let (mut ws, welcome) = connect(&url(run.node))
        .await
        .unwrap_or_else(|| panic!("driver {id} connects"));
    assert_eq!(welcome["last_seq"], 0);
    connected.fetch_add(1, Ordering::SeqCst);
    // Spread over the city, and over the second.
    let mut at = (
        -12.1 + rand::random_range(0.0..0.1),
        -77.1 + rand::random_range(0.0..0.1),
    );
    let offset = Duration::from_millis(rand::random_range(0..1000));
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + offset, Duration::from_secs(1));
    let mut pending: VecDeque<Fix> = VecDeque::new();
    let mut seq = 0u64;
    let mut last_ts = 0i64;
    let mut stopping = false;
    loop {
        if stopping && pending.is_empty() {
            let _ = ws.close(None).await;
            return run;
        }
        let broken = tokio::select! {
            _ = tick.tick(), if !stopping => {
                seq += 1;
                last_ts = now_ms().max(last_ts + 1);
                at.1 += 0.0001;
                let fix = Fix { seq, ts: last_ts, lat: at.0, lon: at.1 };
                run.sent.push(fix);
                pending.push_back(fix);
                let mut frame = fix.json();
                frame["type"] = "pos".into();
                ws.send(Message::text(frame.to_string())).await.is_err()
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                false
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("JSON from the hub");
                    match v["type"].as_str() {
                        Some("ack") => {
                            let upto = v["seq"].as_u64().expect("ack seq");
                            while pending.front().is_some_and(|f| f.seq <= upto) {
                                let f = pending.pop_front().expect("a pending fix");
                                run.acked.insert(f.seq);
                            }
                        }
                        Some("error") => panic!("driver {id} got an error: {v}"),
                        _ => {}
                    }
                    false
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => true,
                Some(Ok(_)) => false,
            },
        };
        if !broken {
            continue;
        }
        // The node is gone: the other URL, then back and forth, until a welcome.
        let first_attempt = Instant::now();
        let (new_ws, welcome) = loop {
            run.node = 1 - run.node;
            if let Some(ok) = connect(&url(run.node)).await {
                break ok;
            }
            assert!(
                first_attempt.elapsed() < Duration::from_secs(30),
                "driver {id} found no node for 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        run.reconnects.push(first_attempt.elapsed());
        ws = new_ws;
        let last_seq = welcome["last_seq"].as_u64().expect("last_seq");
        while pending.front().is_some_and(|f| f.seq <= last_seq) {
            let f = pending.pop_front().expect("a pending fix");
            run.stored_per_welcome.insert(f.seq);
        }
        if !pending.is_empty() {
            let items: Vec<Value> = pending.iter().map(Fix::json).collect();
            let frame = json!({"type": "batch", "items": items});
            // A failure here shows as a broken socket on the next read.
            let _ = ws.send(Message::text(frame.to_string())).await;
        }
    }
}

/// One dashboard of the fleet on Lima; moves to the other URL when its node
/// fails. `view` holds the newest fix time shown per driver.
async fn watch_fleet(
    start: usize,
    bases: [String; 2],
    view: Arc<Mutex<HashMap<String, i64>>>,
    node: Arc<AtomicUsize>,
) {
    let token = token(Role::Dispatcher, "disp", Some(FLEET));
    let mut n = start;
    loop {
        let url = format!("{}/ws/dashboard?access_token={token}", bases[n]);
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(url),
        )
        .await
        else {
            n = 1 - n;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        node.store(n, Ordering::SeqCst);
        let subscribe = json!({"type": "subscribe", "id": "lima", "bbox": LIMA});
        if ws.send(Message::text(subscribe.to_string())).await.is_err() {
            n = 1 - n;
            continue;
        }
        loop {
            let Some(Ok(msg)) = ws.next().await else {
                break;
            };
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(&t).expect("JSON from the hub");
            let items = match v["type"].as_str() {
                Some("snapshot") => v["drivers"].as_array().cloned(),
                Some("positions") => v["items"].as_array().cloned(),
                _ => None,
            };
            let mut view = view.lock();
            for item in items.into_iter().flatten() {
                let (Some(d), Some(ts)) = (item["driver"].as_str(), item["ts"].as_i64()) else {
                    continue;
                };
                let e = view.entry(d.to_owned()).or_insert(0);
                *e = (*e).max(ts);
            }
        }
        n = 1 - n;
    }
}

#[tokio::test]
async fn after_kill_9_of_a_node_every_driver_fails_over_within_5_s_and_nothing_acked_is_lost() {
    let mut pair = Pair::start().await;
    let bases = [pair.a.ws_base(), pair.b.ws_base()];
    let (stop_tx, stop_rx) = watch::channel(false);

    // Two dashboards on each node.
    let mut dashboards = Vec::new();
    for i in 0..4 {
        let view = Arc::new(Mutex::new(HashMap::new()));
        let node = Arc::new(AtomicUsize::new(usize::MAX));
        let task = tokio::spawn(watch_fleet(
            i % 2,
            bases.clone(),
            view.clone(),
            node.clone(),
        ));
        dashboards.push((view, node, task));
    }
    wait_until(
        Duration::from_secs(10),
        "four dashboards connected",
        || async {
            dashboards
                .iter()
                .all(|(_, n, _)| n.load(Ordering::SeqCst) != usize::MAX)
        },
    )
    .await;

    let connected = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let drivers: Vec<_> = (0..DRIVERS)
        .map(|i| tokio::spawn(drive(i, bases.clone(), connected.clone(), stop_rx.clone())))
        .collect();
    wait_until(
        Duration::from_secs(20),
        "every driver connected",
        || async { connected.load(Ordering::SeqCst) == DRIVERS },
    )
    .await;
    eprintln!("{DRIVERS} drivers connected in {:?}", started.elapsed());

    // Before the failure, each dashboard sees the whole fleet, whichever
    // node its drivers are on.
    let seen_all = wait_until(
        KILL_AT.saturating_sub(started.elapsed()) + Duration::from_secs(5),
        "every dashboard shows all the drivers of both nodes",
        || async {
            dashboards
                .iter()
                .all(|(view, _, _)| view.lock().len() == DRIVERS)
        },
    )
    .await;
    eprintln!(
        "every dashboard saw all {DRIVERS} drivers {:?} after they connected",
        seen_all
    );
    tokio::time::sleep_until((started + KILL_AT).into()).await;
    let committed_a = pair
        .a
        .metric("fleethub_trail_committed_positions_total")
        .await;
    pair.a.kill9().await;
    eprintln!("node A killed after committing {committed_a} positions");
    tokio::time::sleep_until((started + RUN).into()).await;
    stop_tx.send_replace(true);

    let mut runs = Vec::new();
    for task in drivers {
        runs.push(
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("every driver has its positions acked within 20 s of stopping")
                .expect("a driver task"),
        );
    }

    // Every driver is on the survivor; those that moved did so within 5 s.
    let mut moved = 0;
    let mut slowest = Duration::ZERO;
    for run in &runs {
        assert_eq!(run.node, 1, "driver {} ended on B", run.id);
        for took in &run.reconnects {
            moved += 1;
            slowest = slowest.max(*took);
            assert!(
                *took < Duration::from_secs(5),
                "driver {} was back after {took:?}",
                run.id
            );
        }
    }
    assert_eq!(moved, DRIVERS / 2, "A's drivers, and only they, moved once");
    eprintln!("{moved} drivers failed over; the slowest took {slowest:?}");

    // Nothing acknowledged is lost, nothing stored twice: PostgreSQL has
    // every fix each driver sent (all were acked in the end), once.
    let mut pg = sqlx::PgConnection::connect(&pair.db.url())
        .await
        .expect("PostgreSQL");
    let rows = sqlx::query("SELECT driver_id, seq FROM positions WHERE fleet_id = $1")
        .bind(FLEET)
        .fetch_all(&mut pg)
        .await
        .expect("read the trails");
    let mut stored: HashMap<String, Vec<u64>> = HashMap::new();
    for row in rows {
        let d: String = row.get("driver_id");
        let seq: i64 = row.get("seq");
        stored.entry(d).or_default().push(seq as u64);
    }
    pg.close().await.ok();
    let mut acked_total = 0;
    for run in &runs {
        let mut have = stored.remove(&run.id).unwrap_or_default();
        have.sort_unstable();
        let distinct: BTreeSet<u64> = have.iter().copied().collect();
        assert_eq!(
            have.len(),
            distinct.len(),
            "driver {}: a fix stored twice",
            run.id
        );
        for seq in &run.acked {
            assert!(
                distinct.contains(seq),
                "driver {}: acked seq {seq} is not in PostgreSQL",
                run.id
            );
        }
        let sent: BTreeSet<u64> = run.sent.iter().map(|f| f.seq).collect();
        assert_eq!(distinct, sent, "driver {}: stored = sent", run.id);
        assert!(run.stored_per_welcome.iter().all(|s| distinct.contains(s)));
        acked_total += run.acked.len();
    }
    eprintln!("{acked_total} acked positions, all in PostgreSQL");

    // Every dashboard, now on the survivor, ends with every driver's last fix.
    let last: HashMap<String, i64> = runs
        .iter()
        .map(|r| (r.id.clone(), r.sent.last().map_or(0, |f| f.ts)))
        .collect();
    let converged = wait_until(
        Duration::from_secs(10),
        "every dashboard shows every driver's last fix",
        || async {
            dashboards.iter().all(|(view, node, _)| {
                let view = view.lock();
                node.load(Ordering::SeqCst) == 1
                    && last
                        .iter()
                        .all(|(d, ts)| view.get(d).is_some_and(|seen| seen == ts))
            })
        },
    )
    .await;
    eprintln!("dashboards converged {converged:?} after the drivers stopped");
    for (_, _, task) in dashboards {
        task.abort();
    }
}
