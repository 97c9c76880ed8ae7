//! What the trail store does with alerts inside the transaction that stores
//! a batch, the part both backends share: which drivers the batch asks to
//! evaluate, their stored state in and out, and the run of the engine over
//! each driver's new fixes in fix-time order. Each backend locks and reads
//! the state rows, calls [`evaluate`], and writes states, events and the
//! webhook outbox rows back in the same transaction, so nothing is raised
//! that is not stored, and nothing stored is evaluated twice.

use std::collections::{BTreeMap, HashMap};

use super::engine::{DriverState, LastFix, StateBody};
use super::event::Event;
use crate::domain::{DriverId, DriverKey, FleetId, Seq, TrailPoint};
use crate::trails::StoreError;

/// Decides which fixes are evaluated, and evaluates them: the alerts' side
/// of the trail store's transaction.
///
/// Contract: `wants` is cheap and pure (it runs for every stored fix); for
/// a driver, `evaluate` is called with the state stored by the last commit
/// that evaluated it and its fixes of this batch in fix-time order, and
/// returns the events they raise; it never blocks.
pub trait Evaluator: Send + Sync {
    /// Whether the fix's fleet has anything to evaluate it against (or the
    /// fix is an SOS, which is raised whatever the rules).
    fn wants(&self, point: &TrailPoint) -> bool;

    fn evaluate(&self, state: &mut DriverState, points: &[&TrailPoint]) -> Vec<Event>;
}

/// The fixes of a batch to evaluate, by driver, in key order (the order
/// state rows are locked in, so concurrent commits never deadlock).
pub struct Planned<'a> {
    pub drivers: BTreeMap<DriverKey, Vec<&'a TrailPoint>>,
}

impl<'a> Planned<'a> {
    pub fn new(evaluator: &dyn Evaluator, points: &'a [TrailPoint]) -> Self {
        let mut drivers: BTreeMap<DriverKey, Vec<&TrailPoint>> = BTreeMap::new();
        for point in points.iter().filter(|p| evaluator.wants(p)) {
            let key = DriverKey::new(point.fleet.clone(), point.driver.clone());
            drivers.entry(key).or_default().push(point);
        }
        for fixes in drivers.values_mut() {
            fixes.sort_by_key(|p| (p.position.ts(), p.seq));
        }
        Self { drivers }
    }

    pub fn is_empty(&self) -> bool {
        self.drivers.is_empty()
    }

    /// The planned driver a state row names; `None` for any other row.
    pub fn key_of(&self, fleet: &str, driver: &str) -> Option<DriverKey> {
        let key = DriverKey::new(FleetId::parse(fleet).ok()?, DriverId::parse(driver).ok()?);
        self.drivers.contains_key(&key).then_some(key)
    }
}

/// One `alert_state` row as both backends read and write it. `last_ts` is
/// negative until a fix was evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRow {
    pub last_ts: i64,
    pub last_seq: i64,
    pub last_lat: f64,
    pub last_lon: f64,
    pub state: String,
}

impl StateRow {
    /// The row a driver's state starts from (inserted before it is locked).
    pub fn fresh() -> Self {
        Self {
            last_ts: -1,
            last_seq: 0,
            last_lat: 0.0,
            last_lon: 0.0,
            state: "{}".into(),
        }
    }

    pub fn decode(&self) -> Result<DriverState, StoreError> {
        let body: StateBody = serde_json::from_str(&self.state)
            .map_err(|e| StoreError::Corrupt(format!("alert_state.state: {e}")))?;
        let last = match self.last_ts {
            ts if ts < 0 => None,
            ts => Some(LastFix {
                ts,
                seq: Seq::try_from(self.last_seq)
                    .map_err(|_| StoreError::Corrupt("alert_state.last_seq < 0".into()))?,
                lat: self.last_lat,
                lon: self.last_lon,
            }),
        };
        Ok(DriverState { last, body })
    }

    pub fn encode(state: &DriverState) -> Result<Self, StoreError> {
        let body = serde_json::to_string(&state.body)
            .map_err(|e| StoreError::Corrupt(format!("encoding an alert state: {e}")))?;
        let mut row = Self::fresh();
        row.state = body;
        if let Some(last) = state.last {
            row.last_ts = last.ts;
            row.last_seq = i64::try_from(last.seq)
                .map_err(|_| StoreError::Corrupt("a seq beyond i64".into()))?;
            row.last_lat = last.lat;
            row.last_lon = last.lon;
        }
        Ok(row)
    }
}

/// What the evaluation of a batch gives the backend to write.
pub struct Evaluated {
    /// Every evaluated driver's new state row, in key order.
    pub states: Vec<(DriverKey, StateRow)>,
    /// The events raised, in fix order per driver.
    pub events: Vec<Event>,
}

/// Runs the engine over each planned driver's fixes, from its stored row
/// (a driver without one starts fresh).
pub fn evaluate(
    evaluator: &dyn Evaluator,
    planned: &Planned<'_>,
    mut stored: HashMap<DriverKey, StateRow>,
) -> Result<Evaluated, StoreError> {
    let mut out = Evaluated {
        states: Vec::with_capacity(planned.drivers.len()),
        events: Vec::new(),
    };
    for (key, fixes) in &planned.drivers {
        let row = stored.remove(key).unwrap_or_else(StateRow::fresh);
        let mut state = row.decode()?;
        out.events.extend(evaluator.evaluate(&mut state, fixes));
        out.states.push((key.clone(), StateRow::encode(&state)?));
    }
    Ok(out)
}

/// The kinds list a webhook row holds matches `kind`: the SQL both
/// backends use to fill the outbox, as a condition on `w` (webhooks) and `e`
/// (events).
pub const WEBHOOK_MATCHES: &str = "w.fleet_id = e.fleet_id \
    AND (w.kinds = '' OR w.kinds LIKE '%,' || e.kind || ',%')";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_row_round_trips_and_a_fresh_one_has_no_last_fix() {
        let fresh = StateRow::fresh().decode().expect("fresh");
        assert_eq!(fresh, DriverState::default());
        let mut state = DriverState::default();
        state.last = Some(LastFix {
            ts: 1_700_000_000_000,
            seq: 42,
            lat: -12.0,
            lon: -77.0,
        });
        state.body.battery_low = true;
        let row = StateRow::encode(&state).expect("encode");
        assert_eq!(row.decode().expect("decode"), state);
    }

    #[test]
    fn a_garbled_state_is_corrupt_not_a_fresh_start() {
        let mut row = StateRow::fresh();
        row.state = "{not json".into();
        assert!(matches!(row.decode(), Err(StoreError::Corrupt(_))));
    }
}
