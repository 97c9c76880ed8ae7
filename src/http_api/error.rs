//! HTTP errors: a stable code from the protocol's one table, its status, and
//! a message, as `{"error":{"code":"...","message":"..."}}`. Every error
//! answers so: the hub's own ([`ApiError`]), actix's extractors' (their
//! error handlers, set once in [`extractor_configs`]), and whatever else actix
//! answers by itself, such as a 405 (rewritten by [`json_errors`]).

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{HttpRequest, HttpResponse, ResponseError, http::StatusCode, web};
use serde::Serialize;

use crate::auth::AuthError;
use crate::ingest::Refusal;
use crate::protocol::ErrorCode;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: ErrorCode,
    message: &'a str,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::StorageUnavailable, message)
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        Self::new(r.code, r.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(body(self.code, &self.message))
    }
}

fn body(code: ErrorCode, message: &str) -> Body<'_> {
    Body {
        error: Inner { code, message },
    }
}

/// The extractors' configurations, registered once for the whole app: their
/// errors answer with the JSON body, and a JSON body is bounded by `body_limit`.
pub fn extractor_configs(cfg: &mut web::ServiceConfig, body_limit: usize) {
    cfg.app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PathConfig::default().error_handler(path_error))
        .app_data(
            web::JsonConfig::default()
                .limit(body_limit)
                .error_handler(json_error),
        )
        .app_data(web::PayloadConfig::new(body_limit));
}

fn query_error(e: QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::new(ErrorCode::InvalidQuery, e.to_string()).into()
}

fn path_error(e: PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::not_found(e.to_string()).into()
}

fn json_error(e: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    let code = match e {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ErrorCode::PayloadTooLarge
        }
        _ => ErrorCode::BadJson,
    };
    ApiError::new(code, e.to_string()).into()
}

/// Middleware that gives the JSON body to every error response that has
/// none (actix's own: a wrong method, a request it could not route or read),
/// keeping its status and headers (a 405 keeps its `Allow`).
pub fn json_errors<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(into_json)
}

fn into_json<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let code = ErrorCode::for_status(status.as_u16());
    let mut message = status.canonical_reason().unwrap_or("error").to_owned();
    if let Some(allow) = res
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
    {
        message = format!("{message}: this path takes {allow}");
    }
    let json = serde_json::to_string(&body(code, &message)).unwrap_or_default();
    let (req, res) = res.into_parts();
    let mut res = res.set_body(json);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let res = ServiceResponse::new(req, res)
        .map_into_boxed_body()
        .map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}
