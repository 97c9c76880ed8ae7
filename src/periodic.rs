//! Background chores that run on a fixed period until the hub shuts down
//! (metrics upkeep, trail retention, forgetting silent drivers, pruning rate
//! limit buckets).

use std::future::Future;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Runs `chore` at once, then every `period`, until `shutdown`. A chore that
/// overruns its period delays the next run instead of bunching runs up.
pub async fn run_every<F, Fut>(period: Duration, shutdown: CancellationToken, mut chore: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => chore().await,
        }
    }
}
