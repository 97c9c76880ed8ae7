//! Which device a phone app's request comes from, and whether its key is
//! right, without a database read per position: a cache of the registry
//! in front of the store.
//!
//! How long a cached device is trusted: [`CACHE_TTL`], 5 seconds. The API
//! forgets a device on this node the moment it is deleted or its key
//! rotated; other nodes of a cluster read the database again once their copy
//! is older than that, so a deleted device or an old key is refused
//! everywhere within 5 seconds. That is one read per device every 5 seconds
//! while it sends, whatever its rate. Unknown ids are not cached (a device
//! registered a moment ago works at once); each costs one indexed read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::{Device, DeviceId, DeviceStore, Protocol, keys};
use crate::auth::DriverIdentity;
use crate::domain::Timestamp;
use crate::http_api::ApiError;
use crate::metrics as m;
use crate::protocol::ErrorCode;
use crate::trails::{StoreError, TrailStore};

/// How long a cached device is used before the database is read again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Devices kept in the cache at most; past it, entries older than the TTL go.
const MAX_CACHED: usize = 100_000;

/// A registered device as the ingest paths need it.
#[derive(Debug)]
pub struct KnownDevice {
    pub device: Device,
    key_hash: String,
}

impl KnownDevice {
    /// The driver the device posts for: its positions are that driver's, in
    /// that fleet, exactly as if the driver's own token had sent them.
    pub fn driver(&self) -> DriverIdentity {
        DriverIdentity {
            driver: self.device.driver.clone(),
            fleet: self.device.fleet.clone(),
            // A device has no token that expires; deleting it is how it ends.
            expires_at: Timestamp::from_millis(i64::MAX),
        }
    }
}

/// Why a device's request is refused.
#[derive(Debug, thiserror::Error)]
pub enum DeviceRefused {
    #[error("a device key is required (the `key` parameter, or the password of HTTP Basic auth)")]
    KeyMissing,
    #[error("a device id is required")]
    IdMissing,
    #[error("no device is registered under this id")]
    Unknown,
    #[error("the device key is wrong")]
    WrongKey,
    #[error("this device is registered for the {0} protocol")]
    WrongProtocol(&'static str),
    #[error("the device registry is unavailable: {0}")]
    Store(#[from] StoreError),
}

impl DeviceRefused {
    pub fn code(&self) -> ErrorCode {
        match self {
            DeviceRefused::KeyMissing => ErrorCode::DeviceKeyMissing,
            DeviceRefused::IdMissing => ErrorCode::InvalidId,
            DeviceRefused::Unknown => ErrorCode::UnknownDevice,
            DeviceRefused::WrongKey => ErrorCode::DeviceKeyInvalid,
            DeviceRefused::WrongProtocol(_) => ErrorCode::Forbidden,
            DeviceRefused::Store(_) => ErrorCode::StorageUnavailable,
        }
    }
}

impl From<DeviceRefused> for ApiError {
    fn from(e: DeviceRefused) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

struct Cached {
    device: Arc<KnownDevice>,
    fetched: Instant,
}

pub struct DeviceRegistry {
    store: Arc<dyn TrailStore>,
    cache: DashMap<DeviceId, Cached>,
}

impl DeviceRegistry {
    /// The registry kept in `store`'s database.
    pub fn new(store: Arc<dyn TrailStore>) -> Self {
        Self {
            store,
            cache: DashMap::new(),
        }
    }

    /// Where devices are stored (the API's writes go there directly).
    pub fn store(&self) -> &dyn DeviceStore {
        self.store.devices()
    }

    /// The device behind a request that names `id` and presents `key`,
    /// registered for `protocol`. Only the device's existence is told before
    /// the key is checked.
    pub async fn authenticate(
        &self,
        id: Option<&str>,
        key: Option<&str>,
        protocol: Protocol,
    ) -> Result<Arc<KnownDevice>, DeviceRefused> {
        let checked = self.check(id, key, protocol).await;
        if let Err(e) = &checked {
            m::device_refused(protocol.as_str(), e.code().as_str());
        }
        checked
    }

    async fn check(
        &self,
        id: Option<&str>,
        key: Option<&str>,
        protocol: Protocol,
    ) -> Result<Arc<KnownDevice>, DeviceRefused> {
        // No credentials at all is a missing key (401), the answer that makes
        // an app ask its user for them.
        let key = key
            .filter(|k| !k.is_empty())
            .ok_or(DeviceRefused::KeyMissing)?;
        let id = id
            .filter(|id| !id.is_empty())
            .ok_or(DeviceRefused::IdMissing)?;
        // An id the registry could not hold is unknown, not malformed: the
        // app is told the same as for any other id nobody registered.
        let id = DeviceId::parse(id).map_err(|_| DeviceRefused::Unknown)?;
        let device = self.lookup(&id).await?.ok_or(DeviceRefused::Unknown)?;
        if !keys::verify(key, &device.key_hash) {
            return Err(DeviceRefused::WrongKey);
        }
        if device.device.protocol != protocol {
            return Err(DeviceRefused::WrongProtocol(
                device.device.protocol.as_str(),
            ));
        }
        Ok(device)
    }

    /// The device `id` registered for `protocol`, without a key: for a path
    /// whose transport already authenticated the sender (OwnTracks over
    /// MQTT, where the broker checks the app's credentials and the topic
    /// names the device). Never use it where anyone can claim an id.
    pub async fn find(
        &self,
        id: &str,
        protocol: Protocol,
    ) -> Result<Arc<KnownDevice>, DeviceRefused> {
        let id = DeviceId::parse(id).map_err(|_| DeviceRefused::Unknown)?;
        let device = self.lookup(&id).await?.ok_or(DeviceRefused::Unknown)?;
        if device.device.protocol != protocol {
            return Err(DeviceRefused::WrongProtocol(
                device.device.protocol.as_str(),
            ));
        }
        Ok(device)
    }

    /// The device `id`, from the cache when the copy is fresh.
    async fn lookup(&self, id: &DeviceId) -> Result<Option<Arc<KnownDevice>>, StoreError> {
        if let Some(cached) = self.cache.get(id)
            && cached.fetched.elapsed() < CACHE_TTL
        {
            return Ok(Some(Arc::clone(&cached.device)));
        }
        let Some(stored) = self.store.devices().get(id).await? else {
            self.cache.remove(id);
            return Ok(None);
        };
        let device = Arc::new(KnownDevice {
            device: stored.device,
            key_hash: stored.key_hash,
        });
        if self.cache.len() >= MAX_CACHED {
            self.cache.retain(|_, c| c.fetched.elapsed() < CACHE_TTL);
        }
        let cached = Cached {
            device: Arc::clone(&device),
            fetched: Instant::now(),
        };
        self.cache.insert(id.clone(), cached);
        Ok(Some(device))
    }

    /// Drops this node's copy of `id` (deleted, or its key rotated).
    pub fn forget(&self, id: &DeviceId) {
        self.cache.remove(id);
    }
}
