//! What a dashboard's socket holds beyond its outbox: the frames handed to
//! the WebSocket session that the kernel has not taken yet. They sit first in
//! the session's channel, then, encoded, in the HTTP layer's write buffer,
//! which keeps them until the kernel's send buffer has room: for a dashboard
//! that stopped reading, until it is closed.
//!
//! Two counts, the larger one wins:
//! - frames not yet copied out of the channel (their text is dropped once
//!   the HTTP layer has encoded it), exact but blind to the write buffer;
//! - wire bytes handed to the session (frames with their headers) minus the
//!   bytes the kernel has taken from this connection (`TCP_INFO`'s bytes
//!   acknowledged by the peer plus the send queue, `SIOCOUTQ`), which covers
//!   the write buffer too. It is read from the kernel only when needed: when
//!   the writer waits for room, every [`REFRESH`] while something is unsent,
//!   and when asked for the figure. Without a socket to ask (or through TLS,
//!   where the kernel sees more bytes than frames) the first count stands.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::ws::ConnSocket;

/// How often a writer with unsent bytes asks the kernel what it has taken.
pub const REFRESH: Duration = Duration::from_millis(50);

/// The bytes a server frame with a `payload`-byte body takes on the wire
/// (RFC 6455: unmasked, 2, 4 or 10 bytes of header).
pub fn wire_len(payload: usize) -> u64 {
    let header = match payload {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    };
    (payload + header) as u64
}

/// The socket the kernel counts for, and its count when the session began.
struct Kernel {
    socket: ConnSocket,
    base: u64,
}

pub struct Unsent {
    /// Bytes of frames the HTTP layer has not copied out of the channel.
    in_channel: AtomicUsize,
    /// Wire bytes handed to the session since it began.
    handed: AtomicU64,
    /// Wire bytes the kernel had taken at the last reading.
    taken: AtomicU64,
    kernel: OnceLock<Kernel>,
    /// What this dashboard adds to the hub-wide `total`.
    counted: Mutex<usize>,
    total: Arc<AtomicUsize>,
    /// Wakes a writer waiting for room.
    pub(super) wake: Notify,
}

impl Unsent {
    pub fn new(total: Arc<AtomicUsize>) -> Self {
        Self {
            in_channel: AtomicUsize::new(0),
            handed: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            kernel: OnceLock::new(),
            counted: Mutex::new(0),
            total,
            wake: Notify::new(),
        }
    }

    /// Counts what the kernel takes from `socket` from now on.
    pub fn watch(&self, socket: ConnSocket) {
        if let Some(base) = socket.bytes_taken() {
            let _ = self.kernel.set(Kernel { socket, base });
        }
    }

    /// Bytes handed to the socket that the kernel has not taken, as last read.
    pub fn bytes(&self) -> usize {
        let handed = self.handed.load(Ordering::Relaxed);
        let taken = self.taken.load(Ordering::Relaxed);
        let beyond = usize::try_from(handed.saturating_sub(taken)).unwrap_or(usize::MAX);
        match self.kernel.get() {
            Some(_) => beyond.max(self.in_channel.load(Ordering::Relaxed)),
            None => self.in_channel.load(Ordering::Relaxed),
        }
    }

    /// A frame whose `payload` bytes go into the session's channel.
    pub fn handed_frame(&self, payload: usize) {
        self.in_channel.fetch_add(payload, Ordering::Relaxed);
        self.handed(wire_len(payload));
    }

    /// A frame's text left the channel (encoded into the write buffer).
    pub fn copied_out(&self, payload: usize) {
        self.in_channel.fetch_sub(payload, Ordering::Relaxed);
        self.recount();
        self.wake.notify_waiters();
    }

    /// A frame that is not counted in the channel (a ping, a pong).
    pub fn handed(&self, wire: u64) {
        self.handed.fetch_add(wire, Ordering::Relaxed);
        self.recount();
    }

    /// Asks the kernel what it has taken; `false` when there is no socket
    /// to ask (any more).
    pub fn refresh(&self) -> bool {
        let Some(kernel) = self.kernel.get() else {
            return false;
        };
        let Some(now) = kernel.socket.bytes_taken() else {
            return false;
        };
        self.taken
            .fetch_max(now.saturating_sub(kernel.base), Ordering::Relaxed);
        // No wake-up: the writer is the one that asks (it polls while it
        // waits), and waking itself would spin.
        self.recount();
        true
    }

    /// Brings the hub-wide total in line with [`Unsent::bytes`].
    fn recount(&self) {
        let mut counted = self.counted.lock();
        let now = self.bytes();
        if now >= *counted {
            self.total.fetch_add(now - *counted, Ordering::Relaxed);
        } else {
            self.total.fetch_sub(*counted - now, Ordering::Relaxed);
        }
        *counted = now;
    }
}

impl Drop for Unsent {
    fn drop(&mut self) {
        self.total
            .fetch_sub(*self.counted.get_mut(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_lengths_follow_rfc_6455() {
        assert_eq!(wire_len(0), 2);
        assert_eq!(wire_len(125), 127);
        assert_eq!(wire_len(126), 130);
        assert_eq!(wire_len(65_535), 65_539);
        assert_eq!(wire_len(65_536), 65_546);
    }

    #[test]
    fn without_a_socket_the_channel_count_stands_and_the_total_follows() {
        let total = Arc::new(AtomicUsize::new(0));
        let unsent = Unsent::new(Arc::clone(&total));
        unsent.handed_frame(600);
        assert_eq!((unsent.bytes(), total.load(Ordering::Relaxed)), (600, 600));
        unsent.handed(2);
        assert_eq!(unsent.bytes(), 600, "a ping is not in the channel");
        unsent.copied_out(600);
        assert_eq!((unsent.bytes(), total.load(Ordering::Relaxed)), (0, 0));
        assert!(!unsent.refresh());
        unsent.handed_frame(10);
        drop(unsent);
        assert_eq!(
            total.load(Ordering::Relaxed),
            0,
            "a dropped count gives its bytes back"
        );
    }
}
