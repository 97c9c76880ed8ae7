//! Integration tests: the real hub on a random port, real WebSocket clients.
//! One binary, one module per area.

mod alerts;
mod auth;
mod dashboard;
mod driver;
mod filters;
mod fleets;
mod geofences;
mod helpers;
mod hostile_http;
mod hostile_ws;
mod http;
mod ingest_paths;
mod mqtt;
mod phone_apps;
mod proxy;
mod roundtrip;
mod simulated_fleet;
mod slow_dashboard;
mod trails;
