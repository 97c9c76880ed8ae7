//! fleethub's simulator and load generator.
//!
//! Simulated driver apps and dispatcher dashboards speak the real wire
//! protocol over real WebSockets. [`run`] drives a measured load test and
//! returns a [`Report`]; [`demo::spawn`] keeps a demo fleet moving for
//! `fleethub serve --demo`.

pub mod city;
pub mod cli;
pub mod dashboard;
pub mod demo;
pub mod driver;
pub mod movement;
pub mod net;
pub mod procstat;
pub mod report;
pub mod resend;
pub mod roster;
pub mod scenario;
pub mod stats;
pub mod token;
pub mod wire;
pub mod zones;

pub use city::{Bbox, City};
pub use dashboard::ViewportSpan;
pub use report::Report;
pub use scenario::{Auth, Scenario, run};
