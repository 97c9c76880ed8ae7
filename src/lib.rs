//! fleethub: drivers stream GPS positions in over WebSocket, dispatcher
//! dashboards watch them live, trails are kept in PostgreSQL or SQLite.
//!
//! The flow: `main.rs` → [`startup::Application`] → one task per connection
//! ([`driver_session`], [`dashboard_session`]) around the shared [`hub::Hub`]
//! (registry, [`spatial_index`], [`outbox`]), with [`trail_writer`] feeding
//! the [`trail_store`].

pub mod api_error;
pub mod auth;
pub mod config;
pub mod domain;
pub mod protocol;
pub mod trail_store;
pub mod trail_writer;
