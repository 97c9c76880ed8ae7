//! Prometheus metrics. One place names them all, so `/metrics` and
//! `docs/PROTOCOL.md` stay in step; call sites use the small helpers below.

use std::sync::OnceLock;

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS: &str = "fleethub_connections";
pub const POSITIONS_RECEIVED: &str = "fleethub_positions_received_total";
pub const POSITIONS_REJECTED: &str = "fleethub_positions_rejected_total";
pub const POSITIONS_FILTERED: &str = "fleethub_positions_filtered_total";
pub const POSITIONS_LATE: &str = "fleethub_positions_late_total";
pub const FANNED_OUT: &str = "fleethub_positions_fanned_out_total";
pub const DELIVERIES: &str = "fleethub_deliveries_total";
pub const COALESCED: &str = "fleethub_coalesced_drops_total";
pub const SLOW_CLOSED: &str = "fleethub_dashboards_closed_slow_total";
pub const QUEUED_BYTES: &str = "fleethub_dashboard_queued_bytes";
pub const FANOUT_SECONDS: &str = "fleethub_fanout_latency_seconds";
pub const ACK_SECONDS: &str = "fleethub_ack_latency_seconds";
pub const TASK_EXITS: &str = "fleethub_task_exits_total";
pub const TRAIL_QUEUED: &str = "fleethub_trail_queued_positions";
pub const TRAIL_REFUSED: &str = "fleethub_trail_refused_positions_total";
pub const TRAIL_COMMITTED: &str = "fleethub_trail_committed_positions_total";
pub const TRAIL_COMMIT_SECONDS: &str = "fleethub_trail_commit_seconds";
pub const TRAIL_COMMIT_FAILURES: &str = "fleethub_trail_commit_failures_total";
pub const CONNECTIONS_REFUSED: &str = "fleethub_connections_refused_total";
pub const CLUSTER_MESSAGES_PUBLISHED: &str = "fleethub_cluster_messages_published_total";
pub const CLUSTER_BYTES_PUBLISHED: &str = "fleethub_cluster_bytes_published_total";
pub const CLUSTER_POSITIONS_PUBLISHED: &str = "fleethub_cluster_positions_published_total";
pub const CLUSTER_MESSAGES_RECEIVED: &str = "fleethub_cluster_messages_received_total";
pub const CLUSTER_BYTES_RECEIVED: &str = "fleethub_cluster_bytes_received_total";
pub const CLUSTER_POSITIONS_RECEIVED: &str = "fleethub_cluster_positions_received_total";
pub const CLUSTER_POSITIONS_PER_MESSAGE: &str = "fleethub_cluster_positions_per_message";
pub const CLUSTER_LATENCY_SECONDS: &str = "fleethub_cluster_latency_seconds";
pub const CLUSTER_LINK_UP: &str = "fleethub_cluster_link_up";
pub const CLUSTER_REMOTE_DRIVERS: &str = "fleethub_cluster_remote_drivers";
pub const CLUSTER_CHANNELS: &str = "fleethub_cluster_channels";
pub const CLUSTER_DROPPED: &str = "fleethub_cluster_dropped_total";
pub const CLUSTER_RESUBSCRIBES: &str = "fleethub_cluster_resubscribes_total";
pub const CLUSTER_TAKEOVERS: &str = "fleethub_cluster_takeovers_total";
pub const DEVICE_REFUSALS: &str = "fleethub_device_refusals_total";
pub const MQTT_MESSAGES: &str = "fleethub_mqtt_messages_total";
pub const MQTT_LINK_UP: &str = "fleethub_mqtt_link_up";
pub const GEOFENCES: &str = "fleethub_geofences";
pub const EVENTS: &str = "fleethub_events_total";

/// Latency buckets from 50 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];
/// Positions carried by one message between nodes.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Handles of the metrics touched for every position, registered once: the
/// macros look the name up in the registry on each call.
struct Hot {
    received: Counter,
    fanned_out: Counter,
    coalesced: Counter,
    delivered: Counter,
    fanout_seconds: Histogram,
    ack_seconds: Histogram,
}

/// Set once the recorder is installed; until then (unit tests, benches)
/// samples go nowhere, as they would through the macros.
static HOT: OnceLock<Hot> = OnceLock::new();
static NOWHERE: Hot = Hot {
    received: Counter::noop(),
    fanned_out: Counter::noop(),
    coalesced: Counter::noop(),
    delivered: Counter::noop(),
    fanout_seconds: Histogram::noop(),
    ack_seconds: Histogram::noop(),
};

fn hot() -> &'static Hot {
    HOT.get().unwrap_or(&NOWHERE)
}

/// Installs the process-wide recorder once (tests start many hubs in one process).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .and_then(|b| {
                    let per_message = Matcher::Full(CLUSTER_POSITIONS_PER_MESSAGE.into());
                    b.set_buckets_for_metric(per_message, BATCH_BUCKETS)
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    let _ = HOT.set(Hot {
                        received: counter!(POSITIONS_RECEIVED),
                        fanned_out: counter!(FANNED_OUT),
                        coalesced: counter!(COALESCED),
                        delivered: counter!(DELIVERIES),
                        fanout_seconds: histogram!(FANOUT_SECONDS),
                        ack_seconds: histogram!(ACK_SECONDS),
                    });
                    handle
                }
                // Another recorder is already installed: render an empty page.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Histogram samples pile up in the recorder until they are folded into
/// buckets; this does it every few seconds, whether or not anyone scrapes.
pub async fn run_upkeep(handle: PrometheusHandle, shutdown: tokio_util::sync::CancellationToken) {
    crate::periodic::run_every(std::time::Duration::from_secs(5), shutdown, || {
        handle.run_upkeep();
        std::future::ready(())
    })
    .await;
}

pub fn connection_opened(kind: &'static str) {
    gauge!(CONNECTIONS, "kind" => kind).increment(1.0);
}

pub fn connection_closed(kind: &'static str) {
    gauge!(CONNECTIONS, "kind" => kind).decrement(1.0);
}

pub fn received(n: u64) {
    hot().received.increment(n);
}

pub fn rejected(code: &'static str, n: u64) {
    counter!(POSITIONS_REJECTED, "code" => code).increment(n);
}

/// A phone app's request refused before its fix was read (no key, unknown
/// device, wrong key...), by the path's protocol and the refusal's code.
pub fn device_refused(protocol: &'static str, code: &'static str) {
    counter!(DEVICE_REFUSALS, "protocol" => protocol, "code" => code).increment(1);
}

/// A valid fix the input filters dropped, by `reason` (duplicate, zero,
/// accuracy, speed, distance).
pub fn filtered(reason: &'static str) {
    counter!(POSITIONS_FILTERED, "reason" => reason).increment(1);
}

pub fn late() {
    counter!(POSITIONS_LATE).increment(1);
}

pub fn fanned_out() {
    hot().fanned_out.increment(1);
}

pub fn coalesced_drop() {
    hot().coalesced.increment(1);
}

pub fn delivered(n: u64) {
    hot().delivered.increment(n);
}

pub fn slow_dashboard_closed() {
    counter!(SLOW_CLOSED).increment(1);
}

pub fn queued_bytes(bytes: usize) {
    gauge!(QUEUED_BYTES).set(bytes as f64);
}

/// A background task ended before shutdown.
pub fn task_exited(task: &'static str) {
    counter!(TASK_EXITS, "task" => task).increment(1);
}

pub fn fanout_latency(seconds: f64) {
    hot().fanout_seconds.record(seconds);
}

pub fn ack_latency(seconds: f64) {
    hot().ack_seconds.record(seconds);
}

/// Positions waiting for the database.
pub fn trail_queued(positions: usize) {
    gauge!(TRAIL_QUEUED).set(positions as f64);
}

/// Positions refused because the trail queue was full.
pub fn trail_refused(positions: u64) {
    counter!(TRAIL_REFUSED).increment(positions);
}

/// A group commit of `positions` that took `seconds`.
pub fn trail_committed(positions: u64, seconds: f64) {
    histogram!(TRAIL_COMMIT_SECONDS).record(seconds);
    counter!(TRAIL_COMMITTED).increment(positions);
}

pub fn trail_commit_failed() {
    counter!(TRAIL_COMMIT_FAILURES).increment(1);
}

/// A WebSocket handshake refused before the upgrade: `origin`, or the cap it
/// hit (`total`, `per_ip`, `per_token`).
pub fn connection_refused(reason: &'static str) {
    counter!(CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

/// One message published to the other nodes, carrying `positions`.
pub fn cluster_published(bytes: usize, positions: usize) {
    counter!(CLUSTER_MESSAGES_PUBLISHED).increment(1);
    counter!(CLUSTER_BYTES_PUBLISHED).increment(bytes as u64);
    counter!(CLUSTER_POSITIONS_PUBLISHED).increment(positions as u64);
    histogram!(CLUSTER_POSITIONS_PER_MESSAGE).record(positions as f64);
}

/// One message received from another node, `latency` after it was sent.
pub fn cluster_received(bytes: usize, positions: usize, latency: Option<f64>) {
    counter!(CLUSTER_MESSAGES_RECEIVED).increment(1);
    counter!(CLUSTER_BYTES_RECEIVED).increment(bytes as u64);
    counter!(CLUSTER_POSITIONS_RECEIVED).increment(positions as u64);
    if let Some(seconds) = latency {
        histogram!(CLUSTER_LATENCY_SECONDS).record(seconds);
    }
}

pub fn cluster_link_up(up: bool) {
    gauge!(CLUSTER_LINK_UP).set(if up { 1.0 } else { 0.0 });
}

pub fn cluster_remote_drivers(n: usize) {
    gauge!(CLUSTER_REMOTE_DRIVERS).set(n as f64);
}

pub fn cluster_channels(n: usize) {
    gauge!(CLUSTER_CHANNELS).set(n as f64);
}

/// Positions or status changes not sent to the other nodes (the link was down).
pub fn cluster_dropped(n: usize) {
    counter!(CLUSTER_DROPPED).increment(n as u64);
}

pub fn cluster_resubscribed() {
    counter!(CLUSTER_RESUBSCRIBES).increment(1);
}

pub fn cluster_takeover() {
    counter!(CLUSTER_TAKEOVERS).increment(1);
}

/// One OwnTracks message taken from the MQTT broker, by what became of it
/// (`stored`, `ignored`, `unregistered`, `invalid`, `not_stored`...).
pub fn mqtt_message(outcome: &'static str) {
    counter!(MQTT_MESSAGES, "outcome" => outcome).increment(1);
}

pub fn mqtt_link_up(up: bool) {
    gauge!(MQTT_LINK_UP).set(if up { 1.0 } else { 0.0 });
}

/// The fences this node holds in memory, every fleet's.
pub fn geofences(count: usize) {
    gauge!(GEOFENCES).set(count as f64);
}

/// An event stored by this node, by kind.
pub fn event_raised(kind: &'static str) {
    counter!(EVENTS, "kind" => kind).increment(1);
}
