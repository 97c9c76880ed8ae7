//! Retention: trails older than `trails.retention_days` are dropped, hourly.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::store::{TrailStore, retention_cutoff};
use crate::domain::Timestamp;

/// How often retention (and, on PostgreSQL, partition upkeep) runs.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Applies retention once at start and then hourly until `shutdown`. A failed
/// run is logged and tried again at the next tick: nothing depends on it
/// soon, and fixes with no partition yet land in the default one.
pub async fn run_retention(store: Arc<dyn TrailStore>, days: u32, shutdown: CancellationToken) {
    crate::periodic::run_every(RETENTION_INTERVAL, shutdown, || async {
        match store.apply_retention(days).await {
            Ok(gone) => tracing::info!(
                backend = store.backend(),
                gone,
                days,
                "trail retention applied"
            ),
            Err(e) => {
                tracing::warn!(backend = store.backend(), error = %e, "trail retention failed; retrying next hour")
            }
        }
        // Events are kept as long as the fixes that caused them.
        let cutoff = Timestamp::from_millis(retention_cutoff(Timestamp::now(), days));
        match store.alerts().drop_events_before(cutoff).await {
            Ok(gone) => tracing::debug!(gone, "event retention applied"),
            Err(e) => tracing::warn!(error = %e, "event retention failed; retrying next hour"),
        }
    })
    .await;
}
