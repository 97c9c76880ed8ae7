use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self(ms)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }
}

/// Fastest credible ground speed (m/s): about 540 km/h. Anything above is a bad fix.
pub const MAX_SPEED_MPS: f64 = 150.0;
/// Worst accuracy radius (m) still worth storing.
pub const MAX_ACCURACY_M: f64 = 100_000.0;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PositionError {
    #[error("lat must be a finite number in [-90, 90]")]
    Latitude,
    #[error("lon must be a finite number in [-180, 180]")]
    Longitude,
    #[error("speed must be a finite number in [0, {MAX_SPEED_MPS}] m/s")]
    Speed,
    #[error("heading must be a finite number in [0, 360] degrees")]
    Heading,
    #[error("acc must be a finite number in [0, {MAX_ACCURACY_M}] m")]
    Accuracy,
    #[error("ts is more than {0} s in the future")]
    FromFuture(u64),
    #[error("ts is older than the accepted window of {0} s")]
    TooOld(u64),
}

/// A validated GPS fix. It cannot hold a latitude of 91, a NaN or a negative speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    lat: f64,
    lon: f64,
    ts: Timestamp,
    speed: Option<f64>,
    heading: Option<f64>,
    acc: Option<f64>,
}

fn in_range(v: f64, lo: f64, hi: f64) -> bool {
    v.is_finite() && (lo..=hi).contains(&v)
}

fn optional_in_range(v: Option<f64>, lo: f64, hi: f64) -> bool {
    v.is_none_or(|v| in_range(v, lo, hi))
}

impl Position {
    /// Checks the static invariants of a fix. The time window is checked by
    /// [`TimeWindow::check`], because it depends on the clock.
    pub fn new(
        lat: f64,
        lon: f64,
        ts: Timestamp,
        speed: Option<f64>,
        heading: Option<f64>,
        acc: Option<f64>,
    ) -> Result<Self, PositionError> {
        if !in_range(lat, -90.0, 90.0) {
            return Err(PositionError::Latitude);
        }
        if !in_range(lon, -180.0, 180.0) {
            return Err(PositionError::Longitude);
        }
        if !optional_in_range(speed, 0.0, MAX_SPEED_MPS) {
            return Err(PositionError::Speed);
        }
        if !optional_in_range(heading, 0.0, 360.0) {
            return Err(PositionError::Heading);
        }
        if !optional_in_range(acc, 0.0, MAX_ACCURACY_M) {
            return Err(PositionError::Accuracy);
        }
        Ok(Self {
            lat,
            lon,
            ts,
            speed,
            heading,
            acc,
        })
    }

    pub fn lat(&self) -> f64 {
        self.lat
    }
    pub fn lon(&self) -> f64 {
        self.lon
    }
    pub fn ts(&self) -> Timestamp {
        self.ts
    }
    pub fn speed(&self) -> Option<f64> {
        self.speed
    }
    pub fn heading(&self) -> Option<f64> {
        self.heading
    }
    pub fn acc(&self) -> Option<f64> {
        self.acc
    }
}

/// Which fix times the hub accepts, relative to its own clock.
#[derive(Debug, Clone, Copy)]
pub struct TimeWindow {
    /// Clock skew tolerated for fixes stamped ahead of the hub's clock.
    pub max_future: Duration,
    /// How old an offline-buffered fix may be and still be accepted.
    pub max_age: Duration,
}

impl TimeWindow {
    pub fn check(&self, ts: Timestamp, now: Timestamp) -> Result<(), PositionError> {
        let ahead = ts.as_millis().saturating_sub(now.as_millis());
        if ahead > self.max_future.as_millis() as i64 {
            return Err(PositionError::FromFuture(self.max_future.as_secs()));
        }
        let age = now.as_millis().saturating_sub(ts.as_millis());
        if age > self.max_age.as_millis() as i64 {
            return Err(PositionError::TooOld(self.max_age.as_secs()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lat: f64, lon: f64) -> Result<Position, PositionError> {
        Position::new(lat, lon, Timestamp::from_millis(0), None, None, None)
    }

    #[test]
    fn a_position_cannot_hold_latitude_91_or_nan() {
        assert_eq!(at(91.0, 0.0), Err(PositionError::Latitude));
        assert_eq!(at(f64::NAN, 0.0), Err(PositionError::Latitude));
        assert_eq!(at(0.0, -180.5), Err(PositionError::Longitude));
        assert_eq!(at(0.0, f64::INFINITY), Err(PositionError::Longitude));
        assert!(at(90.0, -180.0).is_ok());
    }

    #[test]
    fn optional_fields_are_range_checked() {
        let ts = Timestamp::from_millis(0);
        assert_eq!(
            Position::new(0.0, 0.0, ts, Some(-1.0), None, None),
            Err(PositionError::Speed)
        );
        assert_eq!(
            Position::new(0.0, 0.0, ts, None, Some(361.0), None),
            Err(PositionError::Heading)
        );
        assert_eq!(
            Position::new(0.0, 0.0, ts, None, None, Some(f64::NAN)),
            Err(PositionError::Accuracy)
        );
    }

    #[test]
    fn the_time_window_refuses_the_future_and_the_too_old() {
        let w = TimeWindow {
            max_future: Duration::from_secs(300),
            max_age: Duration::from_secs(3600),
        };
        let now = Timestamp::from_millis(10_000_000);
        assert!(w.check(now, now).is_ok());
        assert!(
            w.check(Timestamp::from_millis(10_000_000 + 300_000), now)
                .is_ok()
        );
        assert_eq!(
            w.check(Timestamp::from_millis(10_000_000 + 300_001), now),
            Err(PositionError::FromFuture(300))
        );
        assert_eq!(
            w.check(Timestamp::from_millis(10_000_000 - 3_600_001), now),
            Err(PositionError::TooOld(3600))
        );
    }
}
