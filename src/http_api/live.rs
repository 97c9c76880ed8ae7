//! The live state over HTTP: drivers' last positions, who the caller is,
//! what the dashboard needs before sign-in, and (for admins) every
//! dashboard's subscriptions.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ApiError;
use crate::app_state::AppState;
use crate::auth::Role;
use crate::domain::BBox;
use crate::live::snapshot;
use crate::protocol::ErrorCode;

#[derive(Deserialize)]
pub struct DriversQuery {
    bbox: Option<String>,
}

fn parse_bbox(raw: &str) -> Result<BBox, ApiError> {
    let invalid = |message: String| ApiError::new(ErrorCode::InvalidBbox, message);
    let shape = || invalid("bbox must be four numbers: west,south,east,north".into());
    let parts: Vec<f64> = raw
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| shape())?;
    match parts.as_slice() {
        &[w, s, e, n] => BBox::new(w, s, e, n).map_err(|e| invalid(e.to_string())),
        _ => Err(shape()),
    }
}

/// `GET /api/v1/drivers[?bbox=w,s,e,n]`: last known positions, fleet-scoped, newest first.
pub async fn drivers(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<DriversQuery>,
) -> Result<HttpResponse, ApiError> {
    let identity = state
        .auth
        .authorize(&req, &[Role::Dispatcher, Role::Admin])?;
    let bbox = match query.bbox.as_deref() {
        Some(raw) => parse_bbox(raw)?,
        None => BBox::world(),
    };
    let rows = snapshot::rows(&state.drivers, state.bus.as_ref(), &identity.scope, &bbox).await;
    let views: Vec<Box<RawValue>> = rows.iter().map(|r| r.view(true)).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "drivers": views })))
}

/// `GET /api/v1/me`: who the token says the caller is.
pub async fn me(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let identity = state
        .auth
        .authorize(&req, &[Role::Driver, Role::Dispatcher, Role::Admin])?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "sub": identity.sub,
        "role": identity.role,
        "fleet": identity.scope.fleet().map(|f| f.as_str()),
        "expires_at": identity.expires_at,
    })))
}

/// `GET /api/v1/ui-config`: what the dashboard needs before sign-in.
pub async fn ui_config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "tile_url": state.settings.map.tile_url,
        "tile_attribution": state.settings.map.tile_attribution,
        "dev_mode": state.dev_mode,
        "node": state.node_id,
    }))
}

/// `GET /api/v1/subscriptions` (admin): every dashboard's regions, for operators and tests.
pub async fn subscriptions(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.auth.authorize(&req, &[Role::Admin])?;
    let dashboards: Vec<_> = state
        .subscriptions
        .dashboards()
        .iter()
        .map(|d| {
            serde_json::json!({
                "conn": d.conn,
                "role": d.role,
                "fleet": d.scope.fleet().map(|f| f.as_str()),
                "queued_bytes": d.outbox.queued_bytes(),
                "subscriptions": d.subscriptions(),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "dashboards": dashboards })))
}
