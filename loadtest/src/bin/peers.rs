//! The broker side of the peer comparison in BENCHMARKS.md: the same fleet
//! and dashboards as `fleethub-loadtest`, over MQTT over WebSocket (QoS 0)
//! against a plain broker (Mosquitto, NATS), measured the same way.
//!
//! A driver publishes each fix to the topic of its map cell,
//! `pos/<lon cell>/<lat cell>`; a dashboard subscribes to every cell its
//! viewport touches (the whole-city one to `pos/#`) and so also receives the
//! fixes of cells that straddle its edge, as a broker-based map would.
//! Latency is send → receipt on this process's clock; the broker's CPU comes
//! from `/proc/<pid>/stat` over the measured window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use loadtest::city::Bbox;
use loadtest::cli::FleetArgs;
use loadtest::dashboard::random_viewport;
use loadtest::movement::Vehicle;
use loadtest::{net, procstat};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rumqttc::{Connect, Packet, Publish, QoS, Subscribe, SubscribeFilter};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

const MAX_PACKET: usize = 64 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "fleethub-peerbench",
    about = "The fleethub load, over MQTT over WebSocket, against a plain broker"
)]
struct Args {
    /// The broker's MQTT-over-WebSocket endpoint, e.g. ws://127.0.0.1:9001/mqtt.
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 300)]
    drivers: usize,
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    ramp_up: Duration,
    #[command(flatten)]
    view: FleetArgs,
    /// Side of a topic cell, in degrees (0.01 is about 1.1 km).
    #[arg(long, default_value_t = 0.01)]
    cell: f64,
    /// The broker process, for its CPU and memory.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// The payload: the protocol's `P` object plus the send time.
#[derive(Serialize, Deserialize)]
struct Fix {
    driver: String,
    ts: i64,
    lat: f64,
    lon: f64,
    speed: f64,
    heading: f64,
    /// Microseconds since the run started, on this process's clock.
    sent_us: u64,
}

struct Counters {
    start: Instant,
    published: AtomicU64,
    delivered: AtomicU64,
    connected: AtomicU64,
    measuring: std::sync::atomic::AtomicBool,
    /// Send → receipt, µs; the dashboards share one thread, so no contention.
    latency: Mutex<Histogram<u64>>,
}

impl Counters {
    fn latency(&self) -> Option<std::sync::MutexGuard<'_, Histogram<u64>>> {
        self.latency.lock().ok()
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

fn topic(cell: f64, lat: f64, lon: f64) -> String {
    format!(
        "pos/{}/{}",
        (lon / cell).floor() as i64,
        (lat / cell).floor() as i64
    )
}

fn filters(cell: f64, view: &Bbox) -> Vec<SubscribeFilter> {
    let (w, e) = (
        (view.west / cell).floor() as i64,
        (view.east / cell).floor() as i64,
    );
    let (s, n) = (
        (view.south / cell).floor() as i64,
        (view.north / cell).floor() as i64,
    );
    (w..=e)
        .flat_map(|x| (s..=n).map(move |y| format!("pos/{x}/{y}")))
        .map(|path| SubscribeFilter::new(path, QoS::AtMostOnce))
        .collect()
}

fn encode(packet: Packet) -> anyhow::Result<Message> {
    let mut buf = BytesMut::new();
    packet
        .write(&mut buf, MAX_PACKET)
        .map_err(|e| anyhow::anyhow!("encode: {e:?}"))?;
    Ok(Message::binary(buf.freeze()))
}

async fn open(url: &str, id: String, index: usize) -> anyhow::Result<net::Ws> {
    let mut ws = net::connect_mqtt(url, net::source_for(index, true)).await?;
    let mut connect = Connect::new(id);
    connect.keep_alive = 120;
    ws.send(encode(Packet::Connect(connect))?).await?;
    // Wait for CONNACK: brokers may take a while per session (NATS keeps
    // MQTT sessions in JetStream), and the window must not open before.
    let mut buf = BytesMut::new();
    while let Some(message) = ws.next().await {
        if let Message::Binary(data) = message? {
            buf.extend_from_slice(&data);
            match Packet::read(&mut buf, MAX_PACKET) {
                Ok(Packet::ConnAck(_)) => return Ok(ws),
                Ok(other) => anyhow::bail!("expected CONNACK, got {other:?}"),
                Err(rumqttc::Error::InsufficientBytes(_)) => continue,
                Err(e) => anyhow::bail!("CONNACK: {e:?}"),
            }
        }
    }
    anyhow::bail!("closed before CONNACK")
}

async fn driver(
    args: Arc<Args>,
    counters: Arc<Counters>,
    index: usize,
    stop: Instant,
) -> anyhow::Result<()> {
    let id = format!("d{}", index + 1);
    let ws = open(&args.url, id.clone(), index).await?;
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let mut vehicle = Vehicle::new(&args.view.city, args.view.seed, index as u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut sink, mut stream) = ws.split();
    // Acks and pings from the broker are read and dropped.
    tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    let mut last = Instant::now();
    while Instant::now() < stop {
        tick.tick().await;
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        let f = vehicle.advance(dt);
        let fix = Fix {
            driver: id.clone(),
            ts: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            lat: f.lat,
            lon: f.lon,
            speed: f.speed,
            heading: f.heading,
            sent_us: counters.now_us(),
        };
        let payload = serde_json::to_vec(&fix)?;
        let publish = Publish::new(topic(args.cell, f.lat, f.lon), QoS::AtMostOnce, payload);
        sink.send(encode(Packet::Publish(publish))?).await?;
        if counters.measuring.load(Ordering::Relaxed) {
            counters.published.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

async fn dashboard(
    args: Arc<Args>,
    counters: Arc<Counters>,
    index: usize,
    view: Option<Bbox>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let mut ws = open(&args.url, format!("dash{index}"), 1000 + index).await?;
    let filters = match &view {
        Some(v) => filters(args.cell, v),
        None => vec![SubscribeFilter::new("pos/#".into(), QoS::AtMostOnce)],
    };
    let mut subscribe = Subscribe::new_many(filters);
    subscribe.pkid = 1;
    ws.send(encode(Packet::Subscribe(subscribe))?).await?;
    let mut buf = BytesMut::new();
    while let Some(message) = ws.next().await {
        let data = match message? {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        buf.extend_from_slice(&data);
        loop {
            match Packet::read(&mut buf, MAX_PACKET) {
                Ok(Packet::Publish(p)) => {
                    let now = counters.now_us();
                    if let Ok(fix) = serde_json::from_slice::<Fix>(&p.payload)
                        && counters.measuring.load(Ordering::Relaxed)
                    {
                        counters.delivered.fetch_add(1, Ordering::Relaxed);
                        if let Some(mut h) = counters.latency() {
                            let _ = h.record(now.saturating_sub(fix.sent_us).max(1));
                        }
                    }
                }
                Ok(Packet::SubAck(_)) => {
                    let _ = ready.send(()).await;
                }
                Ok(_) => {}
                Err(rumqttc::Error::InsufficientBytes(_)) => break,
                Err(e) => anyhow::bail!("dashboard {index}: {e:?}"),
            }
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    net::raise_nofile_limit()?;
    let counters = Arc::new(Counters {
        start: Instant::now(),
        published: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        measuring: false.into(),
        latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
    });
    // Dashboards on a thread of their own, as in fleethub-loadtest.
    let dashboards_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let drivers_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(64);
    let mut rng = StdRng::seed_from_u64(args.view.seed ^ 0xDA5B_0A4D);
    for i in 0..args.view.dashboards + args.view.whole_city {
        let view = (i < args.view.dashboards)
            .then(|| random_viewport(&args.view.city, args.view.viewport_span, &mut rng));
        let task = dashboard(args.clone(), counters.clone(), i, view, ready_tx.clone());
        dashboards_rt.spawn(async move {
            if let Err(e) = task.await {
                eprintln!("{e:#}");
            }
        });
    }
    // Dashboards end with the process.
    std::thread::spawn(move || dashboards_rt.block_on(std::future::pending::<()>()));
    drivers_rt.block_on(async {
        for _ in 0..args.view.dashboards + args.view.whole_city {
            ready_rx.recv().await;
        }
        let stop = Instant::now() + args.ramp_up + args.duration + Duration::from_secs(150);
        let gap = args.ramp_up.div_f64(args.drivers.max(1) as f64);
        let mut tasks = Vec::new();
        for i in 0..args.drivers {
            let task = driver(args.clone(), counters.clone(), i, stop);
            tasks.push(tokio::spawn(async move {
                if let Err(e) = task.await {
                    eprintln!("driver: {e:#}");
                }
            }));
            tokio::time::sleep(gap).await;
        }
        let all_in = Instant::now() + Duration::from_secs(120);
        while counters.connected.load(Ordering::Relaxed) < args.drivers as u64
            && Instant::now() < all_in
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "connected: {} drivers",
            counters.connected.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu0 = args.server_pid.map(|p| procstat::total_cpu(&[p]));
        counters.measuring.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(args.duration).await;
        counters.measuring.store(false, Ordering::Relaxed);
        let window = t0.elapsed().as_secs_f64();
        let cpu = args
            .server_pid
            .map(|p| procstat::total_cpu(&[p]) - cpu0.unwrap_or(0.0));
        let rss = args
            .server_pid
            .and_then(|p| procstat::sample(p).ok())
            .map(|s| s.rss_bytes as f64 / 1048576.0);
        report(&args, &counters, window, cpu, rss);
        drop(tasks);
        anyhow::Ok(())
    })?;
    // Drivers and dashboards end with the process.
    std::process::exit(0)
}

fn report(args: &Args, c: &Counters, window: f64, cpu: Option<f64>, rss: Option<f64>) {
    let published = c.published.load(Ordering::Relaxed);
    let delivered = c.delivered.load(Ordering::Relaxed);
    println!(
        "peers: {} drivers, {} dashboards (viewports {}) + {} whole-city, cells {}°, {}, window {:.1}s",
        args.drivers,
        args.view.dashboards,
        args.view.viewport_span,
        args.view.whole_city,
        args.cell,
        args.url,
        window
    );
    println!(
        "  published {published}, delivered {delivered} = {:.0}/s, {:.2} per position",
        delivered as f64 / window,
        delivered as f64 / published.max(1) as f64
    );
    if let Some(h) = c.latency() {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "  e2e latency:  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  ({} samples)",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            h.max() as f64 / 1000.0,
            h.len()
        );
    }
    if let Some(cpu) = cpu {
        println!(
            "  broker: {cpu:.2} CPU s ({:.2} cores), {:.1} µs per position, {:.2} µs per delivery, RSS {:.1} MB",
            cpu / window,
            cpu * 1e6 / published.max(1) as f64,
            cpu * 1e6 / delivered.max(1) as f64,
            rss.unwrap_or(0.0)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewport_subscribes_to_every_cell_it_touches() {
        let view = Bbox::new(-77.055, -12.065, -77.035, -12.045).unwrap();
        let paths: Vec<String> = filters(0.01, &view).into_iter().map(|f| f.path).collect();
        // Three cells wide (-7706..=-7704), three high (-1207..=-1205).
        assert_eq!(paths.len(), 9);
        assert!(paths.contains(&topic(0.01, -12.05, -77.04)));
        assert!(!paths.contains(&topic(0.01, -12.0, -77.04)));
    }
}
