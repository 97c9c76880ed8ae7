//! Geofences over HTTP, for admins and for a fleet's dispatchers:
//!
//! - `POST /api/v1/geofences`: a Feature; 201 with it, its `id`, `fleet` and
//!   times; an admin names the fleet in `properties.fleet`;
//! - `GET /api/v1/geofences[?fleet=]`: a FeatureCollection of the caller's
//!   fleet's fences (an admin's: one fleet's, or every fleet's);
//! - `GET`, `PUT`, `DELETE /api/v1/geofences/{id}`: one fence; PUT replaces
//!   its geometry and properties (the same checks as a create) and keeps its
//!   id, fleet and creation time; DELETE answers 204.
//!
//! A dispatcher acts on its own fleet only: another fleet's fence answers
//! 404 like one that does not exist. The token is checked from the headers
//! before any of the body is read, and the body is bounded by the hub's one
//! body limit (`ws.max_frame_bytes`). Every change goes through
//! [`Geofences`](super::Geofences), which keeps the in-memory index in step.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::feature::{FeatureCollection, FeatureError, FeatureRequest};
use super::fence::{FenceDef, FenceId};
use super::{Created, store};
use crate::app_state::AppState;
use crate::auth::{FleetScope, Identity, Role};
use crate::domain::FleetId;
use crate::http_api::{ApiError, body, scoped_fleet};
use crate::protocol::ErrorCode;
use crate::trails::StoreError;

const MANAGERS: &[Role] = &[Role::Admin, Role::Dispatcher];

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(_) => ApiError::unavailable(e.to_string()),
        StoreError::Corrupt(_) => ApiError::new(ErrorCode::Internal, e.to_string()),
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidGeofence, message)
}

fn no_such_fence() -> ApiError {
    ApiError::new(ErrorCode::UnknownGeofence, "no such geofence in your fleet")
}

/// The id of the path; an id no fence can have is simply unknown.
fn path_id(raw: &str) -> Result<FenceId, ApiError> {
    FenceId::parse(raw).ok_or_else(no_such_fence)
}

/// The bounded body, read as a fence Feature. The checks run on the
/// blocking pool: a polygon's take up to a fraction of a second of CPU
/// (`fence::MAX_VERTICES`), which would hold up every connection of this
/// async worker.
async fn read_feature(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
) -> Result<FeatureRequest, ApiError> {
    let raw = body::read_bounded(req, payload, state.settings.ws.max_frame_bytes).await?;
    let read = web::block(move || FenceDef::from_feature(&raw))
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("checking the geofence: {e}")))?;
    read.map_err(|e| match e {
        FeatureError::Json(message) => ApiError::new(ErrorCode::BadJson, message),
        FeatureError::Invalid(e) => invalid(e.0),
    })
}

/// The fleet a new fence goes to: a dispatcher's own (naming another is
/// forbidden), the one an admin names in `properties.fleet` (required).
fn fleet_for(identity: &Identity, named: Option<&str>) -> Result<FleetId, ApiError> {
    scoped_fleet(
        &identity.scope,
        named,
        "properties.fleet",
        "creates geofences",
    )?
    .ok_or_else(|| invalid("`properties.fleet` is required for an admin"))
}

/// `POST /api/v1/geofences`.
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, MANAGERS)?;
    let request = read_feature(&req, &state, payload).await?;
    if request.id.is_some() {
        return Err(invalid("a new geofence has no `id`: the hub gives it one"));
    }
    let fleet = fleet_for(&identity, request.fleet.as_deref())?;
    let created = state
        .geofences
        .create(fleet, request.def)
        .await
        .map_err(store_error)?;
    match created {
        Created::Fence(fence) => {
            tracing::info!(geofence = %fence.id(), fleet = %fence.fleet(), by = %identity.sub, "geofence created");
            Ok(HttpResponse::Created().json(&fence))
        }
        Created::FleetFull => Err(ApiError::new(
            ErrorCode::TooManyGeofences,
            format!("a fleet has at most {} geofences", store::MAX_PER_FLEET),
        )),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    fleet: Option<String>,
}

/// `GET /api/v1/geofences[?fleet=]`.
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
        "sees geofences",
    )?;
    let fences = state
        .geofences
        .store()
        .list(fleet.as_ref(), store::MAX_LIST)
        .await
        .map_err(store_error)?;
    Ok(HttpResponse::Ok().json(FeatureCollection::new(&fences)))
}

/// The fleet of fence `id` as the caller may act on it: a dispatcher's own
/// (whether the fence is there is the write's to find out), the fence's own
/// for an admin.
async fn owner(state: &AppState, identity: &Identity, id: &FenceId) -> Result<FleetId, ApiError> {
    match &identity.scope {
        FleetScope::One(own) => Ok(own.clone()),
        FleetScope::All => state
            .geofences
            .store()
            .get(id)
            .await
            .map_err(store_error)?
            .map(|fence| fence.fleet().clone())
            .ok_or_else(no_such_fence),
    }
}

/// `GET /api/v1/geofences/{id}`.
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, MANAGERS)?;
    let id = path_id(&path)?;
    let fence = state
        .geofences
        .store()
        .get(&id)
        .await
        .map_err(store_error)?
        .filter(|fence| identity.scope.allows(fence.fleet()))
        .ok_or_else(no_such_fence)?;
    Ok(HttpResponse::Ok().json(&fence))
}

/// `PUT /api/v1/geofences/{id}`.
pub async fn replace(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, MANAGERS)?;
    let id = path_id(&path)?;
    let request = read_feature(&req, &state, payload).await?;
    // A fence read with GET may be sent back as it is: with its own id and fleet.
    if request
        .id
        .as_ref()
        .is_some_and(|given| given.as_str() != Some(id.as_str()))
    {
        return Err(invalid("the Feature's `id` is not the one of the path"));
    }
    let fleet = owner(&state, &identity, &id).await?;
    if request
        .fleet
        .as_deref()
        .is_some_and(|named| named != fleet.as_str())
    {
        return Err(invalid(format!(
            "a geofence keeps its fleet: `properties.fleet` must be {fleet:?} or absent"
        )));
    }
    let fence = state
        .geofences
        .replace(&id, &fleet, request.def)
        .await
        .map_err(store_error)?
        .ok_or_else(no_such_fence)?;
    tracing::info!(geofence = %id, %fleet, by = %identity.sub, "geofence replaced");
    Ok(HttpResponse::Ok().json(&fence))
}

/// `DELETE /api/v1/geofences/{id}`.
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, MANAGERS)?;
    let id = path_id(&path)?;
    let fleet = owner(&state, &identity, &id).await?;
    let deleted = state
        .geofences
        .delete(&id, &fleet)
        .await
        .map_err(store_error)?;
    if !deleted {
        return Err(no_such_fence());
    }
    tracing::info!(geofence = %id, %fleet, by = %identity.sub, "geofence deleted");
    Ok(HttpResponse::NoContent().finish())
}
