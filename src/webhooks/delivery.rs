//! The delivery worker: one task per node that sends due outbox rows to
//! their webhooks. It claims rows with a lease ([`WebhookStore::claim`]), so
//! any number of nodes share the work and a row whose sender died is sent
//! again once its lease passed; it POSTs each signed event, at most
//! `webhooks.concurrency` at once, and settles the row: delivered on a 2xx,
//! else due again after an exponential backoff with full jitter, or a dead
//! letter after `webhooks.max_attempts` attempts.
//!
//! A delivery is sent at least once: a receiver that answers 2xx after the
//! hub gave up waiting, or a node that dies between the POST and the
//! update, means a second POST with the same `Idempotency-Key`.
//!
//! Memory is bounded whatever the receivers do: at most `concurrency` rows
//! are held, each with one event, and at most [`MAX_RESPONSE_BYTES`] of each
//! answer are read, within `webhooks.timeout_ms`. The rest waits in the
//! database. The worker never touches the ingest path: the outbox rows are
//! written by the event producer's transaction, and the worker only reads
//! and updates them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::store::{Claimed, MAX_ERROR_CHARS, WebhookStore};
use super::{Webhooks, signature};
use crate::alerts::Event;
use crate::config::WebhookSettings;
use crate::domain::Timestamp;
use crate::metrics as m;
use crate::trails::store::retention_cutoff;

/// The most of a receiver's answer read: enough for an error message.
pub const MAX_RESPONSE_BYTES: usize = 4096;
/// A claim outlives the POST's timeout by this much: the time to read the
/// row's target and to settle it. A sender slower than that may see its
/// row sent again by another node (at least once, same idempotency key).
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// How long in-flight POSTs may finish at shutdown before they are dropped
/// (their rows are sent again once their lease passes).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How often the pending gauge is read from the database.
const GAUGE_EVERY: Duration = Duration::from_secs(5);
/// How often delivered and dead rows past the trail retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// The header that names the delivery, the same on every attempt.
pub const DELIVERY_HEADER: &str = "Fleethub-Delivery";
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// What every attempt shares.
struct Sender {
    webhooks: Arc<Webhooks>,
    settings: WebhookSettings,
    client: reqwest::Client,
    /// The last claim failed: a database outage is logged once, not at
    /// every poll.
    claims_failing: AtomicBool,
}

/// The worker, built at start-up (so that a client that cannot be built
/// stops the start) and run as a background task.
pub struct Worker {
    sender: Arc<Sender>,
    retention_days: u32,
}

/// Makes ring the process's default rustls provider, once (later calls do
/// nothing). reqwest is built with `rustls-no-provider` (its `rustls` feature
/// would link aws-lc-rs besides the ring that sqlx and redis use), and with
/// it every `reqwest::Client` built without a TLS configuration of its own
/// (the tests', the load generator's) takes the process default, and panics
/// when there is none.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTP client of the deliveries: HTTP/1.1, rustls with the ring
/// provider and the webpki roots, no redirects (a 3xx is a failure: the
/// webhook's URL is the one the fleet registered), the whole POST bounded
/// by `timeout_ms`.
fn client(settings: &WebhookSettings) -> anyhow::Result<reqwest::Client> {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let timeout = Duration::from_millis(settings.timeout_ms);
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("fleethub/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the webhook HTTP client")
}

impl Worker {
    pub fn new(
        webhooks: Arc<Webhooks>,
        settings: WebhookSettings,
        retention_days: u32,
    ) -> anyhow::Result<Self> {
        let client = client(&settings)?;
        Ok(Self {
            sender: Arc::new(Sender {
                webhooks,
                settings,
                client,
                claims_failing: AtomicBool::new(false),
            }),
            retention_days,
        })
    }

    /// Sends due deliveries until `shutdown`: when nudged, every
    /// `webhooks.poll_ms`, and as long as claims come back full.
    pub async fn run(self, shutdown: CancellationToken) {
        let sender = self.sender;
        let concurrency = sender.settings.concurrency;
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut poll = tokio::time::interval(Duration::from_millis(sender.settings.poll_ms));
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut gauge_at = Instant::now();
        let mut purge_at = Instant::now();
        // Whether to claim at the next turn, and whether the last claim
        // filled every free slot (then more rows may be due).
        let mut look = true;
        let mut more_due = false;
        loop {
            let room = concurrency.saturating_sub(in_flight.len());
            if look && room > 0 {
                look = false;
                let claimed = sender.claim(room).await;
                more_due = claimed.len() == room;
                for row in claimed {
                    let sender = Arc::clone(&sender);
                    in_flight.spawn(async move { sender.attempt(row).await });
                }
            }
            let now = Instant::now();
            if now >= gauge_at {
                gauge_at = now + GAUGE_EVERY;
                if let Ok(pending) = sender.store().pending().await {
                    m::webhook_pending(pending);
                }
            }
            if now >= purge_at {
                purge_at = now + PURGE_EVERY;
                sender.purge(self.retention_days).await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sender.webhooks.nudged() => look = true,
                _ = poll.tick() => look = true,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "a webhook delivery failed unexpectedly");
                    }
                    look = look || more_due;
                }
            }
        }
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::info!(
                in_flight = in_flight.len(),
                "webhook deliveries still in flight at shutdown are sent again later"
            );
            in_flight.shutdown().await;
        }
    }
}

impl Sender {
    fn store(&self) -> &dyn WebhookStore {
        self.webhooks.store()
    }

    /// Up to `room` due rows, now held by this node; none when the database
    /// fails (the next turn tries again).
    async fn claim(&self, room: usize) -> Vec<Claimed> {
        let now = Timestamp::now();
        let lease = Duration::from_millis(self.settings.timeout_ms) + LEASE_MARGIN;
        let lease_until = Timestamp::from_millis(
            now.as_millis()
                .saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)),
        );
        match self.store().claim(now, lease_until, room).await {
            Ok(claimed) => {
                if self.claims_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("claiming webhook deliveries works again");
                }
                claimed
            }
            Err(e) => {
                if self.claims_failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(error = %e, "claiming webhook deliveries still fails");
                } else {
                    tracing::warn!(error = %e, "claiming webhook deliveries failed; retrying every poll");
                }
                Vec::new()
            }
        }
    }

    /// One attempt at one claimed row, settled in the database. A database
    /// failure leaves the row claimed: it is tried again when its lease ends.
    async fn attempt(&self, row: Claimed) {
        let store = self.store();
        let target = match store.target(&row.id).await {
            Ok(Some(target)) => target,
            Ok(None) => {
                // The webhook was deleted after the event producer queued this.
                if let Err(e) = store.discard(&row.id).await {
                    tracing::warn!(delivery = %row.id, error = %e, "dropping a delivery of a deleted webhook failed");
                }
                return;
            }
            Err(e) => {
                tracing::warn!(delivery = %row.id, error = %e, "reading a webhook delivery failed; retrying after its lease");
                return;
            }
        };
        let attempts = row.attempts.saturating_add(1);
        let outcome = match &target.event {
            Some(event) => self.post(&row.id, &target.url, &target.secret, event).await,
            None => Err(Failure::Final("the event is gone (retention)".to_owned())),
        };
        let now = Timestamp::now();
        let settled = match outcome {
            Ok(()) => {
                m::webhook_attempt("delivered");
                tracing::debug!(delivery = %row.id, webhook = %row.webhook, attempts, "webhook delivered");
                store.delivered(&row.id, attempts, now).await
            }
            Err(failure) => {
                let (error, last) = match failure {
                    Failure::Retry(e) => (e, attempts >= self.settings.max_attempts),
                    Failure::Final(e) => (e, true),
                };
                let next_at = if last {
                    m::webhook_attempt("dead");
                    tracing::warn!(delivery = %row.id, webhook = %row.webhook, attempts, %error, "webhook delivery given up: a dead letter");
                    now
                } else {
                    m::webhook_attempt("retry");
                    let wait = backoff(&self.settings, attempts);
                    tracing::info!(delivery = %row.id, webhook = %row.webhook, attempts, %error, retry_in_ms = wait.as_millis() as u64, "webhook delivery failed; will retry");
                    Timestamp::from_millis(
                        now.as_millis()
                            .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)),
                    )
                };
                store.failed(&row.id, attempts, &error, next_at, last).await
            }
        };
        if let Err(e) = settled {
            tracing::warn!(delivery = %row.id, error = %e, "recording a webhook attempt failed; the delivery is tried again after its lease");
        }
    }

    /// One signed POST of `event`: `Ok` on a 2xx answer.
    async fn post(&self, id: &str, url: &str, secret: &str, event: &Event) -> Result<(), Failure> {
        let body = event.to_json().get().as_bytes().to_vec();
        let signed = signature::header_value(secret, Timestamp::now().as_millis() / 1000, &body);
        let response = self
            .client
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(signature::HEADER, signed)
            .header(DELIVERY_HEADER, id)
            .header(IDEMPOTENCY_HEADER, id)
            .body(body)
            .send()
            .await;
        let mut response = response.map_err(|e| Failure::Retry(describe(&e)))?;
        let status = response.status();
        if status.is_success() {
            // Read a little, so the connection can be reused; what it says
            // does not matter.
            let _ = read_some(&mut response).await;
            return Ok(());
        }
        let text = read_some(&mut response).await;
        let text = text.trim();
        Err(Failure::Retry(match text.is_empty() {
            true => format!("HTTP {status}"),
            false => format!("HTTP {status}: {text}"),
        }))
    }

    /// Deletes delivered and dead rows older than the trail retention.
    async fn purge(&self, retention_days: u32) {
        let cutoff = retention_cutoff(Timestamp::now(), retention_days);
        match self.store().purge(Timestamp::from_millis(cutoff)).await {
            Ok(0) => {}
            Ok(gone) => tracing::info!(
                gone,
                days = retention_days,
                "old webhook deliveries deleted"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "deleting old webhook deliveries failed; retrying next hour")
            }
        }
    }
}

/// Why an attempt failed.
enum Failure {
    /// Worth another attempt (until `max_attempts`).
    Retry(String),
    /// Nothing another attempt could change.
    Final(String),
}

/// The start of a receiver's answer, at most [`MAX_RESPONSE_BYTES`], as
/// text for an error message; whatever follows is never read.
async fn read_some(response: &mut reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_RESPONSE_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(MAX_RESPONSE_BYTES - bytes.len());
                bytes.extend_from_slice(chunk.get(..take).unwrap_or_default());
            }
            Ok(None) | Err(_) => break,
        }
    }
    String::from_utf8_lossy(&bytes)
        .chars()
        .take(MAX_ERROR_CHARS)
        .collect()
}

/// A client error with its causes ("error sending request: connection
/// refused"), which reqwest's own message leaves out.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The longest wait after attempt number `attempts` (1 for the first):
/// `first_retry_ms` doubling with each attempt, at most `max_retry_ms`.
pub fn retry_cap(settings: &WebhookSettings, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(40);
    let ms = settings
        .first_retry_ms
        .saturating_mul(1u64 << doublings)
        .min(settings.max_retry_ms);
    Duration::from_millis(ms)
}

/// The wait after attempt number `attempts`: uniform between 0 and
/// [`retry_cap`] ("full jitter"), so receivers that come back are not met
/// by every delivery at once.
pub fn backoff(settings: &WebhookSettings, attempts: u32) -> Duration {
    let cap = retry_cap(settings, attempts).as_millis();
    let cap = u64::try_from(cap).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookSettings {
        WebhookSettings {
            concurrency: 8,
            timeout_ms: 10_000,
            first_retry_ms: 1_000,
            max_retry_ms: 3_600_000,
            max_attempts: 12,
            poll_ms: 1_000,
        }
    }

    #[test]
    fn the_wait_doubles_up_to_the_cap() {
        let s = settings();
        let caps: Vec<u64> = (1..=14)
            .map(|n| retry_cap(&s, n).as_millis() as u64)
            .collect();
        assert_eq!(
            caps,
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000,
                1_024_000, 2_048_000, 3_600_000, 3_600_000
            ]
        );
        assert_eq!(retry_cap(&s, u32::MAX).as_millis(), 3_600_000);
    }

    #[test]
    fn waits_are_jittered_within_the_cap() {
        let s = settings();
        let waits: Vec<Duration> = (0..200).map(|_| backoff(&s, 3)).collect();
        assert!(waits.iter().all(|w| w.as_millis() <= 4_000));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 10, "not jittered: {distinct:?}");
    }

    #[test]
    fn the_client_builds_with_the_ring_provider() {
        assert!(client(&settings()).is_ok());
    }
}
