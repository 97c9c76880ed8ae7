//! A fleet's alert rules: the limits its drivers are held to. Each is
//! optional (`null` turns it off); a fence's `speed_limit_kmh` applies
//! inside the fence instead of `overspeed_kmh`.

use serde::{Deserialize, Serialize};

/// The highest a limit may be: beyond any road speed, any shift, any battery.
const MAX_SPEED_KMH: f64 = 500.0;
const MAX_SECS: u64 = 7 * 24 * 3600;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct RulesError(pub String);

/// What a fleet's rules say, as `GET`/`PUT /api/v1/alert-rules` carry them.
/// Valid by construction ([`AlertRules::new`]): a `PUT` body is read into
/// [`RulesBody`] and checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AlertRules {
    overspeed_kmh: Option<f64>,
    overspeed_min_secs: Option<u64>,
    idle_after_secs: Option<u64>,
    offline_after_secs: Option<u64>,
    low_battery_pct: Option<f64>,
}

/// A rules body as sent: every field present (`null` = off); unknown fields
/// are refused, so a misspelt rule is not silently off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesBody {
    #[serde(default)]
    pub overspeed_kmh: Option<f64>,
    #[serde(default)]
    pub overspeed_min_secs: Option<u64>,
    #[serde(default)]
    pub idle_after_secs: Option<u64>,
    #[serde(default)]
    pub offline_after_secs: Option<u64>,
    #[serde(default)]
    pub low_battery_pct: Option<f64>,
}

fn speed_ok(v: f64) -> bool {
    v.is_finite() && v > 0.0 && v <= MAX_SPEED_KMH
}

impl AlertRules {
    pub fn new(body: RulesBody) -> Result<Self, RulesError> {
        if body.overspeed_kmh.is_some_and(|v| !speed_ok(v)) {
            return Err(RulesError(format!(
                "overspeed_kmh must be in (0, {MAX_SPEED_KMH}]"
            )));
        }
        for (name, secs, least) in [
            ("overspeed_min_secs", body.overspeed_min_secs, 0),
            ("idle_after_secs", body.idle_after_secs, 1),
            ("offline_after_secs", body.offline_after_secs, 1),
        ] {
            if secs.is_some_and(|s| s < least || s > MAX_SECS) {
                return Err(RulesError(format!(
                    "{name} must be in [{least}, {MAX_SECS}] seconds"
                )));
            }
        }
        if body
            .low_battery_pct
            .is_some_and(|v| !v.is_finite() || !(1.0..=99.0).contains(&v))
        {
            return Err(RulesError("low_battery_pct must be in [1, 99]".into()));
        }
        Ok(Self {
            overspeed_kmh: body.overspeed_kmh,
            overspeed_min_secs: body.overspeed_min_secs,
            idle_after_secs: body.idle_after_secs,
            offline_after_secs: body.offline_after_secs,
            low_battery_pct: body.low_battery_pct,
        })
    }

    /// Rules as the store holds them, through the same checks.
    pub fn from_stored(body: RulesBody) -> Result<Self, RulesError> {
        Self::new(body)
    }

    /// No rule is on.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn overspeed_kmh(&self) -> Option<f64> {
        self.overspeed_kmh
    }

    /// How long a driver must stay above the limit before `overspeed` (0 when unset).
    pub fn overspeed_min_ms(&self) -> i64 {
        secs_to_ms(self.overspeed_min_secs.unwrap_or(0))
    }

    pub fn overspeed_min_secs(&self) -> Option<u64> {
        self.overspeed_min_secs
    }

    pub fn idle_after_ms(&self) -> Option<i64> {
        self.idle_after_secs.map(secs_to_ms)
    }

    pub fn idle_after_secs(&self) -> Option<u64> {
        self.idle_after_secs
    }

    pub fn offline_after_secs(&self) -> Option<u64> {
        self.offline_after_secs
    }

    pub fn low_battery_pct(&self) -> Option<f64> {
        self.low_battery_pct
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    // Bounded by MAX_SECS, so this cannot overflow.
    (secs.min(MAX_SECS) * 1000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Result<AlertRules, RulesError> {
        let body: RulesBody = serde_json::from_str(json).expect("json");
        AlertRules::new(body)
    }

    #[test]
    fn the_issue_example_is_valid_and_nulls_turn_rules_off() {
        let rules = body(
            r#"{"overspeed_kmh": 90, "overspeed_min_secs": 10, "idle_after_secs": 600,
                "offline_after_secs": 300, "low_battery_pct": 15}"#,
        )
        .expect("valid");
        assert_eq!(rules.overspeed_kmh(), Some(90.0));
        assert_eq!(rules.overspeed_min_ms(), 10_000);
        assert_eq!(rules.idle_after_ms(), Some(600_000));
        let off = body(r#"{"overspeed_kmh": null, "idle_after_secs": null}"#).expect("valid");
        assert!(off.is_empty());
    }

    #[test]
    fn out_of_range_limits_are_refused() {
        for bad in [
            r#"{"overspeed_kmh": 0}"#,
            r#"{"overspeed_kmh": 501}"#,
            r#"{"idle_after_secs": 0}"#,
            r#"{"offline_after_secs": 999999999}"#,
            r#"{"low_battery_pct": 100}"#,
            r#"{"low_battery_pct": 0}"#,
        ] {
            assert!(body(bad).is_err(), "{bad}");
        }
        let unknown = serde_json::from_str::<RulesBody>(r#"{"overspeed": 90}"#);
        assert!(unknown.is_err());
        let negative = serde_json::from_str::<RulesBody>(r#"{"idle_after_secs": -5}"#);
        assert!(negative.is_err());
    }
}
