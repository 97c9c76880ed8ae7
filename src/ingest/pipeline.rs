//! The one path every position takes, whatever carried it in (the WebSocket
//! driver session, the HTTP batch upload, the phone-app adapters to come):
//!
//! 1. the whole batch: its size and the driver's rate limit; a batch refused
//!    here has had no effect at all;
//! 2. each fix: validation (shape, ranges, time window), then the input
//!    filters; a refused fix is reported alone and the rest goes on;
//! 3. the time-order check and the driver's live state, with fan-out to the
//!    dashboards through the cluster bus (a late fix is stored, not shown);
//! 4. the observers of every accepted fix (the slot where alert rules plug in);
//! 5. the trail queue (when it has no room, the fixes stay shown but are
//!    refused as not stored), and a [`Commit`] that resolves once the fixes
//!    are stored: the ack. Live fan-out never waits for the database.
//!
//! Callers differ only in framing and in how they send the outcome back; the
//! refusals, with their codes and messages, are the same on every path.

use std::sync::Arc;
use std::time::Instant;

use super::filters::{InputFilters, Verdict};
use super::rate_limit::{self, DriverLimiter};
use crate::auth::{DriverIdentity, Identity};
use crate::config::Settings;
use crate::domain::{DriverKey, Seq, TimeWindow, Timestamp, TrailPoint};
use crate::live::{LiveDriver, LiveDrivers, Published};
use crate::metrics as m;
use crate::protocol::{ErrorCode, WireFix};
use crate::trails::{Committed, StoreError, TrailWriter};

/// A refusal as every path reports it: the code, a message for people, and
/// the seq it answers (for a whole batch, its highest).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    pub seq: Option<Seq>,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>, seq: Option<Seq>) -> Self {
        Self {
            code,
            message: message.into(),
            seq,
        }
    }
}

/// The driver a token speaks for, on every path; refused (`invalid_id`)
/// when the token's subject is not a valid driver id.
pub fn driver_of(identity: &Identity) -> Result<DriverIdentity, Refusal> {
    identity.as_driver().ok_or_else(|| {
        let message = "the token's subject is not a valid driver id";
        Refusal::new(ErrorCode::InvalidId, message, None)
    })
}

/// Who `me` is as the hub keys drivers: the same id in another fleet is another driver.
pub fn driver_key(me: &DriverIdentity) -> DriverKey {
    DriverKey::new(me.fleet.clone(), me.driver.clone())
}

/// A refusal that covers several fixes: a whole batch refused before
/// anything was done with it, or the accepted fixes the trail queue had no
/// room for.
#[derive(Debug)]
pub struct BatchRefused {
    pub refusal: Refusal,
    /// Every seq it covers: none of them will be stored.
    pub seqs: Vec<Seq>,
}

/// What became of a batch the pipeline took.
pub struct Accepted {
    /// Fixes refused one by one.
    pub refused: Vec<Refusal>,
    /// The accepted fixes on their way to the trail; `None` when none was
    /// accepted, or when the trail queue refused them (`unstored`).
    pub commit: Option<Commit>,
    /// The accepted fixes, shown live, that the trail queue had no room for.
    pub unstored: Option<BatchRefused>,
    /// Fixes the input filters dropped: acknowledged, neither shown nor stored.
    pub filtered: Vec<Seq>,
}

/// Sees every fix the pipeline accepted, once it is live and before it is
/// queued for the trail. Called on the ingest hot path, in each driver's fix
/// order: it must not block.
pub trait FixObserver: Send + Sync {
    fn observe(&self, point: &TrailPoint, published: Published);
}

/// The accepted fixes of one batch, waiting for their commit.
pub struct Commit {
    seqs: Vec<Seq>,
    received: Instant,
    committed: Committed,
    live: Arc<LiveDriver>,
}

/// How a [`Commit`] ended.
pub struct CommitDone {
    pub seqs: Vec<Seq>,
    /// `Ok` once the trail holds every fix: they may be acknowledged.
    pub result: Result<(), Refusal>,
}

impl Commit {
    pub fn seqs(&self) -> &[Seq] {
        &self.seqs
    }

    /// Waits until the fixes are stored (or could not be).
    pub async fn wait(self) -> CommitDone {
        let outcome = self
            .committed
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("writer stopped".into())));
        let top = self.seqs.iter().copied().max();
        let result = match outcome {
            Ok(()) => {
                if let Some(top) = top {
                    self.live.note_committed(top);
                }
                m::ack_latency(self.received.elapsed().as_secs_f64());
                Ok(())
            }
            Err(e) => {
                let code = ErrorCode::StorageUnavailable;
                m::rejected(code.as_str(), self.seqs.len() as u64);
                Err(Refusal::new(
                    code,
                    format!("not stored ({e}): resend later"),
                    top,
                ))
            }
        };
        CommitDone {
            seqs: self.seqs,
            result,
        }
    }
}

/// A driver whose fixes enter the pipeline.
pub struct Source<'a> {
    pub me: &'a DriverIdentity,
    /// The driver's live entry ([`Pipeline::source_entry`]).
    pub live: &'a Arc<LiveDriver>,
}

pub struct Pipeline {
    drivers: Arc<LiveDrivers>,
    writer: TrailWriter,
    limiter: Arc<DriverLimiter>,
    filters: InputFilters,
    observers: Vec<Arc<dyn FixObserver>>,
    window: TimeWindow,
    max_batch: usize,
}

impl Pipeline {
    pub fn new(
        settings: &Settings,
        drivers: Arc<LiveDrivers>,
        writer: TrailWriter,
        limiter: Arc<DriverLimiter>,
    ) -> Self {
        Self {
            drivers,
            writer,
            limiter,
            filters: InputFilters::new(&settings.filters),
            observers: Vec::new(),
            window: settings.time_window(),
            max_batch: settings.driver.max_batch_items,
        }
    }

    /// The live entry fixes of `me` go through.
    pub fn source_entry(&self, me: &DriverIdentity) -> Arc<LiveDriver> {
        self.drivers.entry(&driver_key(me))
    }

    /// Runs fixes of `me` through the pipeline for a path without a session
    /// of its own (one HTTP request): the driver's live entry is looked up
    /// for the call.
    pub fn ingest_as(
        &self,
        me: &DriverIdentity,
        fixes: &[WireFix],
    ) -> Result<Accepted, BatchRefused> {
        let live = self.source_entry(me);
        self.ingest(&Source { me, live: &live }, fixes)
    }

    /// Runs a batch of fixes (a single fix is a batch of one) through the pipeline.
    pub fn ingest(&self, source: &Source, fixes: &[WireFix]) -> Result<Accepted, BatchRefused> {
        let received = Instant::now();
        m::received(fixes.len() as u64);
        self.admit(&source.live.key, fixes.len())
            .map_err(|refusal| refuse_batch(refusal, fixes.iter().filter_map(|f| f.seq)))?;
        let mut accepted = Accepted {
            refused: Vec::new(),
            commit: None,
            unstored: None,
            filtered: Vec::new(),
        };
        let now = Timestamp::now();
        let mut points = Vec::with_capacity(fixes.len());
        for fix in fixes {
            let (seq, position, extras) = match fix.validate(&self.window, now) {
                Ok(valid) => valid,
                Err(e) => {
                    m::rejected(ErrorCode::InvalidPosition.as_str(), 1);
                    let refusal = Refusal::new(ErrorCode::InvalidPosition, e.message, e.seq);
                    accepted.refused.push(refusal);
                    continue;
                }
            };
            // An SOS is never filtered out: it is an alarm before it is a fix.
            let verdict = match extras.sos {
                true => Verdict::Keep,
                false => self.filters.check(source.live, seq, &position),
            };
            if let Verdict::Drop(reason) = verdict {
                m::filtered(reason.as_str());
                accepted.filtered.push(seq);
                continue;
            }
            let published = self.drivers.publish(source.live, &position);
            if published == Published::Late {
                m::late();
            }
            let point = TrailPoint {
                driver: source.me.driver.clone(),
                fleet: source.me.fleet.clone(),
                seq,
                position,
                extras,
            };
            for observer in &self.observers {
                observer.observe(&point, published);
            }
            points.push(point);
        }
        if points.is_empty() {
            return Ok(accepted);
        }
        let seqs: Vec<Seq> = points.iter().map(|p| p.seq).collect();
        match self.writer.try_submit(points) {
            Ok(committed) => {
                accepted.commit = Some(Commit {
                    seqs,
                    received,
                    live: Arc::clone(source.live),
                    committed,
                })
            }
            Err(_full) => {
                let code = ErrorCode::StorageUnavailable;
                m::rejected(code.as_str(), seqs.len() as u64);
                let message = "storage is busy or down: not stored, resend later";
                let refusal = Refusal::new(code, message, None);
                accepted.unstored = Some(refuse_batch(refusal, seqs));
            }
        }
        Ok(accepted)
    }

    /// The batch limit, then the driver's rate limit (nothing is taken from
    /// the bucket when the batch is too large).
    fn admit(&self, driver: &DriverKey, n: usize) -> Result<(), Refusal> {
        let refuse = |code: ErrorCode, message: String| {
            m::rejected(code.as_str(), n as u64);
            Refusal::new(code, message, None)
        };
        if n > self.max_batch {
            let message = format!("a batch holds at most {} items, got {n}", self.max_batch);
            return Err(refuse(ErrorCode::BatchTooLarge, message));
        }
        if !rate_limit::take_for(&self.limiter, driver, n) {
            let message = "too many positions: slow down and resend";
            return Err(refuse(ErrorCode::RateLimited, message.into()));
        }
        Ok(())
    }
}

/// A refusal covering `seqs`, answered under the highest.
fn refuse_batch(mut refusal: Refusal, seqs: impl IntoIterator<Item = Seq>) -> BatchRefused {
    let seqs: Vec<Seq> = seqs.into_iter().collect();
    refusal.seq = seqs.iter().copied().max();
    BatchRefused { refusal, seqs }
}
