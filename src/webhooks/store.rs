//! Where webhooks and their deliveries are kept: the `webhooks` table and
//! the `webhook_deliveries` outbox of the trail database, with the same SQL
//! on both backends, so one generic [`SqlWebhooks`] serves both, like the
//! geofences. Each trail backend hands one out over its own pool
//! ([`TrailStore::webhooks`](crate::trails::TrailStore::webhooks)).
//!
//! A delivery row is `pending` (due at `next_at`, held by a sender until
//! `lease_until`), `delivered` or `dead`. Senders on any number of nodes
//! claim due rows with one statement ([`WebhookStore::claim`]); a row whose
//! sender died is claimed again once its lease has passed.

use async_trait::async_trait;
use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::webhook::{Webhook, WebhookId, kinds_from_stored, kinds_to_stored};
use crate::alerts::{Event, EventFix, EventKind};
use crate::domain::{DriverId, FleetId, Timestamp};
use crate::trails::StoreError;

/// Most webhooks one fleet may have: every event of the fleet is one row per
/// matching webhook in the outbox.
pub const MAX_PER_FLEET: usize = 20;
/// Most webhooks one list answers with (every fleet's, for an admin).
pub const MAX_LIST: usize = 10_000;
/// Most rows one retention statement deletes, so that a large backlog goes
/// in short transactions and a bounded answer.
const PURGE_CHUNK: usize = 1_000;
/// The longest `last_error` kept, in characters.
pub const MAX_ERROR_CHARS: usize = 500;

// The count and the insert are one statement: creates on several nodes at
// once may each pass the count (PostgreSQL, read committed), so the bound
// can be passed by a few, never by many.
const INSERT: &str = "INSERT INTO webhooks (id, fleet_id, url, secret, kinds, created_at) \
    SELECT $1, $2, $3, $4, $5, $6 \
    WHERE (SELECT COUNT(*) FROM webhooks WHERE fleet_id = $2) < $7 \
    RETURNING id";

const GET: &str = "SELECT id, fleet_id, url, kinds, created_at FROM webhooks WHERE id = $1";

const LIST_FLEET: &str = "SELECT id, fleet_id, url, kinds, created_at FROM webhooks \
    WHERE fleet_id = $1 ORDER BY fleet_id, created_at, id LIMIT $2";

const LIST_ALL: &str = "SELECT id, fleet_id, url, kinds, created_at FROM webhooks \
    ORDER BY fleet_id, created_at, id LIMIT $1";

// The fleet is part of the key: a dispatcher's request only touches its own
// fleet's webhooks.
const DELETE: &str = "DELETE FROM webhooks WHERE id = $1 AND fleet_id = $2 RETURNING id";

// After the webhook itself: a delivery the event producer adds in between
// finds no webhook when claimed, and is dropped then.
const DELETE_DELIVERIES: &str = "DELETE FROM webhook_deliveries WHERE webhook_id = $1";

// $1 now, $2 the lease's end, $3 how many. The outer `lease_until < $1`
// is evaluated again on PostgreSQL when another node's claim of the same row
// committed first (read committed re-checks an updated row): that node holds
// it, this claim skips it. SQLite runs one writer at a time.
const CLAIM: &str = "UPDATE webhook_deliveries SET lease_until = $2 \
    WHERE id IN (SELECT id FROM webhook_deliveries \
        WHERE status = 'pending' AND next_at <= $1 AND lease_until < $1 \
        ORDER BY next_at LIMIT $3) \
    AND status = 'pending' AND lease_until < $1 \
    RETURNING id, webhook_id, event_id, attempts";

const TARGET: &str = "SELECT w.url, w.secret, \
    e.id AS e_id, e.fleet_id AS e_fleet, e.driver_id AS e_driver, e.kind AS e_kind, \
    e.ts AS e_ts, e.seq AS e_seq, e.lat AS e_lat, e.lon AS e_lon, \
    e.geofence_id AS e_geofence, e.details AS e_details \
    FROM webhook_deliveries d \
    JOIN webhooks w ON w.id = d.webhook_id \
    LEFT JOIN events e ON e.id = d.event_id \
    WHERE d.id = $1";

// Only a row still pending is settled: a delivery replayed or deleted
// meanwhile is left as it is now.
const DELIVERED: &str = "UPDATE webhook_deliveries \
    SET status = 'delivered', attempts = $2, delivered_at = $3, lease_until = 0, last_error = NULL \
    WHERE id = $1 AND status = 'pending'";

const FAILED: &str = "UPDATE webhook_deliveries \
    SET status = $2, attempts = $3, last_error = $4, next_at = $5, lease_until = 0 \
    WHERE id = $1 AND status = 'pending'";

const DISCARD: &str = "DELETE FROM webhook_deliveries WHERE id = $1";

// A dead letter's `next_at` is when it died: newest first.
const DEAD_LETTERS: &str = "SELECT d.id, d.webhook_id, d.attempts, d.last_error, d.created_at, \
    d.next_at, w.url, \
    e.id AS e_id, e.fleet_id AS e_fleet, e.driver_id AS e_driver, e.kind AS e_kind, \
    e.ts AS e_ts, e.seq AS e_seq, e.lat AS e_lat, e.lon AS e_lon, \
    e.geofence_id AS e_geofence, e.details AS e_details \
    FROM webhook_deliveries d \
    LEFT JOIN webhooks w ON w.id = d.webhook_id \
    LEFT JOIN events e ON e.id = d.event_id \
    WHERE d.status = 'dead' ORDER BY d.next_at DESC, d.id LIMIT $1";

const REPLAY: &str = "UPDATE webhook_deliveries \
    SET status = 'pending', attempts = 0, next_at = $2, lease_until = 0 \
    WHERE id = $1 AND status = 'dead' RETURNING id";

const PENDING: &str = "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE status = 'pending'";

const PURGE: &str = "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries \
    WHERE status IN ('delivered', 'dead') AND created_at < $1 LIMIT $2) RETURNING id";

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    Done,
    /// The fleet has [`MAX_PER_FLEET`] webhooks already.
    FleetFull,
    /// Another webhook has this id (a random id met another: pick a new one).
    IdTaken,
}

/// A delivery a sender now holds, until its lease ends.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// `<event id>.<webhook id>`: the receivers' idempotency key.
    pub id: String,
    pub webhook: String,
    pub event: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// Where a claimed delivery goes, and what.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub secret: String,
    /// `None` when the event is gone (retention): nothing to send.
    pub event: Option<Event>,
}

/// A delivery that was given up on, as the dead-letter API shows it.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    pub id: String,
    pub webhook: String,
    /// `None` when the webhook is gone.
    pub url: Option<String>,
    /// The body that was sent; `None` when the event is gone.
    pub event: Option<Box<RawValue>>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    /// When the last attempt failed.
    pub failed_at: Timestamp,
}

/// The contract every backend keeps.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Adds the webhook with its secret, unless its fleet is full or its id taken.
    async fn insert(&self, webhook: &Webhook, secret: &str) -> Result<Inserted, StoreError>;
    /// The webhook with this id, in any fleet; `None` when there is none.
    async fn get(&self, id: &WebhookId) -> Result<Option<Webhook>, StoreError>;
    /// One fleet's webhooks, or every fleet's (`None`), in (fleet, creation)
    /// order, at most `limit`; never their secrets.
    async fn list(&self, fleet: Option<&FleetId>, limit: usize)
    -> Result<Vec<Webhook>, StoreError>;
    /// Removes the webhook of `fleet` and every delivery of it (pending,
    /// delivered or dead); `false` when `fleet` has no webhook with this id.
    async fn delete(&self, id: &WebhookId, fleet: &FleetId) -> Result<bool, StoreError>;

    /// Takes at most `limit` pending deliveries due at `now` that no sender
    /// holds, oldest due first, and holds them until `lease_until`. Two
    /// claims, on any nodes, never take the same row while its lease runs.
    async fn claim(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError>;
    /// The webhook and the event of a delivery; `None` when the webhook (or
    /// the delivery) is gone.
    async fn target(&self, delivery: &str) -> Result<Option<Target>, StoreError>;
    /// The delivery arrived, after `attempts` attempts in all.
    async fn delivered(&self, id: &str, attempts: u32, at: Timestamp) -> Result<(), StoreError>;
    /// Attempt number `attempts` failed with `error`: due again at `next_at`
    /// or, when `dead`, a dead letter (`next_at` is then when it died).
    async fn failed(
        &self,
        id: &str,
        attempts: u32,
        error: &str,
        next_at: Timestamp,
        dead: bool,
    ) -> Result<(), StoreError>;
    /// Forgets a delivery that has nowhere to go (its webhook is gone).
    async fn discard(&self, id: &str) -> Result<(), StoreError>;

    /// The dead letters, most recently failed first, at most `limit`.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
    /// Makes dead letter `id` pending again, with no attempts, due at `now`;
    /// `false` when there is no dead letter with this id.
    async fn replay(&self, id: &str, now: Timestamp) -> Result<bool, StoreError>;
    /// How many deliveries are pending, due or not.
    async fn pending(&self) -> Result<u64, StoreError>;
    /// Deletes delivered and dead deliveries created before `before`;
    /// returns how many.
    async fn purge(&self, before: Timestamp) -> Result<u64, StoreError>;
}

/// The webhook store over one backend's pool.
pub struct SqlWebhooks<DB: Database> {
    pool: Pool<DB>,
}

impl<DB: Database> SqlWebhooks<DB> {
    pub fn new(pool: Pool<DB>) -> Self {
        Self { pool }
    }
}

fn db_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn db_attempts(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[async_trait]
impl<DB> WebhookStore for SqlWebhooks<DB>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    for<'r> i32: Decode<'r, DB>,
    for<'r> f64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    async fn insert(&self, webhook: &Webhook, secret: &str) -> Result<Inserted, StoreError> {
        let inserted = sqlx::query(INSERT)
            .bind(webhook.id.as_str())
            .bind(webhook.fleet.as_str())
            .bind(webhook.url.as_str())
            .bind(secret)
            .bind(kinds_to_stored(&webhook.kinds))
            .bind(webhook.created_at.as_millis())
            .bind(db_count(MAX_PER_FLEET))
            .fetch_optional(&self.pool)
            .await;
        match inserted {
            Ok(Some(_)) => Ok(Inserted::Done),
            Ok(None) => Ok(Inserted::FleetFull),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Inserted::IdTaken),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, id: &WebhookId) -> Result<Option<Webhook>, StoreError> {
        let row = sqlx::query(GET)
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| webhook_of(&row)).transpose()
    }

    async fn list(
        &self,
        fleet: Option<&FleetId>,
        limit: usize,
    ) -> Result<Vec<Webhook>, StoreError> {
        let rows = match fleet {
            Some(fleet) => {
                sqlx::query(LIST_FLEET)
                    .bind(fleet.as_str())
                    .bind(db_count(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(LIST_ALL)
                    .bind(db_count(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(webhook_of).collect()
    }

    async fn delete(&self, id: &WebhookId, fleet: &FleetId) -> Result<bool, StoreError> {
        let gone = sqlx::query(DELETE)
            .bind(id.as_str())
            .bind(fleet.as_str())
            .fetch_optional(&self.pool)
            .await?;
        if gone.is_none() {
            return Ok(false);
        }
        sqlx::query(DELETE_DELIVERIES)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    async fn claim(
        &self,
        now: Timestamp,
        lease_until: Timestamp,
        limit: usize,
    ) -> Result<Vec<Claimed>, StoreError> {
        let rows = sqlx::query(CLAIM)
            .bind(now.as_millis())
            .bind(lease_until.as_millis())
            .bind(db_count(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let attempts: i32 = row.try_get("attempts")?;
                Ok(Claimed {
                    id: row.try_get("id")?,
                    webhook: row.try_get("webhook_id")?,
                    event: row.try_get("event_id")?,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn target(&self, delivery: &str) -> Result<Option<Target>, StoreError> {
        let Some(row) = sqlx::query(TARGET)
            .bind(delivery)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Target {
            url: row.try_get("url")?,
            secret: row.try_get("secret")?,
            event: event_of(&row)?,
        }))
    }

    async fn delivered(&self, id: &str, attempts: u32, at: Timestamp) -> Result<(), StoreError> {
        sqlx::query(DELIVERED)
            .bind(id)
            .bind(db_attempts(attempts))
            .bind(at.as_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn failed(
        &self,
        id: &str,
        attempts: u32,
        error: &str,
        next_at: Timestamp,
        dead: bool,
    ) -> Result<(), StoreError> {
        let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
        sqlx::query(FAILED)
            .bind(id)
            .bind(if dead { "dead" } else { "pending" })
            .bind(db_attempts(attempts))
            .bind(error)
            .bind(next_at.as_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn discard(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(DISCARD).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(DEAD_LETTERS)
            .bind(db_count(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let attempts: i32 = row.try_get("attempts")?;
                let created_at: i64 = row.try_get("created_at")?;
                let failed_at: i64 = row.try_get("next_at")?;
                Ok(DeadLetter {
                    id: row.try_get("id")?,
                    webhook: row.try_get("webhook_id")?,
                    url: row.try_get("url")?,
                    event: event_of(row)?.map(|e| e.to_json()),
                    attempts: u32::try_from(attempts).unwrap_or(0),
                    last_error: row.try_get("last_error")?,
                    created_at: Timestamp::from_millis(created_at),
                    failed_at: Timestamp::from_millis(failed_at),
                })
            })
            .collect()
    }

    async fn replay(&self, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let replayed = sqlx::query(REPLAY)
            .bind(id)
            .bind(now.as_millis())
            .fetch_optional(&self.pool)
            .await?;
        Ok(replayed.is_some())
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        let row = sqlx::query(PENDING).fetch_one(&self.pool).await?;
        let n: i64 = row.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn purge(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut gone = 0u64;
        loop {
            let rows = sqlx::query(PURGE)
                .bind(before.as_millis())
                .bind(db_count(PURGE_CHUNK))
                .fetch_all(&self.pool)
                .await?;
            gone += rows.len() as u64;
            if rows.len() < PURGE_CHUNK {
                return Ok(gone);
            }
        }
    }
}

/// A stored row back into a webhook, every column checked.
fn webhook_of<R: Row>(row: &R) -> Result<Webhook, StoreError>
where
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("webhook {id:?}: {what}"));
    let fleet: String = row.try_get("fleet_id")?;
    let kinds: String = row.try_get("kinds")?;
    let created_at: i64 = row.try_get("created_at")?;
    Ok(Webhook {
        id: WebhookId::parse(&id).ok_or_else(|| corrupt("bad id"))?,
        fleet: FleetId::parse(&fleet).map_err(|_| corrupt(&format!("bad fleet {fleet:?}")))?,
        url: row.try_get("url")?,
        kinds: kinds_from_stored(&kinds).ok_or_else(|| corrupt(&format!("bad kinds {kinds:?}")))?,
        created_at: Timestamp::from_millis(created_at),
    })
}

/// The event of a joined row (its columns prefixed `e_`); `None` when the
/// join found none. Kept with its stored id, so the receiver sees the id the
/// dashboards and the events API show.
fn event_of<R: Row>(row: &R) -> Result<Option<Event>, StoreError>
where
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
{
    let Some(id): Option<String> = row.try_get("e_id")? else {
        return Ok(None);
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("event {id:?}: {what}"));
    let fleet: String = row.try_get("e_fleet")?;
    let driver: String = row.try_get("e_driver")?;
    let kind: String = row.try_get("e_kind")?;
    let ts: i64 = row.try_get("e_ts")?;
    let seq: Option<i64> = row.try_get("e_seq")?;
    let details: String = row.try_get("e_details")?;
    let seq = seq
        .map(|s| u64::try_from(s).map_err(|_| corrupt(&format!("negative seq {s}"))))
        .transpose()?;
    Ok(Some(Event {
        kind: EventKind::parse(&kind).ok_or_else(|| corrupt(&format!("bad kind {kind:?}")))?,
        fleet: FleetId::parse(&fleet).map_err(|_| corrupt(&format!("bad fleet {fleet:?}")))?,
        driver: DriverId::parse(&driver).map_err(|_| corrupt(&format!("bad driver {driver:?}")))?,
        fix: EventFix {
            ts: Timestamp::from_millis(ts),
            seq,
            lat: row.try_get("e_lat")?,
            lon: row.try_get("e_lon")?,
        },
        geofence: row.try_get("e_geofence")?,
        details: serde_json::from_str(&details)
            .map_err(|e| corrupt(&format!("details are not JSON: {e}")))?,
        id,
    }))
}
