//! Names of the cluster's Redis channels and keys, and which position
//! channels a node needs for the regions its dashboards watch.
//!
//! Positions travel on one channel per fleet and grid cell, so a node hears
//! only the fleets and places its dashboards look at. Every name that belongs
//! to a fleet carries the fleet in a hash tag (`{...}`): on a Redis Cluster a
//! fleet's keys live on one shard, and a cell's channel on one shard.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::domain::{BBox, FleetId};
use crate::live::IndexScope;

/// A grid cell: `(floor(lon / cell_deg), floor(lat / cell_deg))`.
pub type Cell = (i32, i32);

/// The channels a node should listen to, and the fleets it watches wide.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    pub channels: BTreeSet<String>,
    pub wide: BTreeSet<FleetId>,
}

#[derive(Debug, Clone)]
pub struct Channels {
    prefix: String,
    cell_deg: f64,
    max_cells: usize,
}

impl Channels {
    /// `cell_deg` is positive and `max_cells` at least one (checked by the settings).
    pub fn new(prefix: &str, cell_deg: f64, max_cells: usize) -> Self {
        Self {
            prefix: prefix.to_owned(),
            cell_deg,
            max_cells: max_cells.max(1),
        }
    }

    pub fn cell_of(&self, lat: f64, lon: f64) -> Cell {
        // Coordinates are validated, so the casts cannot saturate.
        (
            (lon / self.cell_deg).floor() as i32,
            (lat / self.cell_deg).floor() as i32,
        )
    }

    /// A fleet's channel for one cell.
    pub fn position(&self, fleet: &FleetId, (x, y): Cell) -> String {
        format!("{}:pos:{{{fleet}:{x}:{y}}}", self.prefix)
    }

    /// A fleet's wide channel: every position of the fleet, published only
    /// while some node watches the fleet wide.
    pub fn wide(&self, fleet: &FleetId) -> String {
        format!("{}:pos:{{{fleet}}}", self.prefix)
    }

    /// Heartbeats' companions: takeovers, new incarnations, wide interests.
    pub fn control(&self) -> String {
        format!("{}:ctl", self.prefix)
    }

    /// A node's own probe channel, which it publishes to and must hear back.
    pub fn probe(&self, node: &str) -> String {
        format!("{}:probe:{{{node}}}", self.prefix)
    }

    /// A fleet's last known positions, as a geospatial index.
    pub fn geo_key(&self, fleet: &FleetId) -> String {
        format!("{}:geo:{{{fleet}}}", self.prefix)
    }

    /// A fleet's last known driver records (driver → JSON).
    pub fn drivers_key(&self, fleet: &FleetId) -> String {
        format!("{}:drv:{{{fleet}}}", self.prefix)
    }

    /// A fleet's drivers by last-seen time, for expiry.
    pub fn seen_key(&self, fleet: &FleetId) -> String {
        format!("{}:seen:{{{fleet}}}", self.prefix)
    }

    /// A fleet's driver owners (driver → "epoch incarnation node").
    pub fn owners_key(&self, fleet: &FleetId) -> String {
        format!("{}:own:{{{fleet}}}", self.prefix)
    }

    /// A fleet's ownership epochs (driver → counter).
    pub fn epochs_key(&self, fleet: &FleetId) -> String {
        format!("{}:epoch:{{{fleet}}}", self.prefix)
    }

    /// Fleets with live drivers (fleet → last write, ms).
    pub fn fleets_key(&self) -> String {
        format!("{}:fleets", self.prefix)
    }

    /// Live nodes (node → "incarnation beat").
    pub fn nodes_key(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Wide interests ("fleet node" → expiry, ms).
    pub fn wide_key(&self) -> String {
        format!("{}:wide", self.prefix)
    }

    /// The cells covering `bbox`, or `None` when there are more than `max_cells`.
    pub fn cells(&self, bbox: &BBox) -> Option<Vec<Cell>> {
        let (_, south) = self.cell_of(bbox.south(), 0.0);
        let (_, north) = self.cell_of(bbox.north(), 0.0);
        let mut cells = Vec::new();
        for (west, east) in bbox.lon_spans() {
            let (w, _) = self.cell_of(0.0, west);
            let (e, _) = self.cell_of(0.0, east);
            let count =
                (i64::from(e) - i64::from(w) + 1) * (i64::from(north) - i64::from(south) + 1);
            if cells.len() as i64 + count > self.max_cells as i64 {
                return None;
            }
            for x in w..=e {
                cells.extend((south..=north).map(|y| (x, y)));
            }
        }
        Some(cells)
    }

    /// The channels for `regions`. An all-fleet region (an admin's) stands
    /// for each of `fleets`. A fleet that would need more than `max_cells`
    /// cells is watched wide, through its one wide channel.
    pub fn wanted<'a>(
        &self,
        regions: impl IntoIterator<Item = (&'a IndexScope, &'a BBox)>,
        fleets: &[FleetId],
    ) -> Wanted {
        let mut cells: HashMap<&FleetId, Option<HashSet<Cell>>> = HashMap::new();
        for (scope, bbox) in regions {
            let region_fleets = match scope {
                IndexScope::Fleet(f) => std::slice::from_ref(f),
                IndexScope::All => fleets,
            };
            let region_cells = self.cells(bbox);
            for fleet in region_fleets {
                let entry = cells.entry(fleet).or_insert_with(|| Some(HashSet::new()));
                *entry = match (entry.take(), &region_cells) {
                    (Some(mut set), Some(more)) if set.len() + more.len() <= 2 * self.max_cells => {
                        set.extend(more.iter().copied());
                        Some(set).filter(|s| s.len() <= self.max_cells)
                    }
                    _ => None,
                };
            }
        }
        let mut wanted = Wanted::default();
        for (fleet, cells) in cells {
            match cells {
                Some(cells) => {
                    let names = cells.into_iter().map(|c| self.position(fleet, c));
                    wanted.channels.extend(names);
                }
                None => {
                    wanted.channels.insert(self.wide(fleet));
                    wanted.wide.insert(fleet.clone());
                }
            }
        }
        wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(f: &str) -> FleetId {
        FleetId::parse(f).expect("a valid fleet")
    }

    fn lima() -> BBox {
        BBox::new(-77.2, -12.3, -76.8, -12.1).expect("a valid box")
    }

    #[test]
    fn a_city_is_a_cell_or_two_and_names_carry_the_fleet_as_hash_tag() {
        let channels = Channels::new("fh", 1.0, 64);
        assert_eq!(channels.cell_of(-12.05, -77.04), (-78, -13));
        let cells = channels.cells(&lima()).expect("few cells");
        assert_eq!(cells, vec![(-78, -13), (-77, -13)]);
        assert_eq!(
            channels.position(&fleet("acme"), (-78, -13)),
            "fh:pos:{acme:-78:-13}"
        );
        assert_eq!(channels.wide(&fleet("acme")), "fh:pos:{acme}");
        assert_eq!(channels.drivers_key(&fleet("acme")), "fh:drv:{acme}");
    }

    #[test]
    fn a_box_over_the_antimeridian_covers_both_sides() {
        let channels = Channels::new("fh", 1.0, 64);
        let bbox = BBox::new(179.5, 0.2, -179.5, 0.8).expect("a valid box");
        let cells = channels.cells(&bbox).expect("few cells");
        assert_eq!(cells, vec![(179, 0), (180, 0), (-180, 0)]);
    }

    #[test]
    fn admins_stand_for_every_fleet_and_large_views_go_wide() {
        let channels = Channels::new("fh", 1.0, 64);
        let (acme, beta) = (fleet("acme"), fleet("beta"));
        let city = lima();
        let world = BBox::world();
        let regions = [
            (IndexScope::Fleet(acme.clone()), city),
            (IndexScope::All, city),
        ];
        let wanted = channels.wanted(
            regions.iter().map(|(s, b)| (s, b)),
            &[acme.clone(), beta.clone()],
        );
        assert_eq!(wanted.channels.len(), 4, "{wanted:?}");
        assert!(wanted.wide.is_empty());

        let regions = [(IndexScope::Fleet(acme.clone()), world)];
        let wanted = channels.wanted(regions.iter().map(|(s, b)| (s, b)), &[beta]);
        assert_eq!(
            wanted.channels,
            BTreeSet::from(["fh:pos:{acme}".to_owned()])
        );
        assert_eq!(wanted.wide, BTreeSet::from([acme]));
    }

    #[test]
    fn no_region_wants_nothing() {
        let channels = Channels::new("fh", 1.0, 64);
        let none: [(IndexScope, BBox); 0] = [];
        assert_eq!(
            channels.wanted(none.iter().map(|(s, b)| (s, b)), &[]),
            Wanted::default()
        );
    }
}
