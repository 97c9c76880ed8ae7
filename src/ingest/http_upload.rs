//! `POST /api/v1/positions`: a driver's batch over HTTP (an app that sends
//! its offline buffer in one request), answered after the commit. The fixes
//! take the same [`pipeline`](super::pipeline) as WebSocket ones: same
//! validation, rate limit, codes and messages; only the framing differs.
//! The token is checked from the headers before any of the body is read;
//! the body, gzip or deflate allowed, is then read bounded (413 past
//! `ws.max_frame_bytes` inflated, the same bound as a driver's frame).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

use super::pipeline::{Refusal, driver_of};
use crate::app_state::AppState;
use crate::auth::Role;
use crate::domain::Seq;
use crate::http_api::{ApiError, body};
use crate::protocol::{ErrorCode, UploadBody};

#[derive(Serialize)]
struct Answer {
    /// Highest seq of this request now stored (0 when none was).
    ack: Seq,
    rejected: Vec<Rejected>,
}

/// A fix refused alone, as the answer lists it.
#[derive(Serialize)]
struct Rejected {
    seq: Option<Seq>,
    code: ErrorCode,
    message: String,
}

impl From<Refusal> for Rejected {
    fn from(r: Refusal) -> Self {
        Self {
            seq: r.seq,
            code: r.code,
            message: r.message,
        }
    }
}

pub async fn positions(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, &[Role::Driver])?;
    let me = driver_of(&identity)?;
    let body = body::read_bounded(&req, payload, state.settings.ws.max_frame_bytes).await?;
    let body = UploadBody::parse(&body).map_err(|e| ApiError::new(ErrorCode::BadJson, e))?;
    let accepted = state
        .pipeline
        .ingest_as(&me, &body.items)
        .map_err(|refused| ApiError::from(refused.refusal))?;
    if let Some(unstored) = accepted.unstored {
        return Err(ApiError::from(unstored.refusal));
    }
    let mut ack = 0;
    if let Some(commit) = accepted.commit {
        let done = commit.wait().await;
        done.result.map_err(ApiError::from)?;
        ack = done.seqs.iter().copied().max().unwrap_or(0);
    }
    // Filtered fixes are taken: the app must not resend them.
    ack = accepted.filtered.iter().copied().fold(ack, Seq::max);
    Ok(HttpResponse::Ok().json(Answer {
        ack,
        rejected: accepted.refused.into_iter().map(Rejected::from).collect(),
    }))
}
