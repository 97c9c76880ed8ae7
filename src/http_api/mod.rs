//! The hub's HTTP surface: every route is listed here, with the handler of
//! each in the module of its concept. Errors answer with [`ApiError`]'s JSON
//! body, a wrong method with 405 and `Allow` (each path is one resource), an
//! unknown path under `/api/` with 404. WebSocket upgrades pass the
//! [`admission`] checks ([`origin`], connection caps) first.

pub mod admission;
pub mod body;
mod error;
mod fleet_param;
mod health;
mod live;
pub mod origin;
mod static_files;

use actix_web::{FromRequest, Handler, HttpResponse, Resource, Responder, web};

pub use error::{ApiError, extractor_configs, json_errors};
pub use fleet_param::scoped_fleet;

use crate::alerts;
use crate::dashboards;
use crate::devices;
use crate::geofences;
use crate::ingest::{driver_session, http_upload, osmand, owntracks};
use crate::trails::history;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(get("/ws/driver", driver_session::connect))
        .service(get("/ws/dashboard", dashboards::session::connect))
        .service(get("/healthz", health::healthz))
        .service(get("/readyz", health::readyz))
        .service(get("/metrics", health::metrics))
        .service(get("/api/v1/drivers", live::drivers))
        .service(get("/api/v1/drivers/{id}/trail", history::trail))
        .service(web::resource("/api/v1/positions").route(web::post().to(http_upload::positions)))
        .service(get("/api/v1/me", live::me))
        .service(get("/api/v1/ui-config", live::ui_config))
        .service(get("/api/v1/subscriptions", live::subscriptions))
        .service(
            web::resource("/api/v1/devices")
                .route(web::get().to(devices::api::list))
                .route(web::post().to(devices::api::create)),
        )
        .service(
            web::resource("/api/v1/devices/{device_id}")
                .route(web::delete().to(devices::api::delete)),
        )
        .service(
            web::resource("/api/v1/devices/{device_id}/key")
                .route(web::post().to(devices::api::rotate_key)),
        )
        .service(
            web::resource("/api/v1/geofences")
                .route(web::get().to(geofences::api::list))
                .route(web::post().to(geofences::api::create)),
        )
        .service(
            web::resource("/api/v1/geofences/{id}")
                .route(web::get().to(geofences::api::get))
                .route(web::put().to(geofences::api::replace))
                .route(web::delete().to(geofences::api::delete)),
        )
        .service(
            web::resource("/api/v1/alert-rules")
                .route(web::get().to(alerts::api::get_rules))
                .route(web::put().to(alerts::api::put_rules)),
        )
        .service(web::resource("/api/v1/events").route(web::get().to(alerts::api::list_events)))
        .configure(osmand_routes)
        .service(web::resource("/ingest/owntracks").route(web::post().to(owntracks::ingest)))
        // Before the dashboard's files, whose fallback takes every other path.
        .service(web::resource("/api/{tail:.*}").to(no_such_endpoint))
        .configure(static_files::routes)
        .default_service(web::to(no_such_endpoint));
}

/// The OsmAnd protocol's one path: on the hub's port, and alone on the
/// `ingest.osmand_listen` listener (with the JSON errors for anything else).
pub fn osmand_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/ingest/osmand")
            .route(web::get().to(osmand::ingest))
            .route(web::post().to(osmand::ingest)),
    );
}

/// Every other path of the OsmAnd listener.
pub async fn no_such_endpoint() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no such endpoint"))
}

/// A path served by `GET` alone. One resource per path, so that another
/// method on it is answered 405 with `Allow` rather than passed on to the
/// next path that matches.
fn get<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::resource(path).route(web::get().to(handler))
}
