//! `POST /ingest/owntracks`: OwnTracks in HTTP mode. The app authenticates
//! with HTTP Basic (user name = the registered device id, password = its
//! key), names its phone in `X-Limit-D` (or `?d=`; logged, not needed: the
//! device id says whose positions these are) and posts one JSON message a
//! request. `_type: location` is a fix (`lat`, `lon`, `tst` Unix seconds,
//! `acc` m, `vel` km/h, `cog` degrees; `alt`, `batt`, `tid`, `t`,
//! `created_at` read and not stored yet); every other `_type` (`transition`,
//! `lwt`, `waypoint`, `card`, ...) is taken and ignored. The answer is 200
//! with a JSON array, empty (the app reads it for commands to run), after
//! the commit; refusals as on [`osmand`](super::osmand).
//!
//! The credentials are in the headers: the device is authenticated before
//! the body is read, and the body is bounded by [`MAX_BODY`]. [`decode`] is
//! the payload's one reading, for the MQTT consumer to share.

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::phone_app::{basic_auth, store_fix};
use super::units::{SpeedUnit, known, seq_from_time, unix_time};
use crate::app_state::AppState;
use crate::devices::Protocol;
use crate::http_api::{ApiError, body};
use crate::protocol::{ErrorCode, WireFix};

/// Largest message read: a location is about 300 bytes; a `card` may carry
/// a small face image.
pub const MAX_BODY: usize = 64 * 1024;

/// The header OwnTracks names the phone in.
const DEVICE_HEADER: &str = "X-Limit-D";

/// `POST /ingest/owntracks`.
pub async fn ingest(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let basic = basic_auth(&req);
    let device = state
        .devices
        .authenticate(
            basic.as_ref().map(|b| b.user.as_str()),
            basic.as_ref().map(|b| b.password.expose_secret()),
            Protocol::Owntracks,
        )
        .await?;
    let raw = body::read_bounded(&req, payload, MAX_BODY).await?;
    let message = decode(&raw).map_err(|e| ApiError::new(ErrorCode::InvalidPosition, e))?;
    if let Some(fix) = message {
        tracing::debug!(device = %device.device.device_id, phone = phone_name(&req).as_deref().unwrap_or(""), "owntracks location");
        store_fix(&state, &device, fix).await?;
    }
    Ok(HttpResponse::Ok().json(serde_json::json!([])))
}

/// The phone's name: `X-Limit-D`, or `?d=`.
fn phone_name(req: &HttpRequest) -> Option<String> {
    if let Some(name) = req
        .headers()
        .get(DEVICE_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        return Some(name.to_owned());
    }
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .ok()?
        .into_inner()
        .into_iter()
        .find_map(|(k, v)| (k == "d").then_some(v))
}

/// An OwnTracks message, any `_type`.
#[derive(Debug, Deserialize)]
struct Message {
    #[serde(rename = "_type")]
    kind: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    tst: Option<f64>,
    acc: Option<f64>,
    vel: Option<f64>,
    cog: Option<f64>,
    /// Battery percent.
    batt: Option<f64>,
}

/// The fix in an OwnTracks message, `None` for a message that is not a
/// location (taken and ignored). Its seq is its time in milliseconds.
pub fn decode(raw: &[u8]) -> Result<Option<WireFix>, String> {
    let message: Message = serde_json::from_slice(raw)
        .map_err(|e| format!("expected an OwnTracks JSON message with `_type`: {e}"))?;
    match message.kind.as_deref() {
        Some("location") => {}
        Some(_) => return Ok(None),
        None => return Err("`_type` is required".into()),
    }
    let (Some(lat), Some(lon), Some(tst)) = (message.lat, message.lon, message.tst) else {
        return Err("a location needs `lat`, `lon` and `tst`".into());
    };
    let ts = unix_time(tst)?;
    Ok(Some(WireFix {
        seq: seq_from_time(ts),
        ts: Some(ts.as_millis()),
        lat: Some(lat),
        lon: Some(lon),
        speed: known(message.vel).map(|v| SpeedUnit::Kmh.to_mps(v)),
        heading: known(message.cog),
        acc: known(message.acc),
        battery: message.batt,
        sos: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_a_fix_in_metres_per_second() {
        let raw = br#"{"_type":"location","lat":52.5,"lon":13.4,"tst":1700000000,"acc":8,
            "alt":40,"vel":36,"cog":270,"batt":77,"tid":"p1","t":"u","created_at":1700000001}"#;
        let fix = decode(raw).unwrap().unwrap();
        assert_eq!(fix.ts, Some(1_700_000_000_000));
        assert_eq!(fix.seq, Some(1_700_000_000_000));
        assert!((fix.speed.unwrap() - 10.0).abs() < 1e-9);
        assert_eq!((fix.heading, fix.acc), (Some(270.0), Some(8.0)));
    }

    #[test]
    fn other_types_are_ignored_and_bad_locations_refused() {
        let transition = br#"{"_type":"transition","event":"enter","tst":1700000000}"#;
        assert!(decode(transition).unwrap().is_none());
        assert!(decode(br#"{"_type":"lwt","tst":1}"#).unwrap().is_none());
        assert!(decode(br#"{"_type":"location","lat":1,"lon":2}"#).is_err());
        assert!(decode(br#"{"lat":1,"lon":2,"tst":3}"#).is_err());
        assert!(decode(b"not json").is_err());
    }
}
