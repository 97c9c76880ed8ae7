//! OwnTracks over MQTT: the hub subscribes to `<mqtt.topic_prefix>/+/+` on
//! the broker `mqtt.url` names, with QoS 1 and a persistent session
//! (`clean_session = false` under a client id that does not change across
//! restarts), and takes each message through the OwnTracks
//! [`decode`](super::owntracks::decode) and
//! [`store_fix`](super::phone_app::store_fix), as the device `<user>` of the
//! topic `<prefix>/<user>/<device>`.
//!
//! The broker has authenticated the app; the topic names the device, so the
//! registry is asked for it without a key ([`DeviceRegistry::find`]). A
//! message is acknowledged (PUBACK, manual acks) only once its fate is
//! settled: stored (after the commit), or dropped for good (not a location,
//! no such device, invalid: redelivery would not help). A message that could
//! not be stored yet (storage unavailable, rate limited) is not acked; MQTT
//! 3.1.1 brokers redeliver unacked messages only on a new connection, so the
//! consumer then reconnects, once the trail writer is healthy, and the
//! broker sends it again. What is published while the hub is away waits in
//! its session. At most `mqtt.max_inflight` messages are stored at once;
//! the next ones wait their turn, up to four times as many in all and
//! 16 MiB of payloads (the broker's in-flight window is meant to bound them;
//! past that bound a message is not acked either).
//!
//! The event loop is never made to wait on the messages being stored: their
//! acks go out through it, so waiting there would stall them all.
//!
//! The link reconnects by itself with a jittered exponential backoff; its
//! state shows in `/readyz` ([`MqttLink`]) and in `fleethub_mqtt_link_up`;
//! every message is counted in `fleethub_mqtt_messages_total{outcome}`.
//!
//! [`DeviceRegistry::find`]: crate::devices::DeviceRegistry::find

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use rumqttc::{
    AsyncClient, ConnAck, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeReasonCode,
};
use secrecy::ExposeSecret;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::owntracks::{self, decode};
use super::phone_app::store_fix;
use crate::app_state::AppState;
use crate::devices::Protocol;
use crate::devices::registry::DeviceRefused;
use crate::metrics as m;
use crate::protocol::ErrorCode;

mod broker_url;
mod link;

pub use broker_url::BrokerUrl;
pub use link::{LinkState, MqttLink};

/// The shared subscription's group: every node of a cluster joins the same one.
const SHARE_GROUP: &str = "fleethub";
/// First wait before reconnecting; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a consumer waiting for storage to come back looks at it.
const STORAGE_CHECK: Duration = Duration::from_millis(250);
/// How often a consumer that took in too many messages looks whether those
/// are settled.
const DRAIN_CHECK: Duration = Duration::from_millis(10);
/// How long the stop waits for messages being stored, so their acks go out.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the stop waits for the DISCONNECT to be written.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// How many messages are taken in at once per message stored at once. The
/// broker's in-flight window is what bounds arrivals; this bounds a broker
/// that sends without one (or with a larger one than `mqtt.max_inflight`).
const ADMITTED_PER_STORING: usize = 4;

/// Messages taken in at once (being stored or waiting their turn).
fn admitted(max_inflight: usize) -> usize {
    max_inflight.saturating_mul(ADMITTED_PER_STORING)
}

/// The payloads of the messages taken in at once, in KiB: large messages
/// fill it before their count does (OwnTracks messages are a few hundred
/// bytes; `mqtt.max_packet_bytes` bounds one).
const ADMITTED_KIB: usize = 16 * 1024;

/// A message of `len` bytes taken in, if there is room for it: its place
/// among the messages taken in, and its share of their bytes.
fn admit(
    count: &Arc<Semaphore>,
    kib: &Arc<Semaphore>,
    len: usize,
) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
    let size = u32::try_from(len / 1024 + 1).unwrap_or(u32::MAX);
    let bytes = Arc::clone(kib).try_acquire_many_owned(size).ok()?;
    let place = Arc::clone(count).try_acquire_owned().ok()?;
    Some((place, bytes))
}

/// What became of one message, the `outcome` label of its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Stored,
    /// Not a location (`transition`, `lwt`, `card`, encrypted...).
    Ignored,
    /// No device of that id.
    Unregistered,
    /// A device registered for another protocol (OsmAnd).
    WrongProtocol,
    /// Not `<prefix>/<user>/<device>`.
    BadTopic,
    /// Larger than an OwnTracks message may be.
    TooLarge,
    /// Not an OwnTracks message, or a fix the pipeline refused.
    Invalid,
    /// Over the driver's rate limit: not acked, comes back.
    RateLimited,
    /// Storage (or the device registry) unavailable: not acked, comes back.
    NotStored,
    /// Four times `mqtt.max_inflight` messages already taken in: not acked,
    /// comes back.
    Busy,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Stored => "stored",
            Outcome::Ignored => "ignored",
            Outcome::Unregistered => "unregistered",
            Outcome::WrongProtocol => "wrong_protocol",
            Outcome::BadTopic => "bad_topic",
            Outcome::TooLarge => "too_large",
            Outcome::Invalid => "invalid",
            Outcome::RateLimited => "rate_limited",
            Outcome::NotStored => "not_stored",
            Outcome::Busy => "busy",
        }
    }

    /// Whether the broker may forget the message: everything but what a
    /// later delivery could still store.
    fn acked(self) -> bool {
        !matches!(
            self,
            Outcome::RateLimited | Outcome::NotStored | Outcome::Busy
        )
    }
}

/// The device id in `topic`, `<prefix>/<user>/<device>`: `<user>`.
fn user_of<'a>(prefix: &str, topic: &'a str) -> Option<&'a str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let (user, device) = rest.split_once('/')?;
    (!user.is_empty() && !device.is_empty() && !device.contains('/')).then_some(user)
}

/// Settles one message: stores its fix, or says why not.
async fn settle(state: &AppState, prefix: &str, publish: &Publish) -> Outcome {
    let Some(user) = user_of(prefix, &publish.topic) else {
        return Outcome::BadTopic;
    };
    if publish.payload.len() > owntracks::MAX_BODY {
        return Outcome::TooLarge;
    }
    let device = match state.devices.find(user, Protocol::Owntracks).await {
        Ok(device) => device,
        Err(DeviceRefused::Store(e)) => {
            tracing::warn!(error = %e, "mqtt: the device registry is unavailable; the message will come back");
            return Outcome::NotStored;
        }
        Err(DeviceRefused::WrongProtocol(_)) => return Outcome::WrongProtocol,
        Err(_) => return Outcome::Unregistered,
    };
    let fix = match decode(&publish.payload) {
        Ok(Some(fix)) => fix,
        Ok(None) => return Outcome::Ignored,
        Err(e) => {
            tracing::debug!(device = user, error = %e, "mqtt: not an OwnTracks message");
            return Outcome::Invalid;
        }
    };
    match store_fix(state, &device, fix).await {
        Ok(()) => Outcome::Stored,
        Err(e) => match e.code {
            ErrorCode::StorageUnavailable => {
                tracing::debug!(device = user, error = %e.message, "mqtt: not stored");
                Outcome::NotStored
            }
            ErrorCode::RateLimited => Outcome::RateLimited,
            _ => {
                tracing::debug!(device = user, error = %e.message, "mqtt: fix refused");
                Outcome::Invalid
            }
        },
    }
}

/// A jittered exponential backoff, so a cluster's nodes do not all knock
/// on a broker that comes back at the same instant.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: FIRST_BACKOFF,
        }
    }

    fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }

    /// Half the current step plus up to a whole one, at random.
    fn next(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(MAX_BACKOFF);
        let half = step / 2;
        let ms = u64::try_from(step.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::random_range(0..=ms))
    }
}

/// The consumer: the MQTT client, its event loop, and what it needs to
/// settle messages.
pub struct Consumer {
    state: web::Data<AppState>,
    client: AsyncClient,
    events: EventLoop,
    filter: String,
    broker: String,
    max_inflight: usize,
}

impl Consumer {
    /// The consumer `state.settings.mqtt` describes; `None` when `mqtt.url`
    /// is empty. Nothing is connected until [`Consumer::run`].
    pub fn new(state: &web::Data<AppState>) -> anyhow::Result<Option<Self>> {
        let settings = &state.settings.mqtt;
        if !settings.enabled() {
            return Ok(None);
        }
        let url = BrokerUrl::parse(settings.url.expose_secret())
            .map_err(|e| anyhow::anyhow!("configuration: `mqtt.url` {e}"))?;
        let client_id = settings.client_id_for(&state.settings.node_id);
        let mut options = MqttOptions::new(client_id.clone(), url.host.clone(), url.port);
        options
            // The broker keeps the subscription and every unacked message
            // while the hub is away: that is what makes a restart lossless.
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(settings.keep_alive_secs))
            .set_max_packet_size(settings.max_packet_bytes, settings.max_packet_bytes)
            // Acks of the messages taken in, a subscribe and a disconnect:
            // the workers never wait on a full channel the loop must drain.
            .set_request_channel_capacity(admitted(settings.max_inflight) + 8);
        if let Some(user) = &url.user {
            let password = url
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned())
                .unwrap_or_default();
            options.set_credentials(user.clone(), password);
        }
        let prefix = settings.topic_prefix.trim();
        let filter = match settings.shared {
            true => format!("$share/{SHARE_GROUP}/{prefix}/+/+"),
            false => format!("{prefix}/+/+"),
        };
        let (client, events) = AsyncClient::new(options, admitted(settings.max_inflight) + 8);
        let broker = format!("{}:{}", url.host, url.port);
        tracing::info!(%broker, client_id, filter, "mqtt: OwnTracks consumer");
        Ok(Some(Self {
            state: state.clone(),
            client,
            events,
            filter,
            broker,
            max_inflight: settings.max_inflight,
        }))
    }

    /// Consumes until `stop`; then lets the messages being stored finish
    /// (their acks go out) and disconnects.
    pub async fn run(mut self, stop: CancellationToken) {
        let link = self.state.mqtt.clone();
        // Messages stored at once, and messages taken in at once (being
        // stored or waiting their turn).
        let storing = Arc::new(Semaphore::new(self.max_inflight));
        let admission = Arc::new(Semaphore::new(admitted(self.max_inflight)));
        let admission_kib = Arc::new(Semaphore::new(ADMITTED_KIB));
        // Workers report a message not stored with the connection it came
        // on; one on an older connection has been redelivered already.
        let (not_stored_tx, mut not_stored) = mpsc::unbounded_channel::<(u64, Outcome)>();
        let mut connection = 0u64;
        let mut redelivery: Option<Redelivery> = None;
        let mut backoff = Backoff::new();
        let prefix: Arc<str> = Arc::from(self.state.settings.mqtt.topic_prefix.trim());
        loop {
            let check_at = redelivery.as_ref().map(|r| r.check_at);
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                Some((on, outcome)) = not_stored.recv() => {
                    if on == connection && redelivery.is_none() {
                        match outcome {
                            Outcome::Busy => tracing::info!("mqtt: more messages than mqtt.max_inflight allows; reconnecting for their redelivery once those are stored"),
                            _ => tracing::warn!("mqtt: messages not stored; reconnecting for their redelivery once storage is back"),
                        }
                        redelivery = Some(Redelivery::new(outcome));
                    }
                    continue;
                }
                // The loop keeps polling meanwhile: the acks of what is
                // stored go out before the connection is dropped.
                _ = sleep_until(check_at.unwrap_or_else(Instant::now)), if check_at.is_some() => {
                    let drained = admission.available_permits() == admitted(self.max_inflight);
                    if let Some(r) = &mut redelivery
                        && !r.due(self.state.writer.healthy(), drained)
                    {
                        continue;
                    }
                    redelivery = None;
                    // Unacked messages come back only on a new connection.
                    self.events.clean();
                    continue;
                }
                event = self.events.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    connection += 1;
                    self.connected(&ack);
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure))
                    {
                        tracing::error!(
                            filter = self.filter,
                            "mqtt: the broker refused the subscription"
                        );
                        link.set(LinkState::Degraded);
                    } else {
                        tracing::info!(broker = self.broker, "mqtt: subscribed");
                        link.set(LinkState::Ok);
                        backoff.reset();
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    // Never wait here: the acks of the messages being
                    // stored go out only while the loop polls. A message
                    // waits its turn in its own task; past the bound of
                    // admitted ones, it is left unacked and comes back.
                    // Once a redelivery is due, nothing new is taken in: what
                    // is being stored drains (its acks go out), then the
                    // reconnection has the broker send the rest again.
                    let admitted = match redelivery {
                        Some(_) => None,
                        None => admit(&admission, &admission_kib, publish.payload.len()),
                    };
                    let Some(admitted) = admitted else {
                        m::mqtt_message(Outcome::Busy.as_str());
                        let _ = not_stored_tx.send((connection, Outcome::Busy));
                        continue;
                    };
                    let storing = Arc::clone(&storing);
                    let state = self.state.clone();
                    let client = self.client.clone();
                    let prefix = Arc::clone(&prefix);
                    let not_stored = not_stored_tx.clone();
                    tokio::spawn(async move {
                        let Ok(_turn) = storing.acquire_owned().await else {
                            return;
                        };
                        let outcome = settle(&state, &prefix, &publish).await;
                        m::mqtt_message(outcome.as_str());
                        if outcome.acked() {
                            // Fails only when the loop is gone: the message comes back.
                            let _ = client.ack(&publish).await;
                        } else {
                            let _ = not_stored.send((connection, outcome));
                        }
                        drop(admitted);
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    link.set(LinkState::Degraded);
                    let wait = backoff.next();
                    tracing::warn!(broker = self.broker, error = %e, wait_ms = wait.as_millis() as u64, "mqtt: broker link down; reconnecting");
                    if sleep_or_stop(wait, &stop).await {
                        break;
                    }
                }
            }
        }
        self.stop(&admission).await;
    }

    /// Subscribes on every connection: a broker that lost the session has
    /// lost the subscription too, and subscribing again is harmless.
    fn connected(&self, ack: &ConnAck) {
        tracing::info!(
            broker = self.broker,
            session_present = ack.session_present,
            "mqtt: connected"
        );
        if let Err(e) = self
            .client
            .try_subscribe(self.filter.clone(), QoS::AtLeastOnce)
        {
            tracing::error!(error = %e, "mqtt: cannot subscribe");
        }
    }

    /// Waits for the messages being stored (their acks queue up in the
    /// client), then writes those acks and a DISCONNECT. What is not acked
    /// by then comes back next start.
    async fn stop(mut self, admission: &Arc<Semaphore>) {
        let all = u32::try_from(admitted(self.max_inflight)).unwrap_or(u32::MAX);
        let drained = async {
            let _settled = admission.acquire_many(all).await;
            let _ = self.client.try_disconnect();
            loop {
                match self.events.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        if tokio::time::timeout(STOP_GRACE + DISCONNECT_GRACE, drained)
            .await
            .is_err()
        {
            tracing::warn!(
                "mqtt: stopped before every message was settled; the broker will redeliver them"
            );
        }
        self.state.mqtt.set(LinkState::Degraded);
        tracing::info!("mqtt: disconnected");
    }
}

/// A reconnection wanted for the redelivery of messages not stored: after
/// a moment (a rate-limited driver's bucket refills), once the trail writer
/// is healthy and the messages taken in are settled (their acks out, so the
/// broker does not send them again), or at the latest [`MAX_BACKOFF`] later.
/// Reconnecting sooner would have the broker send them again only to have
/// them refused again.
struct Redelivery {
    check_at: Instant,
    give_up_at: Instant,
    /// How often to look again.
    every: Duration,
}

impl Redelivery {
    /// For messages left unacked with `outcome`: only busy ones need no
    /// pause (nothing to refill or recover, just the others to settle).
    fn new(outcome: Outcome) -> Self {
        let now = Instant::now();
        let (first, every) = match outcome {
            Outcome::Busy => (DRAIN_CHECK, DRAIN_CHECK),
            _ => (Backoff::new().next(), STORAGE_CHECK),
        };
        Self {
            check_at: now + first,
            give_up_at: now + MAX_BACKOFF,
            every,
        }
    }

    /// Whether to reconnect now; if not, when to look again.
    fn due(&mut self, storage_healthy: bool, drained: bool) -> bool {
        let now = Instant::now();
        if (storage_healthy && drained) || now >= self.give_up_at {
            return true;
        }
        self.check_at = now + self.every;
        false
    }
}

/// Sleeps `wait`; true when `stop` came first.
async fn sleep_or_stop(wait: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_names_the_device() {
        assert_eq!(user_of("owntracks", "owntracks/p1/phone"), Some("p1"));
        assert_eq!(user_of("a/b", "a/b/p1/phone"), Some("p1"));
        for bad in [
            "owntracks/p1",
            "owntracks//phone",
            "owntracks/p1/",
            "owntracks/p1/phone/event",
            "other/p1/phone",
            "owntracksx/p1/phone",
        ] {
            assert_eq!(user_of("owntracks", bad), None, "{bad}");
        }
    }

    #[test]
    fn only_what_a_redelivery_could_store_is_left_unacked() {
        assert!(Outcome::Stored.acked());
        assert!(Outcome::Ignored.acked() && Outcome::Unregistered.acked());
        assert!(Outcome::Invalid.acked() && Outcome::TooLarge.acked());
        assert!(!Outcome::NotStored.acked() && !Outcome::RateLimited.acked());
        assert!(!Outcome::Busy.acked());
    }

    #[test]
    fn messages_are_taken_in_within_their_count_and_their_bytes() {
        let (count, kib) = (Arc::new(Semaphore::new(2)), Arc::new(Semaphore::new(100)));
        let small = admit(&count, &kib, 300).expect("room for a small one");
        assert!(admit(&count, &kib, 150 * 1024).is_none(), "over the bytes");
        let _second = admit(&count, &kib, 300).expect("room for a second");
        assert!(admit(&count, &kib, 300).is_none(), "over the count");
        drop(small);
        assert!(
            admit(&count, &kib, 300).is_some(),
            "a settled one frees its place"
        );
        assert_eq!(kib.available_permits(), 99, "and its bytes");
    }

    #[test]
    fn the_backoff_grows_with_jitter_to_a_ceiling() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(first >= FIRST_BACKOFF / 2 && first <= FIRST_BACKOFF * 3 / 2);
        for _ in 0..20 {
            assert!(b.next() <= MAX_BACKOFF * 3 / 2);
        }
        b.reset();
        assert!(b.next() <= FIRST_BACKOFF * 3 / 2);
    }
}
