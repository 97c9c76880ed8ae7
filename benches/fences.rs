//! Fence evaluation alone, on one core: fixes per second through the alert
//! engine (`DriverState::evaluate`: the R-tree's candidates for the fix and
//! for the segment from the driver's previous fix, then the exact tests,
//! enter / exit / cross / dwell) with 0, 1,000 and 10,000 polygon fences of
//! 50 vertices over Lima, the zones `loadtest/src/zones.rs` draws for the
//! end-to-end benchmark. 300 drivers drive straight lines across the city at
//! 36 km/h, one fix a second each, evaluated in turn as the trail store's
//! commits do.
//!
//! `cargo bench --bench fences`. The end-to-end figure, with the database,
//! is `loadtest/fences-bench.sh` (BENCHMARKS.md).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use fleethub::alerts::{AlertRules, Context, DriverState};
use fleethub::domain::{DriverId, FixExtras, FleetId, Position, Timestamp, TrailPoint};
use fleethub::geofences::{FenceDef, FenceId, FleetFences, Geofence};
use loadtest::city::City;
use loadtest::zones::{ZoneShape, zones};

const DRIVERS: usize = 300;
const FIXES_PER_DRIVER: usize = 200;
const M_PER_DEG: f64 = 111_195.0;

fn fences(n: usize) -> FleetFences {
    let fleet = FleetId::parse("bench").expect("fleet");
    let lima = City::lima().bbox;
    let fences = zones(n, &lima, ZoneShape::default(), 42)
        .into_iter()
        .map(|feature| {
            let def = FenceDef::from_feature(feature.to_string().as_bytes())
                .expect("a valid zone")
                .def;
            let at = Timestamp::from_millis(0);
            Arc::new(Geofence::new(
                FenceId::generate(),
                fleet.clone(),
                def,
                at,
                at,
            ))
        })
        .collect();
    FleetFences::new(fences)
}

/// Each driver's fixes: from a point of the city, 10 m a second in its own direction.
fn tracks() -> Vec<Vec<TrailPoint>> {
    let [west, south, east, north] = City::lima().bbox.to_array();
    let fleet = FleetId::parse("bench").expect("fleet");
    let t0 = 1_700_000_000_000;
    (0..DRIVERS)
        .map(|d| {
            let driver = DriverId::parse(&format!("d{d}")).expect("driver");
            let f = d as f64 / DRIVERS as f64;
            let (lat0, lon0) = (
                south + (north - south) * f,
                west + (east - west) * (1.0 - f),
            );
            let heading = std::f64::consts::TAU * f * 7.0;
            (0..FIXES_PER_DRIVER)
                .map(|k| {
                    let metres = 10.0 * k as f64;
                    let lat = lat0 + metres * heading.sin() / M_PER_DEG;
                    let lon = lon0 + metres * heading.cos() / (M_PER_DEG * lat0.to_radians().cos());
                    let ts = Timestamp::from_millis(t0 + k as i64 * 1000);
                    TrailPoint {
                        driver: driver.clone(),
                        fleet: fleet.clone(),
                        seq: k as u64 + 1,
                        position: Position::new(lat, lon, ts, Some(10.0), None, None)
                            .expect("a valid fix"),
                        extras: FixExtras::default(),
                    }
                })
                .collect()
        })
        .collect()
}

fn evaluation(c: &mut Criterion) {
    let tracks = tracks();
    let rules = AlertRules::default();
    let mut group = c.benchmark_group("fence_evaluation");
    group.throughput(Throughput::Elements((DRIVERS * FIXES_PER_DRIVER) as u64));
    group.sample_size(20);
    for n in [0, 1_000, 10_000] {
        let index = fences(n);
        group.bench_function(format!("{n}_fences"), |b| {
            b.iter(|| {
                let ctx = Context {
                    fences: Some(&index),
                    rules: &rules,
                };
                let mut states = vec![DriverState::default(); DRIVERS];
                let mut raised = 0;
                for k in 0..FIXES_PER_DRIVER {
                    for (d, state) in states.iter_mut().enumerate() {
                        raised += state.evaluate(&tracks[d][k], ctx).len();
                    }
                }
                black_box(raised)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
