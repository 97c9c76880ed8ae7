//! Webhooks over HTTP, for admins and for a fleet's dispatchers:
//!
//! - `POST /api/v1/webhooks`: `{"url", "kinds"?, "fleet"?}`; 201 with the
//!   webhook and its `secret`, the only time the secret is shown;
//! - `GET /api/v1/webhooks[?fleet=]`: the caller's fleet's webhooks (an
//!   admin's: one fleet's, or every fleet's), never with secrets;
//! - `DELETE /api/v1/webhooks/{id}`: 204; its deliveries go with it;
//! - `GET /api/v1/webhooks/dead-letters[?limit=]` (admins): the deliveries
//!   given up on, most recently failed first;
//! - `POST /api/v1/webhooks/dead-letters/{id}/replay` (admins): 202, the
//!   delivery is pending again, with no attempts, due now.
//!
//! A dispatcher acts on its own fleet only: another fleet's webhook answers
//! 404 like one that does not exist. The token is checked from the headers
//! before any of the body is read, and the body is bounded ([`MAX_BODY`]).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::signature;
use super::store::{self, Inserted};
use super::webhook::{Webhook, WebhookError, WebhookId, parse_kinds};
use crate::app_state::AppState;
use crate::auth::{FleetScope, Identity, Role};
use crate::domain::{FleetId, Timestamp};
use crate::http_api::{ApiError, body, scoped_fleet};
use crate::protocol::ErrorCode;
use crate::trails::StoreError;

/// Largest create body: a URL (at most 2 KiB) and a few kinds.
pub const MAX_BODY: usize = 8192;
/// Dead letters one list answers with by default, and at most.
pub const DEFAULT_DEAD_LETTERS: usize = 100;
pub const MAX_DEAD_LETTERS: usize = 1_000;
/// Longest delivery id looked up.
const MAX_DELIVERY_ID: usize = 200;
/// How many times a create draws a new random id when the one drawn is taken.
const ID_ATTEMPTS: usize = 3;

const MANAGERS: &[Role] = &[Role::Admin, Role::Dispatcher];
const ADMINS: &[Role] = &[Role::Admin];

/// The body of `POST /api/v1/webhooks`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
    #[serde(default)]
    kinds: Option<Vec<String>>,
    /// Admins only: a dispatcher's webhooks are its token's fleet's.
    fleet: Option<String>,
}

/// A new webhook and its secret: the answer of a create.
#[derive(Serialize)]
struct WithSecret<'a> {
    #[serde(flatten)]
    webhook: &'a Webhook,
    secret: &'a str,
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(_) => ApiError::unavailable(e.to_string()),
        StoreError::Corrupt(_) => ApiError::new(ErrorCode::Internal, e.to_string()),
    }
}

fn invalid(e: WebhookError) -> ApiError {
    ApiError::new(ErrorCode::InvalidWebhook, e.0)
}

fn no_such_dead_letter() -> ApiError {
    ApiError::new(ErrorCode::UnknownDeadLetter, "no dead letter has this id")
}

fn no_such_webhook() -> ApiError {
    ApiError::new(ErrorCode::UnknownWebhook, "no such webhook in your fleet")
}

/// `POST /api/v1/webhooks`.
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, MANAGERS)?;
    let raw = body::read_bounded(&req, payload, MAX_BODY).await?;
    let new: NewWebhook = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::new(
            ErrorCode::BadJson,
            format!("expected {{\"url\",\"kinds\"?,\"fleet\"?}}: {e}"),
        )
    })?;
    let fleet = scoped_fleet(
        &identity.scope,
        new.fleet.as_deref(),
        "fleet",
        "creates webhooks",
    )?
    .ok_or_else(|| invalid(WebhookError("`fleet` is required for an admin".into())))?;
    let url = Webhook::check_url(&new.url).map_err(invalid)?;
    let kinds = parse_kinds(new.kinds.as_deref().unwrap_or_default()).map_err(invalid)?;
    let secret = signature::generate_secret();
    let store = state.webhooks.store();
    for _ in 0..ID_ATTEMPTS {
        let webhook = Webhook {
            id: WebhookId::generate(),
            fleet: fleet.clone(),
            url: url.clone(),
            kinds: kinds.clone(),
            created_at: Timestamp::now(),
        };
        match store.insert(&webhook, &secret).await.map_err(store_error)? {
            Inserted::Done => {
                // Never the secret, nor the URL (it may carry a token in its query).
                tracing::info!(webhook = %webhook.id, fleet = %webhook.fleet, by = %identity.sub, "webhook created");
                return Ok(HttpResponse::Created().json(WithSecret {
                    webhook: &webhook,
                    secret: &secret,
                }));
            }
            Inserted::FleetFull => {
                return Err(ApiError::new(
                    ErrorCode::TooManyWebhooks,
                    format!("a fleet has at most {} webhooks", store::MAX_PER_FLEET),
                ));
            }
            Inserted::IdTaken => continue,
        }
    }
    Err(ApiError::unavailable(
        "no free webhook id after several random draws",
    ))
}

#[derive(Deserialize)]
pub struct ListQuery {
    fleet: Option<String>,
}

/// `GET /api/v1/webhooks[?fleet=]`.
pub async fn list(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, MANAGERS)?;
    let fleet = scoped_fleet(
        &identity.scope,
        query.fleet.as_deref(),
        "fleet",
        "sees webhooks",
    )?;
    let webhooks = state
        .webhooks
        .store()
        .list(fleet.as_ref(), store::MAX_LIST)
        .await
        .map_err(store_error)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "webhooks": webhooks })))
}

/// The fleet of webhook `id` as the caller may act on it: a dispatcher's
/// own (whether the webhook is there is the delete's to find out), the
/// webhook's own for an admin.
async fn owner(state: &AppState, identity: &Identity, id: &WebhookId) -> Result<FleetId, ApiError> {
    match &identity.scope {
        FleetScope::One(own) => Ok(own.clone()),
        FleetScope::All => state
            .webhooks
            .store()
            .get(id)
            .await
            .map_err(store_error)?
            .map(|webhook| webhook.fleet)
            .ok_or_else(no_such_webhook),
    }
}

/// `DELETE /api/v1/webhooks/{id}`.
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, MANAGERS)?;
    let id = WebhookId::parse(&path).ok_or_else(no_such_webhook)?;
    let fleet = owner(&state, &identity, &id).await?;
    let deleted = state
        .webhooks
        .store()
        .delete(&id, &fleet)
        .await
        .map_err(store_error)?;
    if !deleted {
        return Err(no_such_webhook());
    }
    tracing::info!(webhook = %id, %fleet, by = %identity.sub, "webhook deleted");
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
pub struct DeadLetterQuery {
    limit: Option<usize>,
}

/// `GET /api/v1/webhooks/dead-letters[?limit=]`.
pub async fn dead_letters(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<DeadLetterQuery>,
) -> Result<HttpResponse, ApiError> {
    state.auth.authorize(&req, ADMINS)?;
    let limit = query.limit.unwrap_or(DEFAULT_DEAD_LETTERS);
    if !(1..=MAX_DEAD_LETTERS).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("`limit` must be between 1 and {MAX_DEAD_LETTERS}"),
        ));
    }
    let dead = state
        .webhooks
        .store()
        .dead_letters(limit)
        .await
        .map_err(store_error)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "dead_letters": dead })))
}

/// `POST /api/v1/webhooks/dead-letters/{id}/replay`.
pub async fn replay(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, ADMINS)?;
    let id = path.into_inner();
    // A delivery id is an event id and a webhook id (49 characters): a
    // longer one is no dead letter, and not worth a query.
    if id.len() > MAX_DELIVERY_ID {
        return Err(no_such_dead_letter());
    }
    let replayed = state
        .webhooks
        .store()
        .replay(&id, Timestamp::now())
        .await
        .map_err(store_error)?;
    if !replayed {
        return Err(no_such_dead_letter());
    }
    state.webhooks.nudge();
    tracing::info!(delivery = %id, by = %identity.sub, "dead letter replayed");
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "id": id, "status": "pending" })))
}
