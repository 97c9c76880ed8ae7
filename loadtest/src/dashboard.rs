//! A simulated dispatcher: it subscribes to one region (a random viewport
//! or the whole city) and records what arrives, for end-to-end latency, the
//! "time never goes backwards" promise and the final-state check.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::Rng;
use rand::rngs::StdRng;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::city::{Bbox, City};
use crate::driver::wait_or_shutdown;
use crate::net::{self, Ws};
use crate::roster::{Roster, Sent};
use crate::stats::{Stats, latency_histogram, lock};
use crate::token::{self, Role};
use crate::wire::{self, DashboardIn, Seen};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// The subscription id every simulated dashboard uses.
pub const SUBSCRIPTION: &str = "main";

/// How dashboards authenticate.
#[derive(Debug, Clone)]
pub enum DashboardCredential {
    /// Mint a dispatcher token for the run's fleet.
    Secret(String),
    /// A ready-made dispatcher or admin token.
    Token(String),
}

#[derive(Debug, Clone)]
pub struct DashboardConfig {
    pub urls: Vec<String>,
    pub credential: DashboardCredential,
    pub fleet: String,
    pub spread_sources: bool,
}

/// What one dashboard has seen so far.
pub struct View {
    pub bbox: Bbox,
    /// Newest `ts` seen per driver (roster index); `i64::MIN` for never.
    pub seen: Vec<i64>,
    /// Set once the first snapshot arrived.
    pub subscribed: bool,
    /// Index in the run's URL list of the hub this dashboard is connected to
    /// (or last tried).
    pub node: u32,
    /// Driver send → receipt here, µs, during the steady window.
    pub latency: Histogram<u64>,
    /// The same, for fixes whose driver was connected to this dashboard's node when it sent them.
    pub same_node: Histogram<u64>,
    /// The same, for fixes sent through another node (they crossed the cluster bus).
    pub cross_node: Histogram<u64>,
}

impl View {
    pub fn new(bbox: Bbox, drivers: usize) -> Self {
        Self {
            bbox,
            seen: vec![i64::MIN; drivers],
            subscribed: false,
            node: 0,
            latency: latency_histogram(),
            same_node: latency_histogram(),
            cross_node: latency_histogram(),
        }
    }

    /// One end-to-end sample: driver send → receipt here, split by whether
    /// the driver sent through this dashboard's node.
    fn record_latency(&mut self, sent: Sent, received_ns: u64) {
        let us = (received_ns.saturating_sub(sent.at_ns) / 1_000).max(1);
        self.latency.saturating_record(us);
        if sent.node == self.node {
            self.same_node.saturating_record(us);
        } else {
            self.cross_node.saturating_record(us);
        }
    }
}

pub type SharedView = Arc<Mutex<View>>;

/// How much of the city a random viewport spans on each axis, as fractions:
/// `0.15-0.40` (the default) is a dispatcher zoomed on a few districts.
/// Wider viewports mean more dashboards per position, i.e. more deliveries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewportSpan {
    min: f64,
    max: f64,
}

impl Default for ViewportSpan {
    fn default() -> Self {
        Self {
            min: 0.15,
            max: 0.40,
        }
    }
}

impl std::str::FromStr for ViewportSpan {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}`: expected MIN-MAX fractions of the city, e.g. 0.15-0.40");
        let (min, max) = s.split_once('-').ok_or_else(bad)?;
        let min: f64 = min.trim().parse().map_err(|_| bad())?;
        let max: f64 = max.trim().parse().map_err(|_| bad())?;
        if !(min > 0.0 && min <= max && max <= 1.0) {
            return Err(format!("`{s}`: need 0 < MIN <= MAX <= 1"));
        }
        Ok(Self { min, max })
    }
}

impl std::fmt::Display for ViewportSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// A random viewport inside the city, spanning `span` of it on each axis.
pub fn random_viewport(city: &City, span: ViewportSpan, rng: &mut StdRng) -> Bbox {
    let b = city.bbox;
    let (w, h) = (b.width(), b.height());
    let vw = w * rng.random_range(span.min..=span.max);
    let vh = h * rng.random_range(span.min..=span.max);
    let west = b.west + rng.random_range(0.0..=(w - vw));
    let south = b.south + rng.random_range(0.0..=(h - vh));
    let wrap = |lon: f64| if lon > 180.0 { lon - 360.0 } else { lon };
    Bbox {
        west: wrap(west),
        south,
        east: wrap(west + vw),
        north: south + vh,
    }
}

/// Runs dashboard `index` until shutdown, reconnecting as needed.
pub async fn run(
    index: usize,
    cfg: Arc<DashboardConfig>,
    stats: Arc<Stats>,
    roster: Arc<Roster>,
    view: SharedView,
    mut shutdown: watch::Receiver<bool>,
) {
    let bbox = lock(&view).bbox;
    // Like the drivers, start spread over the nodes (dashboard `index` on
    // `urls[index % n]`) and fail over on errors.
    let mut url_idx = index % cfg.urls.len().max(1);
    loop {
        let url = &cfg.urls[url_idx];
        lock(&view).node = url_idx as u32;
        let token = match &cfg.credential {
            DashboardCredential::Secret(s) => token::mint(
                s,
                &format!("dash-{index}"),
                Role::Dispatcher,
                Some(&cfg.fleet),
                Duration::from_secs(24 * 3600),
            ),
            DashboardCredential::Token(t) => t.clone(),
        };
        let endpoint = net::endpoint(url, "/ws/dashboard", &token);
        // Offset from the drivers' source addresses so both spread evenly.
        let source = net::source_for(index + 125, cfg.spread_sources);
        match net::connect(&endpoint, source, None).await {
            Ok(mut ws) => {
                let why = watch_region(&mut ws, bbox, &stats, &roster, &view, &mut shutdown).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                if why.is_none() {
                    return;
                }
                tracing::debug!(dashboard = index, "dashboard lost: {why:?}");
            }
            Err(e) => {
                tracing::debug!(dashboard = index, "dashboard connect failed: {e}");
                url_idx = (url_idx + 1) % cfg.urls.len();
            }
        }
        Stats::add(&stats.dashboard_reconnects, 1);
        if !wait_or_shutdown(RECONNECT_DELAY, &mut shutdown).await {
            return;
        }
    }
}

/// One connection: hello, subscribe, then record. `None` means shutdown,
/// `Some(reason)` a lost connection.
async fn watch_region(
    ws: &mut Ws,
    bbox: Bbox,
    stats: &Stats,
    roster: &Roster,
    view: &SharedView,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<String> {
    if let Err(why) = expect_hello(ws).await {
        return Some(why);
    }
    if ws
        .send(Message::text(wire::subscribe(SUBSCRIPTION, bbox)))
        .await
        .is_err()
    {
        return Some("subscribe failed".into());
    }
    loop {
        let msg = tokio::select! {
            _ = shutdown.changed() => return None,
            msg = ws.next() => msg,
        };
        let received_ns = stats.now_ns();
        match msg {
            Some(Ok(Message::Text(text))) => {
                record(text.as_str(), received_ns, stats, roster, view)
            }
            Some(Ok(Message::Close(frame))) => return Some(format!("closed: {frame:?}")),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Some(e.to_string()),
            None => return Some("eof".into()),
        }
    }
}

async fn expect_hello(ws: &mut Ws) -> Result<(), String> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, ws.next()).await;
    match first {
        Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("\"hello\"") => Ok(()),
        Ok(other) => Err(format!("expected hello, got {other:?}")),
        Err(_) => Err("no hello".into()),
    }
}

/// Folds one frame into the view.
fn record(text: &str, received_ns: u64, stats: &Stats, roster: &Roster, view: &SharedView) {
    let Ok(frame) = serde_json::from_str::<DashboardIn>(text) else {
        stats.error("hub_sent_bad_json");
        return;
    };
    let mut view = lock(view);
    match frame.kind.as_ref() {
        "positions" => {
            Stats::add(&stats.deliveries, frame.items.len() as u64);
            let measuring = stats.is_measuring();
            for item in &frame.items {
                seen_live(item, received_ns, measuring, stats, roster, &mut view);
            }
        }
        "snapshot" => {
            Stats::add(&stats.snapshot_items, frame.drivers.len() as u64);
            for item in &frame.drivers {
                if let Some(i) = roster.index_of(&item.driver) {
                    view.seen[i] = view.seen[i].max(item.ts);
                }
            }
            view.subscribed = true;
        }
        "status" => Stats::add(&stats.status_frames, 1),
        _ => {}
    }
}

fn seen_live(
    item: &Seen<'_>,
    received_ns: u64,
    measuring: bool,
    stats: &Stats,
    roster: &Roster,
    view: &mut View,
) {
    // Positions of drivers outside this run (another fleet, a demo) are ignored.
    let Some(i) = roster.index_of(&item.driver) else {
        return;
    };
    if item.ts < view.seen[i] {
        Stats::add(&stats.ts_regressions, 1);
    }
    if item.ts == view.seen[i] {
        // The same fix twice on one dashboard: wasted work in the hub, and
        // not a new latency sample.
        Stats::add(&stats.duplicates, 1);
        return;
    }
    view.seen[i] = view.seen[i].max(item.ts);
    if !measuring {
        return;
    }
    match roster.sent_at(i, item.ts) {
        Some(sent) => view.record_latency(sent, received_ns),
        None => Stats::add(&stats.unmatched, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn viewports_lie_inside_the_city() {
        let mut rng = StdRng::seed_from_u64(1);
        let city = City::lima();
        for span in [ViewportSpan::default(), "0.5-1".parse().unwrap()] {
            for _ in 0..100 {
                let v = random_viewport(&city, span, &mut rng);
                assert!(city.bbox.contains(v.south, v.west) && city.bbox.contains(v.north, v.east));
                assert!(v.west < v.east && v.south < v.north);
            }
        }
    }

    #[test]
    fn viewport_spans_parse_and_refuse_nonsense() {
        let span: ViewportSpan = "0.3-0.6".parse().unwrap();
        assert_eq!(span, ViewportSpan { min: 0.3, max: 0.6 });
        for bad in ["", "0.5", "0-0.5", "0.6-0.3", "0.5-1.5", "a-b"] {
            assert!(bad.parse::<ViewportSpan>().is_err(), "{bad}");
        }
    }

    #[test]
    fn frames_update_the_view() {
        let stats = Stats::new();
        let roster = Roster::new(vec!["d0".into(), "d1".into()]);
        let view: SharedView = Arc::new(Mutex::new(View::new(City::lima().bbox, 2)));
        record(
            r#"{"type":"snapshot","id":"main","drivers":[{"driver":"d0","ts":5}]}"#,
            0,
            &stats,
            &roster,
            &view,
        );
        record(
            r#"{"type":"positions","items":[{"driver":"d1","ts":7},{"driver":"zz","ts":1}]}"#,
            0,
            &stats,
            &roster,
            &view,
        );
        record(
            r#"{"type":"positions","items":[{"driver":"d1","ts":6}]}"#,
            0,
            &stats,
            &roster,
            &view,
        );
        let v = lock(&view);
        assert!(v.subscribed);
        assert_eq!(v.seen, vec![5, 7]);
        assert_eq!(Stats::get(&stats.ts_regressions), 1);
        assert_eq!(Stats::get(&stats.deliveries), 3);
    }

    #[test]
    fn latency_splits_by_the_node_each_side_was_on() {
        let stats = Stats::new();
        stats
            .measuring
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let roster = Roster::new(vec!["d0".into(), "d1".into(), "d2".into()]);
        // d0 and d2 send through node 1, d1 through node 0.
        roster.record_send(
            0,
            1,
            10,
            Sent {
                at_ns: 1_000_000,
                node: 1,
            },
        );
        roster.record_send(
            1,
            1,
            10,
            Sent {
                at_ns: 1_000_000,
                node: 0,
            },
        );
        roster.record_send(
            2,
            1,
            10,
            Sent {
                at_ns: 2_000_000,
                node: 1,
            },
        );
        let view: SharedView = Arc::new(Mutex::new(View::new(City::lima().bbox, 3)));
        lock(&view).node = 1;
        record(
            r#"{"type":"positions","items":[{"driver":"d0","ts":10},{"driver":"d1","ts":10},{"driver":"d2","ts":10}]}"#,
            5_000_000,
            &stats,
            &roster,
            &view,
        );
        // A fix sent before the window, or resent, is not found: no sample.
        record(
            r#"{"type":"positions","items":[{"driver":"d1","ts":11}]}"#,
            6_000_000,
            &stats,
            &roster,
            &view,
        );
        let v = lock(&view);
        assert_eq!(
            (v.same_node.len(), v.cross_node.len(), v.latency.len()),
            (2, 1, 3)
        );
        assert_eq!(v.cross_node.max(), v.cross_node.highest_equivalent(4_000));
        assert_eq!(v.same_node.min(), v.same_node.lowest_equivalent(3_000));
        assert_eq!(v.same_node.max(), v.same_node.highest_equivalent(4_000));
        assert_eq!(Stats::get(&stats.unmatched), 1);
    }
}
