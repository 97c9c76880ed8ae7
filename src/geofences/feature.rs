//! Fences as GeoJSON Features, in and out. In: a Feature is read into loose
//! serde types (unknown members refused), then every value is checked with
//! a message that names it, and the shape is built by [`super::fence`]. Out:
//! the same Feature, with the hub's `id`, the fence's `fleet` and its times.
//!
//! What the store keeps is the definition alone (geometry, `name`, the
//! shape's and the rules' properties); it is read back through the same
//! checks.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fence::{self, Checks, FenceDef, FenceError, FenceProps, FenceShape, Geofence};
use crate::domain::{FleetId, Timestamp};

/// Why a body is not a fence.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// Not JSON at all (`bad_json`).
    #[error("the body is not JSON: {0}")]
    Json(String),
    /// JSON, but not a valid fence (`invalid_geofence`).
    #[error(transparent)]
    Invalid(#[from] FenceError),
}

/// A Feature as a client sends it, with what the API decides on besides
/// the definition.
#[derive(Debug)]
pub struct FeatureRequest {
    pub def: FenceDef,
    /// `properties.fleet`: the fleet an admin creates the fence in.
    pub fleet: Option<String>,
    /// The Feature's `id`, when it has one (a GET answer sent back).
    pub id: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureIn {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<Value>,
    geometry: Option<GeometryIn>,
    properties: Option<PropertiesIn>,
    /// GeoJSON allows one; the hub computes its own.
    #[serde(rename = "bbox")]
    _bbox: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GeometryIn {
    #[serde(rename = "type")]
    kind: Option<String>,
    coordinates: Option<Value>,
    #[serde(rename = "bbox")]
    _bbox: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PropertiesIn {
    name: Option<Value>,
    fleet: Option<String>,
    radius_m: Option<Value>,
    width_m: Option<Value>,
    speed_limit_kmh: Option<Value>,
    dwell_secs: Option<Value>,
    /// Set by the hub; accepted (and ignored) so that a fence read with
    /// GET can be sent back with PUT as it is.
    #[serde(rename = "created_at")]
    _created_at: Option<IgnoredAny>,
    #[serde(rename = "updated_at")]
    _updated_at: Option<IgnoredAny>,
}

impl FenceDef {
    /// The validating constructor: a GeoJSON Feature (JSON text) into a
    /// fence definition, with the Feature's `fleet` and `id` if any. A
    /// polygon of many positions takes a while ([`fence::MAX_VERTICES`]):
    /// call it off the async workers.
    pub fn from_feature(body: &[u8]) -> Result<FeatureRequest, FeatureError> {
        read(body, Checks::Full)
    }

    /// A definition the hub stored, read back through every check but the
    /// quadratic one ([`Checks::Stored`]).
    pub fn from_stored(text: &str) -> Result<FenceDef, FeatureError> {
        read(text.as_bytes(), Checks::Stored).map(|request| request.def)
    }

    /// The definition as the store keeps it.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(&feature_out(self, None)).unwrap_or_default()
    }
}

fn read(body: &[u8], checks: Checks) -> Result<FeatureRequest, FeatureError> {
    let feature: FeatureIn = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            FeatureError::Invalid(FenceError::new(format!("not a geofence Feature: {e}")))
        }
        _ => FeatureError::Json(e.to_string()),
    })?;
    if feature.kind.as_deref() != Some("Feature") {
        return Err(invalid("`type` must be \"Feature\"").into());
    }
    let properties = feature
        .properties
        .ok_or_else(|| invalid("`properties` with a `name` is required"))?;
    let geometry = feature
        .geometry
        .ok_or_else(|| invalid("`geometry` is required"))?;
    let shape = shape_of(&geometry, &properties, checks)?;
    let props = props_of(&properties)?;
    Ok(FeatureRequest {
        def: FenceDef::new(shape, props)?,
        fleet: properties.fleet,
        id: feature.id,
    })
}

fn invalid(message: &str) -> FenceError {
    FenceError::new(message)
}

fn shape_of(
    geometry: &GeometryIn,
    props: &PropertiesIn,
    checks: Checks,
) -> Result<FenceShape, FenceError> {
    let coordinates = geometry
        .coordinates
        .as_ref()
        .ok_or_else(|| invalid("`geometry.coordinates` is required"))?;
    let kind = geometry.kind.as_deref().unwrap_or("");
    let (radius, width) = (props.radius_m.as_ref(), props.width_m.as_ref());
    match (kind, radius, width) {
        ("Polygon", None, None) => fence::polygon(&rings(coordinates)?, checks),
        ("Point", Some(radius), None) => {
            fence::circle(pair(coordinates)?, number("properties.radius_m", radius)?)
        }
        ("LineString", None, Some(width)) => {
            fence::corridor(&line(coordinates)?, number("properties.width_m", width)?)
        }
        ("Point", None, _) => Err(invalid(
            "a Point is a circle: `properties.radius_m` is required",
        )),
        ("LineString", _, None) => Err(invalid(
            "a LineString is a corridor: `properties.width_m` is required",
        )),
        ("Polygon" | "Point" | "LineString", _, _) => Err(invalid(
            "`radius_m` is for a Point (circle) and `width_m` for a LineString (corridor) only",
        )),
        (other, _, _) => Err(FenceError::new(format!(
            "`geometry.type` must be \"Polygon\", \"Point\" (a circle) or \"LineString\" (a corridor), not {other:?}"
        ))),
    }
}

fn props_of(props: &PropertiesIn) -> Result<FenceProps, FenceError> {
    let name = match &props.name {
        Some(Value::String(name)) => name.clone(),
        Some(_) => return Err(invalid("`properties.name` must be a string")),
        None => return Err(invalid("`properties.name` is required")),
    };
    let speed_limit_kmh = optional(props.speed_limit_kmh.as_ref(), |v| {
        number("properties.speed_limit_kmh", v)
    })?;
    let dwell_secs = optional(props.dwell_secs.as_ref(), |v| {
        v.as_u64().ok_or_else(|| {
            invalid("`properties.dwell_secs` must be a whole number of seconds above 0")
        })
    })?;
    Ok(FenceProps {
        name,
        speed_limit_kmh,
        dwell_secs,
    })
}

/// An optional property; `null` is the same as absent.
fn optional<T>(
    value: Option<&Value>,
    read: impl Fn(&Value) -> Result<T, FenceError>,
) -> Result<Option<T>, FenceError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => read(v).map(Some),
    }
}

fn number(field: &str, value: &Value) -> Result<f64, FenceError> {
    value
        .as_f64()
        .ok_or_else(|| FenceError::new(format!("`{field}` must be a number")))
}

/// A position: `[lon, lat]`, or `[lon, lat, altitude]` (the altitude is dropped).
fn pair(value: &Value) -> Result<[f64; 2], FenceError> {
    match value.as_array().map(Vec::as_slice) {
        Some([lon, lat]) => lonlat(lon, lat),
        Some([lon, lat, altitude]) if altitude.is_number() => lonlat(lon, lat),
        _ => Err(invalid(
            "a position must be an array [longitude, latitude] of numbers",
        )),
    }
}

fn lonlat(lon: &Value, lat: &Value) -> Result<[f64; 2], FenceError> {
    match (lon.as_f64(), lat.as_f64()) {
        (Some(lon), Some(lat)) => Ok([lon, lat]),
        _ => Err(invalid(
            "a position's longitude and latitude must be numbers",
        )),
    }
}

fn array<'a>(value: &'a Value, what: &str) -> Result<&'a [Value], FenceError> {
    value
        .as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| FenceError::new(format!("`geometry.coordinates` must be {what}")))
}

fn line(value: &Value) -> Result<Vec<[f64; 2]>, FenceError> {
    let positions = array(value, "an array of positions")?;
    // Bounded before anything is built (the body's size bounds it too).
    if positions.len() > fence::MAX_VERTICES {
        return Err(FenceError::new(format!(
            "the geometry has {} positions; a fence has at most {}",
            positions.len(),
            fence::MAX_VERTICES
        )));
    }
    positions.iter().map(pair).collect()
}

fn rings(value: &Value) -> Result<Vec<Vec<[f64; 2]>>, FenceError> {
    array(value, "an array of rings (arrays of positions)")?
        .iter()
        .map(line)
        .collect()
}

// ---- out ----

#[derive(Serialize)]
struct FeatureOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    geometry: GeometryOut,
    properties: PropertiesOut<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", content = "coordinates")]
enum GeometryOut {
    Polygon(Vec<Vec<[f64; 2]>>),
    Point([f64; 2]),
    LineString(Vec<[f64; 2]>),
}

#[derive(Serialize)]
struct PropertiesOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<&'a FleetId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    radius_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    width_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    speed_limit_kmh: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dwell_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<Timestamp>,
}

fn coords(line: &geo::LineString<f64>) -> Vec<[f64; 2]> {
    line.coords().map(|c| [c.x, c.y]).collect()
}

/// The definition as a Feature; with the fence's id, fleet and times when given.
fn feature_out<'a>(def: &'a FenceDef, fence: Option<&'a Geofence>) -> FeatureOut<'a> {
    let (mut radius_m, mut width_m) = (None, None);
    let geometry = match def.shape() {
        FenceShape::Polygon(p) => GeometryOut::Polygon(
            std::iter::once(p.exterior())
                .chain(p.interiors())
                .map(coords)
                .collect(),
        ),
        FenceShape::Circle {
            center,
            radius_m: r,
        } => {
            radius_m = Some(*r);
            GeometryOut::Point([center.x(), center.y()])
        }
        FenceShape::Corridor { line, width_m: w } => {
            width_m = Some(*w);
            GeometryOut::LineString(coords(line))
        }
    };
    let props = def.props();
    FeatureOut {
        kind: "Feature",
        id: fence.map(|f| f.id().as_str()),
        geometry,
        properties: PropertiesOut {
            name: &props.name,
            fleet: fence.map(Geofence::fleet),
            radius_m,
            width_m,
            speed_limit_kmh: props.speed_limit_kmh,
            dwell_secs: props.dwell_secs,
            created_at: fence.map(Geofence::created_at),
            updated_at: fence.map(Geofence::updated_at),
        },
    }
}

impl Serialize for Geofence {
    /// A fence as the API shows it: a GeoJSON Feature with its `id`, and its
    /// `fleet`, `created_at` and `updated_at` among the properties.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        feature_out(self.def(), Some(self)).serialize(s)
    }
}

/// Fences as a GeoJSON FeatureCollection.
#[derive(Serialize)]
pub struct FeatureCollection<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    features: &'a [Geofence],
}

impl<'a> FeatureCollection<'a> {
    pub fn new(features: &'a [Geofence]) -> Self {
        Self {
            kind: "FeatureCollection",
            features,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<FeatureRequest, FeatureError> {
        FenceDef::from_feature(v.to_string().as_bytes())
    }

    fn message(v: Value) -> String {
        match parse(v) {
            Err(FeatureError::Invalid(e)) => e.0,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn each_shape_reads_and_is_stored_as_it_came() {
        let features = [
            json!({"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[13.0,52.0],[14.0,52.0],[14.0,53.0],[13.0,52.0]]]},"properties":{"name":"zone","speed_limit_kmh":30.5}}),
            json!({"type":"Feature","geometry":{"type":"Point","coordinates":[13.4,52.5]},"properties":{"name":"depot","radius_m":150.0,"dwell_secs":600}}),
            json!({"type":"Feature","geometry":{"type":"LineString","coordinates":[[13.0,52.0],[13.1,52.1]]},"properties":{"name":"route","width_m":40.0}}),
        ];
        for feature in features {
            let def = parse(feature.clone()).unwrap().def;
            let stored: Value = serde_json::from_str(&def.to_stored()).unwrap();
            assert_eq!(stored, feature);
            assert_eq!(FenceDef::from_stored(&def.to_stored()).unwrap(), def);
        }
    }

    #[test]
    fn what_is_wrong_is_named() {
        let point = |props: Value| json!({"type":"Feature","geometry":{"type":"Point","coordinates":[13.4,52.5]},"properties":props});
        assert!(message(point(json!({"name":"x"}))).contains("radius_m"));
        assert!(message(point(json!({"radius_m":5}))).contains("name"));
        assert!(message(point(json!({"name":"x","radius_m":"5"}))).contains("radius_m"));
        assert!(message(point(json!({"name":"x","radius_m":5,"color":"red"}))).contains("color"));
        let no_coords = json!({"type":"Feature","geometry":{"type":"Point"},"properties":{"name":"x","radius_m":5}});
        assert!(message(no_coords).contains("coordinates"));
        let null_lat = json!({"type":"Feature","geometry":{"type":"Point","coordinates":[13.4,null]},"properties":{"name":"x","radius_m":5}});
        assert!(message(null_lat).contains("numbers"));
        let odd_altitude = json!({"type":"Feature","geometry":{"type":"Point","coordinates":[13.4,52.5,"high"]},"properties":{"name":"x","radius_m":5}});
        assert!(message(odd_altitude).contains("position"));
        let with_altitude = json!({"type":"Feature","geometry":{"type":"Point","coordinates":[13.4,52.5,34.0]},"properties":{"name":"x","radius_m":5}});
        assert!(parse(with_altitude).is_ok());
        let multi = json!({"type":"Feature","geometry":{"type":"MultiPolygon","coordinates":[]},"properties":{"name":"x"}});
        assert!(message(multi).contains("MultiPolygon"));
        assert!(matches!(
            FenceDef::from_feature(b"{\"type\":"),
            Err(FeatureError::Json(_))
        ));
    }
}
