//! The driver app's outbox: every position stays here, under its `seq`,
//! until the hub acknowledges it, so nothing is lost across reconnections.
//!
//! Three rules from the wire contract shape it:
//! - `ack N` is cumulative *per connection*: every position with `seq <= N`
//!   sent on this connection is stored or was rejected with an error.
//! - Positions refused with `rate_limited` or `storage_unavailable` were not
//!   stored and must be resent, even though a later ack covers their seq.
//! - After a reconnection, `welcome.last_seq` is the highest seq stored:
//!   everything at or below it is done, everything above is resent.
//!
//! The subtle case is a resend on the same connection: an ack already in
//! flight (answering an older frame) could be mistaken for the answer to the
//! resend. So a resent position is cleared only by an ack that must have
//! been produced after the hub read it: one covering a seq never sent before
//! on this connection and carried in the same frame, or, when the frame holds
//! only resends, any ack, but then the frame may leave only once every earlier
//! frame has been answered (the connection is "quiet").

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::movement::Fix;

/// How long a refused (`rate_limited`, `storage_unavailable`) position waits
/// before it is offered again.
pub const RETRY_DELAY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not sent on the current connection.
    Unsent,
    /// Sent; removed by an ack `>= clear_at`, or by any ack when `clear_at == 0`.
    InFlight { clear_at: u64 },
    /// Refused for a transient reason; offered again from `at`.
    Retry { at: Instant },
}

/// One position waiting for its ack.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: u64,
    /// Fix time, ms since the Unix epoch.
    pub ts: i64,
    pub fix: Fix,
    /// When it first left the app, for ack latency.
    pub first_sent: Option<Instant>,
    /// How many times it was written to a socket.
    pub sends: u32,
    state: State,
}

/// Bounded buffer of unacknowledged positions, oldest first (ascending seq).
#[derive(Debug)]
pub struct ResendBuffer {
    items: VecDeque<Pending>,
    capacity: usize,
    next_seq: u64,
    /// Highest seq written on the current connection.
    highest_sent: u64,
    /// Highest ack received on the current connection.
    highest_ack: u64,
}

impl ResendBuffer {
    pub fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 1,
            highest_sent: 0,
            highest_ack: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The seq the next position will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Adds a new position. When full, the oldest one is dropped (returned)
    /// so that memory stays bounded during a long outage.
    pub fn push(&mut self, ts: i64, fix: Fix) -> (u64, Option<Pending>) {
        let evicted = if self.items.len() >= self.capacity {
            self.items.pop_front()
        } else {
            None
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.items.push_back(Pending {
            seq,
            ts,
            fix,
            first_sent: None,
            sends: 0,
            state: State::Unsent,
        });
        (seq, evicted)
    }

    /// A new socket: nothing is in flight on it yet.
    pub fn on_connect(&mut self) {
        self.highest_sent = 0;
        self.highest_ack = 0;
        for p in &mut self.items {
            p.state = State::Unsent;
        }
    }

    /// `welcome.last_seq`: everything up to it is stored (returned, to count as
    /// acked); numbering continues above it if the hub knows a higher seq
    /// (an app reinstalled, or a simulator rerun against a persistent hub).
    pub fn on_welcome(&mut self, last_seq: u64) -> Vec<Pending> {
        let done = self.remove_where(|p| p.seq <= last_seq);
        self.next_seq = self.next_seq.max(last_seq + 1);
        done
    }

    /// A cumulative ack: returns the positions it settles.
    pub fn on_ack(&mut self, n: u64) -> Vec<Pending> {
        self.highest_ack = self.highest_ack.max(n);
        self.remove_where(|p| match p.state {
            State::InFlight { clear_at } => clear_at == 0 || clear_at <= n,
            _ => false,
        })
    }

    /// An error for `seq`. A transient refusal keeps the position for a later
    /// resend; any other code settles it as rejected (returned).
    pub fn on_error(&mut self, seq: u64, retryable: bool, now: Instant) -> Option<Pending> {
        let idx = self.items.iter().position(|p| p.seq == seq)?;
        if retryable {
            self.items[idx].state = State::Retry {
                at: now + RETRY_DELAY,
            };
            return None;
        }
        self.items.remove(idx)
    }

    /// The next frame's worth (at most `max`) of positions to write, marked in
    /// flight. Empty when there is nothing to send or resends must wait.
    pub fn take_sendable(&mut self, now: Instant, max: usize) -> Vec<Pending> {
        let fresh_floor = self.highest_sent;
        let quiet = self.highest_ack >= self.highest_sent;
        let eligible = |p: &Pending| match p.state {
            State::Unsent => true,
            State::Retry { at } => at <= now,
            State::InFlight { .. } => false,
        };
        let picked: Vec<usize> = (0..self.items.len())
            .filter(|&i| eligible(&self.items[i]))
            .take(max)
            .collect();
        let top_fresh = picked
            .iter()
            .map(|&i| &self.items[i])
            .filter(|p| p.seq > fresh_floor && p.state == State::Unsent)
            .map(|p| p.seq)
            .max();
        let resend_clear_at = match (top_fresh, quiet) {
            (Some(top), _) => top,
            (None, true) => 0,
            // Only resends, and an older frame is still unanswered: wait.
            (None, false) => return Vec::new(),
        };
        let mut frame = Vec::with_capacity(picked.len());
        for i in picked {
            let p = &mut self.items[i];
            let fresh = p.seq > fresh_floor && p.state == State::Unsent;
            let clear_at = if fresh { p.seq } else { resend_clear_at };
            p.state = State::InFlight { clear_at };
            p.sends += 1;
            p.first_sent.get_or_insert(now);
            self.highest_sent = self.highest_sent.max(p.seq);
            frame.push(p.clone());
        }
        frame
    }

    /// The earliest moment a refused position may be offered again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.items
            .iter()
            .filter_map(|p| match p.state {
                State::Retry { at } => Some(at),
                _ => None,
            })
            .min()
    }

    fn remove_where(&mut self, mut settled: impl FnMut(&Pending) -> bool) -> Vec<Pending> {
        let mut out = Vec::new();
        self.items.retain(|p| {
            if settled(p) {
                out.push(p.clone());
                false
            } else {
                true
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix() -> Fix {
        Fix {
            lat: -12.0,
            lon: -77.0,
            speed: 8.0,
            heading: 90.0,
            acc: 5.0,
        }
    }

    fn seqs(v: &[Pending]) -> Vec<u64> {
        v.iter().map(|p| p.seq).collect()
    }

    fn buffer_with(n: usize) -> ResendBuffer {
        let mut b = ResendBuffer::new(100);
        b.on_connect();
        for i in 0..n {
            b.push(i as i64, fix());
        }
        b
    }

    #[test]
    fn cumulative_ack_settles_everything_below() {
        let mut b = buffer_with(5);
        let now = Instant::now();
        assert_eq!(seqs(&b.take_sendable(now, 10)), [1, 2, 3, 4, 5]);
        assert!(b.take_sendable(now, 10).is_empty(), "nothing twice");
        assert_eq!(seqs(&b.on_ack(3)), [1, 2, 3]);
        assert_eq!(seqs(&b.on_ack(5)), [4, 5]);
        assert!(b.is_empty());
    }

    #[test]
    fn frames_respect_the_item_limit() {
        let mut b = buffer_with(5);
        let now = Instant::now();
        assert_eq!(seqs(&b.take_sendable(now, 2)), [1, 2]);
        assert_eq!(seqs(&b.take_sendable(now, 2)), [3, 4]);
        assert_eq!(seqs(&b.take_sendable(now, 2)), [5]);
    }

    #[test]
    fn transient_refusal_survives_the_covering_ack_and_is_resent() {
        let mut b = buffer_with(3);
        let t0 = Instant::now();
        b.take_sendable(t0, 10);
        assert!(b.on_error(2, true, t0).is_none());
        assert_eq!(seqs(&b.on_ack(3)), [1, 3]);
        assert_eq!(b.len(), 1);
        assert!(
            b.take_sendable(t0, 10).is_empty(),
            "waits for the retry delay"
        );
        let later = t0 + RETRY_DELAY;
        assert_eq!(seqs(&b.take_sendable(later, 10)), [2]);
        assert_eq!(seqs(&b.on_ack(3)), [2]);
        assert!(b.is_empty());
    }

    #[test]
    fn a_stale_ack_in_flight_does_not_clear_a_resend() {
        let mut b = buffer_with(3);
        let t0 = Instant::now();
        b.take_sendable(t0, 1); // seq 1
        b.take_sendable(t0, 1); // seq 2
        b.on_error(1, true, t0);
        let later = t0 + RETRY_DELAY;
        // Frame with seq 2 is unanswered, so a lone resend of 1 must wait...
        assert!(b.take_sendable(later, 1).is_empty());
        // ...unless it rides with a fresh position (3): then only ack >= 3 clears it.
        assert_eq!(seqs(&b.take_sendable(later, 10)), [1, 3]);
        assert_eq!(seqs(&b.on_ack(2)), [2], "the old ack settles only seq 2");
        assert_eq!(seqs(&b.on_ack(3)), [1, 3]);
    }

    #[test]
    fn a_lone_resend_on_a_quiet_connection_is_cleared_by_the_next_ack() {
        let mut b = buffer_with(2);
        let t0 = Instant::now();
        b.take_sendable(t0, 10);
        b.on_error(1, true, t0);
        b.on_ack(2);
        assert_eq!(seqs(&b.take_sendable(t0 + RETRY_DELAY, 10)), [1]);
        assert_eq!(seqs(&b.on_ack(2)), [1]);
    }

    #[test]
    fn permanent_rejection_settles_at_once() {
        let mut b = buffer_with(2);
        let now = Instant::now();
        b.take_sendable(now, 10);
        assert_eq!(b.on_error(1, false, now).map(|p| p.seq), Some(1));
        assert!(b.on_error(9, false, now).is_none(), "unknown seq ignored");
        assert_eq!(seqs(&b.on_ack(2)), [2]);
    }

    #[test]
    fn reconnection_resends_only_above_last_seq() {
        let mut b = buffer_with(5);
        let now = Instant::now();
        b.take_sendable(now, 10);
        b.on_ack(1);
        // Connection lost; the hub had stored up to 3 before it went.
        b.on_connect();
        assert_eq!(seqs(&b.on_welcome(3)), [2, 3]);
        let resent = b.take_sendable(now, 10);
        assert_eq!(seqs(&resent), [4, 5]);
        assert!(
            resent
                .iter()
                .all(|p| p.sends == 2 && p.first_sent == Some(now))
        );
        assert_eq!(seqs(&b.on_ack(5)), [4, 5]);
    }

    #[test]
    fn welcome_above_our_numbering_moves_it_up() {
        let mut b = ResendBuffer::new(10);
        b.on_connect();
        b.on_welcome(41);
        assert_eq!(b.push(0, fix()).0, 42);
    }

    #[test]
    fn full_buffer_drops_the_oldest() {
        let mut b = ResendBuffer::new(2);
        b.push(0, fix());
        b.push(1, fix());
        let (seq, evicted) = b.push(2, fix());
        assert_eq!((seq, evicted.map(|p| p.seq)), (3, Some(1)));
        assert_eq!(b.len(), 2);
    }
}
