//! A deterministic vehicle: it drives a street grid laid over the city box,
//! from one delivery stop to the next, and reports GPS fixes with noise.
//!
//! The model is deliberately simple but looks right on a map: streets run
//! north-south and east-west every [`BLOCK_M`] metres, a route between two
//! stops is a staircase of a few turns, each street has its own cruising speed
//! (5–15 m/s) and the vehicle parks for a while at every stop. Everything comes
//! from one seeded RNG per vehicle, so `(seed, index)` replays the same trip.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::city::{Bbox, City};

/// Distance between two parallel streets.
pub const BLOCK_M: f64 = 120.0;
/// Cruising speeds, m/s (18–54 km/h: city traffic).
pub const MIN_SPEED: f64 = 5.0;
pub const MAX_SPEED: f64 = 15.0;
/// Standard deviation of the GPS noise added to reported positions, metres.
pub const GPS_SIGMA_M: f64 = 3.0;
/// How long a delivery stop lasts, seconds.
const STOP_SECS: (f64, f64) = (5.0, 60.0);
const METRES_PER_DEG_LAT: f64 = 111_320.0;

/// One GPS fix as the phone would report it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    pub lat: f64,
    pub lon: f64,
    /// m/s; 0 while parked.
    pub speed: f64,
    /// Degrees clockwise from north, in [0, 360).
    pub heading: f64,
    /// Claimed accuracy, metres.
    pub acc: f64,
}

/// Local flat frame: metres east (`x`) and north (`y`) of the box's south-west corner.
#[derive(Debug, Clone, Copy)]
struct Grid {
    bbox: Bbox,
    metres_per_deg_lon: f64,
    width_m: f64,
    height_m: f64,
    block_m: f64,
    /// Intersections along each axis (at least 2).
    nx: u32,
    ny: u32,
    /// Offset of the first street, so the grid sits centred inside the box.
    x0: f64,
    y0: f64,
}

impl Grid {
    fn new(bbox: Bbox) -> Self {
        let mid_lat = (bbox.south + bbox.north) / 2.0;
        let metres_per_deg_lon = METRES_PER_DEG_LAT * mid_lat.to_radians().cos().max(0.01);
        let width_m = bbox.width() * metres_per_deg_lon;
        let height_m = bbox.height() * METRES_PER_DEG_LAT;
        // Small boxes get a finer grid so there are always a few streets, and
        // a margin keeps the GPS noise from crossing the edge too often.
        let block_m = BLOCK_M.min(width_m.min(height_m) / 6.0);
        let count = |extent: f64| ((extent - 2.0 * block_m) / block_m).floor().max(1.0) as u32 + 1;
        let (nx, ny) = (count(width_m), count(height_m));
        let x0 = (width_m - f64::from(nx - 1) * block_m) / 2.0;
        let y0 = (height_m - f64::from(ny - 1) * block_m) / 2.0;
        Self {
            bbox,
            metres_per_deg_lon,
            width_m,
            height_m,
            block_m,
            nx,
            ny,
            x0,
            y0,
        }
    }

    fn point(&self, ix: u32, iy: u32) -> (f64, f64) {
        (
            self.x0 + f64::from(ix) * self.block_m,
            self.y0 + f64::from(iy) * self.block_m,
        )
    }

    /// Metres → degrees, clamped into the box (the noise may push a fix out).
    fn lat_lon_of(&self, x: f64, y: f64) -> (f64, f64) {
        let x = x.clamp(0.0, self.width_m);
        let y = y.clamp(0.0, self.height_m);
        let lat = (self.bbox.south + y / METRES_PER_DEG_LAT).min(self.bbox.north);
        let mut lon = self.bbox.west + x / self.metres_per_deg_lon;
        if lon > 180.0 {
            lon -= 360.0;
        }
        (lat, lon)
    }
}

/// What the vehicle is doing now.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Parked at a stop for this many more seconds.
    Parked { remaining: f64 },
    /// Driving towards `route[next]` at `cruise` m/s.
    Driving { cruise: f64 },
}

/// One simulated vehicle. `advance` moves it and returns the fix to report.
#[derive(Debug, Clone)]
pub struct Vehicle {
    grid: Grid,
    rng: StdRng,
    /// Current grid intersection indices (the last corner passed).
    at: (u32, u32),
    x: f64,
    y: f64,
    heading: f64,
    speed: f64,
    /// Corners still to reach, the last one being the stop.
    route: Vec<(u32, u32)>,
    next: usize,
    phase: Phase,
}

/// Mixes the run seed with the vehicle's index (SplitMix64), so vehicles differ
/// but each one is reproducible on its own.
fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Vehicle {
    /// Vehicle number `index` of a run seeded with `seed`.
    pub fn new(city: &City, seed: u64, index: u64) -> Self {
        let grid = Grid::new(city.bbox);
        let mut rng = StdRng::seed_from_u64(mix(seed, index));
        let at = (rng.random_range(0..grid.nx), rng.random_range(0..grid.ny));
        let (x, y) = grid.point(at.0, at.1);
        // Start part-way through a stop so a fleet does not depart in lockstep.
        let remaining = rng.random_range(0.0..STOP_SECS.1);
        Self {
            grid,
            rng,
            at,
            x,
            y,
            heading: 0.0,
            speed: 0.0,
            route: Vec::new(),
            next: 0,
            phase: Phase::Parked { remaining },
        }
    }

    /// The noiseless position (lat, lon).
    pub fn true_position(&self) -> (f64, f64) {
        self.grid.lat_lon_of(self.x, self.y)
    }

    /// True while the vehicle is driving (not parked at a stop).
    pub fn is_moving(&self) -> bool {
        matches!(self.phase, Phase::Driving { .. })
    }

    /// Moves the vehicle `dt` seconds forward and returns the fix it reports.
    pub fn advance(&mut self, dt: f64) -> Fix {
        let mut left = dt.max(0.0);
        // Loop because one step may finish a stop and start driving, or pass
        // several corners; each pass consumes some of `left`.
        while left > 1e-9 {
            left = match self.phase {
                Phase::Parked { remaining } => self.park(remaining, left),
                Phase::Driving { cruise } => self.drive(cruise, left),
            };
        }
        self.fix()
    }

    fn park(&mut self, remaining: f64, left: f64) -> f64 {
        self.speed = 0.0;
        if remaining > left {
            self.phase = Phase::Parked {
                remaining: remaining - left,
            };
            return 0.0;
        }
        self.plan_route();
        left - remaining
    }

    fn drive(&mut self, cruise: f64, left: f64) -> f64 {
        let Some(&target) = self.route.get(self.next) else {
            self.arrive();
            return left;
        };
        // Traffic: the speed wanders a little around the street's cruise speed.
        let jitter = self.rng.random_range(-0.5..0.5);
        self.speed = (cruise + jitter).clamp(MIN_SPEED, MAX_SPEED);
        let (tx, ty) = self.grid.point(target.0, target.1);
        let (dx, dy) = (tx - self.x, ty - self.y);
        let dist = dx.hypot(dy);
        if dist > 1e-9 {
            self.heading = bearing(dx, dy);
        }
        let reach = self.speed * left;
        if reach < dist {
            self.x += dx / dist * reach;
            self.y += dy / dist * reach;
            return 0.0;
        }
        // Corner reached: snap to it and take the next street.
        (self.x, self.y) = (tx, ty);
        self.at = target;
        self.next += 1;
        self.phase = Phase::Driving {
            cruise: self.rng.random_range(MIN_SPEED..=MAX_SPEED),
        };
        left - dist / self.speed
    }

    fn arrive(&mut self) {
        self.speed = 0.0;
        self.route.clear();
        self.next = 0;
        self.phase = Phase::Parked {
            remaining: self.rng.random_range(STOP_SECS.0..STOP_SECS.1),
        };
    }

    /// Picks the next stop and a staircase of corners leading to it.
    fn plan_route(&mut self) {
        let grid = self.grid;
        let mut stop = self.at;
        while stop == self.at {
            stop = (
                self.rng.random_range(0..grid.nx),
                self.rng.random_range(0..grid.ny),
            );
        }
        self.route.clear();
        self.next = 0;
        let turns = self.rng.random_range(1..=3u32);
        let mut cur = self.at;
        let mut along_x = self.rng.random_bool(0.5);
        for leg in 0..turns * 2 {
            let last_pair = leg + 2 >= turns * 2;
            cur = if along_x {
                (self.step_towards(cur.0, stop.0, last_pair), cur.1)
            } else {
                (cur.0, self.step_towards(cur.1, stop.1, last_pair))
            };
            if self.route.last() != Some(&cur) && cur != self.at {
                self.route.push(cur);
            }
            along_x = !along_x;
        }
        self.phase = Phase::Driving {
            cruise: self.rng.random_range(MIN_SPEED..=MAX_SPEED),
        };
    }

    /// An intermediate street between `from` and `to` (or `to` itself on the last legs).
    fn step_towards(&mut self, from: u32, to: u32, finish: bool) -> u32 {
        if finish || from == to {
            return to;
        }
        let (lo, hi) = (from.min(to), from.max(to));
        self.rng.random_range(lo..=hi)
    }

    fn fix(&mut self) -> Fix {
        let (nx, ny) = (gaussian(&mut self.rng), gaussian(&mut self.rng));
        let (lat, lon) = self
            .grid
            .lat_lon_of(self.x + nx * GPS_SIGMA_M, self.y + ny * GPS_SIGMA_M);
        let acc = (GPS_SIGMA_M * self.rng.random_range(1.2..2.5)).round();
        Fix {
            lat,
            lon,
            speed: round_to(self.speed, 2),
            heading: round_to(self.heading, 1) % 360.0,
            acc,
        }
    }
}

/// Degrees clockwise from north of a displacement (`dx` east, `dy` north).
pub fn bearing(dx: f64, dy: f64) -> f64 {
    dx.atan2(dy).to_degrees().rem_euclid(360.0)
}

/// Standard normal sample (Box–Muller), without pulling in `rand_distr`.
fn gaussian(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn round_to(v: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (v * p).round() / p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metres(a: (f64, f64), b: (f64, f64), city: &City) -> (f64, f64) {
        let mid = (city.bbox.south + city.bbox.north) / 2.0;
        let dx = (b.1 - a.1) * METRES_PER_DEG_LAT * mid.to_radians().cos();
        let dy = (b.0 - a.0) * METRES_PER_DEG_LAT;
        (dx, dy)
    }

    #[test]
    fn same_seed_same_trip_other_seed_other_trip() {
        let city = City::lima();
        let run = |seed, idx| {
            let mut v = Vehicle::new(&city, seed, idx);
            (0..500).map(|_| v.advance(1.0)).collect::<Vec<_>>()
        };
        assert_eq!(run(42, 7), run(42, 7));
        assert_ne!(run(42, 7), run(43, 7));
        assert_ne!(run(42, 7), run(42, 8));
    }

    #[test]
    fn speeds_stay_in_city_range_while_moving() {
        let city = City::paris();
        for idx in 0..20 {
            let mut v = Vehicle::new(&city, 1, idx);
            let mut prev = v.true_position();
            for _ in 0..2_000 {
                let fix = v.advance(1.0);
                let now = v.true_position();
                let (dx, dy) = metres(prev, now, &city);
                // The chord can be shorter than the path (corners), never longer.
                assert!(dx.hypot(dy) <= MAX_SPEED + 0.5, "jumped {} m", dx.hypot(dy));
                if v.is_moving() {
                    assert!(
                        (MIN_SPEED..=MAX_SPEED).contains(&fix.speed),
                        "{}",
                        fix.speed
                    );
                }
                prev = now;
            }
        }
    }

    #[test]
    fn vehicles_park_at_stops() {
        let mut v = Vehicle::new(&City::lima(), 9, 0);
        let fixes: Vec<Fix> = (0..3_000).map(|_| v.advance(1.0)).collect();
        assert!(fixes.iter().any(|f| f.speed == 0.0));
        assert!(fixes.iter().filter(|f| f.speed > 0.0).count() > 500);
    }

    #[test]
    fn heading_follows_displacement() {
        let city = City::lima();
        let (mut straight, mut agree) = (0, 0);
        for idx in 0..20 {
            let mut v = Vehicle::new(&city, 5, idx);
            let mut prev = v.true_position();
            for _ in 0..1_000 {
                let fix = v.advance(1.0);
                let now = v.true_position();
                let (dx, dy) = metres(prev, now, &city);
                prev = now;
                if fix.speed == 0.0 || dx.hypot(dy) < 2.0 {
                    continue;
                }
                let diff = angle_diff(bearing(dx, dy), fix.heading);
                // A turn inside the step bends the chord, at most by the turn.
                assert!(
                    diff <= 90.5,
                    "heading {} vs bearing diff {diff}",
                    fix.heading
                );
                straight += 1;
                if diff < 2.0 {
                    agree += 1;
                }
            }
        }
        assert!(agree * 10 >= straight * 8, "{agree} of {straight}");
    }

    #[test]
    fn fixes_stay_inside_the_city() {
        for city in City::presets() {
            for idx in 0..10 {
                let mut v = Vehicle::new(&city, 3, idx);
                for _ in 0..3_000 {
                    let f = v.advance(1.0);
                    assert!(city.bbox.contains(f.lat, f.lon), "{f:?} outside {city}");
                    assert!((0.0..360.0).contains(&f.heading));
                }
            }
        }
    }

    #[test]
    fn antimeridian_city_wraps_longitudes() {
        let city = City::from_bbox("fiji", Bbox::new(179.9, -17.0, -179.9, -16.9).unwrap());
        let mut v = Vehicle::new(&city, 2, 0);
        for _ in 0..2_000 {
            let f = v.advance(1.0);
            assert!(city.bbox.contains(f.lat, f.lon), "{f:?}");
        }
    }

    fn angle_diff(a: f64, b: f64) -> f64 {
        let d = (a - b).rem_euclid(360.0);
        d.min(360.0 - d)
    }
}
