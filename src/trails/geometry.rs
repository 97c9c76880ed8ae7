//! Trail geometry: the trip summary and the simplification of the line.

use geo::{Distance, Haversine, LineString, Point, SimplifyIdx};
use serde::Serialize;

use crate::domain::TrailPoint;

/// Mean Earth radius (m), for the local projection used by simplification.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// What a trail says about the trip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub points: usize,
    /// Along the fixes, great-circle (haversine) between consecutive ones.
    pub distance_m: f64,
    pub duration_s: f64,
    /// The highest speed the phone reported; when no fix carries a speed,
    /// the fastest segment (distance over time between fixes).
    pub max_speed_mps: f64,
    /// Distance over duration.
    pub avg_speed_mps: f64,
}

fn point_of(p: &TrailPoint) -> Point<f64> {
    Point::new(p.position.lon(), p.position.lat())
}

/// Summarises the trip described by `points` (oldest first).
pub fn summarize(points: &[TrailPoint]) -> Summary {
    let mut distance_m = 0.0;
    let mut fastest_segment: f64 = 0.0;
    for pair in points.windows(2) {
        let [a, b] = pair else { continue };
        let d = Haversine.distance(point_of(a), point_of(b));
        distance_m += d;
        let dt = (b.position.ts().as_millis() - a.position.ts().as_millis()) as f64 / 1000.0;
        if dt > 0.0 {
            fastest_segment = fastest_segment.max(d / dt);
        }
    }
    let duration_s = match (points.first(), points.last()) {
        (Some(a), Some(b)) => {
            (b.position.ts().as_millis() - a.position.ts().as_millis()) as f64 / 1000.0
        }
        _ => 0.0,
    };
    let reported = points
        .iter()
        .filter_map(|p| p.position.speed())
        .fold(None, |max: Option<f64>, s| {
            Some(max.map_or(s, |m| m.max(s)))
        });
    Summary {
        points: points.len(),
        distance_m,
        duration_s,
        max_speed_mps: reported.unwrap_or(fastest_segment),
        avg_speed_mps: if duration_s > 0.0 {
            distance_m / duration_s
        } else {
            0.0
        },
    }
}

/// Ramer–Douglas–Peucker with a tolerance in metres: the points are
/// projected to local metres (equirectangular around their mean latitude,
/// longitudes unwrapped across the antimeridian), simplified there, and the
/// kept points returned unchanged, timestamps and all. Exact enough for the
/// few kilometres a tolerance spans.
pub fn simplify(points: Vec<TrailPoint>, tolerance_m: f64) -> Vec<TrailPoint> {
    if points.len() < 3 || tolerance_m <= 0.0 {
        return points;
    }
    let line = project(&points);
    let keep = line.simplify_idx(tolerance_m);
    let mut keep = keep.into_iter().peekable();
    points
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.next_if_eq(i).is_some())
        .map(|(_, p)| p)
        .collect()
}

fn project(points: &[TrailPoint]) -> LineString<f64> {
    let mean_lat = points.iter().map(|p| p.position.lat()).sum::<f64>() / points.len() as f64;
    let x_scale = EARTH_RADIUS_M * mean_lat.to_radians().cos();
    let mut previous_lon: Option<f64> = None;
    let coords = points.iter().map(|p| {
        let mut lon = p.position.lon();
        if let Some(prev) = previous_lon {
            // Keep each step under 180°, so a crossing of the antimeridian
            // is a short hop and not a trip around the world.
            lon += 360.0 * ((prev - lon) / 360.0).round();
        }
        previous_lon = Some(lon);
        (
            lon.to_radians() * x_scale,
            p.position.lat().to_radians() * EARTH_RADIUS_M,
        )
    });
    LineString::from(coords.collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DriverId, FleetId, Position, Timestamp};

    fn fix(seq: u64, lat: f64, lon: f64, speed: Option<f64>) -> TrailPoint {
        TrailPoint {
            driver: DriverId::parse("d").unwrap(),
            fleet: FleetId::parse("f").unwrap(),
            seq,
            position: Position::new(
                lat,
                lon,
                Timestamp::from_millis(seq as i64 * 1000),
                speed,
                None,
                None,
            )
            .unwrap(),
            extras: Default::default(),
        }
    }

    /// About 11 m east per second, wobbling ±1.5 m north and south.
    fn noisy_line(n: u64) -> Vec<TrailPoint> {
        (0..n)
            .map(|i| {
                let wobble = if i % 2 == 0 { 0.0000135 } else { -0.0000135 };
                fix(i, -12.05 + wobble, -77.04 + i as f64 * 0.0001, None)
            })
            .collect()
    }

    #[test]
    fn a_noisy_straight_line_simplifies_to_its_ends() {
        let line = noisy_line(200);
        let simple = simplify(line.clone(), 10.0);
        assert_eq!(simple.len(), 2);
        assert_eq!(simple[0], line[0]);
        assert_eq!(simple[1], line[199]);
        // A tolerance below the noise keeps every point.
        assert_eq!(simplify(line, 0.5).len(), 200);
    }

    #[test]
    fn a_corner_survives_simplification() {
        let mut line: Vec<TrailPoint> = (0..10)
            .map(|i| fix(i, -12.05, -77.04 + i as f64 * 0.001, None))
            .collect();
        line.extend((10..20).map(|i| fix(i, -12.05 + (i - 9) as f64 * 0.001, -77.031, None)));
        let simple = simplify(line, 5.0);
        assert_eq!(
            simple.iter().map(|p| p.seq).collect::<Vec<_>>(),
            vec![0, 9, 19]
        );
    }

    #[test]
    fn simplification_works_across_the_antimeridian() {
        let line: Vec<TrailPoint> = (0..20)
            .map(|i| {
                let lon = 179.999 + i as f64 * 0.0001;
                fix(i, -16.0, if lon > 180.0 { lon - 360.0 } else { lon }, None)
            })
            .collect();
        assert_eq!(simplify(line, 5.0).len(), 2);
    }

    #[test]
    fn the_summary_measures_the_trip() {
        let line: Vec<TrailPoint> = (0..11)
            .map(|i| fix(i, 0.0, i as f64 * 0.001, None))
            .collect();
        let s = summarize(&line);
        assert_eq!(s.points, 11);
        assert!((s.distance_m - 1112.0).abs() < 2.0, "{}", s.distance_m);
        assert_eq!(s.duration_s, 10.0);
        assert!((s.avg_speed_mps - 111.2).abs() < 0.5);
        assert!(
            (s.max_speed_mps - 111.2).abs() < 0.5,
            "no reported speeds: segment speed"
        );
        let reported: Vec<TrailPoint> = (0..3)
            .map(|i| fix(i, 0.0, 0.0, Some(3.0 + i as f64)))
            .collect();
        assert_eq!(summarize(&reported).max_speed_mps, 5.0);
        assert_eq!(summarize(&[]).points, 0);
    }
}
