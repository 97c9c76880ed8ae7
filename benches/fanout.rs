//! The fan-out path: one position published against 1,000 dashboard
//! subscriptions, most of them looking elsewhere in the world.
//!
//! `cargo bench --bench fanout`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use fleethub::auth::FleetScope;
use fleethub::cluster::LocalBus;
use fleethub::domain::{BBox, DriverId, DriverKey, FleetId, Position, Timestamp};
use fleethub::live::spatial_index::SpatialIndex;
use fleethub::live::{LiveDrivers, Subscriptions};
use rand::{Rng, SeedableRng, rngs::StdRng};

const SUBSCRIPTIONS: usize = 1_000;
/// Dashboards whose viewport contains the published position.
const WATCHING: usize = 10;

fn random_viewport(rng: &mut StdRng) -> BBox {
    // City-sized viewports anywhere but Lima.
    loop {
        let w = rng.random_range(-179.0..179.0);
        let s = rng.random_range(-80.0..80.0);
        let size = rng.random_range(0.05..1.0);
        let b = BBox::new(w, s, (w + size).min(180.0), (s + size).min(90.0)).unwrap();
        if !b.contains(-12.05, -77.04) {
            return b;
        }
    }
}

fn lima_viewport(rng: &mut StdRng) -> BBox {
    let w = -77.2 + rng.random_range(-0.05..0.0);
    let s = -12.3 + rng.random_range(-0.05..0.0);
    BBox::new(w, s, -76.8, -11.9).unwrap()
}

/// The live drivers, publishing to dashboards through the local bus.
fn hub_with_subscriptions() -> (LiveDrivers, Arc<Subscriptions>) {
    let subscriptions = Arc::new(Subscriptions::new(64));
    let mut rng = StdRng::seed_from_u64(7);
    let fleet = FleetScope::One(FleetId::parse("acme").unwrap());
    for i in 0..SUBSCRIPTIONS {
        let dash = subscriptions.add_dashboard("dispatcher", fleet.clone());
        let bbox = if i < WATCHING {
            lima_viewport(&mut rng)
        } else {
            random_viewport(&mut rng)
        };
        subscriptions.subscribe(&dash, "view", bbox, 1).unwrap();
    }
    let bus = Arc::new(LocalBus::new(Arc::clone(&subscriptions)));
    (LiveDrivers::new(bus), subscriptions)
}

fn publish(c: &mut Criterion) {
    let (drivers, _dashboards) = hub_with_subscriptions();
    let driver = DriverKey::new(
        FleetId::parse("acme").unwrap(),
        DriverId::parse("d1").unwrap(),
    );
    let live = drivers.entry(&driver);
    let mut ts = Timestamp::now().as_millis();
    c.bench_function(
        "publish one position, 1000 subscriptions, 10 watching",
        |b| {
            b.iter(|| {
                ts += 1;
                let p = Position::new(
                    -12.05,
                    -77.04,
                    Timestamp::from_millis(ts),
                    Some(8.0),
                    Some(90.0),
                    None,
                )
                .unwrap();
                black_box(drivers.publish(&live, &p));
            })
        },
    );
}

fn lookup(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let boxes: Vec<BBox> = (0..SUBSCRIPTIONS)
        .map(|i| {
            if i < WATCHING {
                lima_viewport(&mut rng)
            } else {
                random_viewport(&mut rng)
            }
        })
        .collect();
    let mut index = SpatialIndex::new();
    for (i, b) in boxes.iter().enumerate() {
        index.insert(i as u64, "acme", *b, Arc::new(i));
    }
    let mut group = c.benchmark_group("match one point against 1000 boxes");
    group.bench_function("spatial index", |b| {
        b.iter(|| {
            let mut n = 0;
            index.for_each_match(&[&"acme"], black_box(-12.05), black_box(-77.04), |_| n += 1);
            black_box(n)
        })
    });
    group.bench_function("linear scan (baseline)", |b| {
        b.iter(|| {
            let n = boxes
                .iter()
                .filter(|bx| bx.contains(black_box(-12.05), black_box(-77.04)))
                .count();
            black_box(n)
        })
    });
    group.finish();
}

criterion_group!(benches, publish, lookup);
criterion_main!(benches);
