//! The registry of connected driver actors: one per driver (fleet and id) on
//! this node. A driver that connects again replaces its older actor, which is
//! told to close with 4001 (the place where takeover between nodes will
//! live); the same id in another fleet is another driver and replaces nothing.

use dashmap::DashMap;
use tokio::sync::oneshot;

use super::ConnId;
use crate::domain::DriverKey;
use crate::protocol::Close;

/// How the registry reaches a connected driver actor. A oneshot, because the
/// only message an actor takes from outside is "stop", and the actor polls it
/// on every position: that costs one atomic load.
pub struct DriverHandle {
    pub conn: ConnId,
    /// The ownership epoch the session claimed (0: unclaimed, one node).
    pub epoch: u64,
    pub stop: oneshot::Sender<Close>,
}

#[derive(Default)]
pub struct DriverRegistry {
    sessions: DashMap<DriverKey, DriverHandle>,
}

impl DriverRegistry {
    /// Registers a connected driver actor. The actor it replaces, if any, is
    /// told to close with [`Close::REPLACED`].
    pub fn register(&self, driver: &DriverKey, handle: DriverHandle) {
        if let Some(old) = self.sessions.insert(driver.clone(), handle) {
            let _ = old.stop.send(Close::REPLACED);
        }
    }

    /// Removes the driver's registration if it is still this connection's.
    /// Returns whether it was (a replaced session must not mark the driver offline).
    pub fn unregister(&self, driver: &DriverKey, conn: ConnId) -> bool {
        self.sessions
            .remove_if(driver, |_, h| h.conn == conn)
            .is_some()
    }

    /// Closes the driver's session with [`Close::REPLACED`] if it claimed an
    /// epoch older than `epoch` (another node's newer claim). The session is
    /// forgotten first, so it does not mark its driver offline: the driver
    /// is online elsewhere. Returns whether a session was closed.
    pub fn evict_older(&self, driver: &DriverKey, epoch: u64) -> bool {
        self.evict_if(driver, |h| h.epoch < epoch)
    }

    /// Closes the driver's session if it still holds `epoch`, which Redis
    /// says is no longer the driver's owner.
    pub fn evict_exact(&self, driver: &DriverKey, epoch: u64) -> bool {
        self.evict_if(driver, |h| h.epoch == epoch)
    }

    fn evict_if(&self, driver: &DriverKey, stale: impl FnOnce(&DriverHandle) -> bool) -> bool {
        match self.sessions.remove_if(driver, |_, h| stale(h)) {
            Some((_, handle)) => {
                let _ = handle.stop.send(Close::REPLACED);
                true
            }
            None => false,
        }
    }

    /// The connected drivers that claimed an epoch, for the ownership re-check.
    pub fn claimed(&self) -> Vec<(DriverKey, u64)> {
        self.sessions
            .iter()
            .filter(|e| e.epoch > 0)
            .map(|e| (e.key().clone(), e.epoch))
            .collect()
    }

    /// Tells every registered actor to close with `close` and forgets them.
    /// An actor that registers after this must check for shutdown itself.
    pub fn stop_all(&self, close: Close) {
        let ids: Vec<DriverKey> = self.sessions.iter().map(|e| e.key().clone()).collect();
        for id in ids {
            if let Some((_, handle)) = self.sessions.remove(&id) {
                let _ = handle.stop.send(close);
            }
        }
    }

    pub fn is_connected(&self, driver: &DriverKey) -> bool {
        self.sessions.contains_key(driver)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fleet: &str, driver: &str) -> DriverKey {
        DriverKey::of(fleet, driver)
    }

    #[test]
    fn the_same_id_in_another_fleet_replaces_nothing() {
        let registry = DriverRegistry::default();
        let (stop, mut acme_stopped) = oneshot::channel();
        registry.register(
            &key("acme", "d1"),
            DriverHandle {
                conn: 1,
                epoch: 0,
                stop,
            },
        );
        let (stop, _beta_stopped) = oneshot::channel();
        registry.register(
            &key("beta", "d1"),
            DriverHandle {
                conn: 2,
                epoch: 0,
                stop,
            },
        );
        assert!(
            acme_stopped.try_recv().is_err(),
            "acme's d1 keeps its session"
        );
        assert_eq!(registry.len(), 2);

        let (stop, _again) = oneshot::channel();
        registry.register(
            &key("acme", "d1"),
            DriverHandle {
                conn: 3,
                epoch: 0,
                stop,
            },
        );
        assert_eq!(acme_stopped.try_recv(), Ok(Close::REPLACED));
        assert!(
            !registry.unregister(&key("acme", "d1"), 1),
            "no longer its own"
        );
        assert!(registry.unregister(&key("beta", "d1"), 2));
        assert!(registry.is_connected(&key("acme", "d1")));
    }

    #[test]
    fn a_newer_claim_elsewhere_evicts_and_an_older_one_does_not() {
        let registry = DriverRegistry::default();
        let (stop, mut stopped) = oneshot::channel();
        registry.register(
            &key("acme", "d1"),
            DriverHandle {
                conn: 1,
                epoch: 5,
                stop,
            },
        );
        assert!(
            !registry.evict_older(&key("acme", "d1"), 4),
            "an older claim"
        );
        assert!(
            !registry.evict_older(&key("acme", "d1"), 5),
            "its own claim"
        );
        assert_eq!(registry.claimed(), vec![(key("acme", "d1"), 5)]);
        assert!(registry.evict_older(&key("acme", "d1"), 6));
        assert_eq!(stopped.try_recv(), Ok(Close::REPLACED));
        assert!(
            !registry.unregister(&key("acme", "d1"), 1),
            "gone without going offline"
        );
    }
}
