//! For operators and orchestrators: liveness, readiness, Prometheus metrics.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::app_state::AppState;
use crate::metrics as m;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    database: &'static str,
    trail_queue: &'static str,
    queued_positions: usize,
    /// "local" (one node), "ok", or "degraded" (Redis unreachable: this node
    /// serves its own drivers and dashboards, so it stays ready).
    cluster: &'static str,
    /// "off" (no `mqtt.url`), "ok" (subscribed), or "degraded" (connecting,
    /// or the broker is unreachable: the phone apps' messages wait there, so
    /// the hub stays ready).
    mqtt: &'static str,
    shutting_down: bool,
}

/// Ready when the store answers, the trail queue has room and the hub is not stopping.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let db_ok = state.store.ping().await.is_ok();
    let queue_ok = state.writer.healthy();
    let shutting_down = state.shutdown.is_cancelled();
    let body = Readiness {
        ready: db_ok && queue_ok && !shutting_down,
        database: if db_ok { "ok" } else { "unavailable" },
        trail_queue: if queue_ok { "ok" } else { "full_or_failing" },
        queued_positions: state.writer.queued(),
        cluster: state.bus.link_state().as_str(),
        mqtt: state.mqtt.state().as_str(),
        shutting_down,
    };
    if body.ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    m::queued_bytes(state.subscriptions.queued_bytes());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
