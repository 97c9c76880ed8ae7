//! `/ingest/osmand`: the OsmAnd protocol, as Traccar Client and OsmAnd send
//! it. One fix a request, in one of three framings:
//!
//! - `GET` with query parameters, or `POST` with them in the query or in a
//!   form body (`application/x-www-form-urlencoded`; body fields win);
//! - `POST` with `Content-Type: application/json`: `{device_id, location:
//!   {timestamp, coords: {latitude, longitude, accuracy, speed, heading,
//!   altitude}, battery: {level}}}` (Traccar Client 9's shape; speed in m/s).
//!
//! Parameters: `id` or `deviceid`; `lat` and `lon`, or `location=lat,lon`;
//! `timestamp` (Unix seconds, Unix milliseconds or ISO 8601; absent: the
//! hub's clock); `speed` in the device's registered unit; `bearing` or
//! `heading`; `accuracy`; `altitude` (read, not stored); `batt` (percent, for the
//! low-battery rule). The
//! key: `key`, or the password of HTTP Basic auth (whose user name may also
//! carry the id). Answers: 200 once stored, 400 malformed or invalid, 401
//! missing or wrong key, 404 unknown device, 429, 503, all with the hub's
//! error body. Unit conversions are [`units`](super::units)'.
//!
//! The body is needed to know the device (the form and the JSON carry id and
//! key), so it is read before the device is authenticated, bounded by
//! [`MAX_BODY`].

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::phone_app::{basic_auth, store_fix};
use super::units::{SpeedUnit, known, parse_time, seq_from_time, unix_time};
use crate::app_state::AppState;
use crate::devices::Protocol;
use crate::domain::Timestamp;
use crate::http_api::{ApiError, body};
use crate::protocol::{ErrorCode, WireFix};

/// Largest body read: one fix (a form is under 300 bytes, Traccar Client's
/// JSON under 1 KiB with its activity and extras).
pub const MAX_BODY: usize = 16 * 1024;

/// `GET|POST /ingest/osmand`.
pub async fn ingest(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let raw = body::read_bounded(&req, payload, MAX_BODY).await?;
    let basic = basic_auth(&req);
    let query = params(req.query_string())?;
    let now = Timestamp::now();
    let (id, key, framed) = if is_json(&req) {
        let json = JsonBody::parse(&raw).map_err(malformed)?;
        let id = json.device_id.clone().or_else(|| id_of(&query));
        (id, query.get("key").cloned(), Framed::Json(json))
    } else {
        let mut all = query;
        if !raw.is_empty() {
            let text = std::str::from_utf8(&raw)
                .map_err(|_| malformed("the form body is not UTF-8".to_owned()))?;
            all.extend(params(text)?);
        }
        (id_of(&all), all.get("key").cloned(), Framed::Params(all))
    };
    let id = id.or_else(|| basic.as_ref().map(|b| b.user.clone()));
    let key = key.or_else(|| basic.map(|b| b.password.expose_secret().to_owned()));
    let device = state
        .devices
        .authenticate(id.as_deref(), key.as_deref(), Protocol::Osmand)
        .await?;
    let fix = match framed {
        Framed::Params(params) => fix_from_params(&params, device.device.speed_unit, now),
        Framed::Json(json) => json.fix(now),
    }
    .map_err(malformed)?;
    store_fix(&state, &device, fix).await?;
    Ok(HttpResponse::Ok().finish())
}

enum Framed {
    Params(HashMap<String, String>),
    Json(JsonBody),
}

fn malformed(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidPosition, message)
}

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

/// URL-encoded parameters (a query string or a form body); a repeated name keeps its last value.
fn params(encoded: &str) -> Result<HashMap<String, String>, ApiError> {
    web::Query::<Vec<(String, String)>>::from_query(encoded)
        .map(|q| q.into_inner().into_iter().collect())
        .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.to_string()))
}

fn id_of(params: &HashMap<String, String>) -> Option<String> {
    params.get("id").or_else(|| params.get("deviceid")).cloned()
}

/// A number parameter, `None` when absent or empty.
fn number(params: &HashMap<String, String>, name: &str) -> Result<Option<f64>, String> {
    match params.get(name).map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse::<f64>()
            .map(Some)
            .map_err(|_| format!("`{name}` must be a number, got {raw:?}")),
    }
}

/// The fix the parameters describe. Speed is in `unit`; negative speed,
/// bearing or accuracy mean "unknown" (iOS sends -1), not invalid.
pub fn fix_from_params(
    params: &HashMap<String, String>,
    unit: SpeedUnit,
    now: Timestamp,
) -> Result<WireFix, String> {
    let (lat, lon) = match (number(params, "lat")?, number(params, "lon")?) {
        (Some(lat), Some(lon)) => (lat, lon),
        _ => match params.get("location") {
            Some(pair) => lat_lon(pair)?,
            None => return Err("`lat` and `lon` (or `location=lat,lon`) are required".into()),
        },
    };
    let ts = match params.get("timestamp").map(|t| t.trim()) {
        None | Some("") => now,
        Some(raw) => parse_time(raw)?,
    };
    let heading = match number(params, "bearing")? {
        Some(bearing) => Some(bearing),
        None => number(params, "heading")?,
    };
    // Read so a garbled value is reported; not stored yet.
    number(params, "altitude")?;
    Ok(WireFix {
        seq: seq_from_time(ts),
        ts: Some(ts.as_millis()),
        lat: Some(lat),
        lon: Some(lon),
        speed: known(number(params, "speed")?).map(|s| unit.to_mps(s)),
        heading: known(heading),
        acc: known(number(params, "accuracy")?),
        battery: number(params, "batt")?,
        sos: false,
    })
}

/// `location=lat,lon`.
fn lat_lon(pair: &str) -> Result<(f64, f64), String> {
    let bad = || format!("`location` must be `lat,lon`, got {pair:?}");
    let (lat, lon) = pair.split_once(',').ok_or_else(bad)?;
    let lat = lat.trim().parse::<f64>().map_err(|_| bad())?;
    let lon = lon.trim().parse::<f64>().map_err(|_| bad())?;
    Ok((lat, lon))
}

/// The JSON framing. Unknown fields (activity, extras, odometer...) are ignored.
#[derive(Debug, Deserialize)]
struct JsonBody {
    device_id: Option<String>,
    location: Option<JsonLocation>,
}

#[derive(Debug, Deserialize)]
struct JsonBattery {
    /// A fraction in [0, 1].
    level: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct JsonLocation {
    /// ISO 8601 as Traccar Client sends it; Unix seconds or milliseconds accepted too.
    timestamp: Option<serde_json::Value>,
    coords: Option<JsonCoords>,
    battery: Option<JsonBattery>,
}

#[derive(Debug, Deserialize)]
struct JsonCoords {
    latitude: Option<f64>,
    longitude: Option<f64>,
    accuracy: Option<f64>,
    /// m/s, whatever the device's registered unit (that one is the query's).
    speed: Option<f64>,
    heading: Option<f64>,
    #[allow(dead_code)] // Read for its type check; not stored yet.
    altitude: Option<f64>,
}

impl JsonBody {
    fn parse(raw: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(raw).map_err(|e| {
            format!(
                "expected {{\"device_id\",\"location\":{{\"timestamp\",\"coords\":{{...}}}}}}: {e}"
            )
        })
    }

    fn fix(&self, now: Timestamp) -> Result<WireFix, String> {
        let location = self.location.as_ref().ok_or("`location` is required")?;
        let coords = location
            .coords
            .as_ref()
            .ok_or("`location.coords` is required")?;
        let ts = match &location.timestamp {
            None | Some(serde_json::Value::Null) => now,
            Some(serde_json::Value::String(raw)) => parse_time(raw)?,
            Some(serde_json::Value::Number(n)) => {
                unix_time(n.as_f64().ok_or("`timestamp` is not a number")?)?
            }
            Some(_) => return Err("`location.timestamp` must be ISO 8601 or a number".into()),
        };
        let (Some(lat), Some(lon)) = (coords.latitude, coords.longitude) else {
            return Err("`coords.latitude` and `coords.longitude` are required".into());
        };
        Ok(WireFix {
            seq: seq_from_time(ts),
            ts: Some(ts.as_millis()),
            lat: Some(lat),
            lon: Some(lon),
            speed: known(coords.speed),
            heading: known(coords.heading),
            acc: known(coords.accuracy),
            battery: location
                .battery
                .as_ref()
                .and_then(|b| b.level)
                .map(|l| l * 100.0),
            sos: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> HashMap<String, String> {
        params(q).unwrap()
    }

    fn now() -> Timestamp {
        Timestamp::from_millis(1_700_000_999_000)
    }

    #[test]
    fn query_parameters_make_a_fix_with_its_time_as_seq() {
        let fix = fix_from_params(
            &query("id=p1&lat=52.5&lon=13.4&timestamp=1700000000&speed=10&bearing=90&accuracy=5&altitude=30&batt=80"),
            SpeedUnit::Knots,
            now(),
        )
        .unwrap();
        assert_eq!(fix.ts, Some(1_700_000_000_000));
        assert_eq!(fix.seq, Some(1_700_000_000_000));
        assert_eq!((fix.lat, fix.lon), (Some(52.5), Some(13.4)));
        assert!((fix.speed.unwrap() - 5.144_444).abs() < 1e-5);
        assert_eq!(fix.heading, Some(90.0));
        assert_eq!(fix.acc, Some(5.0));
    }

    #[test]
    fn location_pair_heading_and_the_hub_clock() {
        let fix = fix_from_params(
            &query("location=52.5%2C13.4&heading=45"),
            SpeedUnit::Kmh,
            now(),
        )
        .unwrap();
        assert_eq!((fix.lat, fix.lon), (Some(52.5), Some(13.4)));
        assert_eq!(fix.heading, Some(45.0));
        assert_eq!(fix.ts, Some(now().as_millis()));
        assert_eq!(fix.speed, None);
    }

    #[test]
    fn unknown_values_are_absent_and_garbage_is_refused() {
        let fix = fix_from_params(
            &query("lat=1&lon=2&speed=-1&bearing=-1&accuracy=-1"),
            SpeedUnit::Knots,
            now(),
        )
        .unwrap();
        assert_eq!((fix.speed, fix.heading, fix.acc), (None, None, None));
        for bad in [
            "lat=1",
            "lat=x&lon=2",
            "location=1",
            "lat=1&lon=2&timestamp=tomorrow",
            "lat=1&lon=2&speed=fast",
        ] {
            assert!(
                fix_from_params(&query(bad), SpeedUnit::Knots, now()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_json_framing_reads_coords_in_metres_per_second() {
        let body = br#"{"device_id":"p1","location":{"timestamp":"2023-11-14T22:13:20.000Z",
            "coords":{"latitude":52.5,"longitude":13.4,"accuracy":4,"speed":3.5,"heading":180,"altitude":31},
            "battery":{"level":0.8,"is_charging":false},"is_moving":true}}"#;
        let json = JsonBody::parse(body).unwrap();
        assert_eq!(json.device_id.as_deref(), Some("p1"));
        let fix = json.fix(now()).unwrap();
        assert_eq!(fix.ts, Some(1_700_000_000_000));
        assert_eq!(fix.speed, Some(3.5));
        assert_eq!(fix.heading, Some(180.0));
        assert!(
            JsonBody::parse(br#"{"location":{}}"#)
                .unwrap()
                .fix(now())
                .is_err()
        );
    }
}
