//! `fleethub serve --demo N`: simulated drivers from the load-test library,
//! speaking the real protocol to this very hub over WebSocket, so a first run
//! shows vehicles moving on the dashboard at once.

use loadtest::demo::{self, DemoConfig};
use secrecy::ExposeSecret;
use tokio::sync::watch;

use crate::startup::Application;

/// Fleet the demo drivers belong to.
pub const DEMO_FLEET: &str = "demo";

/// Starts `drivers` simulated drivers in Lima; they stop with the hub.
pub fn start(app: &Application, drivers: usize) {
    let state = app.state();
    let mut config = DemoConfig::new(
        format!("ws://{}", app.self_addr()),
        state.jwt_secret.expose_secret(),
    );
    config.drivers = drivers;
    config.fleet = DEMO_FLEET.to_owned();
    let (stop_tx, stop_rx) = watch::channel(false);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        let _ = stop_tx.send(true);
    });
    demo::spawn(config, stop_rx);
    tracing::info!(drivers, fleet = DEMO_FLEET, "demo drivers started");
}
