//! fleethub: drivers stream GPS positions in over WebSocket, dispatcher
//! dashboards watch them live, trails are kept in PostgreSQL or SQLite.
//!
//! The flow: `main.rs` → [`startup::Application`] → one task per connection
//! ([`driver_session`], [`dashboard_session`]) around the shared [`hub::Hub`]
//! (registry, [`spatial_index`], [`outbox`]), with [`trail_writer`] feeding
//! the [`trail_store`].

pub mod ack_tracker;
pub mod api;
pub mod api_error;
pub mod auth;
pub mod config;
pub mod dashboard_session;
pub mod demo;
pub mod domain;
pub mod driver_session;
pub mod hub;
pub mod metrics;
pub mod outbox;
pub mod periodic;
pub mod protocol;
pub mod rate_limit;
pub mod spatial_index;
pub mod startup;
pub mod static_files;
pub mod telemetry;
pub mod trail_api;
pub mod trail_store;
pub mod trail_writer;
