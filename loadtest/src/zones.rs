//! Geofences for the fence benchmarks: random simple polygons over a city,
//! as the GeoJSON Features `POST /api/v1/geofences` takes. Each is
//! star-shaped around its centre (vertices at evenly spaced angles, each at
//! a random fraction of the radius), so it is always a valid, simple ring,
//! with the ragged outline of a hand-drawn zone.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::city::Bbox;

/// Metres per degree of latitude.
const M_PER_DEG: f64 = 111_195.0;

/// How zones are drawn.
#[derive(Debug, Clone, Copy)]
pub struct ZoneShape {
    /// Vertices of each ring (the closing one not counted).
    pub vertices: usize,
    /// Radius range, metres.
    pub min_radius_m: f64,
    pub max_radius_m: f64,
}

impl Default for ZoneShape {
    /// 50 vertices, 60 to 150 m: 10,000 of them cover a city the size of
    /// Lima about once over.
    fn default() -> Self {
        Self {
            vertices: 50,
            min_radius_m: 60.0,
            max_radius_m: 150.0,
        }
    }
}

/// `n` zones with centres uniform over `bbox`, the same for the same `seed`.
pub fn zones(n: usize, bbox: &Bbox, shape: ZoneShape, seed: u64) -> Vec<Value> {
    let mut rng = StdRng::seed_from_u64(seed);
    let [west, south, east, north] = bbox.to_array();
    (0..n)
        .map(|i| {
            let lat = rng.random_range(south..north);
            let lon = rng.random_range(west..east);
            let radius = rng.random_range(shape.min_radius_m..=shape.max_radius_m);
            zone(
                &mut rng,
                &format!("zone-{i}"),
                (lat, lon),
                radius,
                shape.vertices,
            )
        })
        .collect()
}

/// One star-shaped polygon around `centre` (lat, lon).
fn zone(rng: &mut StdRng, name: &str, centre: (f64, f64), radius_m: f64, vertices: usize) -> Value {
    let (lat, lon) = centre;
    let m_per_deg_lon = M_PER_DEG * lat.to_radians().cos();
    let mut ring: Vec<[f64; 2]> = (0..vertices.max(3))
        .map(|k| {
            let angle = std::f64::consts::TAU * k as f64 / vertices.max(3) as f64;
            let r = radius_m * rng.random_range(0.75..=1.0);
            [
                lon + r * angle.cos() / m_per_deg_lon,
                lat + r * angle.sin() / M_PER_DEG,
            ]
        })
        .collect();
    if let Some(first) = ring.first().copied() {
        ring.push(first);
    }
    json!({
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"name": name},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_closed_rings_of_the_asked_size_and_reproducible() {
        let lima = crate::city::City::lima().bbox;
        let a = zones(3, &lima, ZoneShape::default(), 7);
        let b = zones(3, &lima, ZoneShape::default(), 7);
        assert_eq!(a, b);
        let ring = a[0]["geometry"]["coordinates"][0].as_array().unwrap();
        assert_eq!(ring.len(), 51);
        assert_eq!(ring.first(), ring.last());
    }
}
