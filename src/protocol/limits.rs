//! How large a driver's largest valid message is. The batch limit
//! (`driver.max_batch_items`) is the one stated limit; the text-frame limit of
//! the driver socket and the body limit of `POST /api/v1/positions` (both
//! `ws.max_frame_bytes`) must hold a full batch, and start-up refuses a
//! configuration where they do not.

use super::frames::{MAX_SEQ, WireFix, to_json};

/// The longest driver id a frame can name (the ids' own limit; a test checks
/// the two agree).
const LONGEST_DRIVER_ID: usize = 64;

/// The longest a double prints as a JSON number (shortest round-trip form,
/// as serde_json and JavaScript write it): 24 bytes, `-2.2250738585072014e-308`.
const LONGEST_DOUBLE: f64 = -2.225_073_858_507_201_4e-308;

/// The longest item a batch can carry as a client writes it compactly: every
/// optional field present, `seq` at its maximum, `ts` at the widest integer
/// and every number at full double precision.
pub fn largest_item_bytes() -> usize {
    let item = WireFix {
        seq: Some(MAX_SEQ),
        ts: Some(i64::MIN),
        lat: Some(LONGEST_DOUBLE),
        lon: Some(LONGEST_DOUBLE),
        speed: Some(LONGEST_DOUBLE),
        heading: Some(LONGEST_DOUBLE),
        acc: Some(LONGEST_DOUBLE),
        battery: Some(LONGEST_DOUBLE),
        sos: true,
    };
    to_json(&item).len()
}

/// The largest compact message holding `max_items` of the largest items: a
/// `batch` frame naming its driver (the `{"items":[...]}` body of an HTTP
/// upload is smaller).
pub fn largest_batch_bytes(max_items: usize) -> usize {
    let envelope = serde_json::json!({
        "type": "batch",
        "driver": "d".repeat(LONGEST_DRIVER_ID),
        "items": [],
    });
    // One separator per item (one more than needed: a margin of one byte).
    let per_item = largest_item_bytes() + 1;
    to_json(&envelope)
        .len()
        .saturating_add(max_items.saturating_mul(per_item))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_driver_id_is_the_ids_limit() {
        use crate::domain::DriverId;
        assert!(DriverId::parse(&"d".repeat(LONGEST_DRIVER_ID)).is_ok());
        assert!(DriverId::parse(&"d".repeat(LONGEST_DRIVER_ID + 1)).is_err());
    }

    #[test]
    fn the_longest_double_prints_in_24_bytes() {
        assert_eq!(to_json(&LONGEST_DOUBLE).len(), 24);
    }

    #[test]
    fn a_full_batch_of_the_largest_items_fits_the_computed_bound() {
        let item = r#"{"seq":9007199254740992,"ts":-9223372036854775808,"lat":-2.2250738585072014e-308,"lon":-2.2250738585072014e-308,"speed":-2.2250738585072014e-308,"heading":-2.2250738585072014e-308,"acc":-2.2250738585072014e-308}"#;
        assert_eq!(largest_item_bytes(), item.len());
        let items = vec![item; 1000].join(",");
        let frame = format!(
            r#"{{"type":"batch","driver":"{}","items":[{items}]}}"#,
            "d".repeat(LONGEST_DRIVER_ID)
        );
        assert!(frame.len() <= largest_batch_bytes(1000));
        assert!(
            largest_batch_bytes(1000) <= 256 * 1024,
            "the default holds it"
        );
    }
}
