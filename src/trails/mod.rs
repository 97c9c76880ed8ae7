//! Durable trails: the [`writer`] (a bounded queue and group commits whose
//! completions become acks), the [`store`] with one backend per database,
//! [`retention`], and the history API ([`history`], with its [`geometry`]).

pub mod geometry;
pub mod history;
pub mod retention;
pub mod store;
pub mod writer;

pub use geometry::{Summary, simplify, summarize};
pub use store::{
    DriverRecord, PgTrailStore, SqliteTrailStore, StoreError, TrailQuery, TrailReads, TrailStore,
    Turn,
};
pub use writer::{Committed, QueueFull, TrailWriter};
