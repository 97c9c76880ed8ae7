//! Which subscriptions a position touches, without looking at the others.
//!
//! Subscriptions are boxes. Each box is filed under the grid cells it covers,
//! at the finest of a few cell sizes where it covers at most
//! [`MAX_CELLS_PER_BOX`] cells; boxes larger than that at every level (a whole
//! continent, the world) go to a short "global" list. A lookup probes one cell
//! per level, so its cost depends on the subscriptions near the point, never on
//! the number of dashboards looking elsewhere. Boxes are also partitioned by
//! fleet scope, so one fleet's dispatchers cost nothing to another fleet's drivers.

use std::collections::HashMap;
use std::hash::Hash;

use crate::domain::BBox;

/// Cell edge in degrees, finest first. 0.02° is about 2 km at the equator.
const LEVELS: [f64; 4] = [0.02, 0.2, 2.0, 20.0];
/// A box is filed at the first level where it covers no more cells than this.
pub const MAX_CELLS_PER_BOX: usize = 64;

/// Identifies one subscription inside the index.
pub type SubKey = u64;

type Cell = (i32, i32);

struct Entry<T> {
    key: SubKey,
    bbox: BBox,
    value: T,
}

/// Where a subscription was filed, so removal touches only its own cells.
struct Placement<S> {
    scope: S,
    level: Option<usize>,
    cells: Vec<Cell>,
}

struct Grid<T> {
    levels: [HashMap<Cell, Vec<Entry<T>>>; LEVELS.len()],
    global: Vec<Entry<T>>,
}

impl<T> Default for Grid<T> {
    fn default() -> Self {
        Self {
            levels: std::array::from_fn(|_| HashMap::new()),
            global: Vec::new(),
        }
    }
}

impl<T> Grid<T> {
    fn is_empty(&self) -> bool {
        self.global.is_empty() && self.levels.iter().all(HashMap::is_empty)
    }
}

/// The index, generic over the scope (fleet or "all") and the value filed.
pub struct SpatialIndex<S, T> {
    grids: HashMap<S, Grid<T>>,
    placements: HashMap<SubKey, Placement<S>>,
}

impl<S: Eq + Hash + Clone, T: Clone> Default for SpatialIndex<S, T> {
    fn default() -> Self {
        Self::new()
    }
}

fn cell_of(lat: f64, lon: f64, size: f64) -> Cell {
    let x = ((lon + 180.0) / size).floor() as i32;
    let y = ((lat + 90.0) / size).floor() as i32;
    (x, y)
}

/// The cells a box covers at one cell size, or `None` when they are too many.
fn cells_for(bbox: &BBox, size: f64) -> Option<Vec<Cell>> {
    let (_, y0) = cell_of(bbox.south(), 0.0, size);
    let (_, y1) = cell_of(bbox.north(), 0.0, size);
    let mut cells = Vec::new();
    for (west, east) in bbox.lon_spans() {
        let (x0, _) = cell_of(0.0, west, size);
        let (x1, _) = cell_of(0.0, east, size);
        let count = (x1 - x0 + 1) as usize * (y1 - y0 + 1) as usize;
        if cells.len() + count > MAX_CELLS_PER_BOX {
            return None;
        }
        for x in x0..=x1 {
            for y in y0..=y1 {
                cells.push((x, y));
            }
        }
    }
    Some(cells)
}

impl<S: Eq + Hash + Clone, T: Clone> SpatialIndex<S, T> {
    pub fn new() -> Self {
        Self {
            grids: HashMap::new(),
            placements: HashMap::new(),
        }
    }

    /// Files `value` under `bbox` for points of `scope`. A key already present is replaced.
    pub fn insert(&mut self, key: SubKey, scope: S, bbox: BBox, value: T) {
        self.remove(key);
        let grid = self.grids.entry(scope.clone()).or_default();
        let found = LEVELS
            .iter()
            .enumerate()
            .find_map(|(level, size)| cells_for(&bbox, *size).map(|cells| (level, cells)));
        let placement = match found {
            Some((level, cells)) => {
                for cell in &cells {
                    grid.levels[level].entry(*cell).or_default().push(Entry {
                        key,
                        bbox,
                        value: value.clone(),
                    });
                }
                Placement {
                    scope,
                    level: Some(level),
                    cells,
                }
            }
            None => {
                grid.global.push(Entry { key, bbox, value });
                Placement {
                    scope,
                    level: None,
                    cells: Vec::new(),
                }
            }
        };
        self.placements.insert(key, placement);
    }

    /// Removes a subscription; empty cells and grids are dropped with it.
    pub fn remove(&mut self, key: SubKey) -> bool {
        let Some(placement) = self.placements.remove(&key) else {
            return false;
        };
        let Some(grid) = self.grids.get_mut(&placement.scope) else {
            return true;
        };
        match placement.level {
            Some(level) => {
                for cell in &placement.cells {
                    if let Some(entries) = grid.levels[level].get_mut(cell) {
                        entries.retain(|e| e.key != key);
                        if entries.is_empty() {
                            grid.levels[level].remove(cell);
                        }
                    }
                }
            }
            None => grid.global.retain(|e| e.key != key),
        }
        if grid.is_empty() {
            self.grids.remove(&placement.scope);
        }
        true
    }

    /// Calls `f` once per subscription of one of `scopes` whose box contains the point.
    pub fn for_each_match(&self, scopes: &[&S], lat: f64, lon: f64, mut f: impl FnMut(&T)) {
        for scope in scopes {
            let Some(grid) = self.grids.get(*scope) else {
                continue;
            };
            for (level, size) in LEVELS.iter().enumerate() {
                if let Some(entries) = grid.levels[level].get(&cell_of(lat, lon, *size)) {
                    entries
                        .iter()
                        .filter(|e| e.bbox.contains(lat, lon))
                        .for_each(|e| f(&e.value));
                }
            }
            grid.global
                .iter()
                .filter(|e| e.bbox.contains(lat, lon))
                .for_each(|e| f(&e.value));
        }
    }

    pub fn len(&self) -> usize {
        self.placements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.placements.is_empty()
    }

    /// How many (cell, subscription) entries exist: the index's memory, for tests.
    pub fn filed_entries(&self) -> usize {
        self.grids
            .values()
            .map(|g| {
                g.global.len()
                    + g.levels
                        .iter()
                        .flat_map(|l| l.values())
                        .map(Vec::len)
                        .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bbox(w: f64, s: f64, e: f64, n: f64) -> BBox {
        BBox::new(w, s, e, n).unwrap()
    }

    fn matches(
        index: &SpatialIndex<&'static str, u64>,
        scope: &'static str,
        lat: f64,
        lon: f64,
    ) -> Vec<u64> {
        let mut out = Vec::new();
        index.for_each_match(&[&scope], lat, lon, |v| out.push(*v));
        out.sort();
        out
    }

    #[test]
    fn a_point_matches_only_the_boxes_that_contain_it() {
        let mut index = SpatialIndex::new();
        index.insert(1, "acme", bbox(-77.2, -12.3, -76.8, -11.9), 1);
        index.insert(2, "acme", bbox(-77.05, -12.1, -77.0, -12.0), 2);
        index.insert(3, "acme", bbox(2.2, 48.8, 2.5, 48.9), 3);
        assert_eq!(matches(&index, "acme", -12.05, -77.04), vec![1, 2]);
        assert_eq!(matches(&index, "acme", -12.25, -76.9), vec![1]);
        assert_eq!(matches(&index, "acme", 48.85, 2.35), vec![3]);
        assert!(matches(&index, "acme", 0.0, 0.0).is_empty());
    }

    #[test]
    fn scopes_keep_fleets_apart() {
        let mut index = SpatialIndex::new();
        index.insert(1, "acme", bbox(-78.0, -13.0, -76.0, -11.0), 1);
        index.insert(2, "zeta", bbox(-78.0, -13.0, -76.0, -11.0), 2);
        assert_eq!(matches(&index, "acme", -12.0, -77.0), vec![1]);
        let mut both = Vec::new();
        index.for_each_match(&[&"acme", &"zeta"], -12.0, -77.0, |v| both.push(*v));
        assert_eq!(both.len(), 2);
    }

    #[test]
    fn the_world_and_continents_are_found_too() {
        let mut index = SpatialIndex::new();
        index.insert(1, "all", BBox::world(), 1);
        index.insert(2, "all", bbox(-120.0, -60.0, -30.0, 15.0), 2);
        assert_eq!(matches(&index, "all", -12.0, -77.0), vec![1, 2]);
        assert_eq!(matches(&index, "all", 48.0, 2.0), vec![1]);
    }

    #[test]
    fn boxes_across_the_antimeridian_match_on_both_sides() {
        let mut index = SpatialIndex::new();
        index.insert(1, "f", bbox(179.5, -18.5, -179.5, -17.5), 1);
        assert_eq!(matches(&index, "f", -18.0, 179.9), vec![1]);
        assert_eq!(matches(&index, "f", -18.0, -179.9), vec![1]);
        assert!(matches(&index, "f", -18.0, 0.0).is_empty());
    }

    #[test]
    fn points_on_the_edges_of_the_world_do_not_fall_outside_the_grid() {
        let mut index = SpatialIndex::new();
        index.insert(1, "f", bbox(170.0, 80.0, 180.0, 90.0), 1);
        assert_eq!(matches(&index, "f", 90.0, 180.0), vec![1]);
        index.insert(2, "f", bbox(-180.0, -90.0, -170.0, -80.0), 2);
        assert_eq!(matches(&index, "f", -90.0, -180.0), vec![2]);
    }

    #[test]
    fn replacing_and_removing_leave_no_entries_behind() {
        let mut index = SpatialIndex::new();
        index.insert(1, "f", bbox(-77.2, -12.3, -76.8, -11.9), 1);
        index.insert(1, "f", bbox(2.2, 48.8, 2.5, 48.9), 1);
        assert!(matches(&index, "f", -12.05, -77.04).is_empty());
        assert_eq!(matches(&index, "f", 48.85, 2.35), vec![1]);
        assert!(index.remove(1));
        assert!(!index.remove(1));
        assert_eq!(index.filed_entries(), 0);
        assert!(index.grids.is_empty());
    }

    #[test]
    fn no_box_is_filed_under_more_than_the_cell_cap() {
        let mut index = SpatialIndex::new();
        for (i, size) in [0.01, 0.3, 1.7, 9.0, 45.0, 300.0].iter().enumerate() {
            let half: f64 = size / 2.0;
            let b = bbox(
                -half.min(180.0),
                -(half.min(90.0)),
                half.min(180.0),
                half.min(90.0),
            );
            index.insert(i as u64, "f", b, i as u64);
        }
        for p in index.placements.values() {
            assert!(p.cells.len() <= MAX_CELLS_PER_BOX);
        }
        // The origin lies in every box.
        assert_eq!(matches(&index, "f", 0.0, 0.0).len(), 6);
    }
}
