//! `fleethub serve --demo N`: simulated drivers from the load-test library,
//! speaking the real protocol to this very hub, so a first run shows vehicles
//! moving at once.

use crate::startup::Application;

/// Fleet the demo drivers belong to.
pub const DEMO_FLEET: &str = "demo";

pub fn start(app: &Application, drivers: usize) {
    let _ = (app, drivers);
    tracing::warn!("demo drivers are not available in this build yet");
}
