//! Configuration: the defaults in `config/default.toml` (compiled in), an
//! optional file, then environment variables. A bad value stops start-up with
//! a message that names the setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::{FleetId, MAX_ACCURACY_M, TimeWindow};
use crate::http_api::origin::Origin;
use crate::protocol::limits::largest_batch_bytes;

const DEFAULTS: &str = include_str!("../config/default.toml");
/// Shortest HS256 secret accepted outside dev mode.
pub const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub listen: SocketAddr,
    pub node_id: String,
    pub jwt_secret: SecretString,
    pub workers: usize,
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub cluster: ClusterSettings,
    pub driver: DriverSettings,
    pub dashboard: DashboardSettings,
    pub fanout: FanoutSettings,
    pub ws: WsSettings,
    pub trails: TrailSettings,
    pub map: MapSettings,
    pub ingest: IngestSettings,
    pub filters: FilterSettings,
    pub mqtt: MqttSettings,
    pub webhooks: WebhookSettings,
}

/// OwnTracks over MQTT (docs/PROTOCOL.md, "OwnTracks over MQTT").
#[derive(Debug, Clone, Deserialize)]
pub struct MqttSettings {
    /// `mqtt://[user:password@]host[:port]`; empty: off. Holds a password.
    pub url: SecretString,
    /// The MQTT client id; empty: `fleethub-<node_id>`, or `fleethub` when
    /// no node id is set. It must not change across restarts: the broker
    /// keeps the hub's session (and what it has not acked) under it.
    pub client_id: String,
    pub topic_prefix: String,
    /// Subscribe through `$share/fleethub/...`: one node of a cluster takes each message.
    pub shared: bool,
    /// Messages being stored at once; more are left unacked and come back.
    pub max_inflight: usize,
    /// Largest MQTT packet read; a larger one breaks the connection.
    pub max_packet_bytes: usize,
    pub keep_alive_secs: u64,
}

impl MqttSettings {
    pub fn enabled(&self) -> bool {
        !self.url.expose_secret().trim().is_empty()
    }

    /// The client id to use on a node named `node_id` (empty when unnamed).
    pub fn client_id_for(&self, node_id: &str) -> String {
        match (self.client_id.trim(), node_id.trim()) {
            ("", "") => "fleethub".to_owned(),
            ("", node) => format!("fleethub-{node}"),
            (id, _) => id.to_owned(),
        }
    }

    fn validate(&self) -> Result<(), SettingsError> {
        if self.enabled() {
            crate::ingest::mqtt::BrokerUrl::parse(self.url.expose_secret())
                .map_err(|e| invalid("mqtt.url", e))?;
        }
        let prefix = self.topic_prefix.trim();
        if prefix.is_empty() || prefix.contains(['+', '#']) || prefix.ends_with('/') {
            return Err(invalid(
                "mqtt.topic_prefix",
                "must be a topic without wildcards or a trailing `/`, such as owntracks",
            ));
        }
        if self.max_inflight == 0 || self.max_inflight > usize::from(u16::MAX) {
            return Err(invalid("mqtt.max_inflight", "must be between 1 and 65535"));
        }
        if self.max_packet_bytes < 1024 {
            return Err(invalid("mqtt.max_packet_bytes", "must be at least 1024"));
        }
        if self.keep_alive_secs == 0 {
            return Err(invalid("mqtt.keep_alive_secs", "must be positive"));
        }
        Ok(())
    }
}

/// Webhook deliveries (docs/PROTOCOL.md, "Webhooks").
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    /// POSTs in flight at once on this node.
    pub concurrency: usize,
    /// One POST's whole time: connect, send, answer.
    pub timeout_ms: u64,
    /// The first retry's longest wait; each further retry's doubles.
    pub first_retry_ms: u64,
    /// The longest wait between two attempts.
    pub max_retry_ms: u64,
    /// Attempts before a delivery becomes a dead letter.
    pub max_attempts: u32,
    /// How often the worker looks for due deliveries when not nudged.
    pub poll_ms: u64,
}

impl WebhookSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        if !(1..=256).contains(&self.concurrency) {
            return Err(invalid("webhooks.concurrency", "must be between 1 and 256"));
        }
        if !(100..=300_000).contains(&self.timeout_ms) {
            return Err(invalid(
                "webhooks.timeout_ms",
                "must be between 100 and 300000",
            ));
        }
        if self.first_retry_ms == 0 || self.max_retry_ms < self.first_retry_ms {
            return Err(invalid(
                "webhooks.first_retry_ms",
                "must be positive and at most webhooks.max_retry_ms",
            ));
        }
        // A week: a longer wait would outlive the retention of what it sends.
        if self.max_retry_ms > 604_800_000 {
            return Err(invalid(
                "webhooks.max_retry_ms",
                "must be at most 604800000 (7 days)",
            ));
        }
        if !(1..=100).contains(&self.max_attempts) {
            return Err(invalid(
                "webhooks.max_attempts",
                "must be between 1 and 100",
            ));
        }
        if !(10..=60_000).contains(&self.poll_ms) {
            return Err(invalid("webhooks.poll_ms", "must be between 10 and 60000"));
        }
        Ok(())
    }
}

/// The input filters (docs/PROTOCOL.md, "Input filters"): the rules for
/// every fleet, and per-fleet overrides of some of them.
#[derive(Debug, Clone, Deserialize)]
pub struct FilterSettings {
    pub duplicates: bool,
    pub zero: bool,
    pub max_accuracy_m: f64,
    pub max_speed_kmh: f64,
    pub min_distance_m: f64,
    /// `[filters.fleets.<fleet>]`: a fleet's own values; a key it leaves out
    /// keeps the `[filters]` value.
    #[serde(default)]
    pub fleets: BTreeMap<String, FleetFilterSettings>,
}

/// One fleet's overrides of `[filters]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFilterSettings {
    pub duplicates: Option<bool>,
    pub zero: Option<bool>,
    pub max_accuracy_m: Option<f64>,
    pub max_speed_kmh: Option<f64>,
    pub min_distance_m: Option<f64>,
}

/// The filter rules one fleet's fixes are judged by; a threshold of 0 is off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterRules {
    /// A fix with the same time and coordinates as the driver's newest accepted one.
    pub duplicates: bool,
    /// A fix at exactly (0, 0), what some GPS chips report without a fix.
    pub zero: bool,
    /// A fix whose accuracy radius is larger than this (metres).
    pub max_accuracy_m: f64,
    /// A fix that implies a faster move than this from the newest accepted one (km/h).
    pub max_speed_kmh: f64,
    /// A fix closer than this to the newest accepted one (metres).
    pub min_distance_m: f64,
}

/// Largest implied speed limit accepted (km/h): faster than anything the hub
/// tracks drives, so a larger value is a typo.
const MAX_FILTER_SPEED_KMH: f64 = 2000.0;
/// Largest minimum distance accepted (metres).
const MAX_FILTER_DISTANCE_M: f64 = 10_000.0;

impl FilterSettings {
    /// The rules of fleets without overrides.
    pub fn rules(&self) -> FilterRules {
        FilterRules {
            duplicates: self.duplicates,
            zero: self.zero,
            max_accuracy_m: self.max_accuracy_m,
            max_speed_kmh: self.max_speed_kmh,
            min_distance_m: self.min_distance_m,
        }
    }

    /// Each fleet with overrides and its rules: its own values over `[filters]`'s.
    pub fn fleet_rules(&self) -> impl Iterator<Item = (&str, FilterRules)> {
        let base = self.rules();
        self.fleets.iter().map(move |(fleet, o)| {
            let rules = FilterRules {
                duplicates: o.duplicates.unwrap_or(base.duplicates),
                zero: o.zero.unwrap_or(base.zero),
                max_accuracy_m: o.max_accuracy_m.unwrap_or(base.max_accuracy_m),
                max_speed_kmh: o.max_speed_kmh.unwrap_or(base.max_speed_kmh),
                min_distance_m: o.min_distance_m.unwrap_or(base.min_distance_m),
            };
            (fleet.as_str(), rules)
        })
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let mut all = vec![("filters".to_owned(), self.rules())];
        for (fleet, rules) in self.fleet_rules() {
            let key = format!("filters.fleets.{fleet}");
            FleetId::parse(fleet)
                .map_err(|e| invalid(key.clone(), format!("names no fleet: {e}")))?;
            all.push((key, rules));
        }
        for (prefix, rules) in all {
            for (name, value, max) in [
                ("max_accuracy_m", rules.max_accuracy_m, MAX_ACCURACY_M),
                ("max_speed_kmh", rules.max_speed_kmh, MAX_FILTER_SPEED_KMH),
                (
                    "min_distance_m",
                    rules.min_distance_m,
                    MAX_FILTER_DISTANCE_M,
                ),
            ] {
                if !(value.is_finite() && (0.0..=max).contains(&value)) {
                    return Err(invalid(
                        format!("{prefix}.{name}"),
                        format!("must be between 0 (off) and {max}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The phone apps' ingest paths (docs/PROTOCOL.md, "Phone apps").
#[derive(Debug, Clone, Deserialize)]
pub struct IngestSettings {
    /// A listener of its own for `/ingest/osmand` (Traccar Client's usual
    /// port is 5055); empty: only on the hub's port.
    pub osmand_listen: String,
}

impl IngestSettings {
    /// The OsmAnd listener's address, `None` when it is off.
    pub fn osmand_listen(&self) -> Result<Option<SocketAddr>, SettingsError> {
        let raw = self.osmand_listen.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        raw.parse().map(Some).map_err(|_| {
            invalid(
                "ingest.osmand_listen",
                "must be an address and port, such as 127.0.0.1:5055, or empty",
            )
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub sqlite_path: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RedisSettings {
    /// Empty runs one node; comma-separated seed nodes when `cluster` is set.
    pub url: SecretString,
    pub key_prefix: String,
    /// The URLs are a Redis Cluster.
    pub cluster: bool,
    /// Position channels use sharded pub/sub (SPUBLISH / SSUBSCRIBE).
    pub sharded: bool,
    /// PEM file of the CA that signed the Redis servers' certificates, for
    /// `rediss://` to a private CA; empty trusts the system's roots.
    pub ca_file: String,
}

impl RedisSettings {
    /// Whether this hub is one node of several.
    pub fn enabled(&self) -> bool {
        !self.url.expose_secret().trim().is_empty()
    }

    /// The URL(s), one per seed node.
    pub fn urls(&self) -> Vec<String> {
        self.url
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClusterSettings {
    /// Side of a channel's grid cell, in degrees.
    pub cell_deg: f64,
    /// How long a node gathers positions before publishing them in one message.
    pub flush_ms: u64,
    /// Messages a node publishes per second at most: under load it waits
    /// longer between flushes and puts more positions in each message.
    pub max_messages_per_sec: u32,
    /// Node heartbeat, subscription probe and ownership re-check period.
    pub heartbeat_ms: u64,
    /// A node whose heartbeat stopped this long ago is dead.
    pub node_timeout_ms: u64,
    /// A node that has not heard its own probe for this long rebuilds its
    /// pub/sub connection.
    pub probe_timeout_ms: u64,
    /// Cells of one fleet a node listens to before it takes the fleet's wide channel.
    pub max_cells: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DriverSettings {
    pub offline_after_secs: u64,
    pub max_future_secs: u64,
    pub max_age_secs: u64,
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    pub abuse_per_sec: u32,
    pub abuse_burst: u32,
    pub max_batch_items: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DashboardSettings {
    pub max_subscriptions: usize,
    pub max_items_per_frame: usize,
    pub stuck_after_secs: u64,
    pub max_frame_bytes: usize,
    pub max_control_frames: usize,
    /// Bytes handed to the socket that it has not taken yet, at most; also
    /// the largest `positions` frame.
    pub max_unsent_bytes: usize,
    /// How long a dashboard closed for not reading (1013) still gets to take
    /// its close frame before its socket is cut.
    pub close_grace_secs: u64,
    pub abuse_per_sec: u32,
    pub abuse_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FanoutSettings {
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WsSettings {
    pub max_frame_bytes: usize,
    pub hard_frame_limit_bytes: usize,
    pub heartbeat_secs: u64,
    pub client_timeout_secs: u64,
    pub send_buffer_bytes: usize,
    /// Open WebSocket connections on this node, drivers and dashboards
    /// together; one more is refused with 503 before the upgrade.
    pub max_connections: usize,
    /// Open WebSocket connections from one client address; one more gets 429.
    pub max_connections_per_ip: usize,
    /// Open WebSocket connections of one token (a dispatcher's browser tabs);
    /// one more gets 429.
    pub max_connections_per_token: usize,
    /// Origins, besides the hub's own, whose pages may open a WebSocket
    /// (`https://ops.example.com`). Requests without `Origin` (apps) are not concerned.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TrailSettings {
    pub retention_days: u32,
    pub queue_capacity: usize,
    pub flush_max_rows: usize,
    pub flush_interval_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MapSettings {
    pub tile_url: String,
    pub tile_attribution: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: `{key}` {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl Settings {
    fn validate_cluster(&self) -> Result<(), SettingsError> {
        let c = &self.cluster;
        if !(c.cell_deg.is_finite() && c.cell_deg >= 0.01 && c.cell_deg <= 90.0) {
            return Err(invalid(
                "cluster.cell_deg",
                "must be between 0.01 and 90 degrees",
            ));
        }
        for (key, value) in [
            ("cluster.flush_ms", c.flush_ms),
            ("cluster.heartbeat_ms", c.heartbeat_ms),
            ("cluster.max_cells", c.max_cells as u64),
            (
                "cluster.max_messages_per_sec",
                c.max_messages_per_sec.into(),
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be positive"));
            }
        }
        if c.node_timeout_ms < 2 * c.heartbeat_ms || c.probe_timeout_ms < 2 * c.heartbeat_ms {
            return Err(invalid(
                "cluster.node_timeout_ms",
                "node_timeout_ms and probe_timeout_ms must be at least twice heartbeat_ms",
            ));
        }
        if self.redis.enabled() && self.database.url.expose_secret().is_empty() {
            return Err(invalid(
                "redis.url",
                "a cluster needs a trail store every node shares: set DATABASE_URL to a PostgreSQL database (the embedded SQLite file is one node's own)",
            ));
        }
        if self
            .redis
            .urls()
            .iter()
            .any(|u| !u.starts_with("redis://") && !u.starts_with("rediss://"))
        {
            return Err(invalid(
                "redis.url",
                "must be redis:// or rediss:// URLs, comma-separated",
            ));
        }
        if !self.redis.ca_file.trim().is_empty()
            && self
                .redis
                .urls()
                .iter()
                .any(|u| !u.starts_with("rediss://"))
        {
            return Err(invalid(
                "redis.ca_file",
                "verifies TLS connections: the URLs must be rediss://",
            ));
        }
        Ok(())
    }

    /// Loads the layered configuration from the process environment.
    pub fn load(file: Option<&str>) -> Result<Self, SettingsError> {
        Self::load_from(file, std::env::vars())
    }

    /// Loads from an explicit environment, so tests need not touch the process's.
    pub fn load_from(
        file: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let env: std::collections::HashMap<String, String> = env.into_iter().collect();
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::with_name(path).required(true));
        }
        builder = builder.add_source(
            Environment::with_prefix("FLEETHUB")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("ws.allowed_origins")
                .source(Some(env.clone().into_iter().collect())),
        );
        for (var, key) in [
            ("DATABASE_URL", "database.url"),
            ("REDIS_URL", "redis.url"),
            ("MQTT_URL", "mqtt.url"),
        ] {
            if let Some(value) = env.get(var) {
                builder = builder.set_override(key, value.as_str())?;
            }
        }
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        // An empty variable means no extra origin.
        settings.ws.allowed_origins.retain(|o| !o.trim().is_empty());
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let secret = self.jwt_secret.expose_secret();
        if !secret.is_empty() && secret.len() < MIN_SECRET_LEN {
            return Err(invalid(
                "jwt_secret",
                format!("must be at least {MIN_SECRET_LEN} bytes (or empty for dev mode)"),
            ));
        }
        let url = self.database.url.expose_secret();
        if !url.is_empty() && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(invalid(
                "database.url",
                "must be a postgres:// URL, or empty for the embedded SQLite file",
            ));
        }
        self.validate_cluster()?;
        self.ingest.osmand_listen()?;
        self.filters.validate()?;
        self.mqtt.validate()?;
        self.webhooks.validate()?;
        let positive = [
            ("driver.offline_after_secs", self.driver.offline_after_secs),
            ("driver.rate_per_sec", self.driver.rate_per_sec.into()),
            ("driver.rate_burst", self.driver.rate_burst.into()),
            ("driver.abuse_per_sec", self.driver.abuse_per_sec.into()),
            ("driver.abuse_burst", self.driver.abuse_burst.into()),
            ("driver.max_batch_items", self.driver.max_batch_items as u64),
            (
                "dashboard.max_subscriptions",
                self.dashboard.max_subscriptions as u64,
            ),
            (
                "dashboard.max_items_per_frame",
                self.dashboard.max_items_per_frame as u64,
            ),
            (
                "dashboard.stuck_after_secs",
                self.dashboard.stuck_after_secs,
            ),
            (
                "dashboard.max_frame_bytes",
                self.dashboard.max_frame_bytes as u64,
            ),
            (
                "dashboard.max_control_frames",
                self.dashboard.max_control_frames as u64,
            ),
            (
                "dashboard.max_unsent_bytes",
                self.dashboard.max_unsent_bytes as u64,
            ),
            (
                "dashboard.close_grace_secs",
                self.dashboard.close_grace_secs,
            ),
            (
                "dashboard.abuse_per_sec",
                self.dashboard.abuse_per_sec.into(),
            ),
            ("dashboard.abuse_burst", self.dashboard.abuse_burst.into()),
            ("ws.max_frame_bytes", self.ws.max_frame_bytes as u64),
            ("ws.heartbeat_secs", self.ws.heartbeat_secs),
            ("ws.max_connections", self.ws.max_connections as u64),
            (
                "ws.max_connections_per_ip",
                self.ws.max_connections_per_ip as u64,
            ),
            (
                "ws.max_connections_per_token",
                self.ws.max_connections_per_token as u64,
            ),
            ("trails.queue_capacity", self.trails.queue_capacity as u64),
            ("trails.flush_max_rows", self.trails.flush_max_rows as u64),
            ("trails.retention_days", self.trails.retention_days.into()),
            (
                "database.max_connections",
                self.database.max_connections.into(),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        let full_batch = largest_batch_bytes(self.driver.max_batch_items);
        if self.ws.max_frame_bytes < full_batch {
            return Err(invalid(
                "ws.max_frame_bytes",
                format!(
                    "must hold a full batch of driver.max_batch_items ({}) items at full precision: at least {full_batch} bytes",
                    self.driver.max_batch_items
                ),
            ));
        }
        for origin in &self.ws.allowed_origins {
            Origin::parse(origin).map_err(|e| invalid("ws.allowed_origins", e.to_string()))?;
        }
        if self.ws.hard_frame_limit_bytes < self.ws.max_frame_bytes {
            return Err(invalid(
                "ws.hard_frame_limit_bytes",
                "must not be smaller than ws.max_frame_bytes",
            ));
        }
        if self.ws.client_timeout_secs <= self.ws.heartbeat_secs {
            return Err(invalid(
                "ws.client_timeout_secs",
                "must be longer than ws.heartbeat_secs",
            ));
        }
        Ok(())
    }

    /// Dev mode: no secret configured. The hub then makes one up and stays on localhost.
    pub fn dev_mode(&self) -> bool {
        self.jwt_secret.expose_secret().is_empty()
    }

    pub fn time_window(&self) -> TimeWindow {
        TimeWindow {
            max_future: Duration::from_secs(self.driver.max_future_secs),
            max_age: Duration::from_secs(self.driver.max_age_secs),
        }
    }

    pub fn fanout_interval(&self) -> Duration {
        Duration::from_millis(self.fanout.interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::load_from(
            None,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_load_in_dev_mode() {
        let s = load(&[]).unwrap();
        assert!(s.dev_mode());
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.fanout.interval_ms, 100);
    }

    #[test]
    fn webhook_settings_have_defaults_overrides_and_bounds() {
        let s = load(&[]).unwrap();
        let w = &s.webhooks;
        assert_eq!(
            (
                w.concurrency,
                w.timeout_ms,
                w.first_retry_ms,
                w.max_retry_ms
            ),
            (8, 10_000, 1_000, 3_600_000)
        );
        assert_eq!((w.max_attempts, w.poll_ms), (12, 1_000));
        let s = load(&[("FLEETHUB_WEBHOOKS__MAX_ATTEMPTS", "3")]).unwrap();
        assert_eq!(s.webhooks.max_attempts, 3);
        for (var, value, key) in [
            (
                "FLEETHUB_WEBHOOKS__CONCURRENCY",
                "0",
                "webhooks.concurrency",
            ),
            ("FLEETHUB_WEBHOOKS__TIMEOUT_MS", "5", "webhooks.timeout_ms"),
            (
                "FLEETHUB_WEBHOOKS__FIRST_RETRY_MS",
                "7200000",
                "webhooks.first_retry_ms",
            ),
            (
                "FLEETHUB_WEBHOOKS__MAX_ATTEMPTS",
                "0",
                "webhooks.max_attempts",
            ),
            ("FLEETHUB_WEBHOOKS__POLL_MS", "0", "webhooks.poll_ms"),
        ] {
            let err = load(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        }
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let s = load(&[
            ("FLEETHUB_FANOUT__INTERVAL_MS", "0"),
            ("FLEETHUB_LISTEN", "0.0.0.0:9000"),
            ("FLEETHUB_NODE_ID", "pi-1"),
            ("DATABASE_URL", "postgres://localhost/x"),
        ])
        .unwrap();
        assert_eq!(s.fanout.interval_ms, 0);
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.node_id, "pi-1");
        assert_eq!(s.database.url.expose_secret(), "postgres://localhost/x");
    }

    #[test]
    fn a_bad_value_names_the_setting() {
        let err = load(&[("FLEETHUB_FANOUT__INTERVAL_MS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("interval_ms"), "{err}");
        let err = load(&[("FLEETHUB_JWT_SECRET", "short")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("jwt_secret"), "{err}");
        let err = load(&[("FLEETHUB_LISTEN", "nowhere")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn the_osmand_listener_is_off_by_default_and_an_address_when_set() {
        let s = load(&[]).unwrap();
        assert_eq!(s.ingest.osmand_listen().unwrap(), None);
        let s = load(&[("FLEETHUB_INGEST__OSMAND_LISTEN", "0.0.0.0:5055")]).unwrap();
        let addr = s.ingest.osmand_listen().unwrap().unwrap();
        assert_eq!(addr.port(), 5055);
        let err = load(&[("FLEETHUB_INGEST__OSMAND_LISTEN", "5055")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ingest.osmand_listen"), "{err}");
    }

    #[test]
    fn the_frame_limit_must_hold_a_full_batch() {
        let s = load(&[]).unwrap();
        assert!(s.ws.max_frame_bytes >= largest_batch_bytes(s.driver.max_batch_items));
        let err = load(&[("FLEETHUB_WS__MAX_FRAME_BYTES", "65536")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ws.max_frame_bytes"), "{err}");
        assert!(err.contains("driver.max_batch_items"), "{err}");
        let s = load(&[
            ("FLEETHUB_WS__MAX_FRAME_BYTES", "65536"),
            ("FLEETHUB_DRIVER__MAX_BATCH_ITEMS", "250"),
        ])
        .unwrap();
        assert_eq!(s.ws.max_frame_bytes, 65536);
    }

    #[test]
    fn allowed_origins_are_a_comma_separated_list_of_origins() {
        let s = load(&[(
            "FLEETHUB_WS__ALLOWED_ORIGINS",
            "https://ops.example.com,http://10.0.0.5:8080",
        )])
        .unwrap();
        assert_eq!(
            s.ws.allowed_origins,
            ["https://ops.example.com", "http://10.0.0.5:8080"]
        );
        let err = load(&[("FLEETHUB_WS__ALLOWED_ORIGINS", "ops.example.com/path")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ws.allowed_origins"), "{err}");
        // Other settings with commas stay plain strings.
        let s = load(&[("FLEETHUB_MAP__TILE_ATTRIBUTION", "a, b")]).unwrap();
        assert_eq!(s.map.tile_attribution, "a, b");
    }

    #[test]
    fn a_cluster_needs_postgresql_and_redis_urls() {
        let err = load(&[("REDIS_URL", "redis://127.0.0.1:6379")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("redis.url") && err.contains("DATABASE_URL"),
            "{err}"
        );
        let pg = ("DATABASE_URL", "postgres://localhost/x");
        let s = load(&[pg, ("REDIS_URL", "redis://a:6379, redis://b:6379")]).unwrap();
        assert!(s.redis.enabled());
        assert_eq!(s.redis.urls(), ["redis://a:6379", "redis://b:6379"]);
        let err = load(&[pg, ("REDIS_URL", "http://a")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("redis.url"), "{err}");
        assert!(
            !load(&[pg]).unwrap().redis.enabled(),
            "one node without Redis"
        );
    }

    #[test]
    fn filters_default_to_duplicates_and_zero_only() {
        let rules = load(&[]).unwrap().filters.rules();
        assert!(rules.duplicates && rules.zero);
        assert_eq!(
            (
                rules.max_accuracy_m,
                rules.max_speed_kmh,
                rules.min_distance_m
            ),
            (0.0, 0.0, 0.0)
        );
        let s = load(&[("FLEETHUB_FILTERS__MIN_DISTANCE_M", "50")]).unwrap();
        assert_eq!(s.filters.rules().min_distance_m, 50.0);
        let err = load(&[("FLEETHUB_FILTERS__MAX_SPEED_KMH", "-1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("filters.max_speed_kmh"), "{err}");
    }

    #[test]
    fn a_config_file_overrides_filters_per_fleet_and_bad_values_name_the_fleet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleethub.toml");
        // A fleet id may hold capitals and dots: quoted, it is one key.
        let file = "[filters]\nmax_speed_kmh = 250\n[filters.fleets.acme]\nmin_distance_m = 50\nzero = false\n[filters.fleets.\"Beta.north\"]\nzero = false\n";
        std::fs::write(&path, file).unwrap();
        let s = Settings::load_from(path.to_str(), std::iter::empty()).unwrap();
        let fleets: Vec<_> = s.filters.fleet_rules().collect();
        let names: Vec<_> = fleets.iter().map(|(fleet, _)| *fleet).collect();
        assert_eq!(names, ["Beta.north", "acme"]);
        let (_, acme) = fleets[1];
        assert_eq!((acme.min_distance_m, acme.zero), (50.0, false));
        assert_eq!(acme.max_speed_kmh, 250.0, "kept from [filters]");
        assert!(acme.duplicates);

        std::fs::write(&path, "[filters.fleets.acme]\nmin_distance_m = 1e9\n").unwrap();
        let err = Settings::load_from(path.to_str(), std::iter::empty())
            .unwrap_err()
            .to_string();
        assert!(err.contains("filters.fleets.acme.min_distance_m"), "{err}");
        std::fs::write(&path, "[filters.fleets.acme]\nmin_distanse_m = 5\n").unwrap();
        let err = Settings::load_from(path.to_str(), std::iter::empty())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("min_distanse_m"),
            "a misspelt key is refused: {err}"
        );
    }

    #[test]
    fn mqtt_is_off_by_default_and_its_url_is_checked_without_showing_it() {
        let s = load(&[]).unwrap();
        assert!(!s.mqtt.enabled());
        assert_eq!(s.mqtt.topic_prefix, "owntracks");
        let s = load(&[("MQTT_URL", "mqtt://hub:pw@127.0.0.1:1883")]).unwrap();
        assert!(s.mqtt.enabled());
        // A stable id across restarts: from the node id, or fixed.
        assert_eq!(s.mqtt.client_id_for("node-a"), "fleethub-node-a");
        assert_eq!(s.mqtt.client_id_for(""), "fleethub");
        let s = load(&[("FLEETHUB_MQTT__CLIENT_ID", "hub-1")]).unwrap();
        assert_eq!(s.mqtt.client_id_for("node-a"), "hub-1");
        let err = load(&[("MQTT_URL", "mqtts://hub:hunter2@broker")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mqtt.url") && !err.contains("hunter2"),
            "{err}"
        );
        let err = load(&[("FLEETHUB_MQTT__TOPIC_PREFIX", "owntracks/#")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("mqtt.topic_prefix"), "{err}");
    }
}
