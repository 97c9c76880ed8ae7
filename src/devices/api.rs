//! The device registry over HTTP, for admins and for a fleet's dispatchers:
//!
//! - `POST /api/v1/devices`: registers a device; 201 with its secret `key`,
//!   the only time it is shown; 409 `device_exists` when the id is taken in
//!   any fleet;
//! - `GET /api/v1/devices[?fleet=]`: the caller's fleet's devices (an
//!   admin's: one fleet's, or every fleet's), never with keys;
//! - `DELETE /api/v1/devices/{device_id}`: 204; its app is refused from then
//!   on (within the registry cache's 5 s on other nodes);
//! - `POST /api/v1/devices/{device_id}/key`: a new key, 200; the old one stops working.
//!
//! A dispatcher acts on its own fleet only: another fleet's device answers
//! 404 like one that does not exist. The token is checked from the headers
//! before any of the body is read, and the body is bounded ([`MAX_BODY`]).

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{Device, DeviceId, Protocol, keys};
use crate::app_state::AppState;
use crate::auth::{FleetScope, Identity, Role};
use crate::domain::{DriverId, FleetId, Timestamp};
use crate::http_api::{ApiError, body, scoped_fleet};
use crate::ingest::units::SpeedUnit;
use crate::protocol::ErrorCode;
use crate::trails::StoreError;

/// Largest registration body: a few short fields.
pub const MAX_BODY: usize = 4096;

const MANAGERS: &[Role] = &[Role::Admin, Role::Dispatcher];

/// The body of `POST /api/v1/devices`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDevice {
    device_id: String,
    driver: String,
    /// Admins only: a dispatcher's devices are its token's fleet's.
    fleet: Option<String>,
    protocol: String,
    /// OsmAnd only (OwnTracks sends km/h); knots when absent.
    speed_unit: Option<String>,
}

/// A device and its new key: the answer of a registration or a rotation.
#[derive(Serialize)]
struct WithKey<'a> {
    #[serde(flatten)]
    device: &'a Device,
    key: &'a str,
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(_) => ApiError::unavailable(e.to_string()),
        StoreError::Corrupt(_) => ApiError::new(ErrorCode::Internal, e.to_string()),
    }
}

fn invalid(field: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InvalidId, format!("`{field}`: {e}"))
}

/// The fleet a new device goes to: a dispatcher's own (naming another is
/// forbidden), the one an admin names (required).
fn fleet_for(identity: &Identity, named: Option<&str>) -> Result<FleetId, ApiError> {
    scoped_fleet(&identity.scope, named, "fleet", "registers devices")?
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidId, "`fleet` is required for an admin"))
}

/// `POST /api/v1/devices`.
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, MANAGERS)?;
    let raw = body::read_bounded(&req, payload, MAX_BODY).await?;
    let new: NewDevice = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::new(
            ErrorCode::BadJson,
            format!("expected {{\"device_id\",\"driver\",\"protocol\",...}}: {e}"),
        )
    })?;
    let fleet = fleet_for(&identity, new.fleet.as_deref())?;
    let protocol = Protocol::parse(&new.protocol).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadRequest,
            "`protocol` must be \"osmand\" or \"owntracks\"",
        )
    })?;
    let speed_unit = match (protocol, new.speed_unit.as_deref()) {
        (Protocol::Osmand, None) => SpeedUnit::Knots,
        (Protocol::Osmand, Some(raw)) => SpeedUnit::parse(raw).ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadRequest,
                "`speed_unit` must be \"knots\", \"kmh\", \"mps\" or \"mph\"",
            )
        })?,
        // OwnTracks' `vel` is km/h by definition.
        (Protocol::Owntracks, None) => SpeedUnit::Kmh,
        (Protocol::Owntracks, Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "`speed_unit` is for osmand devices (OwnTracks sends km/h)",
            ));
        }
    };
    let device = Device {
        device_id: DeviceId::parse(&new.device_id).map_err(|e| invalid("device_id", e))?,
        fleet,
        driver: DriverId::parse(&new.driver).map_err(|e| invalid("driver", e))?,
        protocol,
        speed_unit,
        created_at: Timestamp::now(),
    };
    let key = keys::generate();
    let registry = &state.devices;
    let created = registry
        .store()
        .insert(&device, &keys::hash(&key))
        .await
        .map_err(store_error)?;
    if !created {
        return Err(ApiError::new(
            ErrorCode::DeviceExists,
            "a device with this id is already registered",
        ));
    }
    // Never the key: only who registered what.
    tracing::info!(device = %device.device_id, fleet = %device.fleet, driver = %device.driver, protocol = device.protocol.as_str(), by = %identity.sub, "device registered");
    Ok(HttpResponse::Created().json(with_key(&device, &key)))
}

fn with_key<'a>(device: &'a Device, key: &'a SecretString) -> WithKey<'a> {
    WithKey {
        device,
        key: key.expose_secret(),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    fleet: Option<String>,
}

/// `GET /api/v1/devices[?fleet=]`.
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
        "sees devices",
    )?;
    let devices = state
        .devices
        .store()
        .list(fleet.as_ref())
        .await
        .map_err(store_error)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "devices": devices })))
}

/// The fleet of device `id` as the caller may act on it: a dispatcher's own
/// (whether the device is there is the write's to find out), the device's
/// own for an admin. `None`: no such device for this caller.
async fn owner(
    state: &AppState,
    identity: &Identity,
    id: &DeviceId,
) -> Result<Option<FleetId>, ApiError> {
    match &identity.scope {
        FleetScope::One(own) => Ok(Some(own.clone())),
        FleetScope::All => Ok(state
            .devices
            .store()
            .get(id)
            .await
            .map_err(store_error)?
            .map(|stored| stored.device.fleet)),
    }
}

fn no_such_device() -> ApiError {
    ApiError::new(ErrorCode::UnknownDevice, "no such device in your fleet")
}

/// The device id of the path; an id no device can have is simply unknown.
fn path_id(raw: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(raw).map_err(|_| no_such_device())
}

/// `DELETE /api/v1/devices/{device_id}`.
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, MANAGERS)?;
    let id = path_id(&path)?;
    let fleet = owner(&state, &identity, &id)
        .await?
        .ok_or_else(no_such_device)?;
    let deleted = state
        .devices
        .store()
        .delete(&id, &fleet)
        .await
        .map_err(store_error)?;
    if !deleted {
        return Err(no_such_device());
    }
    state.devices.forget(&id);
    tracing::info!(device = %id, %fleet, by = %identity.sub, "device deleted");
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /api/v1/devices/{device_id}/key`.
pub async fn rotate_key(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, MANAGERS)?;
    let id = path_id(&path)?;
    let fleet = owner(&state, &identity, &id)
        .await?
        .ok_or_else(no_such_device)?;
    let key = keys::generate();
    let store = state.devices.store();
    let changed = store
        .set_key(&id, &fleet, &keys::hash(&key))
        .await
        .map_err(store_error)?;
    if !changed {
        return Err(no_such_device());
    }
    state.devices.forget(&id);
    let stored = store
        .get(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(no_such_device)?;
    tracing::info!(device = %id, %fleet, by = %identity.sub, "device key rotated");
    Ok(HttpResponse::Ok().json(with_key(&stored.device, &key)))
}
