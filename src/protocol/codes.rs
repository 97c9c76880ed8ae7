//! One table of error codes for WebSocket error frames, HTTP error bodies and
//! auth, each with the HTTP status it answers with; and the WebSocket close
//! codes, each with the reason the hub sends.

use serde::Serialize;

macro_rules! error_codes {
    ($($variant:ident => $text:literal, $status:literal;)+) => {
        /// Stable error codes carried by `error` frames and HTTP error bodies.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($variant,)+
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)+];

            /// The code as it travels (`snake_case`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)+
                }
            }

            /// The status an HTTP answer carrying this code has.
            pub fn http_status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)+
                }
            }
        }
    };
}

error_codes! {
    BadJson => "bad_json", 400;
    UnknownType => "unknown_type", 400;
    InvalidPosition => "invalid_position", 400;
    BatchTooLarge => "batch_too_large", 400;
    FrameTooLarge => "frame_too_large", 413;
    RateLimited => "rate_limited", 429;
    Forbidden => "forbidden", 403;
    StorageUnavailable => "storage_unavailable", 503;
    InvalidBbox => "invalid_bbox", 400;
    InvalidId => "invalid_id", 400;
    InvalidQuery => "invalid_query", 400;
    TooManySubscriptions => "too_many_subscriptions", 400;
    NotFound => "not_found", 404;
    TokenMissing => "token_missing", 401;
    TokenExpired => "token_expired", 401;
    TokenInvalid => "token_invalid", 401;
    PayloadTooLarge => "payload_too_large", 413;
    UnsupportedEncoding => "unsupported_encoding", 415;
    MethodNotAllowed => "method_not_allowed", 405;
    BadRequest => "bad_request", 400;
    OriginNotAllowed => "origin_not_allowed", 403;
    TooManyConnections => "too_many_connections", 429;
    ServerBusy => "server_busy", 503;
    Internal => "internal", 500;
    DeviceKeyMissing => "device_key_missing", 401;
    DeviceKeyInvalid => "device_key_invalid", 401;
    UnknownDevice => "unknown_device", 404;
    DeviceExists => "device_exists", 409;
    InvalidGeofence => "invalid_geofence", 400;
    UnknownGeofence => "unknown_geofence", 404;
    InvalidAlertRules => "invalid_alert_rules", 400;
    TooManyGeofences => "too_many_geofences", 400;
}

impl ErrorCode {
    /// The code given to an error response that carries none of its own (one
    /// of actix's: a wrong method, an unreadable request), by its status.
    pub fn for_status(status: u16) -> ErrorCode {
        match status {
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            413 => ErrorCode::PayloadTooLarge,
            415 => ErrorCode::UnsupportedEncoding,
            429 => ErrorCode::RateLimited,
            503 => ErrorCode::ServerBusy,
            400..=499 => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }
}

/// Why the hub ends a WebSocket session: the close code and the reason it
/// sends with it. Drivers and dashboards end through the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

impl Close {
    /// The peer closed first; the hub answers in kind.
    pub const BYE: Close = Close::new(1000, "bye");
    /// The hub is shutting down (standard "going away").
    pub const SHUTTING_DOWN: Close = Close::new(1001, "server shutting down");
    /// The token expired on an open socket (standard "policy violation").
    pub const TOKEN_EXPIRED: Close = Close::new(1008, "token expired");
    /// Sustained bad frames (standard "policy violation").
    pub const ABUSE: Close = Close::new(1008, "too many bad messages");
    /// A dashboard that left too many control frames unread (standard "policy violation").
    pub const UNREAD: Close = Close::new(1008, "too many unread frames");
    /// A frame the WebSocket layer cannot read (standard "protocol error").
    pub const PROTOCOL_ERROR: Close = Close::new(1002, "protocol error");
    /// A text frame that is not UTF-8 (standard "invalid frame payload data").
    pub const INVALID_UTF8: Close = Close::new(1007, "invalid UTF-8");
    /// A frame, or a message assembled from fragments, over the socket's
    /// hard limit (standard "message too big").
    pub const TOO_BIG: Close = Close::new(1009, "message too big");
    /// A dashboard that stopped reading (standard "try again later").
    pub const TOO_SLOW: Close = Close::new(1013, "too slow");
    /// The same driver connected again; this older socket is closed.
    pub const REPLACED: Close = Close::new(4001, "replaced");
    /// The peer answered no ping in time.
    pub const NO_PONG: Close = Close::new(4002, "no pong");

    const fn new(code: u16, reason: &'static str) -> Self {
        Self { code, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_text_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
            assert!((400..600).contains(&code.http_status()));
        }
    }
}
