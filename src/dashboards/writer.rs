//! A dashboard's writer: drains its [`Outbox`] into the socket, batching
//! positions into `positions` frames per wake-up (after the fan-out window),
//! and closes the socket when the outbox asks for it.
//!
//! It hands the socket at most `dashboard.max_unsent_bytes` that the kernel
//! has not taken yet (and cuts `positions` frames to that size), so a
//! dashboard that stops reading holds its outbox and that budget (the
//! session's channel and the HTTP layer's write buffer included), whatever
//! the send rate; when no room comes for `dashboard.stuck_after_secs`, it is
//! closed with 1013.

use std::sync::Arc;
use std::time::Duration;

use actix_ws::Session;
use serde_json::value::RawValue;
use tokio::time::sleep;

use super::outbox::{Batch, Control, Outbox};
use super::unsent::wire_len;
use crate::config::Settings;
use crate::live::LiveUpdate;
use crate::metrics as m;
use crate::protocol::{Close, DashboardOut, to_json};
use crate::ws;

/// How long a close asked for by the hub waits for a socket that is reading.
const CLOSE_GRACE_PROMPT: Duration = Duration::from_secs(1);
/// Bytes a `positions` frame adds around its items (`{"type":"positions","items":[]}`).
const POSITIONS_ENVELOPE: usize = 32;

pub struct WriterSettings {
    interval: Duration,
    max_items: usize,
    max_unsent: usize,
    stuck_after: Duration,
    close_grace: Duration,
}

impl WriterSettings {
    pub fn from(settings: &Settings) -> Self {
        Self {
            interval: settings.fanout_interval(),
            max_items: settings.dashboard.max_items_per_frame,
            max_unsent: settings.dashboard.max_unsent_bytes,
            stuck_after: Duration::from_secs(settings.dashboard.stuck_after_secs),
            close_grace: Duration::from_secs(settings.dashboard.close_grace_secs),
        }
    }
}

enum Sent {
    Ok,
    Gone,
    Stuck,
}

/// Drains the outbox into the socket: waits for work, lets the batching window
/// pass, then writes control frames, statuses and the positions.
pub async fn run(session: Session, outbox: Arc<Outbox>, settings: WriterSettings) {
    let mut writer = Writer {
        session,
        outbox,
        settings,
    };
    loop {
        idle(&writer.outbox).await;
        if !writer.settings.interval.is_zero() {
            sleep(writer.settings.interval).await;
        }
        let batch = writer.outbox.take(writer.settings.max_items);
        let close = batch.close;
        let bytes = batch.bytes;
        let mut left = Left(bytes);
        let sent = writer.write_batch(batch, &mut left).await;
        writer.outbox.release(left.0);
        match sent {
            Sent::Ok => {}
            Sent::Gone => return,
            Sent::Stuck => {
                m::slow_dashboard_closed();
                tracing::info!("closing a dashboard that stopped reading");
                writer.outbox.close(Close::TOO_SLOW);
                // The socket is full; the close frame waits its turn in the
                // background for `dashboard.close_grace_secs`; the session
                // then cuts the socket.
                let grace = writer.settings.close_grace;
                actix_web::rt::spawn(ws::close(writer.session, Close::TOO_SLOW, grace));
                return;
            }
        }
        if let Some(close) = close {
            ws::close(writer.session, close, CLOSE_GRACE_PROMPT).await;
            return;
        }
    }
}

/// Waits for work; meanwhile, what the socket still holds is counted down
/// as the kernel takes it.
async fn idle(outbox: &Outbox) {
    tokio::select! {
        () = outbox.ready() => {}
        () = outbox.settle_unsent() => outbox.ready().await,
    }
}

/// Bytes of the batch the writer still holds, given back to the outbox's
/// count as its frames are handed to the socket.
struct Left(usize);

impl Left {
    fn handed(&mut self, outbox: &Outbox, bytes: usize) {
        let bytes = bytes.min(self.0);
        self.0 -= bytes;
        outbox.release(bytes);
    }
}

struct Writer {
    session: Session,
    outbox: Arc<Outbox>,
    settings: WriterSettings,
}

impl Writer {
    async fn write_batch(&mut self, batch: Batch, left: &mut Left) -> Sent {
        for control in batch.control {
            let sent = match control {
                Control::Text(text) => {
                    let size = text.len();
                    let sent = self.send_text(text).await;
                    left.handed(&self.outbox, size);
                    sent
                }
                Control::Pong(bytes) => {
                    left.handed(&self.outbox, bytes.len());
                    self.outbox.handed(wire_len(bytes.len()));
                    send(self.session.pong(&bytes), self.settings.stuck_after).await
                }
                Control::Ping => {
                    self.outbox.handed(wire_len(0));
                    send(self.session.ping(b""), self.settings.stuck_after).await
                }
            };
            if !matches!(sent, Sent::Ok) {
                return sent;
            }
        }
        for (key, status) in batch.statuses {
            let frame = to_json(&DashboardOut::Status {
                driver: key.driver().as_str(),
                fleet: key.fleet().as_str(),
                status: status.as_str(),
            });
            let sent = self.send_text(frame).await;
            left.handed(&self.outbox, super::outbox::STATUS_BYTES);
            if !matches!(sent, Sent::Ok) {
                return sent;
            }
        }
        let mut rest = batch.positions.as_slice();
        while !rest.is_empty() {
            let (frame, rest_after) = split_frame(rest, self.settings.max_unsent);
            let items: Vec<&RawValue> = frame.iter().map(|u| u.json.as_ref()).collect();
            let text = to_json(&DashboardOut::Positions { items });
            let sent = self.send_text(text).await;
            left.handed(&self.outbox, frame.iter().map(|u| u.json.get().len()).sum());
            if !matches!(sent, Sent::Ok) {
                return sent;
            }
            m::delivered(frame.len() as u64);
            for update in frame {
                m::fanout_latency(update.received.elapsed().as_secs_f64());
            }
            rest = rest_after;
        }
        Sent::Ok
    }

    /// Sends a text frame once the byte budget has room for it.
    async fn send_text(&mut self, text: String) -> Sent {
        let room = self.outbox.room_for(text.len(), self.settings.max_unsent);
        if tokio::time::timeout(self.settings.stuck_after, room)
            .await
            .is_err()
        {
            return Sent::Stuck;
        }
        let frame = self.outbox.frame(text);
        send(self.session.text(frame), self.settings.stuck_after).await
    }
}

/// Hands one frame to the session; a session that takes nothing for
/// `stuck_after` is stuck.
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

/// The newest updates that fit in one frame of at most `max_bytes` (at least
/// one), and the rest.
fn split_frame(
    updates: &[Arc<LiveUpdate>],
    max_bytes: usize,
) -> (&[Arc<LiveUpdate>], &[Arc<LiveUpdate>]) {
    let mut size = POSITIONS_ENVELOPE;
    let mut end = 0;
    for update in updates {
        let item = update.json.get().len() + 1;
        if end > 0 && size + item > max_bytes {
            break;
        }
        size += item;
        end += 1;
    }
    updates.split_at(end)
}
