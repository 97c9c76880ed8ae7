//! An event: something about a driver that needs a dispatcher's attention,
//! with the fix that caused it. Its id is derived from that cause, so the
//! same event produced twice (a resent fix, a retried commit, two nodes) is
//! one row, and whoever stored the row is the one who announces it.

use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::domain::{DriverId, FleetId, Seq, Timestamp};

/// What happened. The names are the wire's (`kind`) and the store's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    GeofenceEnter,
    GeofenceExit,
    GeofenceDwell,
    GeofenceCross,
    Overspeed,
    Idle,
    Offline,
    LowBattery,
    Sos,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::GeofenceEnter,
        EventKind::GeofenceExit,
        EventKind::GeofenceDwell,
        EventKind::GeofenceCross,
        EventKind::Overspeed,
        EventKind::Idle,
        EventKind::Offline,
        EventKind::LowBattery,
        EventKind::Sos,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::GeofenceEnter => "geofence_enter",
            EventKind::GeofenceExit => "geofence_exit",
            EventKind::GeofenceDwell => "geofence_dwell",
            EventKind::GeofenceCross => "geofence_cross",
            EventKind::Overspeed => "overspeed",
            EventKind::Idle => "idle",
            EventKind::Offline => "offline",
            EventKind::LowBattery => "low_battery",
            EventKind::Sos => "sos",
        }
    }

    /// The kind a query or a stored row names; `None` for anything else.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

/// The fix an event is about: its time, seq (none for `offline`, which no
/// fix caused) and place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventFix {
    pub ts: Timestamp,
    pub seq: Option<Seq>,
    pub lat: f64,
    pub lon: f64,
}

/// One event, as stored, pushed to dashboards and sent to webhooks.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub kind: EventKind,
    pub fleet: FleetId,
    pub driver: DriverId,
    pub fix: EventFix,
    pub geofence: Option<String>,
    /// A JSON object: what the kind tells (speed and limit, fence name...).
    pub details: serde_json::Value,
}

impl Event {
    /// An event with its id derived from its cause: fleet, driver, kind,
    /// fence and fix. Two events with the same cause are the same event.
    pub fn new(
        kind: EventKind,
        fleet: &FleetId,
        driver: &DriverId,
        fix: EventFix,
        geofence: Option<&str>,
        details: serde_json::Value,
    ) -> Self {
        let mut hash = Sha256::new();
        for part in [
            fleet.as_str(),
            driver.as_str(),
            kind.as_str(),
            geofence.unwrap_or(""),
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hash.update(fix.ts.as_millis().to_be_bytes());
        hash.update(fix.seq.map_or(-1, |s| s as i64).to_be_bytes());
        let digest = hash.finalize();
        let id = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Self {
            id,
            kind,
            fleet: fleet.clone(),
            driver: driver.clone(),
            fix,
            geofence: geofence.map(str::to_owned),
            details,
        }
    }

    /// The event as every consumer sees it: the dashboards' `event` frame,
    /// the events API's items and the webhooks' bodies.
    pub fn view(&self) -> EventView<'_> {
        EventView {
            kind_tag: "event",
            id: &self.id,
            kind: self.kind,
            driver: self.driver.as_str(),
            fleet: self.fleet.as_str(),
            ts: self.fix.ts.as_millis(),
            seq: self.fix.seq,
            lat: self.fix.lat,
            lon: self.fix.lon,
            geofence: self.geofence.as_deref(),
            details: &self.details,
        }
    }

    /// [`Event::view`] as JSON text.
    pub fn to_json(&self) -> Box<RawValue> {
        let text = serde_json::to_string(&self.view()).unwrap_or_else(|_| "{}".into());
        RawValue::from_string(text).unwrap_or_else(|_| empty_object())
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".into()).unwrap_or_default()
}

/// `{"type":"event","id":...,"kind":...,"driver":...,"fleet":...,"ts":...,"seq":...,"lat":...,"lon":...,"geofence":...,"details":{...}}`
#[derive(Serialize)]
pub struct EventView<'a> {
    #[serde(rename = "type")]
    kind_tag: &'static str,
    id: &'a str,
    kind: EventKind,
    driver: &'a str,
    fleet: &'a str,
    ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<Seq>,
    lat: f64,
    lon: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    geofence: Option<&'a str>,
    details: &'a serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(ts: i64, seq: Option<Seq>) -> EventFix {
        EventFix {
            ts: Timestamp::from_millis(ts),
            seq,
            lat: 1.0,
            lon: 2.0,
        }
    }

    fn ids() -> (FleetId, DriverId) {
        (
            FleetId::parse("acme").expect("fleet"),
            DriverId::parse("d1").expect("driver"),
        )
    }

    #[test]
    fn the_same_cause_gives_the_same_id_and_any_other_cause_another() {
        let (f, d) = ids();
        let details = serde_json::json!({});
        let a = Event::new(
            EventKind::Sos,
            &f,
            &d,
            fix(5, Some(1)),
            None,
            details.clone(),
        );
        let b = Event::new(
            EventKind::Sos,
            &f,
            &d,
            fix(5, Some(1)),
            None,
            details.clone(),
        );
        assert_eq!(a.id, b.id);
        assert_eq!(a.id.len(), 32);
        let other = [
            Event::new(
                EventKind::Sos,
                &f,
                &d,
                fix(6, Some(1)),
                None,
                details.clone(),
            ),
            Event::new(
                EventKind::Sos,
                &f,
                &d,
                fix(5, Some(2)),
                None,
                details.clone(),
            ),
            Event::new(
                EventKind::Idle,
                &f,
                &d,
                fix(5, Some(1)),
                None,
                details.clone(),
            ),
            Event::new(EventKind::Sos, &f, &d, fix(5, Some(1)), Some("x"), details),
        ];
        assert!(other.iter().all(|e| e.id != a.id));
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).expect("json");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }

    #[test]
    fn the_view_is_the_event_frame() {
        let (f, d) = ids();
        let e = Event::new(
            EventKind::GeofenceEnter,
            &f,
            &d,
            fix(7, Some(3)),
            Some("abc"),
            serde_json::json!({"name": "Depot"}),
        );
        let v: serde_json::Value = serde_json::from_str(e.to_json().get()).expect("json");
        assert_eq!(v["type"], "event");
        assert_eq!(v["kind"], "geofence_enter");
        assert_eq!(v["driver"], "d1");
        assert_eq!(v["fleet"], "acme");
        assert_eq!(v["ts"], 7);
        assert_eq!(v["geofence"], "abc");
        assert_eq!(v["details"]["name"], "Depot");
    }
}
