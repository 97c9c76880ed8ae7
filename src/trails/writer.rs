//! The path from driver actors to the trail store: a bounded queue, group
//! commits, and a completion per submission so acks follow commits.
//!
//! Queue policy: room is counted in positions (`trails.queue_capacity`) by a
//! semaphore. A submission takes permits for all of its points or is refused
//! at once with [`QueueFull`]; the permits go back only when its commit is
//! resolved. So while the database is down the queue fills, memory stays
//! bounded, and callers tell drivers `storage_unavailable` instead of
//! dropping anything silently.
//!
//! Commit policy: one task gathers submissions in windows of
//! `trails.flush_interval_ms` (the first submission after a quiet spell
//! opens one), and cuts a batch early when it holds `trails.flush_max_rows`
//! positions (a commit costs far more CPU than a row: waiting for company is
//! what keeps a quiet hub cheap). It hands the batch to one commit, which
//! resolves every submission in it. Up to the store's
//! `max_concurrent_appends` commits run at once, and the next batch forms
//! while they do. A failed append keeps the batch and retries it with
//! exponential backoff; retrying is safe because the store skips fixes it
//! already holds. Nothing is resolved `Ok` before its commit.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::store::{StoreError, TrailStore, Turn};
use crate::alerts::Alerts;
use crate::config::TrailSettings;
use crate::domain::TrailPoint;
use crate::metrics as m;

/// Resolves when the submitted points are committed.
pub type Committed = oneshot::Receiver<Result<(), StoreError>>;

#[derive(Debug, thiserror::Error)]
#[error("the trail queue is full")]
pub struct QueueFull;

/// First pause after a failed commit; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(3);
/// An append that has not finished by then is abandoned and retried: a
/// half-open connection must not freeze the writer. (Retrying is idempotent.)
const COMMIT_TIMEOUT: Duration = Duration::from_secs(15);
/// After shutdown, how long the writer keeps retrying a failing database
/// before it gives up on what is queued (which was never acked, so the
/// apps still hold it and resend it).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The longest the writer takes to stop once shutdown starts: retries go on
/// for [`SHUTDOWN_GRACE`], and the attempt started last may take its whole
/// [`COMMIT_TIMEOUT`].
pub const LONGEST_FLUSH: Duration =
    Duration::from_secs(SHUTDOWN_GRACE.as_secs() + COMMIT_TIMEOUT.as_secs());

/// One caller's points, with the room they hold and where the outcome goes.
struct Submission {
    points: Vec<TrailPoint>,
    done: oneshot::Sender<Result<(), StoreError>>,
    room: OwnedSemaphorePermit,
}

/// A submission whose points were moved into the batch.
struct Pending {
    done: oneshot::Sender<Result<(), StoreError>>,
    room: OwnedSemaphorePermit,
}

struct Shared {
    room: Arc<Semaphore>,
    capacity: usize,
    db_failing: AtomicBool,
    /// Positions submitted and not yet taken into a batch.
    unbatched: AtomicUsize,
    /// A group commit's worth of positions is waiting: the writer stops waiting for company.
    batch_full: Notify,
    /// Most positions in one batch (`trails.flush_max_rows`).
    max_rows: usize,
}

impl Shared {
    fn queued(&self) -> usize {
        self.capacity.saturating_sub(self.room.available_permits())
    }

    fn publish_queued(&self) {
        m::trail_queued(self.queued());
    }
}

#[derive(Clone)]
pub struct TrailWriter {
    tx: mpsc::Sender<Submission>,
    shared: Arc<Shared>,
}

impl TrailWriter {
    /// Starts the writer task on the current runtime; see [`TrailWriter::new`].
    pub fn spawn(
        store: Arc<dyn TrailStore>,
        settings: &TrailSettings,
        shutdown: CancellationToken,
    ) -> (TrailWriter, JoinHandle<()>) {
        let (writer, task) = Self::new(store, settings, shutdown);
        (writer, tokio::spawn(task))
    }

    /// The writer and its task, for the caller to run. The task runs until
    /// `shutdown` is cancelled, then flushes everything queued (retrying for
    /// up to [`SHUTDOWN_GRACE`]) and ends.
    pub fn new(
        store: Arc<dyn TrailStore>,
        settings: &TrailSettings,
        shutdown: CancellationToken,
    ) -> (TrailWriter, impl Future<Output = ()> + Send + 'static) {
        Self::evaluating(store, None, settings, shutdown)
    }

    /// [`TrailWriter::new`], with every commit also evaluating its fixes
    /// for `alerts` ([`TrailStore::append_evaluated`]).
    pub fn evaluating(
        store: Arc<dyn TrailStore>,
        alerts: Option<Arc<Alerts>>,
        settings: &TrailSettings,
        shutdown: CancellationToken,
    ) -> (TrailWriter, impl Future<Output = ()> + Send + 'static) {
        let capacity = settings.queue_capacity.max(1);
        let shared = Arc::new(Shared {
            room: Arc::new(Semaphore::new(capacity)),
            capacity,
            db_failing: AtomicBool::new(false),
            unbatched: AtomicUsize::new(0),
            batch_full: Notify::new(),
            max_rows: settings.flush_max_rows.max(1),
        });
        // Every submission holds at least one permit, so this channel never
        // holds more messages than the semaphore allows positions.
        let (tx, rx) = mpsc::channel(capacity);
        let concurrency = u32::try_from(store.max_concurrent_appends().clamp(1, 16)).unwrap_or(1);
        let task = WriterTask {
            rx,
            interval: Duration::from_millis(settings.flush_interval_ms),
            shutdown: shutdown.clone(),
            committer: Arc::new(Committer {
                store,
                alerts,
                shared: shared.clone(),
                shutdown,
            }),
            slots: Arc::new(Semaphore::new(concurrency as usize)),
            concurrency,
            window: None,
            last_turn: None,
        };
        (TrailWriter { tx, shared }, task.run())
    }

    /// Queues the points. Fails at once with [`QueueFull`] when the bounded
    /// queue has no room for all of them (nothing is queued then).
    pub fn try_submit(&self, points: Vec<TrailPoint>) -> Result<Committed, QueueFull> {
        let (done, committed) = oneshot::channel();
        if points.is_empty() {
            let _ = done.send(Ok(()));
            return Ok(committed);
        }
        // A seq the databases cannot hold would fail every retry of the
        // batch it joined; refuse it here, alone, instead.
        if let Some(p) = points.iter().find(|p| i64::try_from(p.seq).is_err()) {
            let _ = done.send(Err(StoreError::Corrupt(format!(
                "seq {} exceeds the storable range",
                p.seq
            ))));
            return Ok(committed);
        }
        let n = points.len();
        let room = u32::try_from(n)
            .ok()
            .and_then(|n| self.shared.room.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| self.refuse(n))?;
        // Counted before the send, so the writer's decrement never runs first.
        let before = self.shared.unbatched.fetch_add(n, Ordering::Relaxed);
        if self.tx.try_send(Submission { points, done, room }).is_err() {
            self.shared.unbatched.fetch_sub(n, Ordering::Relaxed);
            return Err(self.refuse(n));
        }
        if before < self.shared.max_rows && before + n >= self.shared.max_rows {
            self.shared.batch_full.notify_one();
        }
        self.shared.publish_queued();
        Ok(committed)
    }

    fn refuse(&self, n: usize) -> QueueFull {
        m::trail_refused(n as u64);
        QueueFull
    }

    /// Positions waiting for a commit (including the batch being committed).
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }

    /// False while the database is failing, or the queue is full (less than
    /// 1% of its room left, since submissions need room for all their points).
    pub fn healthy(&self) -> bool {
        let nearly_full = self.shared.room.available_permits() < self.shared.capacity.div_ceil(100);
        !self.shared.db_failing.load(Ordering::Relaxed) && !nearly_full
    }
}

struct WriterTask {
    rx: mpsc::Receiver<Submission>,
    interval: Duration,
    shutdown: CancellationToken,
    committer: Arc<Committer>,
    /// One permit per commit that may run at once (the store's
    /// `max_concurrent_appends`); the next batch forms while they run.
    slots: Arc<Semaphore>,
    concurrency: u32,
    /// When the current batching window closes; `None` while the hub is quiet.
    window: Option<Instant>,
    /// The turn of the batch spawned last, which the next one waits for
    /// before it locks its drivers' alert states ([`Turn`]).
    last_turn: Option<oneshot::Receiver<()>>,
}

/// Commits batches; shared by the commits in flight.
struct Committer {
    store: Arc<dyn TrailStore>,
    /// Evaluates the fixes and announces what they raise, when alerts run.
    alerts: Option<Arc<Alerts>>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

/// The positions of one group commit and the submissions they came from.
#[derive(Default)]
struct Batch {
    points: Vec<TrailPoint>,
    pending: Vec<Pending>,
}

impl Batch {
    fn push(&mut self, sub: Submission) {
        self.points.extend(sub.points);
        self.pending.push(Pending {
            done: sub.done,
            room: sub.room,
        });
    }
}

impl WriterTask {
    async fn run(mut self) {
        loop {
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                break;
            };
            let mut batch = Batch::default();
            if !self.collect(&mut batch).await {
                break;
            }
            self.spawn_commit(batch, slot);
        }
        self.drain().await;
        tracing::info!("trail writer stopped");
    }

    fn spawn_commit(&mut self, batch: Batch, slot: OwnedSemaphorePermit) {
        let committer = self.committer.clone();
        let (turn, next) = Turn::next(self.last_turn.take());
        self.last_turn = Some(next);
        tokio::spawn(async move {
            committer.commit(batch, turn).await;
            drop(slot);
        });
    }

    /// Gathers the next batch: everything submitted until the current window
    /// closes (or a full batch is waiting). False once shutdown is seen (or
    /// every sender is gone) with nothing gathered.
    ///
    /// While traffic flows, windows follow each other and the queue is
    /// drained when each one closes: the task wakes once per window, never
    /// per submission (at low rates those wake-ups, each one a thread
    /// crossing from the connection workers, cost more CPU than the commit).
    /// A window that closes empty means the hub went quiet: the task then
    /// sleeps until the next submission, which opens a new window.
    async fn collect(&mut self, batch: &mut Batch) -> bool {
        loop {
            let deadline = match self.window.take() {
                Some(deadline) => deadline,
                None => {
                    let first = tokio::select! {
                        biased;
                        _ = self.shutdown.cancelled() => None,
                        sub = self.rx.recv() => sub,
                    };
                    let Some(first) = first else { return false };
                    self.take(batch, first);
                    Instant::now() + self.interval
                }
            };
            if !self.drain_ready(batch) {
                tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => {}
                    _ = self.committer.shared.batch_full.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
                self.drain_ready(batch);
            }
            if !batch.pending.is_empty() {
                self.window = Some(deadline + self.interval);
                return true;
            }
            if self.shutdown.is_cancelled() {
                return false;
            }
        }
    }

    /// Moves queued submissions into the batch until it is full or the queue
    /// is empty; true when the batch is full.
    fn drain_ready(&mut self, batch: &mut Batch) -> bool {
        while batch.points.len() < self.committer.shared.max_rows {
            match self.rx.try_recv() {
                Ok(sub) => self.take(batch, sub),
                Err(_) => return false,
            }
        }
        true
    }

    fn take(&self, batch: &mut Batch, sub: Submission) {
        self.committer
            .shared
            .unbatched
            .fetch_sub(sub.points.len(), Ordering::Relaxed);
        batch.push(sub);
    }

    /// After shutdown: refuses new submissions, commits everything queued,
    /// and returns once every commit is done.
    async fn drain(mut self) {
        self.rx.close();
        let mut batch = Batch::default();
        while let Some(sub) = self.rx.recv().await {
            self.take(&mut batch, sub);
            if batch.points.len() >= self.committer.shared.max_rows {
                self.spawn_when_free(std::mem::take(&mut batch)).await;
            }
        }
        if !batch.pending.is_empty() {
            self.spawn_when_free(batch).await;
        }
        let _all_done = self.slots.acquire_many(self.concurrency).await;
    }

    async fn spawn_when_free(&mut self, batch: Batch) {
        if let Ok(slot) = self.slots.clone().acquire_owned().await {
            self.spawn_commit(batch, slot);
        }
    }
}

impl Committer {
    /// Commits the batch, retrying with backoff until it succeeds; only
    /// after shutdown and [`SHUTDOWN_GRACE`] does it give up and report the
    /// failure. Every submission is resolved either way.
    async fn commit(&self, mut batch: Batch, mut turn: Turn) {
        let mut backoff = FIRST_BACKOFF;
        let mut give_up_at = None;
        loop {
            let started = Instant::now();
            let outcome =
                match tokio::time::timeout(COMMIT_TIMEOUT, self.append(&batch.points, &mut turn))
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(_) => Err(StoreError::Unavailable("the commit timed out".into())),
                };
            let e = match outcome {
                Ok(()) => return self.committed(&mut batch, started.elapsed()),
                Err(e) => e,
            };
            self.failed(&batch, &e, backoff);
            if self.past_grace(&mut give_up_at) {
                let failure = || {
                    Err(StoreError::Unavailable(format!(
                        "shut down before the commit: {e}"
                    )))
                };
                return self.resolve(&mut batch, failure);
            }
            self.pause(backoff, give_up_at).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One attempt: with alerts, the evaluating append, then the
    /// announcement of what it stored. (A retry has no turn left to wait
    /// for: the batches formed after it may have gone ahead.)
    async fn append(&self, points: &[TrailPoint], turn: &mut Turn) -> Result<(), StoreError> {
        let Some(alerts) = &self.alerts else {
            turn.pass();
            return self.store.append(points).await;
        };
        let events = self
            .store
            .append_evaluated(points, alerts.as_ref(), turn)
            .await?;
        alerts.announce(&events);
        Ok(())
    }

    fn committed(&self, batch: &mut Batch, took: Duration) {
        if self.shared.db_failing.swap(false, Ordering::Relaxed) {
            tracing::info!("trail store reachable again; draining the queue");
        }
        m::trail_committed(batch.points.len() as u64, took.as_secs_f64());
        self.resolve(batch, || Ok(()));
    }

    fn failed(&self, batch: &Batch, e: &StoreError, backoff: Duration) {
        m::trail_commit_failed();
        if !self.shared.db_failing.swap(true, Ordering::Relaxed) {
            tracing::error!(error = %e, positions = batch.points.len(), "trail commit failed; keeping the batch and retrying");
        } else {
            tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "trail commit still failing");
        }
    }

    /// Sends every submission its outcome and frees their room.
    fn resolve(&self, batch: &mut Batch, outcome: impl Fn() -> Result<(), StoreError>) {
        batch.points.clear();
        for Pending { done, room } in batch.pending.drain(..) {
            // Room first: a caller woken by the ack may submit again at once.
            drop(room);
            // The caller may have gone (a closed socket); the commit stands.
            let _ = done.send(outcome());
        }
        self.shared.publish_queued();
    }

    /// True once shutdown was requested and its grace period is over.
    fn past_grace(&self, give_up_at: &mut Option<Instant>) -> bool {
        if !self.shutdown.is_cancelled() {
            return false;
        }
        let give_up_at = *give_up_at.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
        Instant::now() >= give_up_at
    }

    /// Sleeps for the backoff, waking early when shutdown starts (so the
    /// grace period is measured from then), never past the grace deadline.
    async fn pause(&self, backoff: Duration, give_up_at: Option<Instant>) {
        let mut until = Instant::now() + backoff;
        if let Some(give_up_at) = give_up_at {
            until = until.min(give_up_at);
        }
        if self.shutdown.is_cancelled() {
            tokio::time::sleep_until(until).await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }
}
