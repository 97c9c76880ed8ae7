//! Other nodes' changes to the fences and alert rules, applied to this
//! node's copies: each change a node makes is announced over the cluster
//! bus, and every other node reloads that fleet's fences and rules from the
//! database (the truth). When a link comes back, every node reloads all of
//! them, since notices may have been lost meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::Geofences;
use crate::alerts::Alerts;
use crate::cluster::Changed;

/// How long a reload that failed (the database unreachable) waits to try again.
const RETRY: Duration = Duration::from_secs(1);

/// Applies `changes` until `stop`.
pub async fn run(
    fences: Arc<Geofences>,
    alerts: Arc<Alerts>,
    mut changes: UnboundedReceiver<Changed>,
    stop: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            _ = stop.cancelled() => return,
            change = changes.recv() => match change {
                Some(change) => change,
                None => return,
            },
        };
        apply(&fences, &alerts, &change, &stop).await;
    }
}

/// Reloads what `change` names, retrying until it is done or `stop`.
async fn apply(fences: &Geofences, alerts: &Alerts, change: &Changed, stop: &CancellationToken) {
    loop {
        let reloaded = match change {
            Changed::Fences(fleet) => match alerts.reload_fleet(fleet).await {
                Ok(()) => fences.reload_fleet(fleet).await,
                Err(e) => Err(e),
            },
            Changed::Everything => match alerts.load().await {
                Ok(_) => fences.load().await,
                Err(e) => Err(e),
            },
        };
        match reloaded {
            Ok(count) => {
                tracing::debug!(
                    ?change,
                    count,
                    "geofences reloaded after another node's change"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(?change, error = %e, "geofences: reload failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}
