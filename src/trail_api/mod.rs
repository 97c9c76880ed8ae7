//! The trails over HTTP: a driver's history for dispatchers and admins
//! (`GET /api/v1/drivers/{id}/trail`), and an upload path for apps that send
//! an offline buffer over HTTP instead of WebSocket (`POST /api/v1/positions`).

mod geometry;
mod history;
mod upload;

use actix_web::web;

pub use geometry::{Summary, simplify, summarize};
pub use upload::{UploadLimiter, run_pruning, upload_limiter};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/drivers/{id}/trail", web::get().to(history::trail))
        .route("/api/v1/positions", web::post().to(upload::positions));
}
