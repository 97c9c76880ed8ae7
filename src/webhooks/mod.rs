//! Webhooks (issue #14): a fleet's HTTP endpoints that receive its events.
//!
//! - [`webhook`]: the domain type [`Webhook`] and what a new one must be
//!   (an http(s) URL, the kinds it takes);
//! - [`store`]: the `webhooks` table and the `webhook_deliveries` outbox of
//!   the trail database, the same SQL on both backends;
//! - [`signature`]: how a delivery is signed (HMAC-SHA256 of time and body);
//! - [`delivery`]: the worker that sends due deliveries, retries them with
//!   backoff and gives up on them as dead letters;
//! - [`api`]: the REST endpoints.
//!
//! The outbox is written by whoever stores an event, in the same
//! transaction (one row per matching webhook), so an event is never lost
//! between the database and the receivers. The producer rings this node's
//! worker after such a commit (the bell [`Webhooks::nudge`] rings too); the
//! worker also polls, so rows written by another node, or a ring lost to a
//! crash, are sent anyway.

pub mod api;
pub mod delivery;
pub mod signature;
pub mod store;
pub mod webhook;

use std::sync::Arc;

use tokio::sync::Notify;

pub use store::{Claimed, DeadLetter, SqlWebhooks, Target, WebhookStore};
pub use webhook::{Webhook, WebhookError, WebhookId};

use crate::trails::TrailStore;

/// The handle the rest of the hub holds: the store and the worker's bell.
pub struct Webhooks {
    store: Arc<dyn TrailStore>,
    wake: Arc<Notify>,
}

impl Webhooks {
    /// `wake` is the bell the event producer rings after a commit that
    /// stored events ([`Alerts::outbox_ready`](crate::alerts::Alerts::outbox_ready)).
    pub fn new(store: Arc<dyn TrailStore>, wake: Arc<Notify>) -> Self {
        Self { store, wake }
    }

    pub fn store(&self) -> &dyn WebhookStore {
        self.store.webhooks()
    }

    /// New deliveries are due (a commit stored events, a dead letter was
    /// replayed): the worker looks at once instead of at its next poll.
    /// Cheap and never blocks; nudges while the worker is busy fold into one.
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Resolves at the next [`Webhooks::nudge`] (or at once if one came
    /// since the last call).
    pub(crate) async fn nudged(&self) {
        self.wake.notified().await;
    }
}
