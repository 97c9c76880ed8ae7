//! Cumulative acks for one driver connection. `ack N` promises that every
//! position with seq <= N sent on this connection is stored or was answered
//! with an error, so N may only pass a seq once its commit is done.

use std::collections::BTreeMap;

use crate::domain::Seq;

#[derive(Debug, Default)]
pub struct AckTracker {
    /// Highest seq received on this connection, accepted or not.
    max_seen: Seq,
    /// Seqs waiting for their commit, with how many times each is waiting.
    inflight: BTreeMap<Seq, u32>,
    acked: Seq,
}

impl AckTracker {
    /// A seq that needs no commit (refused with an error, or a duplicate).
    pub fn settled(&mut self, seq: Seq) {
        self.max_seen = self.max_seen.max(seq);
    }

    /// Seqs handed to the trail writer.
    pub fn begin(&mut self, seqs: &[Seq]) {
        for &seq in seqs {
            self.max_seen = self.max_seen.max(seq);
            *self.inflight.entry(seq).or_default() += 1;
        }
    }

    /// Seqs whose commit is done (stored, or refused with an error sent).
    pub fn finish(&mut self, seqs: &[Seq]) {
        for seq in seqs {
            if let Some(count) = self.inflight.get_mut(seq) {
                *count -= 1;
                if *count == 0 {
                    self.inflight.remove(seq);
                }
            }
        }
    }

    /// The new cumulative ack, if it moved.
    pub fn next_ack(&mut self) -> Option<Seq> {
        let candidate = match self.inflight.keys().next() {
            Some(&lowest) => lowest.saturating_sub(1).min(self.max_seen),
            None => self.max_seen,
        };
        (candidate > self.acked).then(|| {
            self.acked = candidate;
            candidate
        })
    }

    pub fn acked(&self) -> Seq {
        self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ack_waits_for_the_lowest_pending_commit() {
        let mut t = AckTracker::default();
        t.begin(&[1, 2]);
        t.begin(&[3]);
        assert_eq!(t.next_ack(), None);
        t.finish(&[3]);
        assert_eq!(t.next_ack(), None, "1 and 2 are not stored yet");
        t.finish(&[1, 2]);
        assert_eq!(t.next_ack(), Some(3));
        assert_eq!(t.next_ack(), None, "acks are sent once");
    }

    #[test]
    fn refused_positions_let_the_ack_pass() {
        let mut t = AckTracker::default();
        t.begin(&[1]);
        t.settled(2);
        assert_eq!(t.next_ack(), None);
        t.finish(&[1]);
        assert_eq!(t.next_ack(), Some(2));
    }

    #[test]
    fn the_ack_never_goes_back_when_old_seqs_arrive() {
        let mut t = AckTracker::default();
        t.begin(&[10]);
        t.finish(&[10]);
        assert_eq!(t.next_ack(), Some(10));
        t.begin(&[4]);
        assert_eq!(t.next_ack(), None);
        t.finish(&[4]);
        assert_eq!(t.next_ack(), None);
        assert_eq!(t.acked(), 10);
    }

    #[test]
    fn a_seq_pending_twice_holds_until_both_finish() {
        let mut t = AckTracker::default();
        t.begin(&[5]);
        t.begin(&[5]);
        t.finish(&[5]);
        assert_eq!(t.next_ack(), Some(4), "nothing below 5 is pending");
        t.finish(&[5]);
        assert_eq!(t.next_ack(), Some(5));
    }
}
