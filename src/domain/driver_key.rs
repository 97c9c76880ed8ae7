use std::fmt;

use super::{DriverId, FleetId};

/// Who a driver is: its fleet and its id within that fleet. Fleets choose
/// their drivers' ids on their own, so two fleets may each have a `d1`; the
/// pair is the key under which the hub holds, limits, stores and looks up a
/// driver, never the id alone. Ordered by fleet, then driver, like the
/// stores' primary keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DriverKey {
    fleet: FleetId,
    driver: DriverId,
}

impl DriverKey {
    /// Both parts were checked when they were built, so the pair needs no check.
    pub fn new(fleet: FleetId, driver: DriverId) -> Self {
        Self { fleet, driver }
    }

    pub fn fleet(&self) -> &FleetId {
        &self.fleet
    }

    pub fn driver(&self) -> &DriverId {
        &self.driver
    }
}

/// `fleet/driver`, for logs: `/` is outside the ids' alphabet, so the two
/// parts read back unambiguously.
impl fmt::Display for DriverKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.fleet, self.driver)
    }
}

/// `DriverKey::of("acme", "d1")`, for unit tests.
#[cfg(test)]
impl DriverKey {
    pub(crate) fn of(fleet: &str, driver: &str) -> Self {
        let fleet = FleetId::parse(fleet).expect("a valid fleet id");
        let driver = DriverId::parse(driver).expect("a valid driver id");
        Self::new(fleet, driver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fleet: &str, driver: &str) -> DriverKey {
        DriverKey::of(fleet, driver)
    }

    #[test]
    fn the_same_id_in_two_fleets_is_two_drivers() {
        assert_ne!(key("acme", "d1"), key("beta", "d1"));
        assert_eq!(key("acme", "d1"), key("acme", "d1"));
        assert!(key("acme", "z9") < key("beta", "a0"), "fleet first");
    }

    #[test]
    fn a_key_reads_as_fleet_slash_driver() {
        assert_eq!(key("acme", "d1").to_string(), "acme/d1");
    }
}
