//! Geofences (issue #14, its foundation): areas of a fleet, each a GeoJSON
//! Feature: a Polygon, a circle (a Point with `properties.radius_m`) or a
//! corridor (a LineString with `properties.width_m`), with a `name` and
//! optionally a `speed_limit_kmh` and a `dwell_secs`.
//!
//! - [`fence`]: the domain type [`Geofence`], valid by construction, with
//!   its bounding box and its exact tests (`contains`, `intersects_segment`);
//! - [`feature`]: GeoJSON in (the validating constructor) and out;
//! - [`store`]: the `geofences` table of the trail database, the same SQL on
//!   both backends;
//! - [`index`]: every fleet's fences in memory, in an R-tree per fleet;
//! - [`api`]: the REST endpoints;
//! - [`sync`]: other nodes' changes, applied to this node's index.
//!
//! [`Geofences`] ties the store and the index together: the database is the
//! truth, the index a copy loaded at start-up, changed with every write
//! that goes through it and, through [`sync`], with every other node's.
//! Fixes are evaluated against the fences by [`crate::alerts`].

pub mod api;
pub mod feature;
pub mod fence;
pub mod index;
pub mod store;
pub mod sync;

use std::sync::Arc;

pub use feature::{FeatureCollection, FeatureError, FeatureRequest};
pub use fence::{FenceDef, FenceError, FenceId, FenceProps, FenceShape, Geofence};
pub use index::{FenceIndex, FleetFences};
pub use store::{GeofenceStore, Inserted, SqlGeofences};

use crate::cluster::ClusterBus;
use crate::domain::{FleetId, Timestamp};
use crate::metrics as m;
use crate::trails::{StoreError, TrailStore};

/// How many times a create draws a new random id when the one drawn is taken.
const ID_ATTEMPTS: usize = 3;

/// What a create did.
#[derive(Debug)]
pub enum Created {
    Fence(Geofence),
    /// The fleet has [`store::MAX_PER_FLEET`] fences already.
    FleetFull,
}

/// The fences of every fleet: kept in the trail database, held in memory.
pub struct Geofences {
    store: Arc<dyn TrailStore>,
    index: FenceIndex,
    /// Told of every change, for the other nodes.
    bus: Arc<dyn ClusterBus>,
    /// One write at a time on this node, from the database write to the
    /// index change: two writes to one fence cannot reach the index in the
    /// other order than they reached the database.
    writes: tokio::sync::Mutex<()>,
}

impl Geofences {
    /// Empty until [`Geofences::load`].
    pub fn new(store: Arc<dyn TrailStore>, bus: Arc<dyn ClusterBus>) -> Self {
        Self {
            store,
            index: FenceIndex::default(),
            bus,
            writes: tokio::sync::Mutex::new(()),
        }
    }

    /// The store, for reads (the API reads the database, the truth).
    pub fn store(&self) -> &dyn GeofenceStore {
        self.store.geofences()
    }

    /// The fences in memory, for what evaluates positions against them.
    pub fn index(&self) -> &FenceIndex {
        &self.index
    }

    /// Loads every fleet's fences into the index (start-up); returns how
    /// many. Whole, never cut at a list bound: a partial index would
    /// silently miss fences (each fleet is bounded by [`store::MAX_PER_FLEET`]).
    pub async fn load(&self) -> Result<usize, StoreError> {
        let _write = self.writes.lock().await;
        let all = self.store().list(None, usize::MAX).await?;
        let count = all.len();
        self.index.replace_all(all);
        m::geofences(self.index.len());
        Ok(count)
    }

    /// Creates a fence of `fleet` from a validated definition.
    pub async fn create(&self, fleet: FleetId, def: FenceDef) -> Result<Created, StoreError> {
        let _write = self.writes.lock().await;
        let now = Timestamp::now();
        for _ in 0..ID_ATTEMPTS {
            let fence = Geofence::new(FenceId::generate(), fleet.clone(), def.clone(), now, now);
            match self.store().insert(&fence).await? {
                Inserted::Done => {
                    self.index.upsert(fence.clone());
                    self.fleet_changed(&fleet);
                    return Ok(Created::Fence(fence));
                }
                Inserted::FleetFull => return Ok(Created::FleetFull),
                Inserted::IdTaken => continue,
            }
        }
        Err(StoreError::Unavailable(
            "no free geofence id after several random draws".to_owned(),
        ))
    }

    /// Replaces the definition of fence `id` of `fleet`, keeping its id,
    /// fleet and creation time; `None` when `fleet` has no such fence.
    pub async fn replace(
        &self,
        id: &FenceId,
        fleet: &FleetId,
        def: FenceDef,
    ) -> Result<Option<Geofence>, StoreError> {
        let _write = self.writes.lock().await;
        let now = Timestamp::now();
        let Some(created_at) = self.store().update(id, fleet, &def, now).await? else {
            return Ok(None);
        };
        let fence = Geofence::new(id.clone(), fleet.clone(), def, created_at, now);
        self.index.upsert(fence.clone());
        self.fleet_changed(fleet);
        Ok(Some(fence))
    }

    /// Deletes fence `id` of `fleet`; `false` when `fleet` has no such fence.
    pub async fn delete(&self, id: &FenceId, fleet: &FleetId) -> Result<bool, StoreError> {
        let _write = self.writes.lock().await;
        let deleted = self.store().delete(id, fleet).await?;
        if deleted {
            self.index.remove(fleet, id);
            self.fleet_changed(fleet);
        }
        Ok(deleted)
    }

    /// Reads `fleet`'s fences from the database into the index again: what
    /// a node does when told that another node changed them.
    pub async fn reload_fleet(&self, fleet: &FleetId) -> Result<usize, StoreError> {
        let _write = self.writes.lock().await;
        let fences = self.store().list(Some(fleet), usize::MAX).await?;
        let count = fences.len();
        self.index.replace_fleet(fleet, fences);
        m::geofences(self.index.len());
        Ok(count)
    }

    /// After every change of `fleet`'s fences made through this node (stored,
    /// and this node's index already changed): the other nodes are told,
    /// and reload them ([`sync`]).
    fn fleet_changed(&self, fleet: &FleetId) {
        m::geofences(self.index.len());
        self.bus.fences_changed(fleet);
    }
}
