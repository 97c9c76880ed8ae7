//! Who may open a WebSocket, decided before the upgrade: the page's origin
//! ([`OriginPolicy`]), then the connection caps (on this node, per client
//! address, per token). A connection let in holds a [`ConnectionSlot`] for
//! its whole life: the session task owns it, and gives it back by dropping it
//! when the session ends, however it ends.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::Arc;

use actix_web::HttpRequest;
use parking_lot::Mutex;

use super::ApiError;
use super::origin::{OriginError, OriginPolicy};
use crate::auth::Identity;
use crate::config::WsSettings;
use crate::metrics as m;
use crate::protocol::ErrorCode;

/// The origin check and the connection caps, one per node.
pub struct Admission {
    origins: OriginPolicy,
    caps: Caps,
    open: Mutex<Open>,
    /// Keyed with a per-process random key: a token is never held, only this hash.
    hasher: RandomState,
}

#[derive(Debug, Clone, Copy)]
struct Caps {
    total: usize,
    per_ip: usize,
    per_token: usize,
}

/// The connections open now, by what they are capped by.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    per_token: HashMap<u64, usize>,
}

/// One admitted connection's place under the caps; dropping it frees the place.
#[must_use = "the slot must live as long as the session"]
pub struct ConnectionSlot {
    admission: Arc<Admission>,
    ip: Option<IpAddr>,
    token: Option<u64>,
}

impl Admission {
    pub fn new(ws: &WsSettings) -> Result<Self, OriginError> {
        Ok(Self {
            origins: OriginPolicy::new(&ws.allowed_origins)?,
            caps: Caps {
                total: ws.max_connections,
                per_ip: ws.max_connections_per_ip,
                per_token: ws.max_connections_per_token,
            },
            open: Mutex::default(),
            hasher: RandomState::new(),
        })
    }

    /// The checks made before the token's: the origin (403), then room on
    /// this node (503) and for the client's address (429). The slot holds
    /// both places.
    pub fn admit(self: &Arc<Self>, req: &HttpRequest) -> Result<ConnectionSlot, ApiError> {
        if !self.origins.allows(req) {
            return Err(refuse(
                "origin",
                ErrorCode::OriginNotAllowed,
                "this page's origin may not open a WebSocket here (ws.allowed_origins)".into(),
            ));
        }
        let ip = req.peer_addr().map(|a| a.ip());
        let mut open = self.open.lock();
        if open.total >= self.caps.total {
            let message = format!(
                "the hub holds its most connections ({}); try again later",
                self.caps.total
            );
            return Err(refuse("total", ErrorCode::ServerBusy, message));
        }
        if let Some(ip) = ip {
            let from_ip = open.per_ip.entry(ip).or_default();
            if *from_ip >= self.caps.per_ip {
                let message = format!("at most {} connections from one address", self.caps.per_ip);
                return Err(refuse("per_ip", ErrorCode::TooManyConnections, message));
            }
            *from_ip += 1;
        }
        open.total += 1;
        Ok(ConnectionSlot {
            admission: Arc::clone(self),
            ip,
            token: None,
        })
    }

    /// A token is told apart by its claims (subject, role, fleet, expiry):
    /// the token itself is never kept or logged.
    fn token_key(&self, identity: &Identity) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        (
            &identity.sub,
            identity.role.as_str(),
            identity.scope.fleet().map(|f| f.as_str()),
            identity.expires_at.as_millis(),
        )
            .hash(&mut hasher);
        std::hash::Hasher::finish(&hasher)
    }

    /// Connections open now (for tests and the health of the caps).
    pub fn open_connections(&self) -> usize {
        self.open.lock().total
    }
}

impl ConnectionSlot {
    /// The check made once the token is known: room for one more connection
    /// of this token (429). Refused, the slot is dropped and frees its places.
    pub fn for_token(mut self, identity: &Identity) -> Result<Self, ApiError> {
        let key = self.admission.token_key(identity);
        let cap = self.admission.caps.per_token;
        {
            let mut open = self.admission.open.lock();
            let of_token = open.per_token.entry(key).or_default();
            // (The cap is at least 1: a refused token's entry is never left at zero.)
            if *of_token >= cap {
                drop(open);
                let message = format!("at most {cap} connections per token");
                return Err(refuse("per_token", ErrorCode::TooManyConnections, message));
            }
            *of_token += 1;
        }
        self.token = Some(key);
        Ok(self)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.admission.open.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.ip {
            release(&mut open.per_ip, &ip);
        }
        if let Some(token) = self.token {
            release(&mut open.per_token, &token);
        }
    }
}

/// One place fewer under `key`; the entry goes when it reaches zero, so the
/// maps hold only the addresses and tokens connected now.
fn release<K: Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

fn refuse(reason: &'static str, code: ErrorCode, message: String) -> ApiError {
    m::connection_refused(reason);
    tracing::debug!(reason, "WebSocket handshake refused");
    ApiError::new(code, message)
}
