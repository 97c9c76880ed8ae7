//! A dashboard's outbound queue, drained by its writer. Positions and status
//! changes are coalesced per driver, by [`DriverKey`] (an admin's dashboard
//! watches every fleet, and two fleets may each have a `d1`; the newest fix
//! time wins), so however
//! slow the dashboard, they hold at most one entry per driver it watches:
//! memory grows with the fleet, not with time. Control frames (hello,
//! snapshots, errors, pongs) are queued in order, at most
//! `dashboard.max_control_frames` of them; a dashboard that lets more pile up
//! is closed. `queued_bytes` counts what waits here, what the writer has
//! taken and not yet handed to the socket, and the frames handed to the
//! socket that the kernel has not taken yet, in the session's channel or the
//! HTTP layer's write buffer ([`Unsent`]): the writer keeps that last part
//! within a byte budget, so a dashboard that stops reading holds a bounded
//! number of bytes whatever the send rate.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::web::Bytes;
use bytestring::ByteString;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::unsent::{REFRESH, Unsent};
use crate::domain::DriverKey;
use crate::live::{LiveUpdate, Status};
use crate::protocol::Close;
use crate::ws::ConnSocket;

/// Upper bound on coalesced drivers per dashboard, beyond any real fleet on one node.
pub const MAX_PENDING_DRIVERS: usize = 200_000;

/// A control frame for the writer: text to send, or the close to end with.
#[derive(Debug)]
pub enum Control {
    Text(String),
    Pong(Vec<u8>),
    Ping,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Replaced an older pending position of the same driver.
    Coalesced,
    /// Older than what is already pending: dropped, a marker never goes back.
    Stale,
    /// The dashboard is closing or over its bound.
    Refused,
}

#[derive(Default)]
struct State {
    positions: HashMap<DriverKey, Arc<LiveUpdate>>,
    statuses: HashMap<DriverKey, Status>,
    control: VecDeque<Control>,
    close: Option<Close>,
    bytes: usize,
    /// Bytes taken by the writer and not yet accepted by the socket.
    in_flight: usize,
}

/// What the writer takes in one go.
#[derive(Default)]
pub struct Batch {
    pub control: Vec<Control>,
    pub statuses: Vec<(DriverKey, Status)>,
    /// Newest first.
    pub positions: Vec<Arc<LiveUpdate>>,
    pub close: Option<Close>,
    /// Bytes these entries held in the queue.
    pub bytes: usize,
}

pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    /// Bytes of frames handed to the socket that the kernel has not taken.
    unsent: Unsent,
    /// Hub-wide count of bytes waiting in all outboxes.
    total_bytes: Arc<AtomicUsize>,
    max_control_frames: usize,
}

/// What one pending status change is counted as.
pub const STATUS_BYTES: usize = 64;

impl Outbox {
    /// Counts its bytes into `total_bytes` too; holds at most
    /// `max_control_frames` control frames.
    pub fn new(total_bytes: Arc<AtomicUsize>, max_control_frames: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            unsent: Unsent::new(Arc::clone(&total_bytes)),
            total_bytes,
            max_control_frames,
        }
    }

    fn grow(&self, state: &mut State, bytes: usize) {
        state.bytes += bytes;
        self.total_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn shrink(&self, state: &mut State, bytes: usize) {
        state.bytes -= bytes;
        self.total_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub fn push_position(&self, update: &Arc<LiveUpdate>) -> Pushed {
        let mut state = self.state.lock();
        if state.close.is_some() {
            return Pushed::Refused;
        }
        let size = update.json.get().len();
        let outcome = match state.positions.get(&update.key) {
            Some(old) if old.ts >= update.ts => return Pushed::Stale,
            Some(old) => {
                let old_size = old.json.get().len();
                self.shrink(&mut state, old_size);
                Pushed::Coalesced
            }
            None if state.positions.len() >= MAX_PENDING_DRIVERS => return Pushed::Refused,
            None => Pushed::Queued,
        };
        state
            .positions
            .insert(update.key.clone(), Arc::clone(update));
        self.grow(&mut state, size);
        drop(state);
        self.notify.notify_one();
        outcome
    }

    pub fn push_status(&self, driver: &DriverKey, status: Status) {
        let mut state = self.state.lock();
        if state.close.is_some() {
            return;
        }
        if state.statuses.insert(driver.clone(), status).is_none() {
            self.grow(&mut state, STATUS_BYTES);
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Queues a control frame; `false` when the dashboard already has too
    /// many pending, which also closes it ([`Close::UNREAD`]).
    pub fn push_control(&self, control: Control) -> bool {
        let mut state = self.state.lock();
        if state.control.len() >= self.max_control_frames {
            state.close.get_or_insert(Close::UNREAD);
            drop(state);
            self.notify.notify_one();
            return false;
        }
        let size = control_size(&control);
        state.control.push_back(control);
        self.grow(&mut state, size);
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Asks the writer to close the socket; later pushes are refused.
    pub fn close(&self, close: Close) {
        let mut state = self.state.lock();
        if state.close.is_none() {
            state.close = Some(close);
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Waits until something is queued (returns at once if something already is).
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// Takes everything queued, up to `max_positions` positions (the newest ones).
    pub fn take(&self, max_positions: usize) -> Batch {
        let mut state = self.state.lock();
        let mut batch = Batch {
            control: state.control.drain(..).collect(),
            statuses: state.statuses.drain().collect(),
            close: state.close,
            ..Batch::default()
        };
        let mut positions: Vec<Arc<LiveUpdate>> = if state.positions.len() <= max_positions {
            state.positions.drain().map(|(_, u)| u).collect()
        } else {
            take_newest(&mut state.positions, max_positions)
        };
        positions.sort_unstable_by_key(|u| std::cmp::Reverse(u.ts));
        batch.bytes = batch.control.iter().map(control_size).sum::<usize>()
            + batch.statuses.len() * STATUS_BYTES
            + positions.iter().map(|u| u.json.get().len()).sum::<usize>();
        batch.positions = positions;
        // The bytes stay counted, as in flight, until the writer says they left.
        state.bytes -= batch.bytes;
        state.in_flight += batch.bytes;
        let more = !state.positions.is_empty();
        drop(state);
        if more {
            self.notify.notify_one();
        }
        batch
    }

    /// The writer handed part of a taken batch to the socket (or gave up on it).
    pub fn release(&self, bytes: usize) {
        let mut state = self.state.lock();
        let bytes = bytes.min(state.in_flight);
        state.in_flight -= bytes;
        self.total_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Counts what the kernel takes from the dashboard's `socket`, so that
    /// the HTTP layer's write buffer counts as unsent too.
    pub fn watch_socket(&self, socket: ConnSocket) {
        self.unsent.watch(socket);
    }

    /// A frame for the socket, counted as unsent until the kernel has taken
    /// it (its text is dropped once the HTTP layer has encoded it).
    pub fn frame(self: &Arc<Self>, text: String) -> ByteString {
        self.unsent.handed_frame(text.len());
        let owner = UnsentFrame {
            text,
            outbox: Arc::clone(self),
        };
        ByteString::try_from(Bytes::from_owner(owner)).unwrap_or_else(|_| {
            // A `String` is UTF-8; this is unreachable, and harmless if not.
            ByteString::from_static("")
        })
    }

    /// A ping or pong of `wire` bytes handed to the socket.
    pub fn handed(&self, wire: u64) {
        self.unsent.handed(wire);
    }

    /// Waits until a frame of `len` bytes fits in the budget of `max_unsent`
    /// unsent bytes. A frame larger than the whole budget waits until
    /// nothing else is unsent.
    pub async fn room_for(&self, len: usize, max_unsent: usize) {
        let fits = |unsent: usize| unsent == 0 || unsent.saturating_add(len) <= max_unsent;
        loop {
            let taken = self.unsent.wake.notified();
            tokio::pin!(taken);
            // Registered before the check, so a frame taken in between wakes us.
            taken.as_mut().enable();
            if fits(self.unsent.bytes()) {
                return;
            }
            // The kernel takes bytes without telling: ask it, now and then.
            if self.unsent.refresh() && fits(self.unsent.bytes()) {
                return;
            }
            let _ = tokio::time::timeout(REFRESH, taken).await;
        }
    }

    /// Waits while frames are unsent, reading the kernel's count every
    /// [`REFRESH`], until nothing is (or the count cannot be read):
    /// `queued_bytes` then falls back to what is left as the kernel takes it.
    pub async fn settle_unsent(&self) {
        while self.unsent.bytes() > 0 {
            tokio::time::sleep(REFRESH).await;
            if !self.unsent.refresh() {
                return;
            }
        }
    }

    /// Bytes handed to the socket that the kernel has not taken yet.
    pub fn unsent_bytes(&self) -> usize {
        self.unsent.refresh();
        self.unsent.bytes()
    }

    /// Bytes waiting in this outbox, in flight and unsent included.
    pub fn queued_bytes(&self) -> usize {
        let state = self.state.lock();
        let outbox = state.bytes + state.in_flight;
        drop(state);
        outbox + self.unsent_bytes()
    }

    /// The close asked for, if any.
    pub fn closing(&self) -> Option<Close> {
        self.state.lock().close
    }
}

/// A frame's text while the session's channel holds it; dropped when the
/// HTTP layer has encoded it (or the connection went).
struct UnsentFrame {
    text: String,
    outbox: Arc<Outbox>,
}

impl AsRef<[u8]> for UnsentFrame {
    fn as_ref(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

impl Drop for UnsentFrame {
    fn drop(&mut self) {
        self.outbox.unsent.copied_out(self.text.len());
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let state = self.state.get_mut();
        self.total_bytes
            .fetch_sub(state.bytes + state.in_flight, Ordering::Relaxed);
    }
}

fn control_size(control: &Control) -> usize {
    match control {
        Control::Text(t) => t.len(),
        Control::Pong(p) => p.len(),
        Control::Ping => 0,
    }
}

fn take_newest(
    pending: &mut HashMap<DriverKey, Arc<LiveUpdate>>,
    max: usize,
) -> Vec<Arc<LiveUpdate>> {
    let mut all: Vec<Arc<LiveUpdate>> = pending.values().cloned().collect();
    all.sort_unstable_by_key(|u| std::cmp::Reverse(u.ts));
    all.truncate(max);
    for u in &all {
        pending.remove(&u.key);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;

    const MAX_CONTROL_FRAMES: usize = 64;

    fn key(fleet: &str, driver: &str) -> DriverKey {
        DriverKey::of(fleet, driver)
    }

    fn update(driver: &str, ts: i64) -> Arc<LiveUpdate> {
        update_in("f", driver, ts)
    }

    fn update_in(fleet: &str, driver: &str, ts: i64) -> Arc<LiveUpdate> {
        let json = serde_json::value::to_raw_value(
            &serde_json::json!({"driver": driver, "fleet": fleet, "ts": ts}),
        )
        .unwrap();
        Arc::new(LiveUpdate {
            key: key(fleet, driver),
            ts: Timestamp::from_millis(ts),
            lat: 0.0,
            lon: 0.0,
            json,
            received: std::time::Instant::now(),
            epoch: 0,
        })
    }

    fn outbox() -> (Outbox, Arc<AtomicUsize>) {
        let total = Arc::new(AtomicUsize::new(0));
        (Outbox::new(Arc::clone(&total), MAX_CONTROL_FRAMES), total)
    }

    #[test]
    fn the_newest_position_of_a_driver_wins() {
        let (o, _) = outbox();
        assert_eq!(o.push_position(&update("d1", 1)), Pushed::Queued);
        assert_eq!(o.push_position(&update("d1", 3)), Pushed::Coalesced);
        assert_eq!(o.push_position(&update("d1", 2)), Pushed::Stale);
        let batch = o.take(100);
        assert_eq!(batch.positions.len(), 1);
        assert_eq!(batch.positions[0].ts.as_millis(), 3);
    }

    #[test]
    fn the_same_id_in_two_fleets_is_two_drivers() {
        let (o, _) = outbox();
        assert_eq!(o.push_position(&update_in("acme", "d1", 2)), Pushed::Queued);
        assert_eq!(o.push_position(&update_in("beta", "d1", 1)), Pushed::Queued);
        o.push_status(&key("acme", "d1"), Status::Offline);
        o.push_status(&key("beta", "d1"), Status::Online);
        let batch = o.take(100);
        let fleets: Vec<&str> = batch
            .positions
            .iter()
            .map(|u| u.key.fleet().as_str())
            .collect();
        assert_eq!(fleets, vec!["acme", "beta"], "neither hides the other");
        assert_eq!(batch.statuses.len(), 2);
    }

    #[test]
    fn batches_are_newest_first_and_capped() {
        let (o, _) = outbox();
        for i in 0..10 {
            o.push_position(&update(&format!("d{i}"), i));
        }
        let first = o.take(4);
        let ts: Vec<i64> = first.positions.iter().map(|u| u.ts.as_millis()).collect();
        assert_eq!(ts, vec![9, 8, 7, 6]);
        assert_eq!(o.take(100).positions.len(), 6);
    }

    #[test]
    fn memory_is_bounded_by_drivers_not_by_updates() {
        let (o, total) = outbox();
        for ts in 0..10_000 {
            o.push_position(&update(&format!("d{}", ts % 50), ts));
        }
        let per_driver = update("d49", 9_999).json.get().len();
        assert!(o.queued_bytes() <= 50 * per_driver);
        assert_eq!(total.load(Ordering::Relaxed), o.queued_bytes());
        let batch = o.take(usize::MAX);
        assert_eq!(o.queued_bytes(), batch.bytes, "in flight until released");
        o.release(batch.bytes);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn control_frames_are_bounded() {
        let (o, _) = outbox();
        for _ in 0..MAX_CONTROL_FRAMES {
            assert!(o.push_control(Control::Ping));
        }
        assert!(!o.push_control(Control::Ping));
        assert_eq!(
            o.take(0).close,
            Some(Close::UNREAD),
            "and the dashboard is closed"
        );
    }

    #[tokio::test]
    async fn unsent_frames_count_until_taken_and_bound_the_writer() {
        let (o, total) = outbox();
        let o = Arc::new(o);
        let first = o.frame("x".repeat(600));
        assert_eq!(o.unsent_bytes(), 600);
        assert_eq!(o.queued_bytes(), 600);
        assert_eq!(total.load(Ordering::Relaxed), 600);
        // Room for 400 more within 1000: at once; for 500 more: only once taken.
        o.room_for(400, 1000).await;
        let waiting = tokio::spawn({
            let o = Arc::clone(&o);
            async move { o.room_for(500, 1000).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        waiting.await.unwrap();
        assert_eq!(o.unsent_bytes(), 0);
        assert_eq!(total.load(Ordering::Relaxed), 0);
        // A frame over the whole budget goes when nothing else is unsent.
        o.room_for(5000, 1000).await;
    }

    #[test]
    fn a_closing_outbox_refuses_more_and_releases_its_bytes_on_drop() {
        let (o, total) = outbox();
        o.push_position(&update("d1", 1));
        o.close(Close::SHUTTING_DOWN);
        assert_eq!(o.push_position(&update("d2", 1)), Pushed::Refused);
        drop(o);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }
}
