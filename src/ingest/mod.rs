//! Where positions come in. Every path ([`driver_session`] over WebSocket,
//! [`http_upload`] over HTTP, and the phone apps' [`osmand`] and [`owntracks`]
//! adapters, sharing [`phone_app`] and [`units`], and OwnTracks over
//! [`mqtt`]) frames its
//! fixes and hands them to the one [`pipeline`], which applies the
//! [`rate_limit`] and the input [`filters`], shows them live and queues them
//! for the trail; the WebSocket path turns commits into cumulative acks with
//! its [`ack_tracker`].

pub mod ack_tracker;
pub mod driver_session;
pub mod filters;
pub mod http_upload;
pub mod mqtt;
pub mod osmand;
pub mod owntracks;
pub mod phone_app;
pub mod pipeline;
pub mod rate_limit;
pub mod units;

pub use pipeline::{Pipeline, Refusal};
