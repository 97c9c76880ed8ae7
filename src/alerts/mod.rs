//! Alerts: what the hub tells dispatchers about their drivers. Every stored
//! fix of a fleet with fences or rules is evaluated once, in fix-time order,
//! in the transaction that stores it; what it raises is an [`Event`],
//! stored, pushed live to the fleet's dashboards and queued for its webhooks.

pub mod event;

pub use event::{Event, EventFix, EventKind, EventView};
