//! The evaluation of a driver's fixes against its fleet's fences and rules:
//! pure, synchronous, with the driver's [`DriverState`] as the only memory.
//! The caller loads the state, evaluates the driver's new fixes in fix-time
//! order, and stores the state back with the events in one transaction
//! ([`super::persist`]), so a restart, a takeover or a resent batch resumes
//! exactly where the last commit left off.
//!
//! Rules of the game:
//! - a fix no newer than the newest evaluated one (fix time, then seq) is a
//!   late fix: it raises nothing and changes nothing (but an SOS, which is
//!   raised whatever its order: a button pressed offline still matters);
//! - fences: the R-tree narrows the fences to those whose box meets the fix
//!   (enter, exit) or the segment from the previous fix (cross), then the
//!   exact tests decide. `geofence_cross` is a fence the segment passed
//!   through with neither end inside;
//! - episodes (inside a fence, above the speed limit, stopped) start at the
//!   fix that opens them and raise their event once, at the first fix that
//!   proves them long enough.

use std::collections::BTreeMap;

use geo::{Distance, Haversine, Point};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::event::{Event, EventFix, EventKind};
use super::rules::AlertRules;
use crate::domain::{Seq, TrailPoint};
use crate::geofences::{FleetFences, Geofence};

/// A stop ends when the driver moves more than this from where it stopped...
const STOP_RADIUS_M: f64 = 50.0;
/// ...or reports more than this speed.
const STOP_MAX_KMH: f64 = 5.0;
/// A speed is derived from two fixes only when they are this close in time
/// (farther apart, the straight line says little about the speed driven).
const DERIVED_SPEED_MAX_GAP_MS: i64 = 120_000;
/// Low battery clears only this many points above the limit, so a level
/// hovering at the limit raises it once.
const BATTERY_HYSTERESIS_PCT: f64 = 5.0;

/// The newest fix evaluated for a driver.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LastFix {
    pub ts: i64,
    pub seq: Seq,
    pub lat: f64,
    pub lon: f64,
}

/// A fence the driver is inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inside {
    /// Fix time of the fix that entered.
    pub since: i64,
    #[serde(default)]
    pub dwell_sent: bool,
}

/// An open episode (above the speed limit, stopped): since when, and
/// whether its event is raised already.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub since: i64,
    pub sent: bool,
    /// Where a stop began (unused for speeding).
    #[serde(default)]
    pub lat: f64,
    #[serde(default)]
    pub lon: f64,
}

/// What the evaluation remembers of a driver between fixes, besides the
/// last fix (stored as JSON; unknown fields from a newer hub are ignored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateBody {
    #[serde(default)]
    pub inside: BTreeMap<String, Inside>,
    #[serde(default)]
    pub speeding: Option<Episode>,
    #[serde(default)]
    pub stop: Option<Episode>,
    #[serde(default)]
    pub battery_low: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct DriverState {
    pub last: Option<LastFix>,
    pub body: StateBody,
}

/// What a driver's fixes are held to: its fleet's fences and rules.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub fences: Option<&'a FleetFences>,
    pub rules: &'a AlertRules,
}

impl DriverState {
    /// Evaluates `point`, the driver's next fix, updating the state; returns
    /// what it raised, in order.
    pub fn evaluate(&mut self, point: &TrailPoint, ctx: Context<'_>) -> Vec<Event> {
        let mut raised = Raised::new(point);
        if point.extras.sos {
            raised.push(EventKind::Sos, None, json!({}));
        }
        let fix = LastFix {
            ts: point.position.ts().as_millis(),
            seq: point.seq,
            lat: point.position.lat(),
            lon: point.position.lon(),
        };
        if self
            .last
            .is_some_and(|last| (fix.ts, fix.seq) <= (last.ts, last.seq))
        {
            return raised.events;
        }
        let inside_now = self.fences(&fix, ctx.fences, &mut raised);
        let speed = self.speed_kmh(point, &fix);
        self.overspeed(&fix, speed, &inside_now, ctx.rules, &mut raised);
        self.idle(&fix, speed, ctx.rules, &mut raised);
        self.battery(point, ctx.rules, &mut raised);
        self.last = Some(fix);
        raised.events
    }

    /// Enter, exit, cross and dwell; returns the fences the fix is inside.
    fn fences<'f>(
        &mut self,
        fix: &LastFix,
        fences: Option<&'f FleetFences>,
        raised: &mut Raised,
    ) -> Vec<&'f Geofence> {
        let here = Point::new(fix.lon, fix.lat);
        let inside_now: Vec<&Geofence> = fences
            .map(|f| f.containing(here).map(|g| g.as_ref()).collect())
            .unwrap_or_default();
        let is_inside_now = |id: &str| inside_now.iter().any(|g| g.id().as_str() == id);
        let was_inside: Vec<String> = self.body.inside.keys().cloned().collect();
        // Exits first, in fence order. A fence deleted meanwhile is let go
        // silently: it cannot be left.
        let left: Vec<String> = self
            .body
            .inside
            .keys()
            .filter(|id| !is_inside_now(id))
            .cloned()
            .collect();
        for id in left {
            self.body.inside.remove(&id);
            if let Some(fence) = fences.and_then(|f| find(f, &id)) {
                raised.fence(EventKind::GeofenceExit, fence, json!({}));
            }
        }
        if let (Some(last), Some(all)) = (self.last, fences) {
            let from = Point::new(last.lon, last.lat);
            for fence in all.crossed_by(from, here) {
                let id = fence.id().as_str();
                if !is_inside_now(id) && !was_inside.iter().any(|w| w == id) {
                    let from = json!({"ts": last.ts, "lat": last.lat, "lon": last.lon});
                    raised.fence(EventKind::GeofenceCross, fence, json!({ "from": from }));
                }
            }
        }
        for fence in &inside_now {
            let id = fence.id().as_str();
            match self.body.inside.get_mut(id) {
                None => {
                    let entered = Inside {
                        since: fix.ts,
                        dwell_sent: false,
                    };
                    self.body.inside.insert(id.to_owned(), entered);
                    raised.fence(EventKind::GeofenceEnter, fence, json!({}));
                }
                Some(inside) => {
                    let Some(dwell) = fence.props().dwell_secs else {
                        continue;
                    };
                    let secs = (fix.ts - inside.since) / 1000;
                    if !inside.dwell_sent && secs >= dwell as i64 {
                        inside.dwell_sent = true;
                        let details = json!({"since": inside.since, "secs": secs});
                        raised.fence(EventKind::GeofenceDwell, fence, details);
                    }
                }
            }
        }
        inside_now
    }

    /// The speed the app reported, else the one between the last fix and
    /// this one when they are close in time.
    fn speed_kmh(&self, point: &TrailPoint, fix: &LastFix) -> Option<f64> {
        if let Some(mps) = point.position.speed() {
            return Some(mps * 3.6);
        }
        let last = self.last?;
        let gap = fix.ts - last.ts;
        if gap <= 0 || gap > DERIVED_SPEED_MAX_GAP_MS {
            return None;
        }
        let metres = distance_m(last.lat, last.lon, fix.lat, fix.lon);
        Some(metres / (gap as f64 / 1000.0) * 3.6)
    }

    fn overspeed(
        &mut self,
        fix: &LastFix,
        speed: Option<f64>,
        inside: &[&Geofence],
        rules: &AlertRules,
        raised: &mut Raised,
    ) {
        // The strictest fence limit where the driver is, else the fleet's.
        let zone = inside
            .iter()
            .filter_map(|g| g.props().speed_limit_kmh.map(|l| (l, *g)))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let limit = zone.map(|(l, _)| l).or(rules.overspeed_kmh());
        let (Some(limit), Some(speed)) = (limit, speed) else {
            self.body.speeding = None;
            return;
        };
        if speed <= limit {
            self.body.speeding = None;
            return;
        }
        let episode = self.body.speeding.get_or_insert(Episode {
            since: fix.ts,
            sent: false,
            lat: fix.lat,
            lon: fix.lon,
        });
        if episode.sent || fix.ts - episode.since < rules.overspeed_min_ms() {
            return;
        }
        episode.sent = true;
        let details = json!({
            "speed_kmh": (speed * 10.0).round() / 10.0,
            "limit_kmh": limit,
            "since": episode.since,
        });
        match zone {
            Some((_, fence)) => raised.fence(EventKind::Overspeed, fence, details),
            None => raised.push(EventKind::Overspeed, None, details),
        }
    }

    fn idle(&mut self, fix: &LastFix, speed: Option<f64>, rules: &AlertRules, raised: &mut Raised) {
        let Some(after) = rules.idle_after_ms() else {
            self.body.stop = None;
            return;
        };
        let fresh = Episode {
            since: fix.ts,
            sent: false,
            lat: fix.lat,
            lon: fix.lon,
        };
        let stop = self.body.stop.get_or_insert(fresh);
        let moved = distance_m(stop.lat, stop.lon, fix.lat, fix.lon) > STOP_RADIUS_M
            || speed.is_some_and(|s| s > STOP_MAX_KMH);
        if moved {
            *stop = fresh;
            return;
        }
        if !stop.sent && fix.ts - stop.since >= after {
            stop.sent = true;
            let secs = (fix.ts - stop.since) / 1000;
            raised.push(
                EventKind::Idle,
                None,
                json!({"since": stop.since, "secs": secs}),
            );
        }
    }

    fn battery(&mut self, point: &TrailPoint, rules: &AlertRules, raised: &mut Raised) {
        let (Some(limit), Some(level)) = (rules.low_battery_pct(), point.extras.battery) else {
            return;
        };
        if level <= limit && !self.body.battery_low {
            self.body.battery_low = true;
            raised.push(EventKind::LowBattery, None, json!({"battery_pct": level}));
        } else if level > limit + BATTERY_HYSTERESIS_PCT {
            self.body.battery_low = false;
        }
    }
}

fn find<'f>(fences: &'f FleetFences, id: &str) -> Option<&'f Geofence> {
    fences
        .fences()
        .iter()
        .map(|g| g.as_ref())
        .find(|g| g.id().as_str() == id)
}

fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    Haversine.distance(Point::new(lon1, lat1), Point::new(lon2, lat2))
}

/// The events one fix raised, all about that fix.
struct Raised<'p> {
    point: &'p TrailPoint,
    events: Vec<Event>,
}

impl<'p> Raised<'p> {
    fn new(point: &'p TrailPoint) -> Self {
        Self {
            point,
            events: Vec::new(),
        }
    }

    fn push(&mut self, kind: EventKind, fence: Option<&str>, details: serde_json::Value) {
        let p = &self.point.position;
        let fix = EventFix {
            ts: p.ts(),
            seq: Some(self.point.seq),
            lat: p.lat(),
            lon: p.lon(),
        };
        let event = Event::new(
            kind,
            &self.point.fleet,
            &self.point.driver,
            fix,
            fence,
            details,
        );
        self.events.push(event);
    }

    /// An event about `fence`: its name goes into the details.
    fn fence(&mut self, kind: EventKind, fence: &Geofence, mut details: serde_json::Value) {
        if let Some(map) = details.as_object_mut() {
            map.insert("name".into(), json!(fence.props().name));
        }
        self.push(kind, Some(fence.id().as_str()), details);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::alerts::rules::RulesBody;
    use crate::domain::{DriverId, FixExtras, FleetId, Position, Timestamp};
    use crate::geofences::{FenceDef, FenceId};

    /// Metres per degree of latitude, near enough for building tracks.
    const M_PER_DEG: f64 = 111_195.0;
    const T0: i64 = 1_700_000_000_000;

    fn fence(geometry: serde_json::Value, props: serde_json::Value) -> Arc<Geofence> {
        let feature = json!({"type":"Feature","geometry":geometry,"properties":props});
        let def = FenceDef::from_feature(feature.to_string().as_bytes())
            .expect("valid fence")
            .def;
        Arc::new(Geofence::new(
            FenceId::generate(),
            FleetId::parse("acme").expect("fleet"),
            def,
            Timestamp::from_millis(0),
            Timestamp::from_millis(0),
        ))
    }

    /// A square of `size_m` whose south-west corner is (0, 0).
    fn square(size_m: f64, props: serde_json::Value) -> Arc<Geofence> {
        let d = size_m / M_PER_DEG;
        fence(
            json!({"type":"Polygon","coordinates":[[[0,0],[d,0],[d,d],[0,d],[0,0]]]}),
            props,
        )
    }

    /// A fix `x_m` east and `y_m` north of (0, 0), `secs` after T0.
    fn at(seq: u64, secs: i64, x_m: f64, y_m: f64, speed_mps: Option<f64>) -> TrailPoint {
        TrailPoint {
            driver: DriverId::parse("d1").expect("driver"),
            fleet: FleetId::parse("acme").expect("fleet"),
            seq,
            position: Position::new(
                y_m / M_PER_DEG,
                x_m / M_PER_DEG,
                Timestamp::from_millis(T0 + secs * 1000),
                speed_mps,
                None,
                None,
            )
            .expect("valid position"),
            extras: FixExtras::default(),
        }
    }

    fn rules(json: serde_json::Value) -> AlertRules {
        let body: RulesBody = serde_json::from_value(json).expect("rules");
        AlertRules::new(body).expect("valid rules")
    }

    /// Runs the fixes through one state; the kinds raised, in order.
    fn run(fences: &[Arc<Geofence>], rules: &AlertRules, fixes: &[TrailPoint]) -> Vec<String> {
        let index = FleetFences::new(fences.to_vec());
        let mut state = DriverState::default();
        let ctx = Context {
            fences: Some(&index),
            rules,
        };
        fixes
            .iter()
            .flat_map(|p| state.evaluate(p, ctx))
            .map(|e| e.kind.as_str().to_owned())
            .collect()
    }

    #[test]
    fn enter_dwell_and_exit_come_once_each_in_order() {
        let depot = square(100.0, json!({"name": "Depot", "dwell_secs": 60}));
        let track = [
            at(1, 0, -50.0, 50.0, None),
            at(2, 10, 50.0, 50.0, None),
            at(3, 40, 50.0, 50.0, None),
            at(4, 80, 50.0, 50.0, None),
            at(5, 90, 50.0, 50.0, None),
            at(6, 100, 150.0, 50.0, None),
            at(7, 110, 250.0, 50.0, None),
        ];
        let kinds = run(&[depot], &AlertRules::default(), &track);
        assert_eq!(kinds, ["geofence_enter", "geofence_dwell", "geofence_exit"]);
    }

    #[test]
    fn sparse_fixes_across_a_small_fence_give_one_cross() {
        // A 100 m fence 1 km east; fixes 2 km apart on either side of it.
        let d = 100.0 / M_PER_DEG;
        let x0 = 1_000.0 / M_PER_DEG;
        let small = fence(
            json!({"type":"Polygon","coordinates":[[[x0,-d/2.0],[x0+d,-d/2.0],[x0+d,d/2.0],[x0,d/2.0],[x0,-d/2.0]]]}),
            json!({"name": "Toll"}),
        );
        let track = [at(1, 0, 0.0, 0.0, None), at(2, 60, 2_000.0, 0.0, None)];
        let kinds = run(&[small], &AlertRules::default(), &track);
        assert_eq!(kinds, ["geofence_cross"]);
    }

    #[test]
    fn a_late_fix_changes_nothing_and_raises_nothing() {
        let depot = square(100.0, json!({"name": "Depot"}));
        let index = FleetFences::new(vec![depot]);
        let none = AlertRules::default();
        let ctx = Context {
            fences: Some(&index),
            rules: &none,
        };
        let mut state = DriverState::default();
        assert!(
            state
                .evaluate(&at(1, 0, 500.0, 500.0, None), ctx)
                .is_empty()
        );
        let inside_late = at(2, -30, 50.0, 50.0, None);
        let newer = at(3, 10, 500.0, 500.0, None);
        assert_eq!(state.evaluate(&newer, ctx).len(), 0);
        let before = state.clone();
        assert!(state.evaluate(&inside_late, ctx).is_empty());
        assert_eq!(state, before);
        // The same fix again (a resend) is late too.
        assert!(state.evaluate(&newer, ctx).is_empty());
    }

    #[test]
    fn overspeed_needs_its_minimum_duration_and_comes_once_per_episode() {
        let r = rules(json!({"overspeed_kmh": 90, "overspeed_min_secs": 10}));
        let fast = 30.0; // 108 km/h
        let brief = [
            at(1, 0, 0.0, 0.0, Some(fast)),
            at(2, 5, 150.0, 0.0, Some(fast)),
            at(3, 8, 240.0, 0.0, Some(10.0)),
        ];
        assert!(run(&[], &r, &brief).is_empty());
        let long = [
            at(1, 0, 0.0, 0.0, Some(fast)),
            at(2, 5, 150.0, 0.0, Some(fast)),
            at(3, 10, 300.0, 0.0, Some(fast)),
            at(4, 15, 450.0, 0.0, Some(fast)),
            at(5, 20, 500.0, 0.0, Some(10.0)),
            at(6, 25, 650.0, 0.0, Some(fast)),
            at(7, 40, 1_100.0, 0.0, Some(fast)),
        ];
        assert_eq!(run(&[], &r, &long), ["overspeed", "overspeed"]);
    }

    #[test]
    fn a_fence_speed_limit_applies_inside_it() {
        let zone = square(1_000.0, json!({"name": "School", "speed_limit_kmh": 30}));
        let r = rules(json!({"overspeed_kmh": 90}));
        let track = [
            at(1, 0, 100.0, 100.0, Some(15.0)), // 54 km/h: fine outside, not in the zone
        ];
        assert_eq!(run(&[zone], &r, &track), ["geofence_enter", "overspeed"]);
    }

    #[test]
    fn idle_comes_once_per_stop() {
        let r = rules(json!({"idle_after_secs": 600}));
        let mut track = vec![];
        for i in 0..15 {
            track.push(at(
                i + 1,
                i as i64 * 60,
                3.0 * (i % 2) as f64,
                0.0,
                Some(0.0),
            ));
        }
        track.push(at(100, 960, 500.0, 0.0, Some(12.0)));
        for i in 0..12 {
            track.push(at(200 + i, 1_000 + i as i64 * 60, 500.0, 0.0, None));
        }
        assert_eq!(run(&[], &r, &track), ["idle", "idle"]);
    }

    #[test]
    fn sos_is_raised_even_late_and_low_battery_once_until_charged() {
        let r = rules(json!({"low_battery_pct": 15}));
        let index = FleetFences::new(vec![]);
        let ctx = Context {
            fences: Some(&index),
            rules: &r,
        };
        let mut state = DriverState::default();
        let with = |mut p: TrailPoint, battery: Option<f64>, sos: bool| {
            p.extras = FixExtras { battery, sos };
            p
        };
        let kinds = |events: Vec<Event>| -> Vec<&'static str> {
            events.iter().map(|e| e.kind.as_str()).collect()
        };
        assert!(
            state
                .evaluate(&with(at(1, 0, 0.0, 0.0, None), Some(50.0), false), ctx)
                .is_empty()
        );
        let low = state.evaluate(&with(at(2, 10, 0.0, 0.0, None), Some(14.0), false), ctx);
        assert_eq!(kinds(low), ["low_battery"]);
        assert!(
            state
                .evaluate(&with(at(3, 20, 0.0, 0.0, None), Some(12.0), false), ctx)
                .is_empty()
        );
        assert!(
            state
                .evaluate(&with(at(4, 30, 0.0, 0.0, None), Some(18.0), false), ctx)
                .is_empty()
        );
        assert!(
            state
                .evaluate(&with(at(5, 40, 0.0, 0.0, None), Some(40.0), false), ctx)
                .is_empty()
        );
        let again = state.evaluate(&with(at(6, 50, 0.0, 0.0, None), Some(10.0), false), ctx);
        assert_eq!(kinds(again), ["low_battery"]);
        let late_sos = state.evaluate(&with(at(7, 5, 0.0, 0.0, None), None, true), ctx);
        assert_eq!(kinds(late_sos), ["sos"]);
    }

    #[test]
    fn a_buffered_batch_in_and_out_of_a_fence_gives_its_events_in_fix_order() {
        let depot = square(100.0, json!({"name": "Depot"}));
        // 100 fixes, 10 m apart: in at 0..=100 m, out beyond, in again on the way back.
        let mut track = vec![];
        for i in 0..50 {
            track.push(at(i + 1, i as i64, -195.0 + i as f64 * 10.0, 50.0, None));
        }
        for i in 0..50 {
            track.push(at(
                51 + i,
                50 + i as i64,
                295.0 - i as f64 * 10.0,
                50.0,
                None,
            ));
        }
        let kinds = run(&[depot], &AlertRules::default(), &track);
        assert_eq!(
            kinds,
            [
                "geofence_enter",
                "geofence_exit",
                "geofence_enter",
                "geofence_exit"
            ]
        );
    }
}
