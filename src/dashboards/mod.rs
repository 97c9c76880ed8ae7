//! Dispatchers' dashboards: each connection's [`session`] (the reader:
//! subscriptions, heartbeat, expiry), its [`writer`], and the [`outbox`]
//! between the hub's fan-out and that writer.

pub mod outbox;
pub mod session;
pub mod writer;
