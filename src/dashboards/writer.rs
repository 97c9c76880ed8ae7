//! A dashboard's writer: drains its [`Outbox`] into the socket, batching
//! positions into one `positions` frame per wake-up (after the fan-out
//! window), and closes the socket when the outbox asks for it.

use std::sync::Arc;
use std::time::Duration;

use actix_ws::Session;
use tokio::time::sleep;

use super::outbox::{Batch, Control, Outbox};
use crate::config::Settings;
use crate::metrics as m;
use crate::protocol::{Close, DashboardOut, to_json};
use crate::ws;

/// How long a dashboard found stuck still gets to read its 1013 close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(30);
/// How long a close asked for by the hub waits for a socket that is reading.
const CLOSE_GRACE_PROMPT: Duration = Duration::from_secs(1);

pub struct WriterSettings {
    interval: Duration,
    max_items: usize,
    stuck_after: Duration,
}

impl WriterSettings {
    pub fn from(settings: &Settings) -> Self {
        Self {
            interval: settings.fanout_interval(),
            max_items: settings.dashboard.max_items_per_frame,
            stuck_after: Duration::from_secs(settings.dashboard.stuck_after_secs),
        }
    }
}

enum Sent {
    Ok,
    Gone,
    Stuck,
}

/// Drains the outbox into the socket: waits for work, lets the batching window
/// pass, then writes control frames, statuses and one `positions` frame.
pub async fn run(mut session: Session, outbox: Arc<Outbox>, settings: WriterSettings) {
    loop {
        outbox.ready().await;
        if !settings.interval.is_zero() {
            sleep(settings.interval).await;
        }
        let batch = outbox.take(settings.max_items);
        let close = batch.close;
        let bytes = batch.bytes;
        let sent = write_batch(&mut session, batch, settings.stuck_after).await;
        outbox.release(bytes);
        match sent {
            Sent::Ok => {}
            Sent::Gone => return,
            Sent::Stuck => {
                m::slow_dashboard_closed();
                tracing::info!("closing a dashboard that stopped reading");
                outbox.close(Close::TOO_SLOW);
                // The socket is full; the close frame waits its turn in the background.
                actix_web::rt::spawn(ws::close(session, Close::TOO_SLOW, CLOSE_GRACE));
                return;
            }
        }
        if let Some(close) = close {
            ws::close(session, close, CLOSE_GRACE_PROMPT).await;
            return;
        }
    }
}

async fn write_batch(session: &mut Session, batch: Batch, stuck_after: Duration) -> Sent {
    for control in batch.control {
        let sent = match control {
            Control::Text(text) => send(session.text(text), stuck_after).await,
            Control::Pong(bytes) => send(session.pong(&bytes), stuck_after).await,
            Control::Ping => send(session.ping(b""), stuck_after).await,
        };
        if !matches!(sent, Sent::Ok) {
            return sent;
        }
    }
    for (driver, status) in batch.statuses {
        let frame = to_json(&DashboardOut::Status {
            driver: driver.as_str(),
            status: status.as_str(),
        });
        let sent = send(session.text(frame), stuck_after).await;
        if !matches!(sent, Sent::Ok) {
            return sent;
        }
    }
    if batch.positions.is_empty() {
        return Sent::Ok;
    }
    let frame = to_json(&DashboardOut::Positions {
        items: batch.positions.iter().map(|u| u.json.as_ref()).collect(),
    });
    let sent = send(session.text(frame), stuck_after).await;
    if matches!(sent, Sent::Ok) {
        m::delivered(batch.positions.len() as u64);
        for update in &batch.positions {
            m::fanout_latency(update.received.elapsed().as_secs_f64());
        }
    }
    sent
}

async fn send<F>(fut: F, stuck_after: Duration) -> Sent
where
    F: std::future::Future<Output = Result<(), actix_ws::Closed>>,
{
    match tokio::time::timeout(stuck_after, fut).await {
        Ok(Ok(())) => Sent::Ok,
        Ok(Err(_)) => Sent::Gone,
        Err(_) => Sent::Stuck,
    }
}
