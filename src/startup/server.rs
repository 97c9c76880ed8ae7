//! The HTTP server: the routes, the connection workers and the socket options.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::{App, HttpServer, dev::Server, web};

use crate::app_state::AppState;
use crate::http_api;

/// How long a graceful stop waits for connections to close.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub fn serve(listener: TcpListener, state: web::Data<AppState>) -> std::io::Result<Server> {
    let send_buffer = state.settings.ws.send_buffer_bytes;
    // One bound for every body the hub reads: a driver's largest message.
    let body_limit = state.settings.ws.max_frame_bytes;
    let workers = match state.settings.workers {
        0 => default_workers(),
        n => n,
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(|cfg| http_api::extractor_configs(cfg, body_limit))
            .wrap(http_api::json_errors())
            .wrap(access_log())
            .configure(http_api::routes)
    })
    .on_connect(move |conn, data| {
        limit_send_buffer(conn, send_buffer);
        crate::ws::ConnSocket::keep(conn, data);
    })
    // Frames are small and each is due now: Nagle's algorithm would hold one
    // back until the peer acknowledges the previous one (up to its 40 ms
    // delayed ACK).
    .tcp_nodelay(true)
    .workers(workers)
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
    .run();
    Ok(server)
}

/// The OsmAnd listener (`ingest.osmand_listen`): `/ingest/osmand` alone, one
/// worker (one request a fix, mostly waiting for the commit), the same
/// state, error bodies and access log as the hub's port.
pub fn serve_osmand(listener: TcpListener, state: web::Data<AppState>) -> std::io::Result<Server> {
    let body_limit = state.settings.ws.max_frame_bytes;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(|cfg| http_api::extractor_configs(cfg, body_limit))
            .wrap(http_api::json_errors())
            .wrap(access_log())
            .configure(http_api::osmand_routes)
            .default_service(web::to(http_api::no_such_endpoint))
    })
    .workers(1)
    .listen(listener)?
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
    .run();
    Ok(server)
}

/// Half the cores, at least one. A position crosses from its driver's worker
/// to every watching dashboard's worker; on one worker those hand-offs are
/// local task wake-ups instead of cross-thread ones (a syscall and a sleeping
/// thread to wake each time). Measured on two cores: about a third less CPU
/// per delivery with one worker than with two at 300 drivers, the same at 10,000.
/// The other half is left to the database and to the kernel's network work,
/// which on a busy hub costs as much as the hub itself.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (usize::from(n) / 2).max(1))
}

/// Caps the kernel's send buffer so a peer that stops reading pins a bounded
/// amount of kernel memory and is detected as stuck in seconds, not megabytes.
fn limit_send_buffer(conn: &dyn std::any::Any, bytes: usize) {
    if bytes == 0 {
        return;
    }
    let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    if let Err(e) = socket2::SockRef::from(tcp).set_send_buffer_size(bytes) {
        tracing::debug!(error = %e, "could not set SO_SNDBUF");
    }
}

fn access_log() -> actix_web::middleware::Logger {
    // Access logs carry no query string: tokens may travel there.
    actix_web::middleware::Logger::new("%s %m %U %Dms")
        .exclude("/healthz")
        .exclude("/metrics")
}
