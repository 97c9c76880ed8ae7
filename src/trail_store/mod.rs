//! Where trails are kept. One trait, one file per backend: PostgreSQL when
//! `DATABASE_URL` is set, an embedded SQLite file otherwise.

use async_trait::async_trait;

use crate::domain::{DriverId, FleetId, Seq, Timestamp, TrailPoint};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or refused the work; worth retrying.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The data the database returned breaks an invariant (never retried).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// What a history query asks for. `from`/`to` are inclusive fix times.
#[derive(Debug, Clone)]
pub struct TrailQuery {
    pub driver: DriverId,
    /// `None` for admins: any fleet.
    pub fleet: Option<FleetId>,
    pub from: Timestamp,
    pub to: Timestamp,
    pub limit: usize,
}

/// The contract every backend keeps.
#[async_trait]
pub trait TrailStore: Send + Sync + 'static {
    /// Stores the points and returns only after the transaction holding them
    /// is committed. A point already stored (same driver, `ts` and `seq`) is
    /// skipped, so a resend stores nothing twice. Also advances each driver's
    /// last stored seq and last seen position.
    async fn append(&self, points: &[TrailPoint]) -> Result<(), StoreError>;

    /// Highest seq stored for the driver, 0 when none.
    async fn last_seq(&self, driver: &DriverId) -> Result<Seq, StoreError>;

    /// A driver's points in the query's range, oldest first, at most `limit`.
    async fn trail(&self, query: &TrailQuery) -> Result<Vec<TrailPoint>, StoreError>;

    /// Cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Drops data older than `retention_days`; returns how many partitions or rows went.
    async fn apply_retention(&self, retention_days: u32) -> Result<u64, StoreError>;

    /// "postgres" or "sqlite", for logs and metrics.
    fn backend(&self) -> &'static str;
}

/// Interim store while trails are not persisted yet: `ack` means "accepted in
/// memory". The durable backends replace it.
pub struct NullStore;

#[async_trait]
impl TrailStore for NullStore {
    async fn append(&self, _points: &[TrailPoint]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn last_seq(&self, _driver: &DriverId) -> Result<Seq, StoreError> {
        Ok(0)
    }
    async fn trail(&self, _query: &TrailQuery) -> Result<Vec<TrailPoint>, StoreError> {
        Ok(Vec::new())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn apply_retention(&self, _retention_days: u32) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn backend(&self) -> &'static str {
        "memory"
    }
}

pub async fn connect(
    _settings: &crate::config::Settings,
) -> anyhow::Result<std::sync::Arc<dyn TrailStore>> {
    Ok(std::sync::Arc::new(NullStore))
}
