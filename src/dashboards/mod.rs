//! Dispatchers' dashboards: each connection's [`session`] (the reader:
//! subscriptions, heartbeat, expiry), its [`writer`], the [`outbox`]
//! between the hub's fan-out and that writer, and the [`unsent`] bytes the
//! socket holds.

pub mod outbox;
pub mod session;
pub mod unsent;
pub mod writer;
