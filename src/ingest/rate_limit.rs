//! Rate limits (token buckets from governor): each driver's position budget,
//! one bucket per driver (fleet and id) whatever path its positions take, and the abuse
//! budgets of connections that send bad frames.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::config::DriverSettings;
use crate::domain::DriverKey;

/// Every driver's position bucket, shared by all ingest paths: reconnecting
/// or switching to HTTP must not be a way around the limit, and another
/// fleet's driver with the same id must not spend this one's budget.
pub type DriverLimiter = DefaultKeyedRateLimiter<DriverKey>;

/// How often buckets that have refilled are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub fn driver_limiter(settings: &DriverSettings) -> DriverLimiter {
    RateLimiter::keyed(position_quota(settings))
}

/// Forgets the buckets that are full again (indistinguishable from new
/// ones), so the map holds the drivers sending lately, not every driver ever.
pub async fn run_pruning(limiter: Arc<DriverLimiter>, shutdown: CancellationToken) {
    crate::periodic::run_every(PRUNE_EVERY, shutdown, || {
        limiter.retain_recent();
        limiter.shrink_to_fit();
        std::future::ready(())
    })
    .await;
}

/// A driver's position budget (`driver.rate_per_sec`, burst `driver.rate_burst`).
pub fn position_quota(settings: &DriverSettings) -> Quota {
    quota(settings.rate_per_sec, settings.rate_burst)
}

/// `per_sec` with bursts of `burst`; zero (refused by config) counts as one.
pub fn quota(per_sec: u32, burst: u32) -> Quota {
    let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_sec).allow_burst(burst)
}

/// A limiter for one connection, on the process's one clock: a clock per
/// limiter would probe the CPU (`cpuid`, costly in a VM) on every connect.
pub fn limiter(quota: Quota) -> DefaultDirectRateLimiter {
    static CLOCK: OnceLock<DefaultClock> = OnceLock::new();
    RateLimiter::direct_with_clock(quota, CLOCK.get_or_init(DefaultClock::default).clone())
}

/// Takes `n` items' worth from the bucket if they fit now; nothing is taken
/// otherwise. No items always fit.
pub fn take(limiter: &DefaultDirectRateLimiter, n: usize) -> bool {
    cells(n).is_none_or(|n| matches!(limiter.check_n(n), Ok(Ok(()))))
}

/// `take` on `key`'s bucket of a keyed limiter.
pub fn take_for<K: Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
    n: usize,
) -> bool {
    cells(n).is_none_or(|n| matches!(limiter.check_key_n(key, n), Ok(Ok(()))))
}

/// Counts beyond `u32` are far above any batch limit, which refuses them first.
fn cells(n: usize) -> Option<NonZeroU32> {
    u32::try_from(n).ok().and_then(NonZeroU32::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_take_leaves_the_bucket_as_it_was() {
        let bucket = limiter(quota(1, 10));
        assert!(take(&bucket, 0));
        assert!(take(&bucket, 6));
        assert!(!take(&bucket, 5), "only 4 left");
        assert!(take(&bucket, 4), "the refusal took nothing");
        let keyed: DefaultKeyedRateLimiter<&str> = RateLimiter::keyed(quota(1, 3));
        assert!(take_for(&keyed, &"a", 3));
        assert!(!take_for(&keyed, &"a", 1));
        assert!(take_for(&keyed, &"b", 3), "each key has its own bucket");
    }
}
