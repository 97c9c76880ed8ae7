//! The broker link's state, shared by the consumer and `/readyz`, and
//! mirrored in `fleethub_mqtt_link_up`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::metrics as m;

/// The broker link as `/readyz` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// No `mqtt.url`.
    Off,
    /// Connected and subscribed.
    Ok,
    /// Connecting, or the broker is unreachable (the hub keeps trying).
    Degraded,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Off => "off",
            LinkState::Ok => "ok",
            LinkState::Degraded => "degraded",
        }
    }
}

/// The broker link's state, shared by the consumer and `/readyz`.
#[derive(Debug, Clone)]
pub struct MqttLink(Arc<AtomicU8>);

impl MqttLink {
    /// `Off`, or `Degraded` until the first subscription is confirmed.
    pub fn new(enabled: bool) -> Self {
        let link = Self(Arc::new(AtomicU8::new(0)));
        link.set(if enabled {
            LinkState::Degraded
        } else {
            LinkState::Off
        });
        link
    }

    pub fn state(&self) -> LinkState {
        match self.0.load(Ordering::Relaxed) {
            1 => LinkState::Ok,
            2 => LinkState::Degraded,
            _ => LinkState::Off,
        }
    }

    pub(super) fn set(&self, state: LinkState) {
        let raw = match state {
            LinkState::Off => 0,
            LinkState::Ok => 1,
            LinkState::Degraded => 2,
        };
        self.0.store(raw, Ordering::Relaxed);
        if state != LinkState::Off {
            m::mqtt_link_up(state == LinkState::Ok);
        }
    }
}
