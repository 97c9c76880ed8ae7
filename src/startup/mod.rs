//! Start-up and shutdown: the one place where the listener, the shared state,
//! the routes and the background tasks are wired together. Read
//! [`Application::build`] top to bottom for the hub's parts, and
//! [`Application::run_until_stopped`] for the order they stop in.

mod server;
mod tasks;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{dev::Server, web};
use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::alerts::{self, Alerts};
pub use crate::app_state::AppState;
use crate::auth::{Authenticator, Role};
use crate::cluster;
use crate::config::Settings;
use crate::devices::DeviceRegistry;
use crate::geofences::{self, Geofences};
use crate::http_api::admission::Admission;
use crate::ingest::Pipeline;
use crate::ingest::mqtt::{self, MqttLink};
use crate::ingest::rate_limit::{self, driver_limiter};
use crate::live::{self, DriverRegistry, LiveDrivers, Subscriptions};
use crate::metrics;
use crate::protocol::Close;
use crate::trails::TrailWriter;
use crate::trails::{retention, store, writer};
use tasks::Tasks;

/// How long the stop waits for the trail flush: the writer's own longest
/// flush and a margin, so the writer reports what it could not store itself.
const FLUSH_GRACE: Duration = Duration::from_secs(writer::LONGEST_FLUSH.as_secs() + 2);

pub struct Application {
    local_addr: SocketAddr,
    server: Server,
    /// The OsmAnd listener (`ingest.osmand_listen`), when set.
    osmand: Option<(SocketAddr, Server)>,
    state: web::Data<AppState>,
    tasks: Tasks,
    writer_task: JoinHandle<()>,
    writer_stop: CancellationToken,
    cluster_stop: CancellationToken,
    /// The MQTT consumer's stop and its task, when `mqtt.url` is set.
    mqtt: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Application {
    /// Binds the listener, opens the store, builds the hub's parts and
    /// starts the background tasks. Nothing is served until
    /// [`Application::run_until_stopped`].
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
        let osmand_listener = osmand_listener(&settings)?;
        let store = store::connect(&settings)
            .await
            .context("opening the trail store (`database.url` / `database.sqlite_path`)")?;
        let shutdown = CancellationToken::new();
        let tasks = Tasks::new(shutdown.clone());
        // The writer has its own token: it must outlive the sessions, to flush
        // what they queued after they are gone.
        let subscriptions = Arc::new(Subscriptions::new(settings.dashboard.max_control_frames));
        let node_id = node_id(&settings);
        let cluster::Built { bus, redis } =
            cluster::build(&settings, &node_id, Arc::clone(&subscriptions))?;
        // Loaded before anything is served: a hub never runs with a partial
        // set of fences or rules.
        let geofences = Arc::new(Geofences::new(Arc::clone(&store), Arc::clone(&bus)));
        let fences = geofences
            .load()
            .await
            .context("loading the geofences from the trail store")?;
        let alerts = Arc::new(Alerts::new(
            Arc::clone(&store),
            Arc::clone(&geofences),
            Arc::clone(&bus),
        ));
        let ruled = alerts
            .load()
            .await
            .context("loading the alert rules from the trail store")?;
        tracing::info!(
            fences,
            fleets_with_rules = ruled,
            "geofences and alert rules loaded"
        );
        let writer_stop = CancellationToken::new();
        let (writer, writer_run) = TrailWriter::evaluating(
            Arc::clone(&store),
            Some(Arc::clone(&alerts)),
            &settings.trails,
            writer_stop.clone(),
        );
        let drivers = Arc::new(LiveDrivers::new(Arc::clone(&bus)));
        let registry = Arc::new(DriverRegistry::default());
        let limiter = Arc::new(driver_limiter(&settings.driver));
        let pipeline = Pipeline::new(
            &settings,
            Arc::clone(&drivers),
            writer.clone(),
            Arc::clone(&limiter),
        );
        let admission = Arc::new(Admission::new(&settings.ws).context("`ws.allowed_origins`")?);
        let mqtt_link = MqttLink::new(settings.mqtt.enabled());
        let state = web::Data::new(AppState {
            node_id,
            settings: Arc::new(settings),
            auth: Arc::new(Authenticator::new(secret.as_bytes())),
            pipeline,
            bus,
            drivers,
            registry,
            subscriptions,
            admission,
            writer,
            devices: Arc::new(DeviceRegistry::new(Arc::clone(&store))),
            geofences,
            alerts,
            mqtt: mqtt_link,
            store,
            metrics: metrics::install(),
            shutdown,
            dev_mode,
            jwt_secret: SecretString::from(secret),
        });

        // Every background task, each reported if it stops before shutdown.
        let s = &state;
        let writer_task = tasks.spawn("trail writer", writer_run);
        tasks.spawn(
            "trail retention",
            retention::run_retention(
                Arc::clone(&s.store),
                s.settings.trails.retention_days,
                s.shutdown.clone(),
            ),
        );
        tasks.spawn(
            "offline sweep",
            alerts::offline::run(Arc::clone(&s.alerts), s.shutdown.clone()),
        );
        tasks.spawn(
            "live housekeeping",
            live::run_housekeeping(
                Arc::clone(&s.drivers),
                Arc::clone(&s.registry),
                Duration::from_secs(s.settings.driver.max_age_secs),
                s.shutdown.clone(),
            ),
        );
        tasks.spawn(
            "rate limit pruning",
            rate_limit::run_pruning(limiter, s.shutdown.clone()),
        );
        tasks.spawn(
            "metrics upkeep",
            metrics::run_upkeep(s.metrics.clone(), s.shutdown.clone()),
        );
        // The cluster's tasks stop after the sessions, like the writer: the
        // drivers' last states (offline) still go out to the other nodes.
        let cluster_stop = CancellationToken::new();
        if let Some(redis_bus) = redis {
            let drivers = Arc::clone(&s.drivers);
            for (name, task) in
                redis_bus.tasks(drivers, Arc::clone(&s.registry), cluster_stop.clone())
            {
                tasks.spawn(name, task);
            }
            if let Some(changes) = redis_bus.changes() {
                tasks.spawn(
                    "geofence sync",
                    geofences::sync::run(
                        Arc::clone(&s.geofences),
                        Arc::clone(&s.alerts),
                        changes,
                        cluster_stop.clone(),
                    ),
                );
            }
        }

        // Stopped after the sessions and before the writer: the messages it
        // is storing still commit, and are acked, before it disconnects.
        let mqtt = mqtt::Consumer::new(&state)?.map(|consumer| {
            let stop = CancellationToken::new();
            (
                stop.clone(),
                tasks.spawn("mqtt consumer", consumer.run(stop)),
            )
        });

        let server = server::serve(listener, state.clone())?;
        let osmand = match osmand_listener {
            Some(listener) => {
                let addr = listener.local_addr()?;
                tracing::info!(listen = %addr, "OsmAnd listener");
                Some((addr, server::serve_osmand(listener, state.clone())?))
            }
            None => None,
        };
        let port = local_addr.port();
        tracing::info!(%listen, port, node = %state.node_id, backend = state.store.backend(), cluster = state.bus.backend(), "fleethub listening");
        if dev_mode {
            announce_dev_mode(&state, port);
        }
        Ok(Self {
            local_addr,
            server,
            osmand,
            state,
            tasks,
            writer_task,
            writer_stop,
            cluster_stop,
            mqtt,
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The OsmAnd listener's port, when `ingest.osmand_listen` is set.
    pub fn osmand_port(&self) -> Option<u16> {
        self.osmand.as_ref().map(|(addr, _)| addr.port())
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

    /// Serves until SIGINT/SIGTERM, until the shutdown token is cancelled, or
    /// until a background task stops; then drains: sessions close with 1001,
    /// the server stops, the trail queue is flushed. Fails when a background
    /// task stopped the hub.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let shutdown = self.state.shutdown.clone();
        let server = self.server;
        let server = self.tasks.spawn("http server", async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "the HTTP server failed");
            }
        });
        // Started and stopped with the hub's own server.
        let osmand = self.osmand.map(|(_, osmand)| {
            let handle = osmand.handle();
            let task = self.tasks.spawn("OsmAnd listener", async move {
                if let Err(e) = osmand.await {
                    tracing::error!(error = %e, "the OsmAnd listener failed");
                }
            });
            (handle, task)
        });
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("signal received, shutting down"),
            _ = shutdown.cancelled() => tracing::info!("shutdown requested"),
        }
        shutdown.cancel();
        // Drivers and dashboards are told the same way, by the registries
        // that hold them; then the server stops accepting and waits for
        // in-flight requests.
        self.state.registry.stop_all(Close::SHUTTING_DOWN);
        self.state.subscriptions.close_all(Close::SHUTTING_DOWN);
        handle.stop(true).await;
        let _ = server.await;
        if let Some((handle, task)) = osmand {
            handle.stop(true).await;
            let _ = task.await;
        }
        if let Some((stop, task)) = self.mqtt {
            stop.cancel();
            let _ = task.await;
        }
        self.cluster_stop.cancel();
        self.writer_stop.cancel();
        match tokio::time::timeout(FLUSH_GRACE, self.writer_task).await {
            Ok(_) => tracing::info!("trail queue flushed"),
            Err(_) => tracing::error!("trail queue not flushed in time"),
        }
        match self.tasks.failed() {
            Some(task) => anyhow::bail!("stopped because the {task} task ended"),
            None => Ok(()),
        }
    }
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

/// The OsmAnd listener's socket, bound with the hub's own (so a taken port
/// stops start-up); dev mode keeps it on loopback too.
fn osmand_listener(settings: &Settings) -> anyhow::Result<Option<TcpListener>> {
    let Some(mut addr) = settings.ingest.osmand_listen()? else {
        return Ok(None);
    };
    if settings.dev_mode() && !addr.ip().is_loopback() {
        tracing::warn!(listen = %addr, "dev mode: binding the OsmAnd listener to 127.0.0.1");
        addr.set_ip([127, 0, 0, 1].into());
    }
    let listener = TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (`ingest.osmand_listen`): {e}"))?;
    Ok(Some(listener))
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
