//! Rate limits (token buckets from governor): a driver's position budget,
//! shared by the WebSocket and HTTP paths, and the abuse budgets of bad frames.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use governor::clock::DefaultClock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::DriverSettings;

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
