//! Every JSON frame the hub reads from or writes to a WebSocket.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::ErrorCode;
use crate::domain::{BBox, FixExtras, Position, PositionError, Seq, TimeWindow, Timestamp};

/// Longest subscription id a dashboard may use, in bytes.
pub const MAX_SUBSCRIPTION_ID: usize = 64;

/// Highest seq accepted: 2^53, the largest integer every JSON client (JavaScript
/// included) reads exactly, and far inside what the databases store.
pub const MAX_SEQ: Seq = 1 << 53;

/// One fix as a driver sends it, fields optional so that one bad item in a
/// batch is reported alone instead of failing the whole frame.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct WireFix {
    pub seq: Option<Seq>,
    pub ts: Option<i64>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acc: Option<f64>,
    /// The phone's battery, percent in [0, 100].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
    /// An SOS: the `sos` frame, or an item the app queued when it was pressed offline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sos: bool,
}

/// Why a fix was refused, with the seq to report it under (when there was one).
#[derive(Debug, PartialEq)]
pub struct FixError {
    pub seq: Option<Seq>,
    pub message: String,
}

impl WireFix {
    /// Validates the fix: shape, ranges, then the time window.
    pub fn validate(
        &self,
        window: &TimeWindow,
        now: Timestamp,
    ) -> Result<(Seq, Position, FixExtras), FixError> {
        let fail = |message: String| FixError {
            seq: self.seq,
            message,
        };
        let seq = self.seq.ok_or_else(|| fail("seq is required".into()))?;
        if seq > MAX_SEQ {
            return Err(fail(format!("seq must be at most {MAX_SEQ}")));
        }
        let (Some(ts), Some(lat), Some(lon)) = (self.ts, self.lat, self.lon) else {
            return Err(fail("ts, lat and lon are required".into()));
        };
        let ts = Timestamp::from_millis(ts);
        let position = Position::new(lat, lon, ts, self.speed, self.heading, self.acc)
            .map_err(|e: PositionError| fail(e.to_string()))?;
        window.check(ts, now).map_err(|e| fail(e.to_string()))?;
        if self
            .battery
            .is_some_and(|b| !b.is_finite() || !(0.0..=100.0).contains(&b))
        {
            return Err(fail("battery must be a number in [0, 100] percent".into()));
        }
        let extras = FixExtras {
            battery: self.battery,
            sos: self.sos,
        };
        Ok((seq, position, extras))
    }
}

/// A frame from a driver, read in one pass: the `type` decides which fields
/// matter. (No `#[serde(flatten)]`: it buffers every frame, and this is the hot path.)
#[derive(Debug, Deserialize)]
pub struct DriverFrame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Option<Cow<'a, str>>,
    /// Optional; when present it must be the token's own driver id.
    #[serde(borrow)]
    pub driver: Option<Cow<'a, str>>,
    pub seq: Option<Seq>,
    pub ts: Option<i64>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub speed: Option<f64>,
    pub heading: Option<f64>,
    pub acc: Option<f64>,
    pub battery: Option<f64>,
    pub items: Option<Vec<WireFix>>,
}

impl DriverFrame<'_> {
    /// The fix carried by a `pos` frame.
    pub fn fix(&self) -> WireFix {
        WireFix {
            seq: self.seq,
            ts: self.ts,
            lat: self.lat,
            lon: self.lon,
            speed: self.speed,
            heading: self.heading,
            acc: self.acc,
            battery: self.battery,
            sos: false,
        }
    }

    /// The fix carried by an `sos` frame: where the driver was when it
    /// pressed SOS, acknowledged like a position.
    pub fn sos(&self) -> WireFix {
        WireFix {
            sos: true,
            ..self.fix()
        }
    }
}

/// The body of `POST /api/v1/positions`: `{"items":[fix, ...]}`, the items
/// as in a driver's `batch`.
#[derive(Debug, Deserialize)]
pub struct UploadBody {
    pub items: Vec<WireFix>,
}

impl UploadBody {
    /// Reads an upload body; the error names what was expected.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(body).map_err(|e| format!("expected {{\"items\":[...]}}: {e}"))
    }
}

/// A frame from a dashboard.
#[derive(Debug, Deserialize)]
pub struct DashboardFrame<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Option<Cow<'a, str>>,
    pub id: Option<String>,
    pub bbox: Option<Vec<f64>>,
}

/// What a dashboard asks for, once its frame is checked.
#[derive(Debug, PartialEq)]
pub enum DashboardRequest<'a> {
    Subscribe { id: &'a str, bbox: BBox },
    Unsubscribe { id: &'a str },
}

/// Why a dashboard frame was refused: the code and message of its error frame.
#[derive(Debug, PartialEq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
}

impl FrameError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl DashboardFrame<'_> {
    /// Reads a dashboard's text frame into a checked request.
    pub fn decode(text: &str) -> Result<DashboardFrame<'_>, FrameError> {
        serde_json::from_str(text).map_err(|e| FrameError::new(ErrorCode::BadJson, e.to_string()))
    }

    /// The request this frame makes: its `type`, a valid `id`, a valid `bbox`.
    pub fn request(&self) -> Result<DashboardRequest<'_>, FrameError> {
        let id = || {
            self.id
                .as_deref()
                .filter(|id| !id.is_empty() && id.len() <= MAX_SUBSCRIPTION_ID)
                .ok_or_else(|| {
                    let message = format!("`id` must be 1 to {MAX_SUBSCRIPTION_ID} bytes");
                    FrameError::new(ErrorCode::InvalidId, message)
                })
        };
        match self.kind.as_deref() {
            Some("subscribe") => {
                let id = id()?;
                let bbox = match self.bbox.as_deref() {
                    Some(&[w, s, e, n]) => BBox::new(w, s, e, n)
                        .map_err(|e| FrameError::new(ErrorCode::InvalidBbox, e.to_string()))?,
                    _ => {
                        let message = "`bbox` must be [west, south, east, north]";
                        return Err(FrameError::new(ErrorCode::InvalidBbox, message));
                    }
                };
                Ok(DashboardRequest::Subscribe { id, bbox })
            }
            Some("unsubscribe") => Ok(DashboardRequest::Unsubscribe { id: id()? }),
            Some(other) => {
                let message = format!("unknown message type `{other}` (subscribe or unsubscribe)");
                Err(FrameError::new(ErrorCode::UnknownType, message))
            }
            None => Err(FrameError::new(
                ErrorCode::UnknownType,
                "a `type` field is required",
            )),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DriverOut<'a> {
    Welcome {
        driver: &'a str,
        fleet: &'a str,
        last_seq: Seq,
    },
    Ack {
        seq: Seq,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<Seq>,
    },
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DashboardOut<'a> {
    Hello {
        role: &'a str,
        fleet: Option<&'a str>,
        node: &'a str,
    },
    Snapshot {
        id: &'a str,
        drivers: Vec<&'a RawValue>,
    },
    Positions {
        items: Vec<&'a RawValue>,
    },
    Status {
        driver: &'a str,
        fleet: &'a str,
        status: &'a str,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
    },
}

/// Serialises an outbound frame. Our own types always serialise; the fallback
/// keeps a bug from ever panicking a session.
pub fn to_json<T: Serialize>(frame: &T) -> String {
    serde_json::to_string(frame).unwrap_or_else(|e| {
        tracing::error!(error = %e, "failed to serialise an outbound frame");
        String::from(r#"{"type":"error","code":"internal","message":"serialisation failed"}"#)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_pos_frame_reads_in_one_pass() {
        let f: DriverFrame = serde_json::from_str(
            r#"{"type":"pos","seq":1,"ts":1764000000000,"lat":-12.05,"lon":-77.04,"speed":8.3,"heading":90,"acc":5}"#,
        )
        .unwrap();
        assert_eq!(f.kind.as_deref(), Some("pos"));
        assert_eq!(f.fix().seq, Some(1));
        assert_eq!(f.fix().heading, Some(90.0));
    }

    #[test]
    fn validation_reports_the_seq_of_a_bad_fix() {
        let window = TimeWindow {
            max_future: Duration::from_secs(300),
            max_age: Duration::from_secs(3600),
        };
        let fix = WireFix {
            seq: Some(7),
            ts: Some(1_000),
            lat: Some(91.0),
            lon: Some(0.0),
            ..Default::default()
        };
        let err = fix
            .validate(&window, Timestamp::from_millis(1_000))
            .unwrap_err();
        assert_eq!(err.seq, Some(7));
    }

    #[test]
    fn dashboard_frames_decode_into_checked_requests() {
        let f = DashboardFrame::decode(r#"{"type":"subscribe","id":"m","bbox":[-78,-13,-76,-11]}"#)
            .unwrap();
        assert!(matches!(
            f.request(),
            Ok(DashboardRequest::Subscribe { id: "m", .. })
        ));
        let f = DashboardFrame::decode(r#"{"type":"subscribe","id":"m","bbox":[1,2]}"#).unwrap();
        assert_eq!(f.request().unwrap_err().code, ErrorCode::InvalidBbox);
        let f = DashboardFrame::decode(r#"{"type":"unsubscribe","id":""}"#).unwrap();
        assert_eq!(f.request().unwrap_err().code, ErrorCode::InvalidId);
        let f = DashboardFrame::decode(r#"{"id":"m"}"#).unwrap();
        assert_eq!(f.request().unwrap_err().code, ErrorCode::UnknownType);
        assert_eq!(
            DashboardFrame::decode("{").unwrap_err().code,
            ErrorCode::BadJson
        );
    }

    #[test]
    fn an_upload_body_is_items() {
        let body = UploadBody::parse(br#"{"items":[{"seq":1,"ts":5,"lat":0,"lon":0}]}"#).unwrap();
        assert_eq!(body.items.len(), 1);
        let err = UploadBody::parse(b"[]").unwrap_err();
        assert!(err.starts_with("expected {\"items\":[...]}"), "{err}");
    }

    #[test]
    fn error_frames_carry_the_code_as_snake_case() {
        let json = to_json(&DriverOut::Error {
            code: ErrorCode::StorageUnavailable,
            message: "m",
            seq: Some(3),
        });
        assert_eq!(
            json,
            r#"{"type":"error","code":"storage_unavailable","message":"m","seq":3}"#
        );
    }
}
