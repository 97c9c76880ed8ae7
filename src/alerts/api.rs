//! Alert rules and events over HTTP, for admins and a fleet's dispatchers:
//!
//! - `GET /api/v1/alert-rules[?fleet=]`: the fleet's rules, every rule
//!   present (`null` = off); an admin names the fleet;
//! - `PUT /api/v1/alert-rules[?fleet=]`: replaces them (a missing field is
//!   off); applied to the fixes stored from then on, on every node;
//! - `GET /api/v1/events[?from=&to=&driver=&kind=&limit=&fleet=]`: stored
//!   events, newest first: `{"events":[...]}`, each as the dashboards'
//!   `event` frame.
//!
//! The token is checked from the headers before any body is read, and the
//! body is bounded ([`MAX_BODY`]).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::rules::{AlertRules, RulesBody};
use super::store::{EventQuery, MAX_EVENTS_LIST};
use super::{EventKind, EventView};
use crate::app_state::AppState;
use crate::auth::{Identity, Role};
use crate::domain::{DriverId, FleetId, Timestamp};
use crate::http_api::{ApiError, body, scoped_fleet};
use crate::protocol::ErrorCode;
use crate::trails::StoreError;
use crate::trails::history::parse_instant;

/// Largest rules body: five numbers.
pub const MAX_BODY: usize = 4096;
/// Events listed when `limit` is not given.
pub const DEFAULT_EVENTS: usize = 100;
/// The range when `from` is not given: a week before `to`.
const DEFAULT_SPAN_MS: i64 = 7 * 24 * 3600 * 1000;

const MANAGERS: &[Role] = &[Role::Admin, Role::Dispatcher];

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(_) => ApiError::unavailable(e.to_string()),
        StoreError::Corrupt(_) => ApiError::new(ErrorCode::Internal, e.to_string()),
    }
}

fn invalid_query(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, message)
}

#[derive(Deserialize)]
pub struct FleetQuery {
    fleet: Option<String>,
}

/// The one fleet whose rules are read or written: a dispatcher's own, the
/// one an admin names (required: rules belong to one fleet).
fn rules_fleet(identity: &Identity, named: Option<&str>) -> Result<FleetId, ApiError> {
    scoped_fleet(&identity.scope, named, "fleet", "manages alert rules")?
        .ok_or_else(|| invalid_query("an admin names the fleet: ?fleet="))
}

/// The answer of both rules endpoints.
#[derive(Serialize)]
struct RulesView<'a> {
    fleet: &'a FleetId,
    #[serde(flatten)]
    rules: &'a AlertRules,
}

/// `GET /api/v1/alert-rules[?fleet=]`.
pub async fn get_rules(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<FleetQuery>,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, MANAGERS)?;
    let fleet = rules_fleet(&identity, query.fleet.as_deref())?;
    let rules = state
        .alerts
        .store()
        .rules(&fleet)
        .await
        .map_err(store_error)?
        .unwrap_or_default();
    let view = RulesView {
        fleet: &fleet,
        rules: &rules,
    };
    Ok(HttpResponse::Ok().json(view))
}

/// `PUT /api/v1/alert-rules[?fleet=]`.
pub async fn put_rules(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<FleetQuery>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, MANAGERS)?;
    let fleet = rules_fleet(&identity, query.fleet.as_deref())?;
    let raw = body::read_bounded(&req, payload, MAX_BODY).await?;
    let body: RulesBody = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::new(ErrorCode::BadJson, format!("alert rules: {e}")))?;
    let rules = AlertRules::new(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidAlertRules, e.to_string()))?;
    state
        .alerts
        .put_rules(&fleet, rules.clone())
        .await
        .map_err(store_error)?;
    tracing::info!(%fleet, by = %identity.sub, "alert rules replaced");
    let view = RulesView {
        fleet: &fleet,
        rules: &rules,
    };
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    fleet: Option<String>,
    driver: Option<String>,
    kind: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

impl EventsQuery {
    fn check(&self, identity: &Identity) -> Result<EventQuery, ApiError> {
        let fleet = scoped_fleet(
            &identity.scope,
            self.fleet.as_deref(),
            "fleet",
            "sees events",
        )?;
        let driver = self
            .driver
            .as_deref()
            .map(|d| DriverId::parse(d).map_err(|e| invalid_query(format!("driver: {e}"))))
            .transpose()?;
        let kind = self
            .kind
            .as_deref()
            .map(|k| {
                EventKind::parse(k).ok_or_else(|| invalid_query(format!("unknown kind {k:?}")))
            })
            .transpose()?;
        let to = match self.to.as_deref() {
            Some(t) => parse_instant("to", t)?,
            None => Timestamp::from_millis(i64::MAX),
        };
        let from = match self.from.as_deref() {
            Some(f) => parse_instant("from", f)?,
            None => Timestamp::from_millis(
                to.as_millis()
                    .min(Timestamp::now().as_millis())
                    .saturating_sub(DEFAULT_SPAN_MS),
            ),
        };
        if from > to {
            return Err(invalid_query("from must not be after to"));
        }
        let limit = self.limit.unwrap_or(DEFAULT_EVENTS);
        if limit == 0 || limit > MAX_EVENTS_LIST {
            return Err(invalid_query(format!(
                "limit must be between 1 and {MAX_EVENTS_LIST}"
            )));
        }
        Ok(EventQuery {
            fleet,
            driver,
            kind,
            from,
            to,
            limit,
        })
    }
}

#[derive(Serialize)]
struct EventList<'a> {
    events: Vec<EventView<'a>>,
}

/// `GET /api/v1/events`.
pub async fn list_events(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, MANAGERS)?;
    let query = query.check(&identity)?;
    let events = state
        .alerts
        .store()
        .events(&query)
        .await
        .map_err(store_error)?;
    let list = EventList {
        events: events.iter().map(|e| e.view()).collect(),
    };
    Ok(HttpResponse::Ok().json(list))
}
