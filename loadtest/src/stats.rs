//! Counters and latency histograms shared by every simulated client of a run.
//! Hot paths touch only relaxed atomics; the histograms are sharded mutexes,
//! so thousands of driver tasks never queue on one lock.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use hdrhistogram::Histogram;

const SHARDS: usize = 16;
/// Latencies are kept in microseconds, up to 5 minutes, 3 significant digits.
const MAX_LATENCY_US: u64 = 300_000_000;

/// A fresh latency histogram in microseconds.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Everything counted during a run.
pub struct Stats {
    /// Monotonic clock shared by senders and receivers (end-to-end latency).
    pub epoch: Instant,
    /// Latencies are recorded only while this is set (the steady window).
    pub measuring: AtomicBool,
    /// Unique positions produced by the apps.
    pub sent: AtomicU64,
    /// Positions written to sockets, resends included.
    pub written: AtomicU64,
    /// Positions the hub confirmed (by ack or by `welcome.last_seq`).
    pub acked: AtomicU64,
    pub acked_by_welcome: AtomicU64,
    /// Positions refused for good (not retryable).
    pub rejected: AtomicU64,
    /// Positions pushed out of a full resend buffer.
    pub evicted: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub failovers: AtomicU64,
    pub kicks: AtomicU64,
    /// Position items received by dashboards in `positions` frames.
    pub deliveries: AtomicU64,
    pub snapshot_items: AtomicU64,
    pub status_frames: AtomicU64,
    /// A dashboard saw a driver's ts go backwards (the hub promises never).
    pub ts_regressions: AtomicU64,
    /// A dashboard received a fix it already had (same driver, same ts).
    pub duplicates: AtomicU64,
    /// Deliveries whose send time was not found (resends, foreign drivers).
    pub unmatched: AtomicU64,
    pub dashboard_reconnects: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    closes: Mutex<BTreeMap<String, u64>>,
    ack_latency: Vec<Mutex<Histogram<u64>>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            measuring: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            written: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            acked_by_welcome: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            kicks: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            snapshot_items: AtomicU64::new(0),
            status_frames: AtomicU64::new(0),
            ts_regressions: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
            dashboard_reconnects: AtomicU64::new(0),
            errors: Mutex::default(),
            closes: Mutex::default(),
            ack_latency: (0..SHARDS)
                .map(|_| Mutex::new(latency_histogram()))
                .collect(),
        }
    }

    /// Nanoseconds since the run's epoch: the one clock for latency.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn is_measuring(&self) -> bool {
        self.measuring.load(Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    /// An `error` frame from the hub, by code.
    pub fn error(&self, code: &str) {
        bump(&self.errors, code);
    }

    /// Why a socket ended: a close code, or a transport failure.
    pub fn close(&self, why: &str) {
        bump(&self.closes, why);
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        lock(&self.errors).clone()
    }

    pub fn closes(&self) -> BTreeMap<String, u64> {
        lock(&self.closes).clone()
    }

    /// Time from first send to the ack that settled it.
    pub fn record_ack_latency(&self, shard: usize, since: Instant) {
        if !self.is_measuring() {
            return;
        }
        let us = since.elapsed().as_micros() as u64;
        lock(&self.ack_latency[shard % SHARDS]).saturating_record(us.max(1));
    }

    pub fn ack_latency(&self) -> Histogram<u64> {
        let mut all = latency_histogram();
        for shard in &self.ack_latency {
            // Same bounds everywhere, so `add` cannot fail.
            let _ = all.add(&*lock(shard));
        }
        all
    }
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
    let mut m = lock(map);
    match m.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            m.insert(key.to_owned(), 1);
        }
    }
}

/// A poisoned lock only means another client task panicked; the counts are still usable.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
