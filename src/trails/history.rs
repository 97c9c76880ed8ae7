//! `GET /api/v1/drivers/{id}/trail`: one driver's stored fixes in a time
//! range, as JSON or as a GeoJSON LineString, optionally simplified. A driver
//! is an id within a fleet: a dispatcher asks for its own fleet's driver, an
//! admin names the fleet (`?fleet=`).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::geometry::{Summary, simplify, summarize};
use super::store::{StoreError, TrailQuery};
use crate::app_state::AppState;
use crate::auth::{FleetScope, Role};
use crate::domain::{DriverId, DriverKey, FleetId, Seq, Timestamp, TrailPoint};
use crate::http_api::ApiError;
use crate::protocol::ErrorCode;

/// Points returned when `limit` is not given...
pub const DEFAULT_LIMIT: usize = 10_000;
/// ...and the most a caller may ask for.
pub const MAX_LIMIT: usize = 100_000;
/// The range when `from` is not given: a day before `to`.
const DEFAULT_SPAN: Duration = Duration::from_secs(24 * 3600);
/// Largest simplification tolerance, in metres.
const MAX_SIMPLIFY_M: f64 = 100_000.0;

#[derive(Deserialize)]
pub struct Params {
    /// The driver's fleet: required of admins, optional for dispatchers (their own).
    fleet: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    simplify: Option<f64>,
    format: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Json,
    GeoJson,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, message)
}

/// An instant as integer milliseconds or RFC 3339. In a query string an
/// unencoded `+` of an offset arrives as a space; it is read back as `+`.
pub(crate) fn parse_instant(name: &str, raw: &str) -> Result<Timestamp, ApiError> {
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(Timestamp::from_millis(ms));
    }
    let text = raw.trim().replace(' ', "+");
    let at = OffsetDateTime::parse(&text, &Rfc3339).map_err(|_| {
        invalid(format!(
            "{name} must be RFC 3339 (2025-05-01T08:00:00Z) or milliseconds since the epoch"
        ))
    })?;
    let ms = at.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms)
        .map(Timestamp::from_millis)
        .map_err(|_| invalid(format!("{name} is out of range")))
}

/// The parsed request, every value checked.
#[derive(Debug)]
struct Request {
    fleet: Option<FleetId>,
    from: Timestamp,
    to: Timestamp,
    limit: usize,
    simplify_m: Option<f64>,
    format: Format,
}

impl Params {
    fn check(&self, default_to: Timestamp) -> Result<Request, ApiError> {
        let fleet = self
            .fleet
            .as_deref()
            .map(|f| FleetId::parse(f).map_err(|e| invalid(format!("fleet: {e}"))))
            .transpose()?;
        let to = self
            .to
            .as_deref()
            .map(|t| parse_instant("to", t))
            .transpose()?
            .unwrap_or(default_to);
        let from = match self.from.as_deref() {
            Some(f) => parse_instant("from", f)?,
            None => Timestamp::from_millis(
                to.as_millis()
                    .saturating_sub(DEFAULT_SPAN.as_millis() as i64),
            ),
        };
        if from > to {
            return Err(invalid("from must not be after to"));
        }
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(invalid(format!("limit must be between 1 and {MAX_LIMIT}")));
        }
        let simplify_m = match self.simplify {
            Some(m) if !(m.is_finite() && (0.0..=MAX_SIMPLIFY_M).contains(&m)) => {
                return Err(invalid(format!(
                    "simplify must be a tolerance in metres, 0 to {MAX_SIMPLIFY_M}"
                )));
            }
            other => other.filter(|m| *m > 0.0),
        };
        let format = match self.format.as_deref() {
            None | Some("json") => Format::Json,
            Some("geojson") => Format::GeoJson,
            Some(_) => return Err(invalid("format must be json or geojson")),
        };
        Ok(Request {
            fleet,
            from,
            to,
            limit,
            simplify_m,
            format,
        })
    }
}

pub async fn trail(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    params: web::Query<Params>,
) -> Result<HttpResponse, ApiError> {
    let identity = state
        .auth
        .authorize(&req, &[Role::Dispatcher, Role::Admin])?;
    let driver =
        DriverId::parse(&path).map_err(|e| ApiError::new(ErrorCode::InvalidId, e.to_string()))?;
    let max_future = Duration::from_secs(state.settings.driver.max_future_secs);
    let default_to =
        Timestamp::from_millis(Timestamp::now().as_millis() + max_future.as_millis() as i64);
    let request = params.check(default_to)?;
    let unavailable = |e: StoreError| ApiError::unavailable(e.to_string());
    let not_found = || ApiError::not_found(format!("no trail for driver {driver}"));

    // Another fleet's driver is answered exactly like an unknown one.
    let fleet = fleet_asked(&identity.scope, request.fleet)?
        .filter(|fleet| identity.scope.allows(fleet))
        .ok_or_else(not_found)?;
    let key = DriverKey::new(fleet, driver.clone());
    // A driver known live but with nothing committed yet has an empty trail.
    let stored = state.store.driver(&key).await.map_err(unavailable)?;
    if stored.is_none() && !state.drivers.knows(&key) {
        return Err(not_found());
    }
    let query = TrailQuery {
        driver: key,
        from: request.from,
        to: request.to,
        limit: request.limit,
    };
    let points = state.store.trail(&query).await.map_err(unavailable)?;
    let truncated = points.len() == request.limit;
    // Measured on every stored fix, so simplifying never changes the trip's numbers.
    let mut summary = summarize(&points);
    let points = match request.simplify_m {
        Some(m) => simplify(points, m),
        None => points,
    };
    summary.points = points.len();
    let trail = Trail {
        driver: query.driver.driver().as_str(),
        fleet: query.driver.fleet().as_str(),
        points: &points,
        summary,
        truncated,
    };
    Ok(match request.format {
        Format::Json => HttpResponse::Ok().json(trail.to_json()),
        Format::GeoJson => HttpResponse::Ok()
            .content_type("application/geo+json")
            .json(trail.to_geojson()),
    })
}

/// The fleet whose driver is asked for: a dispatcher's own unless it names
/// one (`Ok(None)` when it names another: answered as unknown); an admin must
/// name one, since every fleet may have a driver of that id.
fn fleet_asked(scope: &FleetScope, named: Option<FleetId>) -> Result<Option<FleetId>, ApiError> {
    match (scope, named) {
        (FleetScope::One(own), None) => Ok(Some(own.clone())),
        (FleetScope::One(own), Some(named)) => Ok(Some(named).filter(|n| n == own)),
        (FleetScope::All, Some(named)) => Ok(Some(named)),
        (FleetScope::All, None) => Err(invalid(
            "admins must name the driver's fleet: ?fleet=<fleet id> (ids are per fleet)",
        )),
    }
}

/// What both formats are made from.
struct Trail<'a> {
    driver: &'a str,
    fleet: &'a str,
    points: &'a [TrailPoint],
    summary: Summary,
    /// True when `limit` cut the range short (the oldest points came back).
    truncated: bool,
}

#[derive(Serialize)]
struct JsonTrail<'a> {
    driver: &'a str,
    fleet: &'a str,
    points: Vec<JsonPoint>,
    summary: Summary,
    truncated: bool,
}

#[derive(Serialize)]
struct JsonPoint {
    seq: Seq,
    ts: Timestamp,
    lat: f64,
    lon: f64,
    speed: Option<f64>,
    heading: Option<f64>,
    acc: Option<f64>,
}

#[derive(Serialize)]
struct Feature<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    geometry: LineStringGeometry,
    properties: FeatureProperties<'a>,
}

#[derive(Serialize)]
struct LineStringGeometry {
    #[serde(rename = "type")]
    kind: &'static str,
    /// `[lon, lat]`, the GeoJSON order.
    coordinates: Vec<[f64; 2]>,
}

#[derive(Serialize)]
struct FeatureProperties<'a> {
    driver: &'a str,
    fleet: &'a str,
    /// Fix time of each coordinate, milliseconds since the epoch.
    timestamps: Vec<Timestamp>,
    seqs: Vec<Seq>,
    summary: Summary,
    truncated: bool,
}

impl Trail<'_> {
    fn to_json(&self) -> JsonTrail<'_> {
        let points = self
            .points
            .iter()
            .map(|p| JsonPoint {
                seq: p.seq,
                ts: p.position.ts(),
                lat: p.position.lat(),
                lon: p.position.lon(),
                speed: p.position.speed(),
                heading: p.position.heading(),
                acc: p.position.acc(),
            })
            .collect();
        JsonTrail {
            driver: self.driver,
            fleet: self.fleet,
            points,
            summary: self.summary,
            truncated: self.truncated,
        }
    }

    /// A Feature with a LineString (fewer than two coordinates when the
    /// range holds fewer than two fixes).
    fn to_geojson(&self) -> Feature<'_> {
        Feature {
            kind: "Feature",
            geometry: LineStringGeometry {
                kind: "LineString",
                coordinates: self
                    .points
                    .iter()
                    .map(|p| [p.position.lon(), p.position.lat()])
                    .collect(),
            },
            properties: FeatureProperties {
                driver: self.driver,
                fleet: self.fleet,
                timestamps: self.points.iter().map(|p| p.position.ts()).collect(),
                seqs: self.points.iter().map(|p| p.seq).collect(),
                summary: self.summary,
                truncated: self.truncated,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(from: Option<&str>, to: Option<&str>) -> Params {
        Params {
            fleet: None,
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
            limit: None,
            simplify: None,
            format: None,
        }
    }

    #[test]
    fn instants_read_as_milliseconds_or_rfc_3339() {
        let ms = |s| parse_instant("from", s).unwrap().as_millis();
        assert_eq!(ms("1764000000000"), 1_764_000_000_000);
        assert_eq!(ms("2025-11-24T16:00:00Z"), 1_764_000_000_000);
        assert_eq!(ms("2025-11-24T18:00:00.5+02:00"), 1_764_000_000_500);
        assert_eq!(
            ms("2025-11-24T18:00:00 02:00"),
            1_764_000_000_000,
            "a decoded + is a space"
        );
        assert!(parse_instant("from", "yesterday").is_err());
    }

    #[test]
    fn the_range_defaults_to_the_day_before_to() {
        let r = params(None, None)
            .check(Timestamp::from_millis(100_000_000))
            .unwrap();
        assert_eq!(r.to.as_millis(), 100_000_000);
        assert_eq!(r.from.as_millis(), 100_000_000 - 86_400_000);
        assert_eq!(r.limit, DEFAULT_LIMIT);
        assert_eq!(r.format, Format::Json);
    }

    #[test]
    fn bad_queries_are_refused() {
        let now = Timestamp::from_millis(0);
        assert!(params(Some("2000"), Some("1000")).check(now).is_err());
        let mut p = params(None, None);
        p.limit = Some(MAX_LIMIT + 1);
        assert!(p.check(now).is_err());
        let mut p = params(None, None);
        p.simplify = Some(f64::NAN);
        assert!(p.check(now).is_err());
        let mut p = params(None, None);
        p.format = Some("kml".into());
        assert!(p.check(now).is_err());
        let mut p = params(None, None);
        p.fleet = Some("no such/fleet".into());
        assert!(p.check(now).is_err());
    }

    #[test]
    fn dispatchers_get_their_fleet_and_admins_must_name_one() {
        let fleet = |raw: &str| FleetId::parse(raw).unwrap();
        let acme = FleetScope::One(fleet("acme"));
        assert_eq!(fleet_asked(&acme, None).unwrap(), Some(fleet("acme")));
        assert_eq!(
            fleet_asked(&acme, Some(fleet("acme"))).unwrap(),
            Some(fleet("acme"))
        );
        assert_eq!(fleet_asked(&acme, Some(fleet("beta"))).unwrap(), None);
        assert_eq!(
            fleet_asked(&FleetScope::All, Some(fleet("beta"))).unwrap(),
            Some(fleet("beta"))
        );
        assert!(fleet_asked(&FleetScope::All, None).is_err());
    }
}
