//! What nodes say to each other through Redis: batches of positions on the
//! position channels, notices on the control channel, and the driver
//! records of the shared last-known state. Everything that comes in is
//! checked like any other input: a bad message is dropped and logged, never
//! trusted.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::{DriverId, DriverKey, FleetId, Position, Timestamp};

/// One message on a position channel: many positions of one node.
///
/// `p` items are `[epoch, online (0/1), P]`, with `P` the protocol's driver
/// object exactly as this node's dashboards got it, so the receiving node
/// forwards the same bytes.
#[derive(Serialize)]
pub struct BatchOut<'a> {
    pub n: &'a str,
    pub i: u64,
    /// Sender's clock when the batch left, ms (for the cross-node latency).
    pub t: i64,
    pub p: Vec<(u64, u8, &'a RawValue)>,
}

#[derive(Deserialize)]
pub struct BatchIn<'a> {
    #[serde(borrow)]
    pub n: &'a str,
    pub i: u64,
    pub t: i64,
    #[serde(borrow, default)]
    pub p: Vec<(u64, u8, &'a RawValue)>,
}

/// The parts of `P` a receiving node needs to place and order a position.
#[derive(Deserialize)]
struct DriverViewIn<'a> {
    driver: &'a str,
    fleet: &'a str,
    lat: f64,
    lon: f64,
    ts: i64,
    speed: Option<f64>,
    heading: Option<f64>,
}

/// Reads a `P` back: whose position and where, checked like a driver's fix.
pub fn parse_view(raw: &RawValue) -> Option<(DriverKey, Position)> {
    let view: DriverViewIn = serde_json::from_str(raw.get()).ok()?;
    let fleet = FleetId::parse(view.fleet).ok()?;
    let driver = DriverId::parse(view.driver).ok()?;
    let ts = Timestamp::from_millis(view.ts);
    let position = Position::new(view.lat, view.lon, ts, view.speed, view.heading, None).ok()?;
    Some((DriverKey::new(fleet, driver), position))
}

/// Notices on the control channel.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "k")]
pub enum Notice {
    /// Node `n` (incarnation `i`) owns the driver from epoch `e` on.
    #[serde(rename = "own")]
    Owner {
        f: String,
        d: String,
        n: String,
        i: u64,
        e: u64,
    },
    /// Node `n` started as incarnation `i`: its earlier incarnations are gone.
    #[serde(rename = "hello")]
    Hello { n: String, i: u64 },
    /// Some node watches fleet `f` wide: publish its positions on its wide channel.
    #[serde(rename = "wide")]
    Wide { f: String },
    /// Node `n` (incarnation `i`) changed fleet `f`'s geofences, or, without
    /// `f`, has just (re)connected and may have changes the others missed:
    /// reload them from the database.
    #[serde(rename = "fences")]
    Fences {
        f: Option<String>,
        n: String,
        i: u64,
    },
    /// Node `n` (incarnation `i`) stored an event of fleet `f`: `e` is its
    /// dashboard frame, for the dashboards that see the fleet.
    #[serde(rename = "event")]
    Event {
        f: String,
        e: String,
        n: String,
        i: u64,
    },
}

/// A driver's record in the shared last-known state.
#[derive(Serialize)]
pub struct RecordOut<'a> {
    pub p: &'a RawValue,
    pub on: bool,
    pub n: &'a str,
    pub i: u64,
    pub e: u64,
    /// Last heard, owner's clock, ms.
    pub s: i64,
}

#[derive(Deserialize)]
pub struct RecordIn<'a> {
    #[serde(borrow)]
    pub p: &'a RawValue,
    pub on: bool,
    #[serde(borrow)]
    pub n: &'a str,
    pub i: u64,
    pub e: u64,
    pub s: i64,
}

/// An owner as stored: `"<epoch> <incarnation> <node>"` (the node last: it
/// may hold any character ids allow).
pub fn owner_value(epoch: u64, incarnation: u64, node: &str) -> String {
    format!("{epoch} {incarnation} {node}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::driver_view;

    #[test]
    fn a_batch_carries_the_views_as_they_are() {
        let key = DriverKey::new(
            FleetId::parse("acme").expect("fleet"),
            DriverId::parse("d1").expect("driver"),
        );
        let at = Position::new(
            -12.05,
            -77.04,
            Timestamp::from_millis(1_700_000_000_000),
            Some(3.5),
            None,
            None,
        )
        .expect("a valid position");
        let view = driver_view(key.driver(), key.fleet(), &at, None, None);
        let out = BatchOut {
            n: "node-a",
            i: 7,
            t: 1,
            p: vec![(3, 1, &view)],
        };
        let text = serde_json::to_string(&out).expect("serialises");
        let back: BatchIn = serde_json::from_str(&text).expect("parses");
        assert_eq!((back.n, back.i, back.p.len()), ("node-a", 7, 1));
        let (epoch, online, raw) = back.p[0];
        assert_eq!((epoch, online, raw.get()), (3, 1, view.get()));
        assert_eq!(parse_view(raw), Some((key, at)));
    }

    #[test]
    fn hostile_views_and_notices_are_refused() {
        let bad = RawValue::from_string(
            r#"{"driver":"d 1","fleet":"acme","lat":1,"lon":2,"ts":3}"#.into(),
        )
        .expect("json");
        assert!(parse_view(&bad).is_none(), "a bad id");
        let far = RawValue::from_string(
            r#"{"driver":"d1","fleet":"acme","lat":91,"lon":2,"ts":3}"#.into(),
        )
        .expect("json");
        assert!(parse_view(&far).is_none(), "lat 91");
        assert!(serde_json::from_str::<Notice>(r#"{"k":"nope"}"#).is_err());
        let hello: Notice = serde_json::from_str(r#"{"k":"hello","n":"a","i":2}"#).expect("hello");
        assert_eq!(
            hello,
            Notice::Hello {
                n: "a".into(),
                i: 2
            }
        );
    }
}
