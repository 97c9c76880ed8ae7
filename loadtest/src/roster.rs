//! The simulated drivers as the rest of the run sees them: their ids, when
//! each recent position left the app and through which hub URL (for
//! end-to-end latency, split into same-node and cross-node), the last
//! position each one produced (for the final-state check) and how many are
//! still waiting for an ack.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::stats::lock;

/// Recent sends remembered per driver. A dashboard receives a position
/// milliseconds after it is sent, so a few seconds of history is plenty.
const SEND_SLOTS: usize = 16;

/// The last fix a driver produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastFix {
    pub ts: i64,
    pub lat: f64,
    pub lon: f64,
}

struct Slot {
    ts: AtomicI64,
    sent_ns: AtomicU64,
    node: AtomicU32,
}

/// When and where a driver's fix left the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// On the run's clock ([`crate::stats::Stats::now_ns`]).
    pub at_ns: u64,
    /// Index in the run's URL list of the hub the driver was connected to.
    pub node: u32,
}

pub struct Roster {
    ids: Vec<String>,
    index: HashMap<String, u32>,
    sends: Vec<Slot>,
    last: Vec<Mutex<Option<LastFix>>>,
    unacked: Vec<AtomicUsize>,
    connected: Vec<AtomicBool>,
}

impl Roster {
    pub fn new(ids: Vec<String>) -> Self {
        let n = ids.len();
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        Self {
            ids,
            index,
            sends: (0..n * SEND_SLOTS)
                .map(|_| Slot {
                    ts: AtomicI64::new(i64::MIN),
                    sent_ns: AtomicU64::new(0),
                    node: AtomicU32::new(0),
                })
                .collect(),
            last: (0..n).map(|_| Mutex::new(None)).collect(),
            unacked: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            connected: (0..n).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).map(|&i| i as usize)
    }

    /// Notes that driver `i` first sent the fix stamped `ts` at `sent.at_ns`,
    /// connected to hub URL `sent.node`.
    pub fn record_send(&self, i: usize, seq: u64, ts: i64, sent: Sent) {
        let slot = &self.sends[i * SEND_SLOTS + (seq as usize % SEND_SLOTS)];
        // Time and node first, then the key with Release: a reader that sees
        // the key sees them.
        slot.sent_ns.store(sent.at_ns, Ordering::Relaxed);
        slot.node.store(sent.node, Ordering::Relaxed);
        slot.ts.store(ts, Ordering::Release);
    }

    /// When and through which node driver `i`'s fix `ts` was sent, if still remembered.
    pub fn sent_at(&self, i: usize, ts: i64) -> Option<Sent> {
        let slots = self.sends.get(i * SEND_SLOTS..(i + 1) * SEND_SLOTS)?;
        slots
            .iter()
            .find(|s| s.ts.load(Ordering::Acquire) == ts)
            .map(|s| Sent {
                at_ns: s.sent_ns.load(Ordering::Relaxed),
                node: s.node.load(Ordering::Relaxed),
            })
    }

    pub fn set_last(&self, i: usize, fix: LastFix) {
        *lock(&self.last[i]) = Some(fix);
    }

    pub fn last(&self, i: usize) -> Option<LastFix> {
        *lock(&self.last[i])
    }

    pub fn set_unacked(&self, i: usize, n: usize) {
        self.unacked[i].store(n, Ordering::Relaxed);
    }

    pub fn total_unacked(&self) -> usize {
        self.unacked.iter().map(|u| u.load(Ordering::Relaxed)).sum()
    }

    pub fn set_connected(&self, i: usize, up: bool) {
        self.connected[i].store(up, Ordering::Relaxed);
    }

    pub fn connected(&self) -> usize {
        self.connected
            .iter()
            .filter(|c| c.load(Ordering::Relaxed))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_times_are_found_by_ts() {
        let r = Roster::new(vec!["a".into(), "b".into()]);
        let sent = Sent { at_ns: 42, node: 1 };
        r.record_send(1, 3, 1_000, sent);
        assert_eq!(r.sent_at(1, 1_000), Some(sent));
        assert_eq!(r.sent_at(0, 1_000), None);
        assert_eq!(r.index_of("b"), Some(1));
        // Sixteen sends later the slot is reused.
        r.record_send(1, 3 + SEND_SLOTS as u64, 2_000, Sent { at_ns: 43, node: 0 });
        assert_eq!(r.sent_at(1, 1_000), None);
    }
}
