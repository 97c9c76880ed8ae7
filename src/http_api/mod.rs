//! The hub's HTTP surface: every route is listed here, with the handler of
//! each in the module of its concept. Errors answer with [`ApiError`]'s JSON body.

mod error;
mod health;
mod live;
mod static_files;

use actix_web::web;

pub use error::ApiError;

use crate::dashboards;
use crate::ingest::{driver_session, http_upload};
use crate::trails::history;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws/driver", web::get().to(driver_session::connect))
        .route("/ws/dashboard", web::get().to(dashboards::session::connect))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/api/v1/drivers", web::get().to(live::drivers))
        .route("/api/v1/drivers/{id}/trail", web::get().to(history::trail))
        .route("/api/v1/positions", web::post().to(http_upload::positions))
        .route("/api/v1/me", web::get().to(live::me))
        .route("/api/v1/ui-config", web::get().to(live::ui_config))
        .route("/api/v1/subscriptions", web::get().to(live::subscriptions))
        .configure(static_files::routes);
}
