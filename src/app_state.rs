//! What every handler and session shares, built once by
//! [`startup`](crate::startup). Handlers import it from here, so no module
//! depends on start-up.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::alerts::Alerts;
use crate::auth::Authenticator;
use crate::cluster::ClusterBus;
use crate::config::Settings;
use crate::devices::DeviceRegistry;
use crate::geofences::Geofences;
use crate::http_api::admission::Admission;
use crate::ingest::Pipeline;
use crate::ingest::mqtt::MqttLink;
use crate::live::{DriverRegistry, LiveDrivers, Subscriptions};
use crate::trails::{TrailStore, TrailWriter};

pub struct AppState {
    pub settings: Arc<Settings>,
    /// This node's name (`node_id`, or generated).
    pub node_id: String,
    pub auth: Arc<Authenticator>,
    /// Where every position enters.
    pub pipeline: Pipeline,
    /// How live updates reach other nodes, and who owns a driver.
    pub bus: Arc<dyn ClusterBus>,
    /// The drivers' last-known state.
    pub drivers: Arc<LiveDrivers>,
    /// The connected driver actors.
    pub registry: Arc<DriverRegistry>,
    /// The connected dashboards and the regions they watch.
    pub subscriptions: Arc<Subscriptions>,
    /// The origin check and the connection caps every WebSocket upgrade passes.
    pub admission: Arc<Admission>,
    pub writer: TrailWriter,
    pub store: Arc<dyn TrailStore>,
    /// The phone apps allowed to post positions (kept in the trail database).
    pub devices: Arc<DeviceRegistry>,
    /// Every fleet's geofences: in the trail database, and in memory.
    pub geofences: Arc<Geofences>,
    /// Every fleet's alert rules, and the announcement of events.
    pub alerts: Arc<Alerts>,
    /// The MQTT broker link (OwnTracks over MQTT), for `/readyz`.
    pub mqtt: MqttLink,
    pub metrics: PrometheusHandle,
    /// Cancelled when the hub stops.
    pub shutdown: CancellationToken,
    pub dev_mode: bool,
    /// The secret tokens are checked with (generated in dev mode); for the demo fleet.
    pub jwt_secret: SecretString,
}
