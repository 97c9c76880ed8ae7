//! The fences in memory: per fleet, an R-tree of their bounding boxes
//! ([`FleetFences`]), for "which fences of this fleet may hold this point, or
//! meet this move" without testing them all; the exact tests then decide.
//!
//! Reads are cheap and never wait on a rebuild: a fleet's fences are one
//! immutable `Arc<FleetFences>`, which a reader clones out of the map under
//! a read lock held for that clone only. A change builds the fleet's new
//! tree aside, then swaps it in under the write lock (one map insert).
//! Changes are serialized among themselves, so none is lost between the
//! copy and the swap.

use std::collections::HashMap;
use std::sync::Arc;

use geo::Point;
use parking_lot::{Mutex, RwLock};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RTree};

use super::fence::{FenceId, Geofence};
use crate::domain::FleetId;

/// A fence's box in the tree, with the fence's place in [`FleetFences::fences`].
type Entry = GeomWithData<Rectangle<[f64; 2]>, usize>;

/// One fleet's fences and their R-tree. Immutable: a change makes a new one.
#[derive(Debug, Default)]
pub struct FleetFences {
    fences: Vec<Arc<Geofence>>,
    tree: RTree<Entry>,
    /// A fence's place in `fences`, by id: the evaluation looks up the
    /// fences a driver was inside, and a scan would cost a whole fleet's
    /// fences per exit.
    by_id: HashMap<FenceId, usize>,
}

impl FleetFences {
    pub fn new(fences: Vec<Arc<Geofence>>) -> Self {
        let entries = fences
            .iter()
            .enumerate()
            .map(|(i, fence)| {
                let bbox = fence.bbox();
                GeomWithData::new(Rectangle::from_corners(bbox.lower(), bbox.upper()), i)
            })
            .collect();
        let by_id = fences
            .iter()
            .enumerate()
            .map(|(i, fence)| (fence.id().clone(), i))
            .collect();
        Self {
            fences,
            tree: RTree::bulk_load(entries),
            by_id,
        }
    }

    /// The fence with this id, if the fleet has it.
    pub fn get(&self, id: &str) -> Option<&Arc<Geofence>> {
        let id = FenceId::parse(id)?;
        self.by_id.get(&id).and_then(|&i| self.fences.get(i))
    }

    pub fn fences(&self) -> &[Arc<Geofence>] {
        &self.fences
    }

    pub fn len(&self) -> usize {
        self.fences.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fences.is_empty()
    }

    /// The fences whose box meets `envelope` (`[lon, lat]` corners): every
    /// fence that can hold a point of it, and maybe a few more.
    pub fn candidates<'a>(
        &'a self,
        envelope: &AABB<[f64; 2]>,
    ) -> impl Iterator<Item = &'a Arc<Geofence>> + use<'a> {
        self.tree
            .locate_in_envelope_intersecting(envelope)
            .filter_map(|entry| self.fences.get(entry.data))
    }

    /// The fences that hold `point` (`x` = lon, `y` = lat).
    pub fn containing(&self, point: Point<f64>) -> impl Iterator<Item = &Arc<Geofence>> {
        let envelope = AABB::from_point([point.x(), point.y()]);
        self.candidates(&envelope)
            .filter(move |fence| fence.contains(point))
    }

    /// The fences the move from `a` to `b` touches, even with neither end inside.
    pub fn crossed_by(&self, a: Point<f64>, b: Point<f64>) -> impl Iterator<Item = &Arc<Geofence>> {
        let envelope = AABB::from_corners([a.x(), a.y()], [b.x(), b.y()]);
        self.candidates(&envelope)
            .filter(move |fence| fence.intersects_segment(a, b))
    }
}

/// Every fleet's fences.
#[derive(Debug, Default)]
pub struct FenceIndex {
    fleets: RwLock<HashMap<FleetId, Arc<FleetFences>>>,
    /// Serializes changes: each copies a fleet's fences, changes the copy
    /// and swaps it in.
    changes: Mutex<()>,
}

impl FenceIndex {
    /// The fences of `fleet`, `None` when it has none.
    pub fn fleet(&self, fleet: &FleetId) -> Option<Arc<FleetFences>> {
        self.fleets.read().get(fleet).cloned()
    }

    /// How many fences all fleets have.
    pub fn len(&self) -> usize {
        self.fleets.read().values().map(|f| f.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.fleets.read().is_empty()
    }

    /// Replaces every fleet's fences (start-up).
    pub fn replace_all(&self, fences: impl IntoIterator<Item = Geofence>) {
        let mut by_fleet: HashMap<FleetId, Vec<Arc<Geofence>>> = HashMap::new();
        for fence in fences {
            by_fleet
                .entry(fence.fleet().clone())
                .or_default()
                .push(Arc::new(fence));
        }
        let built = by_fleet
            .into_iter()
            .map(|(fleet, fences)| (fleet, Arc::new(FleetFences::new(fences))))
            .collect();
        let _change = self.changes.lock();
        *self.fleets.write() = built;
    }

    /// Replaces one fleet's fences (a reload of that fleet).
    pub fn replace_fleet(&self, fleet: &FleetId, fences: Vec<Geofence>) {
        let _change = self.changes.lock();
        self.swap(fleet, fences.into_iter().map(Arc::new).collect());
    }

    /// Adds the fence, or replaces the one of its fleet with its id.
    pub fn upsert(&self, fence: Geofence) {
        let _change = self.changes.lock();
        let fleet = fence.fleet().clone();
        let mut fences = self.copy_of(&fleet);
        fences.retain(|f| f.id() != fence.id());
        fences.push(Arc::new(fence));
        self.swap(&fleet, fences);
    }

    /// Removes the fence of `fleet` with this id, if it is there.
    pub fn remove(&self, fleet: &FleetId, id: &FenceId) {
        let _change = self.changes.lock();
        let mut fences = self.copy_of(fleet);
        fences.retain(|f| f.id() != id);
        self.swap(fleet, fences);
    }

    fn copy_of(&self, fleet: &FleetId) -> Vec<Arc<Geofence>> {
        self.fleet(fleet)
            .map(|f| f.fences().to_vec())
            .unwrap_or_default()
    }

    /// Builds the fleet's tree outside the write lock, then swaps it in; a
    /// fleet left without fences leaves the map.
    fn swap(&self, fleet: &FleetId, fences: Vec<Arc<Geofence>>) {
        if fences.is_empty() {
            self.fleets.write().remove(fleet);
            return;
        }
        let built = Arc::new(FleetFences::new(fences));
        self.fleets.write().insert(fleet.clone(), built);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;
    use crate::geofences::fence::FenceDef;
    use serde_json::json;

    fn fence(fleet: &str, geometry: serde_json::Value, props: serde_json::Value) -> Geofence {
        let feature = json!({"type":"Feature","geometry":geometry,"properties":props});
        let def = FenceDef::from_feature(feature.to_string().as_bytes())
            .unwrap()
            .def;
        Geofence::new(
            FenceId::generate(),
            FleetId::parse(fleet).unwrap(),
            def,
            Timestamp::from_millis(0),
            Timestamp::from_millis(0),
        )
    }

    fn square(fleet: &str, w: f64, s: f64, size: f64) -> Geofence {
        let (e, n) = (w + size, s + size);
        fence(
            fleet,
            json!({"type":"Polygon","coordinates":[[[w,s],[e,s],[e,n],[w,n],[w,s]]]}),
            json!({"name":"square"}),
        )
    }

    fn names(fences: Vec<&Arc<Geofence>>) -> Vec<String> {
        let mut ids: Vec<String> = fences.iter().map(|f| f.id().to_string()).collect();
        ids.sort();
        ids
    }

    fn acme() -> FleetId {
        FleetId::parse("acme").unwrap()
    }

    #[test]
    fn candidates_are_the_fences_whose_box_meets_the_envelope() {
        let index = FenceIndex::default();
        let near = square("acme", 13.0, 52.0, 0.1);
        let far = square("acme", 20.0, 40.0, 0.1);
        let near_id = near.id().to_string();
        index.replace_all([near, far, square("beta", 13.0, 52.0, 0.1)]);
        let acme = index.fleet(&acme()).unwrap();
        assert_eq!(acme.len(), 2);
        let envelope = AABB::from_corners([12.9, 51.9], [13.05, 52.05]);
        assert_eq!(names(acme.candidates(&envelope).collect()), [near_id]);
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn exact_tests_decide_among_candidates() {
        let index = FenceIndex::default();
        // A triangle: its box holds (13.09, 52.09), the triangle does not.
        let triangle = fence(
            "acme",
            json!({"type":"Polygon","coordinates":[[[13.0,52.0],[13.1,52.0],[13.0,52.1],[13.0,52.0]]]}),
            json!({"name":"triangle"}),
        );
        let circle = fence(
            "acme",
            json!({"type":"Point","coordinates":[13.5,52.5]}),
            json!({"name":"depot","radius_m":100}),
        );
        index.replace_all([triangle, circle]);
        let acme = index.fleet(&acme()).unwrap();
        let outside = Point::new(13.09, 52.09);
        assert_eq!(
            acme.candidates(&AABB::from_point([13.09, 52.09])).count(),
            1
        );
        assert_eq!(acme.containing(outside).count(), 0);
        assert_eq!(acme.containing(Point::new(13.01, 52.01)).count(), 1);
        assert_eq!(acme.containing(Point::new(13.5, 52.5005)).count(), 1);
        assert_eq!(acme.containing(Point::new(13.5, 52.502)).count(), 0);
    }

    #[test]
    fn a_move_across_a_small_fence_finds_it() {
        let index = FenceIndex::default();
        index.upsert(square("acme", 13.400, 52.500, 0.001));
        let acme = index.fleet(&acme()).unwrap();
        let (a, b) = (Point::new(13.39, 52.5005), Point::new(13.41, 52.5005));
        assert_eq!(acme.containing(a).count() + acme.containing(b).count(), 0);
        assert_eq!(acme.crossed_by(a, b).count(), 1);
        assert_eq!(acme.crossed_by(a, Point::new(13.39, 52.6)).count(), 0);
    }

    #[test]
    fn changes_replace_a_fleet_wholesale_and_readers_keep_their_copy() {
        let index = FenceIndex::default();
        let fence = square("acme", 13.0, 52.0, 0.1);
        let id = fence.id().clone();
        index.upsert(fence);
        let before = index.fleet(&acme()).unwrap();
        index.upsert(square("acme", 14.0, 52.0, 0.1));
        assert_eq!(before.len(), 1, "a reader's copy does not change");
        assert_eq!(index.fleet(&acme()).unwrap().len(), 2);
        index.remove(&acme(), &id);
        assert_eq!(index.fleet(&acme()).unwrap().len(), 1);
        index.replace_fleet(&acme(), Vec::new());
        assert!(index.fleet(&acme()).is_none());
        assert!(index.is_empty());
    }
}
