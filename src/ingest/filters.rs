//! Input filters: whether a valid fix is worth keeping at all, the way
//! Traccar users expect: exact duplicates, (0, 0) fixes, poor accuracy,
//! impossible jumps and, when enabled, fixes too close to the last one (the
//! AVL design's edge filter). Each fix is judged against its driver's newest
//! accepted fix, and only fixes newer than that one are judged by jump or
//! distance: a late fix (an offline buffer) says nothing about speed.
//! A filtered fix is acknowledged (the app must not resend it) but neither
//! shown nor stored.

use std::collections::HashMap;

use geo::{Distance, Haversine, Point};

use crate::config::{FilterRules, FilterSettings};
use crate::domain::{FleetId, Position, Seq};
use crate::live::LiveDriver;
use crate::live::drivers::Screened;

/// Why a fix was filtered, as the metric counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Duplicate,
    Zero,
    Accuracy,
    Speed,
    Distance,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Duplicate => "duplicate",
            Reason::Zero => "zero",
            Reason::Accuracy => "accuracy",
            Reason::Speed => "speed",
            Reason::Distance => "distance",
        }
    }
}

/// What the filters decided about one fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Dropped, with the reason it is counted under.
    Drop(Reason),
}

/// The configured input filters: the rules of every fleet, and of the
/// fleets with overrides.
#[derive(Debug)]
pub struct InputFilters {
    defaults: FilterRules,
    fleets: HashMap<FleetId, FilterRules>,
}

impl InputFilters {
    pub fn new(settings: &FilterSettings) -> Self {
        // Start-up validated the fleet names; one that does not parse could
        // match no driver anyway.
        let fleets = settings
            .fleet_rules()
            .filter_map(|(fleet, rules)| Some((FleetId::parse(fleet).ok()?, rules)))
            .collect();
        Self {
            defaults: settings.rules(),
            fleets,
        }
    }

    fn rules_for(&self, fleet: &FleetId) -> &FilterRules {
        self.fleets.get(fleet).unwrap_or(&self.defaults)
    }

    /// Judges `position`, the next fix of `driver`; a kept fix becomes the
    /// one the driver's next fixes are judged against, if it is the newest.
    pub fn check(&self, driver: &LiveDriver, seq: Seq, position: &Position) -> Verdict {
        let rules = self.rules_for(driver.key.fleet());
        if !any_on(rules) {
            return Verdict::Keep;
        }
        match driver.screen(seq, position, |last| judge(rules, last, seq, position)) {
            Ok(()) => Verdict::Keep,
            Err(reason) => Verdict::Drop(reason),
        }
    }
}

/// Whether any filter is on: with none, a fix needs no judging (nor the
/// driver's lock).
fn any_on(rules: &FilterRules) -> bool {
    rules.duplicates
        || rules.zero
        || rules.max_accuracy_m > 0.0
        || rules.max_speed_kmh > 0.0
        || rules.min_distance_m > 0.0
}

fn point(p: &Position) -> Point<f64> {
    Point::new(p.lon(), p.lat())
}

/// Judges `fix` (under `seq`) by `rules`, given the driver's newest accepted fix `last`.
fn judge(
    rules: &FilterRules,
    last: Option<&Screened>,
    seq: Seq,
    fix: &Position,
) -> Result<(), Reason> {
    if rules.zero && fix.lat() == 0.0 && fix.lon() == 0.0 {
        return Err(Reason::Zero);
    }
    if rules.max_accuracy_m > 0.0 && fix.acc().is_some_and(|acc| acc > rules.max_accuracy_m) {
        return Err(Reason::Accuracy);
    }
    let Some(Screened {
        seq: last_seq,
        position: last,
    }) = last
    else {
        return Ok(());
    };
    let same_place = fix.lat() == last.lat() && fix.lon() == last.lon();
    // Under its own seq it is a resend (shown, perhaps never stored: a
    // database outage), which the trail deduplicates; only a new seq
    // carrying the same fix is a duplicate.
    if rules.duplicates && fix.ts() == last.ts() && same_place && seq != *last_seq {
        return Err(Reason::Duplicate);
    }
    // Equal times give no speed, and a late fix is no jump from the newest.
    let elapsed_ms = fix.ts().as_millis().saturating_sub(last.ts().as_millis());
    if elapsed_ms <= 0 {
        return Ok(());
    }
    let metres = Haversine.distance(point(last), point(fix));
    if rules.max_speed_kmh > 0.0 {
        let kmh = metres / (elapsed_ms as f64 / 1000.0) * 3.6;
        if kmh > rules.max_speed_kmh {
            return Err(Reason::Speed);
        }
    }
    if rules.min_distance_m > 0.0 && metres < rules.min_distance_m {
        return Err(Reason::Distance);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;

    /// A fix kept under seq 1 (the fixes judged against it come under 2).
    fn kept(position: Position) -> Screened {
        Screened { seq: 1, position }
    }

    /// A new seq for each fix of a test.
    fn seq() -> Seq {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
    use crate::cluster::LocalBus;
    use crate::config::FleetFilterSettings;
    use crate::domain::{DriverKey, Timestamp};
    use crate::live::{LiveDrivers, Subscriptions};

    const T0: i64 = 1_700_000_000_000;
    /// About 111 m of latitude.
    const DEG_111_M: f64 = 0.001;

    fn fix(ts: i64, lat: f64, lon: f64, acc: Option<f64>) -> Position {
        Position::new(lat, lon, Timestamp::from_millis(ts), None, None, acc).expect("a valid fix")
    }

    fn at(ts: i64, lat: f64) -> Position {
        fix(ts, lat, 13.4, None)
    }

    fn rules() -> FilterRules {
        FilterRules {
            duplicates: false,
            zero: false,
            max_accuracy_m: 0.0,
            max_speed_kmh: 0.0,
            min_distance_m: 0.0,
        }
    }

    fn settings(rules: FilterRules) -> FilterSettings {
        FilterSettings {
            duplicates: rules.duplicates,
            zero: rules.zero,
            max_accuracy_m: rules.max_accuracy_m,
            max_speed_kmh: rules.max_speed_kmh,
            min_distance_m: rules.min_distance_m,
            fleets: BTreeMap::new(),
        }
    }

    fn driver(fleet: &str) -> Arc<LiveDriver> {
        let subscriptions = Arc::new(Subscriptions::new(64));
        let drivers = LiveDrivers::new(Arc::new(LocalBus::new(subscriptions)));
        drivers.entry(&DriverKey::of(fleet, "d1"))
    }

    #[test]
    fn with_every_filter_off_anything_valid_is_kept() {
        let last = at(T0, 52.5);
        for f in [fix(T0, 0.0, 0.0, None), last, at(T0 + 1, 60.0)] {
            assert_eq!(judge(&rules(), Some(&kept(last)), 2, &f), Ok(()));
        }
    }

    #[test]
    fn a_new_fix_with_the_time_and_place_of_the_last_is_a_duplicate() {
        let r = FilterRules {
            duplicates: true,
            ..rules()
        };
        let last = at(T0, 52.5);
        assert_eq!(
            judge(&r, Some(&kept(last)), 2, &last),
            Err(Reason::Duplicate)
        );
        // Another place at the same time, or the same place later: kept.
        assert_eq!(judge(&r, Some(&kept(last)), 2, &at(T0, 52.6)), Ok(()));
        assert_eq!(
            judge(&r, Some(&kept(last)), 2, &at(T0 + 1000, 52.5)),
            Ok(())
        );
        assert_eq!(judge(&r, None, 2, &last), Ok(()), "the first fix");
        // The same fix under its own seq is a resend (after a database
        // outage it was shown but never stored): kept, the trail dedups it.
        assert_eq!(judge(&r, Some(&kept(last)), 1, &last), Ok(()), "a resend");
    }

    #[test]
    fn a_zero_zero_fix_is_dropped_but_the_equator_and_meridian_are_not() {
        let r = FilterRules {
            zero: true,
            ..rules()
        };
        assert_eq!(
            judge(&r, None, 2, &fix(T0, 0.0, 0.0, None)),
            Err(Reason::Zero)
        );
        assert_eq!(judge(&r, None, 2, &fix(T0, 0.0, 13.4, None)), Ok(()));
        assert_eq!(judge(&r, None, 2, &fix(T0, 52.5, 0.0, None)), Ok(()));
    }

    #[test]
    fn a_fix_worse_than_the_accuracy_threshold_is_dropped() {
        let r = FilterRules {
            max_accuracy_m: 50.0,
            ..rules()
        };
        let worse = fix(T0, 52.5, 13.4, Some(50.5));
        assert_eq!(judge(&r, None, 2, &worse), Err(Reason::Accuracy));
        assert_eq!(judge(&r, None, 2, &fix(T0, 52.5, 13.4, Some(50.0))), Ok(()));
        assert_eq!(judge(&r, None, 2, &at(T0, 52.5)), Ok(()), "no acc: kept");
    }

    #[test]
    fn an_impossible_jump_from_the_newest_fix_is_dropped_a_late_fix_is_not() {
        let r = FilterRules {
            max_speed_kmh: 200.0,
            ..rules()
        };
        let last = at(T0, 52.5);
        // 111 m in 1 s is about 400 km/h; in 4 s, about 100 km/h.
        let jump = at(T0 + 1000, 52.5 + DEG_111_M);
        assert_eq!(judge(&r, Some(&kept(last)), 2, &jump), Err(Reason::Speed));
        assert_eq!(
            judge(&r, Some(&kept(last)), 2, &at(T0 + 4000, 52.5 + DEG_111_M)),
            Ok(())
        );
        // Same time elsewhere, and a late fix far away: not judged by jump.
        assert_eq!(judge(&r, Some(&kept(last)), 2, &at(T0, 52.6)), Ok(()));
        assert_eq!(
            judge(&r, Some(&kept(last)), 2, &at(T0 - 1000, 53.5)),
            Ok(())
        );
    }

    #[test]
    fn a_newer_fix_closer_than_the_minimum_distance_is_dropped() {
        let r = FilterRules {
            min_distance_m: 50.0,
            ..rules()
        };
        let last = at(T0, 52.5);
        let near = at(T0 + 10_000, 52.5 + DEG_111_M / 4.0);
        assert_eq!(
            judge(&r, Some(&kept(last)), 2, &near),
            Err(Reason::Distance)
        );
        let far = at(T0 + 10_000, 52.5 + DEG_111_M);
        assert_eq!(judge(&r, Some(&kept(last)), 2, &far), Ok(()));
        assert_eq!(
            judge(&r, Some(&kept(last)), 2, &at(T0 - 1000, 52.5)),
            Ok(()),
            "late"
        );
    }

    #[test]
    fn the_driver_is_judged_against_its_newest_kept_fix() {
        let filters = InputFilters::new(&settings(FilterRules {
            duplicates: true,
            max_speed_kmh: 200.0,
            ..rules()
        }));
        let d = driver("acme");
        let first = at(T0, 52.5);
        assert_eq!(filters.check(&d, seq(), &first), Verdict::Keep);
        assert_eq!(
            filters.check(&d, seq(), &first),
            Verdict::Drop(Reason::Duplicate)
        );
        // A jump is dropped and does not become the basis: the next fix near
        // the first is judged against the first.
        let jump = at(T0 + 1000, 53.5);
        assert_eq!(
            filters.check(&d, seq(), &jump),
            Verdict::Drop(Reason::Speed)
        );
        let next = at(T0 + 2000, 52.5001);
        assert_eq!(filters.check(&d, seq(), &next), Verdict::Keep);
        // A late fix is kept and leaves the newest as the basis.
        assert_eq!(
            filters.check(&d, seq(), &at(T0 - 5000, 52.4)),
            Verdict::Keep
        );
        assert_eq!(
            filters.check(&d, seq(), &next),
            Verdict::Drop(Reason::Duplicate)
        );
    }

    #[test]
    fn a_fleet_override_replaces_only_the_keys_it_sets() {
        let mut s = settings(FilterRules {
            zero: true,
            ..rules()
        });
        s.fleets.insert(
            "acme".into(),
            FleetFilterSettings {
                min_distance_m: Some(50.0),
                ..Default::default()
            },
        );
        let filters = InputFilters::new(&s);
        let zero = fix(T0, 0.0, 0.0, None);
        let (acme, beta) = (driver("acme"), driver("beta"));
        for d in [&acme, &beta] {
            assert_eq!(filters.check(d, seq(), &zero), Verdict::Drop(Reason::Zero));
            assert_eq!(filters.check(d, seq(), &at(T0, 52.5)), Verdict::Keep);
        }
        let near = at(T0 + 10_000, 52.5001);
        assert_eq!(
            filters.check(&acme, seq(), &near),
            Verdict::Drop(Reason::Distance)
        );
        assert_eq!(filters.check(&beta, seq(), &near), Verdict::Keep);
    }
}
