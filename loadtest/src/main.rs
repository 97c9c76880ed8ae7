//! `fleethub-loadtest`: runs a scenario against a hub and prints the report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use loadtest::cli::FleetArgs;
use loadtest::{Auth, Scenario};

/// Simulated drivers and dashboards against a fleethub hub, with a report.
#[derive(Debug, Parser)]
#[command(name = "fleethub-loadtest", version)]
struct Cli {
    /// Hub WebSocket base; repeat for several nodes (drivers fail over between them).
    #[arg(long = "url", default_value = "ws://127.0.0.1:8080")]
    urls: Vec<String>,
    /// The hub's HS256 secret; every client mints its own token.
    #[arg(long, env = "FLEETHUB_JWT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// File of ready driver tokens, one per line (instead of --secret).
    #[arg(long, requires = "dashboard_token")]
    driver_tokens: Option<PathBuf>,
    /// Dispatcher or admin token for the dashboards (with --driver-tokens).
    #[arg(long)]
    dashboard_token: Option<String>,
    /// Simulated drivers.
    #[arg(long, default_value_t = 300)]
    drivers: usize,
    /// Positions per second per driver.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Measured window after the ramp-up (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Drivers connect evenly over this time.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    ramp_up: Duration,
    /// Driver disconnect/reconnect events per second.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    #[command(flatten)]
    view: FleetArgs,
    /// Fleet the drivers belong to (and the dashboards watch).
    #[arg(long, default_value = "demo")]
    fleet: String,
    /// Driver ids are <prefix><n>.
    #[arg(long, default_value = "d")]
    driver_prefix: String,
    /// Hub process to measure (CPU, RSS); repeat for several nodes.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Another process whose CPU in the window is reported apart (e.g. Redis); repeatable.
    #[arg(long = "aux-pid")]
    aux_pids: Vec<u32>,
    /// Longest wait for acks, then for dashboards, after sending stops.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    settle_timeout: Duration,
    /// Unacked positions each app keeps before dropping the oldest.
    #[arg(long, default_value_t = 600)]
    resend_capacity: usize,
    /// Force (true) or forbid (false) spreading source addresses over 127.0.0.x.
    #[arg(long)]
    spread_sources: Option<bool>,
    /// Write the report as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl Cli {
    fn auth(&self) -> anyhow::Result<Auth> {
        if let Some(path) = &self.driver_tokens {
            let text = std::fs::read_to_string(path)?;
            let drivers = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            let dashboard = self.dashboard_token.clone().unwrap_or_default();
            return Ok(Auth::Tokens { drivers, dashboard });
        }
        let secret = self.secret.clone().ok_or_else(|| {
            anyhow::anyhow!("give --secret (or FLEETHUB_JWT_SECRET), or --driver-tokens")
        })?;
        Ok(Auth::Secret(secret))
    }

    fn scenario(&self) -> anyhow::Result<Scenario> {
        let mut s = Scenario::new(self.urls.clone(), self.auth()?);
        s.drivers = self.drivers;
        s.rate_hz = self.rate;
        s.duration = self.duration;
        s.ramp_up = self.ramp_up;
        s.churn_per_sec = self.churn;
        s.dashboards = self.view.dashboards;
        s.whole_city = self.view.whole_city;
        s.viewport_span = self.view.viewport_span;
        s.city = self.view.city.clone();
        s.seed = self.view.seed;
        s.fleet = self.fleet.clone();
        s.driver_prefix = self.driver_prefix.clone();
        s.server_pids = self.server_pids.clone();
        s.aux_pids = self.aux_pids.clone();
        s.settle_timeout = self.settle_timeout;
        s.resend_capacity = self.resend_capacity;
        s.spread_sources = self.spread_sources;
        Ok(s)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fleethub-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `Ok(passed)`; exit status 1 means the run completed but failed its checks.
fn real_main() -> anyhow::Result<bool> {
    let cli = Cli::parse();
    let scenario = cli.scenario()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(loadtest::run(scenario))?;
    print!("{report}");
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(report.passed)
}
