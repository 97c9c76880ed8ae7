//! Start-up and shutdown: the one place where the listener, the shared state,
//! the routes and the long-running tasks are wired together.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, dev::Server, web};
use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, Role};
use crate::config::Settings;
use crate::hub::{self, Hub};
use crate::trail_store::{self, TrailStore};
use crate::trail_writer::TrailWriter;
use crate::{api, dashboard_session, driver_session, metrics, static_files, trail_api};

/// How long a graceful stop waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long it waits for the trail flush: longer than the writer's own retry
/// limit, so the writer reports what it could not store itself.
const FLUSH_GRACE: Duration = Duration::from_secs(12);

/// What every handler and session shares.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub auth: Arc<Authenticator>,
    pub hub: Arc<Hub>,
    pub writer: TrailWriter,
    pub store: Arc<dyn TrailStore>,
    pub metrics: PrometheusHandle,
    /// Cancelled when the hub stops: sessions close with 1001.
    pub shutdown: CancellationToken,
    pub dev_mode: bool,
    /// The secret tokens are checked with (generated in dev mode); for the demo fleet.
    pub jwt_secret: SecretString,
    /// Per-driver rate limit of `POST /api/v1/positions`.
    pub upload_limiter: Arc<trail_api::UploadLimiter>,
}

pub struct Application {
    local_addr: SocketAddr,
    server: Server,
    state: web::Data<AppState>,
    writer_task: JoinHandle<()>,
    writer_stop: CancellationToken,
}

impl Application {
    /// Binds the listener, connects the store and starts the writer. Nothing
    /// is served until [`Application::run_until_stopped`].
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let dev_mode = settings.dev_mode();
        let secret = match dev_mode {
            true => random_secret(),
            false => settings.jwt_secret.expose_secret().to_owned(),
        };
        let listen = effective_listen(&settings);
        let listener = TcpListener::bind(listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (`listen`): {e}"))?;
        let local_addr = listener.local_addr()?;
        let port = local_addr.port();
        let store = trail_store::connect(&settings)
            .await
            .context("opening the trail store (`database.url` / `database.sqlite_path`)")?;
        let shutdown = CancellationToken::new();
        // The writer has its own token: it must outlive the sessions, to flush
        // what they queued after they are gone.
        let writer_stop = CancellationToken::new();
        let (writer, writer_task) =
            TrailWriter::spawn(Arc::clone(&store), &settings.trails, writer_stop.clone());
        tokio::spawn(trail_store::run_retention(
            Arc::clone(&store),
            settings.trails.retention_days,
            shutdown.clone(),
        ));
        let node_id = node_id(&settings);
        let upload_limiter = Arc::new(trail_api::upload_limiter(&settings.driver));
        let state = web::Data::new(AppState {
            settings: Arc::new(settings),
            auth: Arc::new(Authenticator::new(secret.as_bytes())),
            hub: Arc::new(Hub::new(node_id)),
            writer,
            store,
            metrics: metrics::install(),
            shutdown,
            dev_mode,
            jwt_secret: SecretString::from(secret),
            upload_limiter,
        });
        tokio::spawn(hub::run_housekeeping(
            state.hub.clone(),
            Duration::from_secs(state.settings.driver.max_age_secs),
            state.shutdown.clone(),
        ));
        tokio::spawn(trail_api::run_pruning(
            state.upload_limiter.clone(),
            state.shutdown.clone(),
        ));
        tokio::spawn(metrics::run_upkeep(
            state.metrics.clone(),
            state.shutdown.clone(),
        ));
        let server = serve(listener, state.clone())?;
        tracing::info!(%listen, port, node = state.hub.node_id(), backend = state.store.backend(), "fleethub listening");
        if dev_mode {
            announce_dev_mode(&state, port);
        }
        Ok(Self {
            local_addr,
            server,
            state,
            writer_task,
            writer_stop,
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// An address this hub can reach itself at: the bound one, or loopback
    /// when it listens on every interface.
    pub fn self_addr(&self) -> SocketAddr {
        let mut addr = self.local_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        addr
    }

    /// The shared state, for tests and for the demo simulator.
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until SIGINT/SIGTERM or until the shutdown token is cancelled,
    /// then drains: sessions close with 1001, the trail queue is flushed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let shutdown = self.state.shutdown.clone();
        let server = tokio::spawn(self.server);
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("signal received, shutting down"),
            _ = shutdown.cancelled() => tracing::info!("shutdown requested"),
        }
        shutdown.cancel();
        self.state.hub.stop_drivers();
        // Sessions close with 1001 (drivers told by the hub, dashboards by the
        // token); then the server stops accepting and waits for in-flight requests.
        handle.stop(true).await;
        let _ = server.await;
        self.writer_stop.cancel();
        match tokio::time::timeout(FLUSH_GRACE, self.writer_task).await {
            Ok(_) => tracing::info!("trail queue flushed"),
            Err(_) => tracing::error!("trail queue not flushed in time"),
        }
        Ok(())
    }
}

fn serve(listener: TcpListener, state: web::Data<AppState>) -> std::io::Result<Server> {
    let send_buffer = state.settings.ws.send_buffer_bytes;
    let workers = match state.settings.workers {
        0 => default_workers(),
        n => n,
    };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(tracing_actix_middleware())
            .route("/ws/driver", web::get().to(driver_session::connect))
            .route("/ws/dashboard", web::get().to(dashboard_session::connect))
            .configure(api::routes)
            .configure(trail_api::routes)
            .configure(static_files::routes)
    })
    .on_connect(move |conn, _| limit_send_buffer(conn, send_buffer))
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

fn tracing_actix_middleware() -> actix_web::middleware::Logger {
    // Access logs carry no query string: tokens may travel there.
    actix_web::middleware::Logger::new("%s %m %U %Dms")
        .exclude("/healthz")
        .exclude("/metrics")
}

/// Dev mode never leaves this machine, whatever `listen` says.
fn effective_listen(settings: &Settings) -> SocketAddr {
    let mut listen = settings.listen;
    if settings.dev_mode() && !listen.ip().is_loopback() {
        tracing::warn!(%listen, "dev mode: ignoring the configured address, binding 127.0.0.1");
        listen.set_ip([127, 0, 0, 1].into());
    }
    listen
}

fn node_id(settings: &Settings) -> String {
    if settings.node_id.is_empty() {
        format!("fleethub-{:08x}", rand::random::<u32>())
    } else {
        settings.node_id.clone()
    }
}

fn random_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 48)
}

fn announce_dev_mode(state: &AppState, port: u16) {
    let token = state.auth.issue(
        "dev-admin",
        Role::Admin,
        None,
        Duration::from_secs(24 * 3600),
    );
    tracing::warn!(
        "DEV MODE: no jwt_secret configured. A random secret was generated, tokens die with this process, and the hub listens on 127.0.0.1 only. Set FLEETHUB_JWT_SECRET for anything real."
    );
    if let Ok(token) = token {
        // Printed, not logged: the token is a credential and logs are shipped elsewhere.
        eprintln!(
            "\n  fleethub DEV MODE dashboard (admin token, valid 24 h):\n  http://127.0.0.1:{port}/?access_token={token}\n"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
