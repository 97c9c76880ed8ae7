//! Unit conversions for the phone-app adapters, in one place: speeds into
//! metres per second (the hub's unit), fix times from Unix seconds, Unix
//! milliseconds or ISO 8601 into [`Timestamp`] milliseconds, and the seq a
//! fix gets when its app sends none.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::{Iso8601, Rfc3339};

use crate::domain::{Seq, Timestamp};

/// Metres per second in one knot (1852 m an hour, exactly).
const MPS_PER_KNOT: f64 = 1852.0 / 3600.0;
/// Metres per second in one km/h.
const MPS_PER_KMH: f64 = 1000.0 / 3600.0;
/// Metres per second in one mile an hour (1609.344 m, exactly).
const MPS_PER_MPH: f64 = 1609.344 / 3600.0;

/// A time value above this is in milliseconds, below it in seconds: 10^11
/// seconds is the year 5138, 10^11 milliseconds is March 1973, so no fix an
/// app sends today is ambiguous.
const MILLIS_ABOVE: f64 = 1e11;

/// The unit a device reports speed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SpeedUnit {
    /// What Traccar Client sends (the OsmAnd protocol's unit).
    #[default]
    Knots,
    Kmh,
    Mps,
    Mph,
}

impl SpeedUnit {
    /// The unit as stored and as the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            SpeedUnit::Knots => "knots",
            SpeedUnit::Kmh => "kmh",
            SpeedUnit::Mps => "mps",
            SpeedUnit::Mph => "mph",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "knots" => Some(SpeedUnit::Knots),
            "kmh" => Some(SpeedUnit::Kmh),
            "mps" => Some(SpeedUnit::Mps),
            "mph" => Some(SpeedUnit::Mph),
            _ => None,
        }
    }

    /// `speed` in this unit, in metres per second.
    pub fn to_mps(self, speed: f64) -> f64 {
        match self {
            SpeedUnit::Knots => speed * MPS_PER_KNOT,
            SpeedUnit::Kmh => speed * MPS_PER_KMH,
            SpeedUnit::Mps => speed,
            SpeedUnit::Mph => speed * MPS_PER_MPH,
        }
    }
}

/// A fix time as the apps send it: Unix seconds (fractions allowed), Unix
/// milliseconds (a value above 10^11), or ISO 8601 / RFC 3339 with an offset.
pub fn parse_time(raw: &str) -> Result<Timestamp, String> {
    let raw = raw.trim();
    if let Ok(number) = raw.parse::<f64>() {
        return unix_time(number);
    }
    let parsed = OffsetDateTime::parse(raw, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(raw, &Iso8601::DEFAULT))
        .map_err(|_| {
            format!("timestamp {raw:?} is neither Unix seconds, Unix milliseconds nor ISO 8601")
        })?;
    let millis = parsed.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(millis)
        .map(Timestamp::from_millis)
        .map_err(|_| format!("timestamp {raw:?} is out of range"))
}

/// A numeric Unix time, in seconds or milliseconds (see [`MILLIS_ABOVE`]).
pub fn unix_time(number: f64) -> Result<Timestamp, String> {
    if !number.is_finite() || number < 0.0 {
        return Err(format!("timestamp {number} is not a Unix time"));
    }
    let millis = if number > MILLIS_ABOVE {
        number
    } else {
        number * 1000.0
    };
    // Far beyond any accepted fix time; the pipeline's time window refuses it
    // with its own message, the cast only has to stay in range.
    if millis >= i64::MAX as f64 {
        return Err(format!("timestamp {number} is out of range"));
    }
    Ok(Timestamp::from_millis(millis.round() as i64))
}

/// The seq of a fix from an app that numbers nothing: its time in
/// milliseconds. It grows with the driver's fixes, and a resent fix gets the
/// same seq, so the trail's dedup key (fleet, driver, ts, seq) stores it once.
/// `None` for a time before 1970, which the time window refuses anyway.
pub fn seq_from_time(ts: Timestamp) -> Option<Seq> {
    Seq::try_from(ts.as_millis()).ok()
}

/// A value the apps send as negative when they do not know it (iOS reports
/// -1 for an unknown speed, course or accuracy): absent, not invalid.
pub fn known(value: Option<f64>) -> Option<f64> {
    value.filter(|v| *v >= 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn speeds_convert_to_metres_per_second() {
        assert!(close(SpeedUnit::Knots.to_mps(10.0), 5.144_444_444_444_445));
        assert!(close(SpeedUnit::Kmh.to_mps(36.0), 10.0));
        assert!(close(SpeedUnit::Mph.to_mps(10.0), 4.4704));
        assert!(close(SpeedUnit::Mps.to_mps(7.5), 7.5));
    }

    #[test]
    fn speed_units_read_their_names_only() {
        for unit in [
            SpeedUnit::Knots,
            SpeedUnit::Kmh,
            SpeedUnit::Mps,
            SpeedUnit::Mph,
        ] {
            assert_eq!(SpeedUnit::parse(unit.as_str()), Some(unit));
        }
        assert_eq!(SpeedUnit::parse("km/h"), None);
        assert_eq!(SpeedUnit::default(), SpeedUnit::Knots);
    }

    #[test]
    fn times_read_as_seconds_milliseconds_or_iso_8601() {
        let ms = 1_700_000_000_000;
        assert_eq!(parse_time("1700000000").unwrap().as_millis(), ms);
        assert_eq!(parse_time("1700000000.25").unwrap().as_millis(), ms + 250);
        assert_eq!(parse_time("1700000000123").unwrap().as_millis(), ms + 123);
        assert_eq!(parse_time("2023-11-14T22:13:20Z").unwrap().as_millis(), ms);
        assert_eq!(
            parse_time("2023-11-14T22:13:20.500Z").unwrap().as_millis(),
            ms + 500
        );
        assert_eq!(
            parse_time("2023-11-15T00:13:20+02:00").unwrap().as_millis(),
            ms
        );
    }

    #[test]
    fn the_seconds_and_milliseconds_boundary_is_1e11() {
        // 10^11 s is year 5138: read as seconds; just above, as milliseconds.
        assert_eq!(
            parse_time("100000000000").unwrap().as_millis(),
            100_000_000_000_000
        );
        assert_eq!(
            parse_time("100000000001").unwrap().as_millis(),
            100_000_000_001
        );
    }

    #[test]
    fn bad_times_are_refused() {
        for bad in [
            "",
            "soon",
            "-5",
            "NaN",
            "inf",
            "1e400",
            "2023-13-01T00:00:00Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_derived_seq_is_the_fix_time() {
        let ts = Timestamp::from_millis(1_700_000_000_123);
        assert_eq!(seq_from_time(ts), Some(1_700_000_000_123));
        assert_eq!(seq_from_time(Timestamp::from_millis(-1)), None);
    }

    #[test]
    fn negative_values_mean_unknown() {
        assert_eq!(known(Some(-1.0)), None);
        assert_eq!(known(Some(0.0)), Some(0.0));
        assert_eq!(known(None), None);
    }
}
