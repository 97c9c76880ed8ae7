//! Plain HTTP endpoints: health, readiness, metrics, and the live-state API.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::api_error::ApiError;
use crate::auth::{FleetScope, Role};
use crate::domain::BBox;
use crate::metrics as m;
use crate::startup::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/api/v1/drivers", web::get().to(drivers))
        .route("/api/v1/me", web::get().to(me))
        .route("/api/v1/ui-config", web::get().to(ui_config))
        .route("/api/v1/subscriptions", web::get().to(subscriptions));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    database: &'static str,
    trail_queue: &'static str,
    queued_positions: usize,
    shutting_down: bool,
}

/// Ready when the store answers, the trail queue has room and the hub is not stopping.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let db_ok = state.store.ping().await.is_ok();
    let queue_ok = state.writer.healthy();
    let shutting_down = state.shutdown.is_cancelled();
    let body = Readiness {
        ready: db_ok && queue_ok && !shutting_down,
        database: if db_ok { "ok" } else { "unavailable" },
        trail_queue: if queue_ok { "ok" } else { "full_or_failing" },
        queued_positions: state.writer.queued(),
        shutting_down,
    };
    if body.ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    m::queued_bytes(state.hub.queued_bytes());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

#[derive(Deserialize)]
struct DriversQuery {
    bbox: Option<String>,
}

fn parse_bbox(raw: &str) -> Result<BBox, ApiError> {
    let parts: Vec<f64> = raw
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_bbox",
                "bbox must be four numbers: west,south,east,north",
            )
        })?;
    match parts.as_slice() {
        &[w, s, e, n] => {
            BBox::new(w, s, e, n).map_err(|e| ApiError::bad_request("invalid_bbox", e.to_string()))
        }
        _ => Err(ApiError::bad_request(
            "invalid_bbox",
            "bbox must be four numbers: west,south,east,north",
        )),
    }
}

/// `GET /api/v1/drivers[?bbox=w,s,e,n]`: last known positions, fleet-scoped, newest first.
async fn drivers(
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
    let mut rows = state.hub.drivers_in(&identity.scope, &bbox);
    rows.sort_by_key(|r| std::cmp::Reverse(r.position.ts()));
    let views: Vec<Box<RawValue>> = rows.iter().map(|r| r.view(true)).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "drivers": views })))
}

/// `GET /api/v1/me`: who the token says the caller is.
async fn me(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let identity = state
        .auth
        .authorize(&req, &[Role::Driver, Role::Dispatcher, Role::Admin])?;
    let fleet = match &identity.scope {
        FleetScope::One(f) => Some(f.as_str().to_owned()),
        FleetScope::All => None,
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "sub": identity.sub,
        "role": identity.role,
        "fleet": fleet,
        "expires_at": identity.expires_at,
    })))
}

/// `GET /api/v1/ui-config`: what the dashboard needs before sign-in.
async fn ui_config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "tile_url": state.settings.map.tile_url,
        "tile_attribution": state.settings.map.tile_attribution,
        "dev_mode": state.dev_mode,
        "node": state.hub.node_id(),
    }))
}

/// `GET /api/v1/subscriptions` (admin): every dashboard's regions, for operators and tests.
async fn subscriptions(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.auth.authorize(&req, &[Role::Admin])?;
    let dashboards: Vec<_> = state
        .hub
        .dashboards()
        .iter()
        .map(|d| {
            let fleet = match &d.scope {
                FleetScope::One(f) => Some(f.as_str().to_owned()),
                FleetScope::All => None,
            };
            serde_json::json!({
                "conn": d.conn,
                "role": d.role,
                "fleet": fleet,
                "queued_bytes": d.outbox.queued_bytes(),
                "subscriptions": d.subscriptions(),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "dashboards": dashboards })))
}
