//! fleethub: drivers stream GPS positions in, dispatcher dashboards watch
//! them live, trails are kept in PostgreSQL or SQLite.
//!
//! The flow: `main.rs` → [`startup::Application`] builds the parts and the
//! routes ([`http_api`]). A position enters through an [`ingest`] path (the
//! WebSocket driver session or the HTTP upload) into the one
//! [`ingest::pipeline`]: [`live`] state, fan-out through the [`cluster`] bus
//! to the [`dashboards`]' outboxes, and the [`trails`] writer, whose commit
//! becomes the ack. [`protocol`] holds the wire contract, [`domain`] the
//! types that check themselves.

pub mod alerts;
pub mod app_state;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod dashboards;
#[cfg(feature = "demo")]
pub mod demo;
pub mod devices;
pub mod domain;
pub mod geofences;
pub mod http_api;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod periodic;
pub mod protocol;
pub mod startup;
pub mod telemetry;
pub mod trails;
pub mod webhooks;
pub mod ws;
