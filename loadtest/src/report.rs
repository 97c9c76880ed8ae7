//! The result of a run, for people (`Display`) and machines (`Serialize`).

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

/// What was asked for.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioSummary {
    pub urls: Vec<String>,
    pub drivers: usize,
    pub rate_hz: f64,
    pub duration_s: f64,
    pub ramp_up_s: f64,
    pub churn_per_sec: f64,
    pub dashboards: usize,
    pub whole_city: usize,
    /// Fractions of the city a random viewport spans per axis, `MIN-MAX`.
    pub viewport_span: String,
    pub city: String,
    pub seed: u64,
    pub fleet: String,
}

/// Fate of the positions the apps produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Positions {
    /// Unique positions produced by the apps (each has its own seq).
    pub sent: u64,
    /// Positions written to sockets, resends included.
    pub written: u64,
    /// Unique positions the hub confirmed (ack, or `welcome.last_seq` after a reconnection).
    pub acked: u64,
    /// Of `acked`, those confirmed by `welcome.last_seq`.
    pub acked_by_welcome: u64,
    /// Positions refused for good (any code but rate_limited / storage_unavailable).
    pub rejected: u64,
    /// Positions pushed out of a full resend buffer before the hub took them.
    pub evicted: u64,
    /// `sent - acked`: produced but never confirmed.
    pub lost: u64,
    /// `error` frames received, by code (transient ones included).
    pub errors_by_code: BTreeMap<String, u64>,
}

/// Socket life.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Connections {
    /// Successful driver upgrades.
    pub connects: u64,
    pub connect_failures: u64,
    /// Switches to the next `--url`.
    pub failovers: u64,
    /// Churn disconnections performed by the simulator.
    pub kicks: u64,
    /// Why driver sockets ended or failed: close code, `http_<status>`, `eof`, `io_error`...
    pub ends_by_reason: BTreeMap<String, u64>,
    pub dashboard_reconnects: u64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// From a histogram kept in microseconds.
    pub fn from_us(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1_000.0;
        Self {
            samples: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// What the dashboards received.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Deliveries {
    /// Position items in `positions` frames, whole run, all dashboards.
    pub total: u64,
    /// Same, during the measured window.
    pub in_window: u64,
    pub per_sec: f64,
    /// Deliveries in the window per position received in it: how many
    /// dashboards a position reaches, which CPU per delivery depends on.
    pub per_position: f64,
    pub snapshot_items: u64,
    pub status_frames: u64,
    /// Items a dashboard had already received (same driver and ts); not latency samples.
    pub duplicates: u64,
    /// Deliveries in the window whose send time was unknown (not in the latency figures).
    pub unmatched: u64,
}

/// Did every dashboard end up showing every driver where it really stopped?
#[derive(Debug, Clone, Default, Serialize)]
pub struct FinalState {
    pub dashboards: usize,
    /// (dashboard, driver) pairs whose driver's last position lies in the dashboard's box.
    pub expected: u64,
    /// Pairs where the dashboard's newest ts for the driver is exactly that last ts.
    pub matched: u64,
    /// Pairs where the dashboard shows an older position.
    pub stale: u64,
    /// Pairs where the dashboard never heard of the driver.
    pub missing: u64,
    /// Times a dashboard saw a driver's ts go backwards (must be 0).
    pub ts_regressions: u64,
    pub pass: bool,
}

/// Cost of the hub (the `--server-pid` processes) during the measured window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerUsage {
    pub pids: Vec<u32>,
    pub cpu_seconds: f64,
    /// Average cores busy (`cpu_seconds / window`).
    pub cpu_cores: f64,
    /// Positions the hub received in the window (resends included).
    pub positions_in_window: u64,
    pub cpu_s_per_1000_positions: f64,
    /// CPU µs per position received, whatever the dashboards watch.
    pub cpu_us_per_position: f64,
    /// CPU µs per position item delivered to a dashboard.
    pub cpu_us_per_delivery: f64,
    /// Highest resident memory sampled during the run, summed over pids.
    pub peak_rss_mb: f64,
    /// The kernel's lifetime high-water mark (VmHWM), summed over pids.
    pub vm_hwm_mb: f64,
}

/// Cost of other processes (`--aux-pid`, e.g. the cluster's Redis) during the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuxUsage {
    pub pids: Vec<u32>,
    pub cpu_seconds: f64,
    pub cpu_cores: f64,
    /// CPU seconds per 1,000 positions the hubs received in the window.
    pub cpu_s_per_1000_positions: f64,
}

/// Cost of this load generator, to judge whether it was the bottleneck.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientUsage {
    pub cpu_seconds_in_window: f64,
    pub cpu_cores: f64,
    pub peak_rss_mb: f64,
}

/// The machine the run shared, to judge how noisy the numbers are.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Host {
    pub cpus: usize,
    /// One-minute load average when the window opened and when it closed.
    pub load_avg_start: f64,
    pub load_avg_end: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: ScenarioSummary,
    /// Length of the measured (steady, after ramp-up) window, seconds.
    pub window_s: f64,
    pub positions: Positions,
    pub connections: Connections,
    /// First send → covering ack, positions acked on their first send, in the window.
    pub ack_latency: Latency,
    /// Driver send → dashboard receipt, measured on this process's clock, in the window.
    pub e2e_latency: Latency,
    /// Of those, deliveries where the driver (when it sent) and the dashboard
    /// (when it received) were connected to the same `--url`.
    pub e2e_same_node: Latency,
    /// Of those, deliveries where they were on different `--url`s: the fix
    /// crossed from one hub node to another.
    pub e2e_cross_node: Latency,
    pub deliveries: Deliveries,
    pub final_state: FinalState,
    pub server: Option<ServerUsage>,
    /// `--aux-pid` processes, if any.
    pub aux: Option<AuxUsage>,
    pub client: ClientUsage,
    pub host: Host,
    /// Time from "stop sending" until every position was acked (or the settle timeout).
    pub drain_s: f64,
    /// Further time until the final-state check passed (or the settle timeout).
    pub settle_s: f64,
    /// `lost == 0`, no regressions, and the final state is right.
    pub passed: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.scenario;
        writeln!(
            f,
            "fleethub load test: {} drivers at {} Hz for {:.0}s (ramp-up {:.0}s, churn {}/s), {} dashboards (viewports {}) + {} whole-city, {} seed {}",
            s.drivers,
            s.rate_hz,
            s.duration_s,
            s.ramp_up_s,
            s.churn_per_sec,
            s.dashboards,
            s.viewport_span,
            s.whole_city,
            s.city,
            s.seed
        )?;
        writeln!(f, "  urls: {}", s.urls.join(", "))?;
        self.fmt_positions(f)?;
        self.fmt_latency(f)?;
        self.fmt_final(f)?;
        self.fmt_usage(f)?;
        writeln!(f, "  result: {}", if self.passed { "PASS" } else { "FAIL" })
    }
}

impl Report {
    fn fmt_positions(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.positions;
        writeln!(
            f,
            "  positions: sent {} written {} acked {} (by welcome {}) rejected {} evicted {} lost {}",
            p.sent, p.written, p.acked, p.acked_by_welcome, p.rejected, p.evicted, p.lost
        )?;
        if !p.errors_by_code.is_empty() {
            writeln!(f, "  errors by code: {}", kv(&p.errors_by_code))?;
        }
        let c = &self.connections;
        writeln!(
            f,
            "  connections: {} connects, {} failures, {} failovers, {} churn kicks, {} dashboard reconnects",
            c.connects, c.connect_failures, c.failovers, c.kicks, c.dashboard_reconnects
        )?;
        if !c.ends_by_reason.is_empty() {
            writeln!(f, "  socket ends: {}", kv(&c.ends_by_reason))?;
        }
        Ok(())
    }

    fn fmt_latency(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, e, d) = (&self.ack_latency, &self.e2e_latency, &self.deliveries);
        writeln!(
            f,
            "  ack latency:  p50 {:.3} ms  p99 {:.3} ms  ({} samples)",
            a.p50_ms, a.p99_ms, a.samples
        )?;
        writeln!(
            f,
            "  e2e latency:  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  ({} samples)",
            e.p50_ms, e.p90_ms, e.p99_ms, e.max_ms, e.samples
        )?;
        if self.scenario.urls.len() > 1 {
            for (label, l) in [
                ("same-node:", &self.e2e_same_node),
                ("cross-node:", &self.e2e_cross_node),
            ] {
                if l.samples == 0 {
                    writeln!(f, "    {label:<12}no samples")?;
                    continue;
                }
                writeln!(
                    f,
                    "    {label:<12}p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  ({} samples)",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.samples
                )?;
            }
        }
        writeln!(
            f,
            "  deliveries: {} total, {} in the {:.1}s window = {:.0}/s, {:.2} per position (duplicates {}, snapshot items {}, status frames {}, unmatched {})",
            d.total,
            d.in_window,
            self.window_s,
            d.per_sec,
            d.per_position,
            d.duplicates,
            d.snapshot_items,
            d.status_frames,
            d.unmatched
        )
    }

    fn fmt_final(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fs = &self.final_state;
        writeln!(
            f,
            "  final state: {}/{} (dashboard, driver) pairs right, {} stale, {} missing, {} ts regressions -> {} (drain {:.2}s, settle {:.2}s)",
            fs.matched,
            fs.expected,
            fs.stale,
            fs.missing,
            fs.ts_regressions,
            if fs.pass { "pass" } else { "FAIL" },
            self.drain_s,
            self.settle_s
        )
    }

    fn fmt_usage(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(sv) = &self.server {
            writeln!(
                f,
                "  server {:?}: {:.2} CPU s ({:.2} cores), {:.4} CPU s per 1,000 positions ({:.1} µs each), {:.2} µs per delivery, peak RSS {:.1} MB (VmHWM {:.1} MB)",
                sv.pids,
                sv.cpu_seconds,
                sv.cpu_cores,
                sv.cpu_s_per_1000_positions,
                sv.cpu_us_per_position,
                sv.cpu_us_per_delivery,
                sv.peak_rss_mb,
                sv.vm_hwm_mb
            )?;
        }
        if let Some(a) = &self.aux {
            writeln!(
                f,
                "  other processes {:?}: {:.2} CPU s ({:.2} cores), {:.4} CPU s per 1,000 positions",
                a.pids, a.cpu_seconds, a.cpu_cores, a.cpu_s_per_1000_positions
            )?;
        }
        let c = &self.client;
        writeln!(
            f,
            "  load generator: {:.2} CPU s ({:.2} cores) in the window, peak RSS {:.1} MB",
            c.cpu_seconds_in_window, c.cpu_cores, c.peak_rss_mb
        )?;
        let h = &self.host;
        writeln!(
            f,
            "  host: {} CPUs, load average {:.2} -> {:.2}",
            h.cpus, h.load_avg_start, h.load_avg_end
        )
    }
}

fn kv(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
