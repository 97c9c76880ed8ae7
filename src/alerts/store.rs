//! Where alerts are kept: the `alert_rules`, `alert_state`, `events` and
//! `webhook_deliveries` tables of the trail database, with the same SQL on
//! both backends ([`SqlAlerts`], like the devices and the fences). The
//! writes that belong to a batch of fixes (states, events, outbox) run in
//! the trail store's own transaction: [`insert_event`] is shared by both
//! backends there; the state rows, which each backend reads and writes in
//! bulk its own way, are in the backends' files.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::event::{Event, EventFix, EventKind};
use super::persist::WEBHOOK_MATCHES;
use super::rules::{AlertRules, RulesBody};
use crate::domain::{DriverId, FleetId, Seq, Timestamp};
use crate::trails::StoreError;

/// Most events one list answers with.
pub const MAX_EVENTS_LIST: usize = 1_000;

/// What `GET /api/v1/events` asks for: one fleet's (or every fleet's, for
/// an admin), in the inclusive fix-time range, optionally one driver and one
/// kind; newest first, at most `limit`.
#[derive(Debug, Clone)]
pub struct EventQuery {
    pub fleet: Option<FleetId>,
    pub driver: Option<DriverId>,
    pub kind: Option<EventKind>,
    pub from: Timestamp,
    pub to: Timestamp,
    pub limit: usize,
}

/// A driver the hub has not heard from for its fleet's `offline_after_secs`.
#[derive(Debug, Clone, PartialEq)]
pub struct Silent {
    pub fleet: FleetId,
    pub driver: DriverId,
    pub last_ts: i64,
    pub last_seq: Seq,
    pub lat: f64,
    pub lon: f64,
    pub last_recv: i64,
    pub after_secs: u64,
}

const RULES_COLUMNS: &str = "overspeed_kmh, overspeed_min_secs, idle_after_secs, \
    offline_after_secs, low_battery_pct";

const PUT_RULES: &str = "INSERT INTO alert_rules (fleet_id, overspeed_kmh, overspeed_min_secs, \
    idle_after_secs, offline_after_secs, low_battery_pct, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) \
    ON CONFLICT (fleet_id) DO UPDATE SET overspeed_kmh = excluded.overspeed_kmh, \
    overspeed_min_secs = excluded.overspeed_min_secs, idle_after_secs = excluded.idle_after_secs, \
    offline_after_secs = excluded.offline_after_secs, low_battery_pct = excluded.low_battery_pct, \
    updated_at = excluded.updated_at";

// Optional filters are bound as NULL when absent; CAST gives the parameter a
// type on PostgreSQL and is a no-op on SQLite.
const EVENTS: &str = "SELECT id, fleet_id, driver_id, kind, ts, seq, lat, lon, geofence_id, details \
    FROM events WHERE (CAST($1 AS TEXT) IS NULL OR fleet_id = $1) \
    AND (CAST($2 AS TEXT) IS NULL OR driver_id = $2) AND (CAST($3 AS TEXT) IS NULL OR kind = $3) \
    AND ts >= $4 AND ts <= $5 ORDER BY ts DESC, id DESC LIMIT $6";

// A driver counts once per silence: `offline_ts` remembers the fix time the
// event was raised for, and the driver's next fix moves `last_ts` past it.
const SILENT: &str = "SELECT s.fleet_id, s.driver_id, s.last_ts, s.last_seq, s.last_lat, \
    s.last_lon, s.last_recv, r.offline_after_secs FROM alert_state s \
    JOIN alert_rules r ON r.fleet_id = s.fleet_id \
    WHERE r.offline_after_secs IS NOT NULL AND s.last_ts >= 0 AND s.offline_ts <> s.last_ts \
    AND s.last_recv <= $1 - r.offline_after_secs * 1000 \
    ORDER BY s.last_recv LIMIT $2";

// The claim: only the node whose update changed the row raises the event.
const CLAIM_OFFLINE: &str = "UPDATE alert_state SET offline_ts = last_ts \
    WHERE fleet_id = $1 AND driver_id = $2 AND last_ts = $3 AND offline_ts <> last_ts \
    AND last_recv = $4 RETURNING fleet_id";

// Retention goes in slices, so no statement holds its locks for long.
const DROP_EVENTS: &str = "DELETE FROM events WHERE id IN \
    (SELECT id FROM events WHERE ts < $1 LIMIT $2) RETURNING id";
const RETENTION_SLICE: i64 = 5_000;

const INSERT_EVENT: &str = "INSERT INTO events \
    (id, fleet_id, driver_id, kind, ts, seq, lat, lon, geofence_id, details, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING RETURNING id";

/// The outbox rows of one event: one per webhook of its fleet that wants its kind.
fn enqueue_sql() -> String {
    format!(
        "INSERT INTO webhook_deliveries (id, webhook_id, event_id, fleet_id, status, attempts, \
         next_at, lease_until, created_at) \
         SELECT e.id || '.' || w.id, w.id, e.id, e.fleet_id, 'pending', 0, $2, 0, $2 \
         FROM events e JOIN webhooks w ON {WEBHOOK_MATCHES} WHERE e.id = $1 \
         ON CONFLICT DO NOTHING"
    )
}

/// The contract every backend keeps.
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Every fleet's rules (fleets whose rules are all off included).
    async fn all_rules(&self) -> Result<Vec<(FleetId, AlertRules)>, StoreError>;
    /// One fleet's rules; `None` when it never had any.
    async fn rules(&self, fleet: &FleetId) -> Result<Option<AlertRules>, StoreError>;
    async fn put_rules(&self, fleet: &FleetId, rules: &AlertRules) -> Result<(), StoreError>;
    async fn events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError>;
    /// Drivers silent past their fleet's limit as of `now`, oldest silence first.
    async fn silent(&self, now: Timestamp, limit: usize) -> Result<Vec<Silent>, StoreError>;
    /// Raises `offline` for `silent` unless another node did, or the driver
    /// spoke meanwhile; the event when this call raised it.
    async fn raise_offline(&self, silent: &Silent) -> Result<Option<Event>, StoreError>;
    /// Deletes events older than `cutoff`; returns how many went.
    async fn drop_events_before(&self, cutoff: Timestamp) -> Result<u64, StoreError>;
}

pub struct SqlAlerts<DB: Database> {
    pool: Pool<DB>,
}

impl<DB: Database> SqlAlerts<DB> {
    pub fn new(pool: Pool<DB>) -> Self {
        Self { pool }
    }
}

fn db_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn seq_to_db(seq: Seq) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::Corrupt("a seq beyond i64".into()))
}

/// Stores `events` on `conn` (inside the caller's transaction) with their
/// outbox rows; returns those that were not stored already (the others
/// were produced before, and are not announced again).
pub async fn insert_events<DB>(
    conn: &mut DB::Connection,
    events: Vec<Event>,
    now: Timestamp,
) -> Result<Vec<Event>, StoreError>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
{
    let mut stored = Vec::with_capacity(events.len());
    for event in events {
        if insert_event::<DB>(conn, &event, now).await? {
            stored.push(event);
        }
    }
    Ok(stored)
}

/// [`insert_events`] for one event: `false` when it was stored already.
pub async fn insert_event<'c, DB>(
    conn: &'c mut DB::Connection,
    event: &Event,
    now: Timestamp,
) -> Result<bool, StoreError>
where
    DB: Database,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
{
    let seq = event.fix.seq.map(seq_to_db).transpose()?;
    let inserted = sqlx::query(INSERT_EVENT)
        .bind(event.id.as_str())
        .bind(event.fleet.as_str())
        .bind(event.driver.as_str())
        .bind(event.kind.as_str())
        .bind(event.fix.ts.as_millis())
        .bind(seq)
        .bind(event.fix.lat)
        .bind(event.fix.lon)
        .bind(event.geofence.as_deref())
        .bind(event.details.to_string())
        .bind(now.as_millis())
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    if inserted {
        sqlx::query(sqlx::AssertSqlSafe(enqueue_sql()))
            .bind(event.id.as_str())
            .bind(now.as_millis())
            .execute(&mut *conn)
            .await?;
    }
    Ok(inserted)
}

#[async_trait]
impl<DB> AlertStore for SqlAlerts<DB>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Type<DB>,
    for<'q> Option<f64>: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> f64: Decode<'r, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'c> &'c str: ColumnIndex<DB::Row>,
{
    async fn all_rules(&self) -> Result<Vec<(FleetId, AlertRules)>, StoreError> {
        let sql = format!("SELECT fleet_id, {RULES_COLUMNS} FROM alert_rules ORDER BY fleet_id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let fleet: String = row.try_get("fleet_id")?;
                let fleet = FleetId::parse(&fleet)
                    .map_err(|e| StoreError::Corrupt(format!("alert_rules.fleet_id: {e}")))?;
                Ok((fleet, rules_of(row)?))
            })
            .collect()
    }

    async fn rules(&self, fleet: &FleetId) -> Result<Option<AlertRules>, StoreError> {
        let sql = format!("SELECT {RULES_COLUMNS} FROM alert_rules WHERE fleet_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(fleet.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| rules_of(&row)).transpose()
    }

    async fn put_rules(&self, fleet: &FleetId, rules: &AlertRules) -> Result<(), StoreError> {
        let secs = |s: Option<u64>| s.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
        sqlx::query(PUT_RULES)
            .bind(fleet.as_str())
            .bind(rules.overspeed_kmh())
            .bind(secs(rules.overspeed_min_secs()))
            .bind(secs(rules.idle_after_secs()))
            .bind(secs(rules.offline_after_secs()))
            .bind(rules.low_battery_pct())
            .bind(Timestamp::now().as_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(EVENTS)
            .bind(query.fleet.as_ref().map(|f| f.as_str()))
            .bind(query.driver.as_ref().map(|d| d.as_str()))
            .bind(query.kind.map(|k| k.as_str()))
            .bind(query.from.as_millis())
            .bind(query.to.as_millis())
            .bind(db_count(query.limit.min(MAX_EVENTS_LIST)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_of).collect()
    }

    async fn silent(&self, now: Timestamp, limit: usize) -> Result<Vec<Silent>, StoreError> {
        let rows = sqlx::query(SILENT)
            .bind(now.as_millis())
            .bind(db_count(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(silent_of).collect()
    }

    async fn raise_offline(&self, silent: &Silent) -> Result<Option<Event>, StoreError> {
        let now = Timestamp::now();
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(CLAIM_OFFLINE)
            .bind(silent.fleet.as_str())
            .bind(silent.driver.as_str())
            .bind(silent.last_ts)
            .bind(silent.last_recv)
            .fetch_optional(&mut *tx)
            .await?;
        if claimed.is_none() {
            return Ok(None);
        }
        // The id names the silence (the driver's last fix); the event's time
        // is when the limit ran out, the same on every node.
        let cause = EventFix {
            ts: Timestamp::from_millis(silent.last_ts),
            seq: Some(silent.last_seq),
            lat: silent.lat,
            lon: silent.lon,
        };
        let details = serde_json::json!({
            "last_seen": silent.last_recv,
            "last_fix": silent.last_ts,
            "after_secs": silent.after_secs,
        });
        let after_ms = i64::try_from(silent.after_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut event = Event::new(
            EventKind::Offline,
            &silent.fleet,
            &silent.driver,
            cause,
            None,
            details,
        );
        event.fix = EventFix {
            ts: Timestamp::from_millis(silent.last_recv.saturating_add(after_ms)),
            seq: None,
            ..cause
        };
        let inserted = insert_event::<DB>(&mut tx, &event, now).await?;
        tx.commit().await?;
        Ok(inserted.then_some(event))
    }

    async fn drop_events_before(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        let mut dropped = 0;
        loop {
            let gone = sqlx::query(DROP_EVENTS)
                .bind(cutoff.as_millis())
                .bind(RETENTION_SLICE)
                .fetch_all(&self.pool)
                .await?
                .len();
            dropped += gone as u64;
            if gone == 0 {
                return Ok(dropped);
            }
        }
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn rules_of<R: Row>(row: &R) -> Result<AlertRules, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
    for<'c> &'c str: ColumnIndex<R>,
{
    let secs = |name: &str| -> Result<Option<u64>, StoreError> {
        let v: Option<i64> = row.try_get(name)?;
        v.map(|v| u64::try_from(v).map_err(|e| corrupt(name, e)))
            .transpose()
    };
    let body = RulesBody {
        overspeed_kmh: row.try_get("overspeed_kmh")?,
        overspeed_min_secs: secs("overspeed_min_secs")?,
        idle_after_secs: secs("idle_after_secs")?,
        offline_after_secs: secs("offline_after_secs")?,
        low_battery_pct: row.try_get("low_battery_pct")?,
    };
    AlertRules::from_stored(body).map_err(|e| corrupt("alert_rules", e))
}

fn event_of<R: Row>(row: &R) -> Result<Event, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'c> &'c str: ColumnIndex<R>,
{
    let kind: String = row.try_get("kind")?;
    let fleet: String = row.try_get("fleet_id")?;
    let driver: String = row.try_get("driver_id")?;
    let details: String = row.try_get("details")?;
    let seq: Option<i64> = row.try_get("seq")?;
    Ok(Event {
        id: row.try_get("id")?,
        kind: EventKind::parse(&kind).ok_or_else(|| corrupt("events.kind", &kind))?,
        fleet: FleetId::parse(&fleet).map_err(|e| corrupt("events.fleet_id", e))?,
        driver: DriverId::parse(&driver).map_err(|e| corrupt("events.driver_id", e))?,
        fix: EventFix {
            ts: Timestamp::from_millis(row.try_get("ts")?),
            seq: seq
                .map(|s| Seq::try_from(s).map_err(|e| corrupt("events.seq", e)))
                .transpose()?,
            lat: row.try_get("lat")?,
            lon: row.try_get("lon")?,
        },
        geofence: row.try_get("geofence_id")?,
        details: serde_json::from_str(&details).map_err(|e| corrupt("events.details", e))?,
    })
}

fn silent_of<R: Row>(row: &R) -> Result<Silent, StoreError>
where
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'c> &'c str: ColumnIndex<R>,
{
    let fleet: String = row.try_get("fleet_id")?;
    let driver: String = row.try_get("driver_id")?;
    let seq: i64 = row.try_get("last_seq")?;
    let after: i64 = row.try_get("offline_after_secs")?;
    Ok(Silent {
        fleet: FleetId::parse(&fleet).map_err(|e| corrupt("alert_state.fleet_id", e))?,
        driver: DriverId::parse(&driver).map_err(|e| corrupt("alert_state.driver_id", e))?,
        last_ts: row.try_get("last_ts")?,
        last_seq: Seq::try_from(seq).map_err(|e| corrupt("alert_state.last_seq", e))?,
        lat: row.try_get("last_lat")?,
        lon: row.try_get("last_lon")?,
        last_recv: row.try_get("last_recv")?,
        after_secs: u64::try_from(after).map_err(|e| corrupt("alert_rules.offline", e))?,
    })
}
