//! A load-test run: dashboards first, then drivers ramping up, a measured
//! steady window, then "stop sending" and checks once the hub has settled.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::city::City;
use crate::dashboard::{
    self, DashboardConfig, DashboardCredential, SharedView, View, ViewportSpan,
};
use crate::driver::{self, Control, Credential, DriverConfig};
use crate::net;
use crate::procstat::{self, Sampler};
use crate::report::{
    AuxUsage, ClientUsage, Connections, Deliveries, FinalState, Host, Latency, Positions, Report,
    ScenarioSummary, ServerUsage,
};
use crate::roster::Roster;
use crate::stats::{Stats, latency_histogram, lock};
use crate::token;

/// How the simulated clients authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    /// The hub's HS256 secret: every client mints its own tokens.
    Secret(String),
    /// Ready tokens: one per driver (their `sub` names the drivers), and one
    /// dispatcher/admin token shared by the dashboards.
    Tokens {
        drivers: Vec<String>,
        dashboard: String,
    },
}

/// Everything a run needs. Start from [`Scenario::new`] and override fields.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// WebSocket bases, e.g. `ws://127.0.0.1:8080`; several for failover.
    pub urls: Vec<String>,
    pub auth: Auth,
    pub drivers: usize,
    /// Positions per second per driver.
    pub rate_hz: f64,
    /// Measured steady window, after the ramp-up.
    pub duration: Duration,
    /// Drivers connect evenly spread over this time.
    pub ramp_up: Duration,
    /// Driver disconnections (followed by reconnection) per second.
    pub churn_per_sec: f64,
    /// Dashboards with a random viewport.
    pub dashboards: usize,
    /// Dashboards watching the whole city.
    pub whole_city: usize,
    /// How much of the city each random viewport spans, per axis.
    pub viewport_span: ViewportSpan,
    pub city: City,
    pub seed: u64,
    pub fleet: String,
    /// Driver ids are `<prefix><n>`, n from 1 (with `Auth::Secret`).
    pub driver_prefix: String,
    /// Hub processes whose CPU and memory are reported.
    pub server_pids: Vec<u32>,
    /// Other processes (e.g. the cluster's Redis) whose CPU is reported apart.
    pub aux_pids: Vec<u32>,
    /// Longest wait for the acks to drain, and again for dashboards to catch up.
    pub settle_timeout: Duration,
    pub resend_capacity: usize,
    /// Spread source addresses over 127.0.0.x; `None` decides by socket count.
    pub spread_sources: Option<bool>,
    pub token_ttl: Duration,
}

impl Scenario {
    /// The defaults (300 drivers at 1 Hz, 20 + 1 dashboards, 30 s in Lima).
    pub fn new(urls: Vec<String>, auth: Auth) -> Self {
        Self {
            urls,
            auth,
            drivers: 300,
            rate_hz: 1.0,
            duration: Duration::from_secs(30),
            ramp_up: Duration::from_secs(5),
            churn_per_sec: 0.0,
            dashboards: 20,
            whole_city: 1,
            viewport_span: ViewportSpan::default(),
            city: City::lima(),
            seed: 42,
            fleet: "demo".into(),
            driver_prefix: "d".into(),
            server_pids: Vec::new(),
            aux_pids: Vec::new(),
            settle_timeout: Duration::from_secs(30),
            resend_capacity: 600,
            spread_sources: None,
            token_ttl: Duration::from_secs(3600),
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.urls.is_empty(), "at least one --url is needed");
        anyhow::ensure!(
            self.rate_hz > 0.0 && self.rate_hz <= 100.0,
            "rate must be in (0, 100] Hz (ts is in milliseconds)"
        );
        anyhow::ensure!(self.churn_per_sec >= 0.0, "churn must not be negative");
        match &self.auth {
            Auth::Secret(s) => anyhow::ensure!(!s.is_empty(), "the JWT secret is empty"),
            Auth::Tokens { drivers, .. } => anyhow::ensure!(
                drivers.len() >= self.drivers,
                "{} driver tokens for {} drivers",
                drivers.len(),
                self.drivers
            ),
        }
        Ok(())
    }

    fn driver_ids(&self) -> anyhow::Result<Vec<String>> {
        match &self.auth {
            Auth::Secret(_) => Ok((1..=self.drivers)
                .map(|n| format!("{}{n}", self.driver_prefix))
                .collect()),
            Auth::Tokens { drivers, .. } => drivers[..self.drivers]
                .iter()
                .map(|t| Ok(token::peek(t)?.sub))
                .collect(),
        }
    }

    fn summary(&self) -> ScenarioSummary {
        ScenarioSummary {
            urls: self.urls.clone(),
            drivers: self.drivers,
            rate_hz: self.rate_hz,
            duration_s: self.duration.as_secs_f64(),
            ramp_up_s: self.ramp_up.as_secs_f64(),
            churn_per_sec: self.churn_per_sec,
            dashboards: self.dashboards,
            whole_city: self.whole_city,
            viewport_span: self.viewport_span.to_string(),
            city: self.city.to_string(),
            seed: self.seed,
            fleet: self.fleet.clone(),
        }
    }
}

/// The moving parts of a run.
struct Fleet {
    /// Dashboards read on a thread of their own: on the drivers' runtime a
    /// receipt would wait behind thousands of runnable driver tasks, and that
    /// queueing in the load generator would be counted as the hub's latency.
    dashboard_runtime: DashboardRuntime,
    stats: Arc<Stats>,
    roster: Arc<Roster>,
    views: Vec<SharedView>,
    kicks: Vec<Arc<Notify>>,
    tasks: Vec<JoinHandle<()>>,
    sending: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
}

/// Counters at one edge of the measured window.
struct Mark {
    at: Instant,
    written: u64,
    deliveries: u64,
    server_cpu: f64,
    aux_cpu: f64,
    client_cpu: f64,
    load_avg: f64,
}

impl Mark {
    fn take(stats: &Stats, s: &Scenario) -> Self {
        Self {
            at: Instant::now(),
            written: Stats::get(&stats.written),
            deliveries: Stats::get(&stats.deliveries),
            server_cpu: procstat::total_cpu(&s.server_pids),
            aux_cpu: procstat::total_cpu(&s.aux_pids),
            client_cpu: procstat::total_cpu(&[std::process::id()]),
            load_avg: procstat::load_avg_1m(),
        }
    }
}

/// Runs the scenario to completion and reports.
pub async fn run(scenario: Scenario) -> anyhow::Result<Report> {
    scenario.validate()?;
    let sockets = scenario.drivers + scenario.dashboards + scenario.whole_city;
    check_fd_limit(sockets);
    let spread = scenario
        .spread_sources
        .unwrap_or(sockets > net::SPREAD_ABOVE);
    let roster = Arc::new(Roster::new(scenario.driver_ids()?));
    let mut fleet = Fleet::new(roster)?;
    let (sampler_stop, sampler_rx) = watch::channel(false);
    let mut watched = scenario.server_pids.clone();
    watched.push(std::process::id());
    let sampler = Sampler::start(watched, Duration::from_millis(200), sampler_rx);

    fleet.start_dashboards(&scenario, spread);
    let all_subscribed = poll_until(Duration::from_secs(30), || fleet.subscribed()).await;
    if !all_subscribed.0 {
        tracing::warn!("not every dashboard got its snapshot; continuing");
    }
    fleet.start_drivers(&scenario, spread);
    tokio::time::sleep(scenario.ramp_up).await;
    let connected = poll_until(Duration::from_secs(30), || {
        fleet.roster.connected() == scenario.drivers
    })
    .await;
    if !connected.0 {
        tracing::warn!(
            connected = fleet.roster.connected(),
            "not every driver is connected; measuring anyway"
        );
    }

    let start = Mark::take(&fleet.stats, &scenario);
    fleet
        .stats
        .measuring
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let churn = fleet.start_churn(&scenario);
    progress(&fleet, scenario.duration).await;
    fleet
        .stats
        .measuring
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let end = Mark::take(&fleet.stats, &scenario);
    let _ = fleet.sending.send(false);
    if let Some(churn) = churn {
        churn.abort();
    }

    let (_, drain) = poll_until(scenario.settle_timeout, || {
        fleet.roster.total_unacked() == 0
    })
    .await;
    let (_, settle) = poll_until(scenario.settle_timeout, || fleet.final_state().pass).await;
    let final_state = fleet.final_state();
    let peaks = sampler.peaks();
    let _ = sampler_stop.send(true);
    fleet.stop().await;

    let window = Window {
        start,
        end,
        drain,
        settle,
        peaks,
    };
    Ok(build_report(&scenario, &fleet, final_state, window))
}

fn check_fd_limit(sockets: usize) {
    match net::raise_nofile_limit() {
        Ok(limit) if (sockets as u64) + 64 > limit => tracing::warn!(
            limit,
            sockets,
            "open-files limit is below the sockets this run needs; connections will fail"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("could not raise the open-files limit: {e}"),
    }
}

/// Polls `cond` every 50 ms until it holds or `deadline` passes; returns
/// whether it held and how long that took.
async fn poll_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> (bool, Duration) {
    let start = Instant::now();
    loop {
        if cond() {
            return (true, start.elapsed());
        }
        if start.elapsed() >= deadline {
            return (false, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sleeps through the measured window, logging progress every 5 s.
async fn progress(fleet: &Fleet, duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        let step = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(5));
        tokio::time::sleep(step).await;
        let s = &fleet.stats;
        tracing::info!(
            sent = Stats::get(&s.sent),
            acked = Stats::get(&s.acked),
            deliveries = Stats::get(&s.deliveries),
            connected = fleet.roster.connected(),
            unacked = fleet.roster.total_unacked(),
            "running"
        );
    }
}

impl Fleet {
    fn new(roster: Arc<Roster>) -> anyhow::Result<Self> {
        Ok(Self {
            dashboard_runtime: DashboardRuntime::start()?,
            stats: Arc::new(Stats::new()),
            roster,
            views: Vec::new(),
            kicks: Vec::new(),
            tasks: Vec::new(),
            sending: watch::channel(true).0,
            shutdown: watch::channel(false).0,
        })
    }

    fn start_dashboards(&mut self, s: &Scenario, spread: bool) {
        let credential = match &s.auth {
            Auth::Secret(secret) => DashboardCredential::Secret(secret.clone()),
            Auth::Tokens { dashboard, .. } => DashboardCredential::Token(dashboard.clone()),
        };
        let cfg = Arc::new(DashboardConfig {
            urls: s.urls.clone(),
            credential,
            fleet: s.fleet.clone(),
            spread_sources: spread,
        });
        let mut rng = StdRng::seed_from_u64(s.seed ^ 0xDA5B_0A4D);
        for i in 0..s.dashboards + s.whole_city {
            let bbox = if i < s.dashboards {
                dashboard::random_viewport(&s.city, s.viewport_span, &mut rng)
            } else {
                s.city.bbox
            };
            let view = Arc::new(Mutex::new(View::new(bbox, self.roster.len())));
            self.views.push(view.clone());
            let task = dashboard::run(
                i,
                cfg.clone(),
                self.stats.clone(),
                self.roster.clone(),
                view,
                self.shutdown.subscribe(),
            );
            self.tasks.push(self.dashboard_runtime.spawn(task));
        }
    }

    fn start_drivers(&mut self, s: &Scenario, spread: bool) {
        let credential = match &s.auth {
            Auth::Secret(secret) => Credential::Secret(secret.clone()),
            Auth::Tokens { drivers, .. } => Credential::Tokens(drivers.clone()),
        };
        let cfg = Arc::new(DriverConfig {
            urls: s.urls.clone(),
            credential,
            fleet: s.fleet.clone(),
            rate_hz: s.rate_hz,
            city: s.city.clone(),
            seed: s.seed,
            resend_capacity: s.resend_capacity,
            spread_sources: spread,
            token_ttl: s.token_ttl,
            max_backoff: Duration::from_secs(10),
        });
        for i in 0..s.drivers {
            let kick = Arc::new(Notify::new());
            self.kicks.push(kick.clone());
            let ctl = Control {
                sending: self.sending.subscribe(),
                shutdown: self.shutdown.subscribe(),
                kick,
            };
            let delay = s.ramp_up.mul_f64(i as f64 / s.drivers as f64);
            let task = driver::run(
                i,
                delay,
                cfg.clone(),
                self.stats.clone(),
                self.roster.clone(),
                ctl,
            );
            self.tasks.push(tokio::spawn(task));
        }
    }

    /// Kicks random drivers off `churn_per_sec` times a second.
    fn start_churn(&self, s: &Scenario) -> Option<JoinHandle<()>> {
        if s.churn_per_sec <= 0.0 || self.kicks.is_empty() {
            return None;
        }
        let kicks = self.kicks.clone();
        let period = Duration::from_secs_f64(1.0 / s.churn_per_sec);
        let mut rng = StdRng::seed_from_u64(s.seed ^ 0xC4_0A11);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                kicks[rng.random_range(0..kicks.len())].notify_one();
            }
        }))
    }

    fn subscribed(&self) -> bool {
        self.views.iter().all(|v| lock(v).subscribed)
    }

    /// Compares every dashboard's view with each driver's last position.
    fn final_state(&self) -> FinalState {
        let lasts: Vec<_> = (0..self.roster.len())
            .map(|i| self.roster.last(i))
            .collect();
        let mut fs = FinalState {
            dashboards: self.views.len(),
            ts_regressions: Stats::get(&self.stats.ts_regressions),
            ..FinalState::default()
        };
        for view in &self.views {
            let view = lock(view);
            for (i, last) in lasts.iter().enumerate() {
                let Some(last) = last.filter(|l| view.bbox.contains(l.lat, l.lon)) else {
                    continue;
                };
                fs.expected += 1;
                match view.seen[i] {
                    ts if ts == last.ts => fs.matched += 1,
                    i64::MIN => fs.missing += 1,
                    _ => fs.stale += 1,
                }
            }
        }
        fs.pass = fs.matched == fs.expected && fs.ts_regressions == 0;
        fs
    }

    /// Tells every client to close, and waits (briefly) for them.
    async fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        let all = futures_util::future::join_all(self.tasks.drain(..));
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!("some clients did not close within 10 s");
        }
    }
}

/// What the measured window and the settling phase produced.
struct Window {
    start: Mark,
    end: Mark,
    drain: Duration,
    settle: Duration,
    peaks: std::collections::BTreeMap<u32, procstat::ProcSample>,
}

const MB: f64 = 1024.0 * 1024.0;

fn build_report(s: &Scenario, fleet: &Fleet, final_state: FinalState, w: Window) -> Report {
    let st = &fleet.stats;
    let secs = w.end.at.duration_since(w.start.at).as_secs_f64().max(1e-9);
    let in_window = w.end.deliveries - w.start.deliveries;
    let written = w.end.written - w.start.written;
    let (mut e2e, mut same, mut cross) = (
        latency_histogram(),
        latency_histogram(),
        latency_histogram(),
    );
    for view in &fleet.views {
        let view = lock(view);
        // Same bounds everywhere, so `add` cannot fail.
        let _ = e2e.add(&view.latency);
        let _ = same.add(&view.same_node);
        let _ = cross.add(&view.cross_node);
    }
    let positions = positions(st);
    let passed = positions.lost == 0 && final_state.pass;
    Report {
        scenario: s.summary(),
        window_s: secs,
        positions,
        connections: Connections {
            connects: Stats::get(&st.connects),
            connect_failures: Stats::get(&st.connect_failures),
            failovers: Stats::get(&st.failovers),
            kicks: Stats::get(&st.kicks),
            ends_by_reason: st.closes(),
            dashboard_reconnects: Stats::get(&st.dashboard_reconnects),
        },
        ack_latency: Latency::from_us(&st.ack_latency()),
        e2e_latency: Latency::from_us(&e2e),
        e2e_same_node: Latency::from_us(&same),
        e2e_cross_node: Latency::from_us(&cross),
        deliveries: Deliveries {
            total: Stats::get(&st.deliveries),
            in_window,
            per_sec: in_window as f64 / secs,
            per_position: if written > 0 {
                in_window as f64 / written as f64
            } else {
                0.0
            },
            snapshot_items: Stats::get(&st.snapshot_items),
            status_frames: Stats::get(&st.status_frames),
            duplicates: Stats::get(&st.duplicates),
            unmatched: Stats::get(&st.unmatched),
        },
        final_state,
        server: server_usage(s, &w, written, in_window, secs),
        aux: aux_usage(s, &w, written, secs),
        client: ClientUsage {
            cpu_seconds_in_window: w.end.client_cpu - w.start.client_cpu,
            cpu_cores: (w.end.client_cpu - w.start.client_cpu) / secs,
            peak_rss_mb: w
                .peaks
                .get(&std::process::id())
                .map_or(0.0, |p| p.rss_bytes as f64 / MB),
        },
        host: Host {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_avg_start: w.start.load_avg,
            load_avg_end: w.end.load_avg,
        },
        drain_s: w.drain.as_secs_f64(),
        settle_s: w.settle.as_secs_f64(),
        passed,
    }
}

fn positions(st: &Stats) -> Positions {
    let sent = Stats::get(&st.sent);
    let acked = Stats::get(&st.acked);
    Positions {
        sent,
        written: Stats::get(&st.written),
        acked,
        acked_by_welcome: Stats::get(&st.acked_by_welcome),
        rejected: Stats::get(&st.rejected),
        evicted: Stats::get(&st.evicted),
        lost: sent.saturating_sub(acked),
        errors_by_code: st.errors(),
    }
}

fn server_usage(
    s: &Scenario,
    w: &Window,
    written: u64,
    deliveries: u64,
    secs: f64,
) -> Option<ServerUsage> {
    if s.server_pids.is_empty() {
        return None;
    }
    let cpu = w.end.server_cpu - w.start.server_cpu;
    let server_peaks = || {
        w.peaks
            .iter()
            .filter(|(pid, _)| s.server_pids.contains(pid))
    };
    Some(ServerUsage {
        pids: s.server_pids.clone(),
        cpu_seconds: cpu,
        cpu_cores: cpu / secs,
        positions_in_window: written,
        cpu_s_per_1000_positions: if written > 0 {
            cpu / (written as f64 / 1000.0)
        } else {
            0.0
        },
        cpu_us_per_position: if written > 0 {
            cpu * 1e6 / written as f64
        } else {
            0.0
        },
        cpu_us_per_delivery: if deliveries > 0 {
            cpu * 1e6 / deliveries as f64
        } else {
            0.0
        },
        peak_rss_mb: server_peaks().map(|(_, p)| p.rss_bytes as f64).sum::<f64>() / MB,
        vm_hwm_mb: server_peaks().map(|(_, p)| p.hwm_bytes as f64).sum::<f64>() / MB,
    })
}

fn aux_usage(s: &Scenario, w: &Window, written: u64, secs: f64) -> Option<AuxUsage> {
    if s.aux_pids.is_empty() {
        return None;
    }
    let cpu = w.end.aux_cpu - w.start.aux_cpu;
    Some(AuxUsage {
        pids: s.aux_pids.clone(),
        cpu_seconds: cpu,
        cpu_cores: cpu / secs,
        cpu_s_per_1000_positions: if written > 0 {
            cpu / (written as f64 / 1000.0)
        } else {
            0.0
        },
    })
}

/// A one-thread runtime for the dashboards, shut down with the run (a tokio
/// runtime may not be dropped from async code, hence the wrapper).
struct DashboardRuntime {
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl DashboardRuntime {
    fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("dashboards")
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(task)
    }
}

impl Drop for DashboardRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
