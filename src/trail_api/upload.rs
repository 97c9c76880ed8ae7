//! `POST /api/v1/positions`: a driver's batch over HTTP, answered after the
//! commit. Same validation and limits as the WebSocket path (the rate limit
//! included: posting must not be a way around it); the fixes go live at
//! once, the answer waits for the database.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::api_error::ApiError;
use crate::auth::{DriverIdentity, Role};
use crate::config::DriverSettings;
use crate::domain::{DriverId, Seq, Timestamp, TrailPoint};
use crate::metrics as m;
use crate::protocol::{ErrorCode, WireFix};
use crate::rate_limit::{self, position_quota};
use crate::startup::AppState;
use crate::trail_store::StoreError;

/// Per-driver buckets of the HTTP path, with the WebSocket path's quota.
pub type UploadLimiter = DefaultKeyedRateLimiter<DriverId>;

/// How often buckets that have refilled are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub fn upload_limiter(settings: &DriverSettings) -> UploadLimiter {
    RateLimiter::keyed(position_quota(settings))
}

/// Forgets the buckets of drivers that have not posted lately, so the map
/// holds the recent uploaders only.
pub async fn run_pruning(limiter: std::sync::Arc<UploadLimiter>, shutdown: CancellationToken) {
    crate::periodic::run_every(PRUNE_EVERY, shutdown, || {
        limiter.retain_recent();
        limiter.shrink_to_fit();
        std::future::ready(())
    })
    .await;
}

#[derive(Deserialize)]
struct Body {
    items: Vec<WireFix>,
}

#[derive(Serialize)]
struct Answer {
    /// Highest seq of this request now stored (0 when none was).
    ack: Seq,
    rejected: Vec<Rejected>,
}

#[derive(Serialize)]
struct Rejected {
    seq: Option<Seq>,
    code: ErrorCode,
    message: String,
}

pub(super) async fn positions(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let identity = state.auth.authorize(&req, &[Role::Driver])?;
    let me = identity.as_driver().ok_or_else(|| {
        ApiError::bad_request("invalid_id", "the token's subject is not a valid driver id")
    })?;
    let body: Body = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::BadJson.as_str(),
            format!("expected {{\"items\":[...]}}: {e}"),
        )
    })?;
    let max = state.settings.driver.max_batch_items;
    if body.items.len() > max {
        return Err(ApiError::bad_request(
            ErrorCode::BatchTooLarge.as_str(),
            format!("at most {max} items per request"),
        ));
    }
    m::received(body.items.len() as u64);
    within_rate(&state, &me.driver, body.items.len())?;
    let (points, rejected) = validate(&state, &me, &body.items);
    let ack = points.iter().map(|p| p.seq).max().unwrap_or(0);
    if !points.is_empty() {
        commit(&state, &me, points).await?;
    }
    Ok(HttpResponse::Ok().json(Answer { ack, rejected }))
}

/// 429 `rate_limited` when the items do not fit the driver's bucket; nothing is taken then.
fn within_rate(state: &AppState, driver: &DriverId, items: usize) -> Result<(), ApiError> {
    if rate_limit::take_for(&state.upload_limiter, driver, items) {
        return Ok(());
    }
    m::rejected(ErrorCode::RateLimited.as_str(), items as u64);
    Err(ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited.as_str(),
        "too many positions: slow down and resend",
    ))
}

/// Checks every fix; the valid ones go live at once (fan-out never waits for the database).
fn validate(
    state: &AppState,
    me: &DriverIdentity,
    items: &[WireFix],
) -> (Vec<TrailPoint>, Vec<Rejected>) {
    let window = state.settings.time_window();
    let now = Timestamp::now();
    let mut points = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for fix in items {
        match fix.validate(&window, now) {
            Ok((seq, position)) => {
                if let crate::hub::PublishOutcome::Late =
                    state.hub.publish(&me.driver, &me.fleet, &position)
                {
                    m::late();
                }
                points.push(TrailPoint {
                    driver: me.driver.clone(),
                    fleet: me.fleet.clone(),
                    seq,
                    position,
                });
            }
            Err(e) => {
                m::rejected(ErrorCode::InvalidPosition.as_str(), 1);
                rejected.push(Rejected {
                    seq: e.seq,
                    code: ErrorCode::InvalidPosition,
                    message: e.message,
                });
            }
        }
    }
    (points, rejected)
}

/// Queues the points and waits for their commit; 503 `storage_unavailable`
/// when the queue refuses them or the commit fails (nothing was acked: resend).
async fn commit(
    state: &AppState,
    me: &DriverIdentity,
    points: Vec<TrailPoint>,
) -> Result<(), ApiError> {
    let n = points.len() as u64;
    let top = points.iter().map(|p| p.seq).max().unwrap_or(0);
    let refused = |message: String| {
        m::rejected(ErrorCode::StorageUnavailable.as_str(), n);
        ApiError::unavailable(message)
    };
    let committed = state
        .writer
        .try_submit(points)
        .map_err(|_| refused("storage is busy or down: not stored, resend later".into()))?;
    committed
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("writer stopped".into())))
        .map_err(|e| refused(format!("not stored ({e}): resend later")))?;
    state.hub.note_committed(&me.driver, &me.fleet, top);
    Ok(())
}
