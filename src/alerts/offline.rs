//! The offline sweep: every node looks, once a second, for drivers the hub
//! has not heard from for their fleet's `offline_after_secs`, and raises
//! `offline` for each, once per silence. Several nodes sweep at once; the
//! claim on the driver's state row ([`AlertStore::raise_offline`]) lets one
//! of them raise it, and a driver that spoke meanwhile is left alone.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Alerts;
use crate::domain::Timestamp;

/// How often the sweep runs: the precision of `offline`.
const EVERY: Duration = Duration::from_secs(1);
/// Most drivers one sweep raises; the rest wait for the next.
const MAX_PER_SWEEP: usize = 500;

/// Sweeps until `stop`.
pub async fn run(alerts: Arc<Alerts>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep(&alerts).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("offline sweep: the database is reachable again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "offline sweep failed; retrying every second");
            }
            Err(_) => {}
        }
    }
}

/// One sweep; returns how many events it raised.
async fn sweep(alerts: &Alerts) -> Result<usize, crate::trails::StoreError> {
    let silent = alerts
        .store()
        .silent(Timestamp::now(), MAX_PER_SWEEP)
        .await?;
    let mut raised = Vec::new();
    for driver in &silent {
        if let Some(event) = alerts.store().raise_offline(driver).await? {
            raised.push(event);
        }
    }
    alerts.announce(&raised);
    Ok(raised.len())
}
