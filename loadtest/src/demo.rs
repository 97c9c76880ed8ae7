//! `fleethub serve --demo N`: simulated drivers that make a fresh hub come
//! alive on the dashboard. They run until shutdown, reconnect forever (the
//! hub may still be starting when they first dial) and cost little: one
//! small task per driver and a fix per second.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::city::City;
use crate::driver::{self, Control, Credential, DriverConfig};
use crate::roster::Roster;
use crate::stats::Stats;

/// What the demo drives.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// WebSocket base of the hub, e.g. `ws://127.0.0.1:8080`.
    pub url: String,
    /// The hub's JWT secret (the demo mints its drivers' tokens).
    pub secret: String,
    pub drivers: usize,
    pub fleet: String,
    pub city: City,
    pub seed: u64,
    pub rate_hz: f64,
}

impl DemoConfig {
    /// 300 drivers in Lima at 1 Hz, fleet `demo`.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret: secret.into(),
            drivers: 300,
            fleet: "demo".into(),
            city: City::lima(),
            seed: 1,
            rate_hz: 1.0,
        }
    }
}

/// Demo driver ids: `demo-001`, `demo-002`, ...
pub fn driver_id(n: usize) -> String {
    format!("demo-{n:03}")
}

/// Starts the demo fleet; it stops when `shutdown` becomes `true` (or its
/// sender is dropped). The handle finishes once every driver has closed.
pub fn spawn(cfg: DemoConfig, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let ids = (1..=cfg.drivers).map(driver_id).collect();
        let roster = Arc::new(Roster::new(ids));
        let stats = Arc::new(Stats::new());
        // Always sending; the sender lives as long as this task.
        let (_sending_tx, sending) = watch::channel(true);
        let driver_cfg = Arc::new(DriverConfig {
            urls: vec![cfg.url.clone()],
            credential: Credential::Secret(cfg.secret.clone()),
            fleet: cfg.fleet.clone(),
            rate_hz: if cfg.rate_hz > 0.0 { cfg.rate_hz } else { 1.0 },
            city: cfg.city.clone(),
            seed: cfg.seed,
            resend_capacity: 300,
            spread_sources: false,
            token_ttl: Duration::from_secs(24 * 3600),
            max_backoff: Duration::from_secs(5),
        });
        // Connections spread over two seconds, so the hub is not hit by all at once.
        let spread = Duration::from_secs(2);
        let tasks: Vec<_> = (0..cfg.drivers)
            .map(|i| {
                let ctl = Control {
                    sending: sending.clone(),
                    shutdown: shutdown.clone(),
                    kick: Arc::new(Notify::new()),
                };
                let delay = spread.mul_f64(i as f64 / cfg.drivers.max(1) as f64);
                tokio::spawn(driver::run(
                    i,
                    delay,
                    driver_cfg.clone(),
                    stats.clone(),
                    roster.clone(),
                    ctl,
                ))
            })
            .collect();
        futures_util::future::join_all(tasks).await;
    })
}
