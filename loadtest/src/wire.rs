//! The JSON frames of the wire contract, as far as the simulator needs them.
//! Inbound frames are read leniently (unknown fields ignored, ids borrowed)
//! because a dashboard may parse tens of thousands of items a second.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::city::Bbox;
use crate::resend::Pending;

/// Most positions in one `batch` frame. The hub takes 1,000 and 64 KiB; an
/// item is about 110 bytes, so 400 stays well under both.
pub const MAX_BATCH: usize = 400;

/// Error codes after which a position was not stored and must be resent.
pub fn is_retryable(code: &str) -> bool {
    matches!(code, "rate_limited" | "storage_unavailable")
}

#[derive(Serialize)]
struct Item {
    seq: u64,
    ts: i64,
    lat: f64,
    lon: f64,
    speed: f64,
    heading: f64,
    acc: f64,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Out<'a> {
    Pos(&'a Item),
    Batch { items: &'a [Item] },
}

fn item(p: &Pending) -> Item {
    Item {
        seq: p.seq,
        ts: p.ts,
        lat: p.fix.lat,
        lon: p.fix.lon,
        speed: p.fix.speed,
        heading: p.fix.heading,
        acc: p.fix.acc,
    }
}

/// One `pos` frame for a single position, a `batch` for several.
pub fn encode_positions(frame: &[Pending]) -> String {
    let items: Vec<Item> = frame.iter().map(item).collect();
    let out = match &items[..] {
        [one] => Out::Pos(one),
        many => Out::Batch { items: many },
    };
    serde_json::to_string(&out).expect("plain numbers always serialize")
}

/// `subscribe` with a named region.
pub fn subscribe(id: &str, bbox: Bbox) -> String {
    serde_json::json!({"type": "subscribe", "id": id, "bbox": bbox.to_array()}).to_string()
}

/// Anything the hub sends a driver.
#[derive(Debug, Deserialize)]
pub struct DriverIn<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    pub seq: Option<u64>,
    pub last_seq: Option<u64>,
    #[serde(borrow)]
    pub code: Option<Cow<'a, str>>,
}

/// One driver as a dashboard sees it (`P`); only what the checks need.
#[derive(Debug, Deserialize)]
pub struct Seen<'a> {
    #[serde(borrow)]
    pub driver: Cow<'a, str>,
    pub ts: i64,
}

/// Anything the hub sends a dashboard.
#[derive(Debug, Deserialize)]
pub struct DashboardIn<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub items: Vec<Seen<'a>>,
    #[serde(borrow, default)]
    pub drivers: Vec<Seen<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::movement::Fix;
    use crate::resend::ResendBuffer;
    use std::time::Instant;

    #[test]
    fn single_is_pos_several_is_batch() {
        let fix = Fix {
            lat: -12.05,
            lon: -77.04,
            speed: 8.3,
            heading: 90.0,
            acc: 5.0,
        };
        let mut b = ResendBuffer::new(10);
        b.push(1_764_000_000_000, fix);
        let one = b.take_sendable(Instant::now(), 10);
        let v: serde_json::Value = serde_json::from_str(&encode_positions(&one)).unwrap();
        assert_eq!(v["type"], "pos");
        assert_eq!(v["seq"], 1);
        assert_eq!(v["lat"], -12.05);
        b.push(1_764_000_001_000, fix);
        b.push(1_764_000_002_000, fix);
        let two = b.take_sendable(Instant::now(), 10);
        let v: serde_json::Value = serde_json::from_str(&encode_positions(&two)).unwrap();
        assert_eq!(v["type"], "batch");
        assert_eq!(v["items"][1]["seq"], 3);
    }

    #[test]
    fn dashboard_frames_parse_with_extra_fields() {
        let f = r#"{"type":"positions","items":[{"driver":"d1","fleet":"x","lat":1,"lon":2,"ts":5,"status":"online"}]}"#;
        let d: DashboardIn = serde_json::from_str(f).unwrap();
        assert_eq!(
            (d.kind.as_ref(), d.items[0].driver.as_ref(), d.items[0].ts),
            ("positions", "d1", 5)
        );
        let h: DashboardIn =
            serde_json::from_str(r#"{"type":"hello","role":"admin","fleet":null}"#).unwrap();
        assert!(h.items.is_empty());
    }
}
