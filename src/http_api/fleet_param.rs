//! The fleet a request names (`?fleet=`, a body's `fleet`), as the caller's
//! scope allows it: one check for every endpoint that takes one. A
//! dispatcher acts on its own fleet (naming it is allowed, naming another is
//! forbidden); an admin acts on the fleet it names, or on every fleet.

use super::ApiError;
use crate::auth::FleetScope;
use crate::domain::FleetId;
use crate::protocol::ErrorCode;

/// The fleet `named` in `field` resolves to for `scope`: `None` for an
/// admin that names none (every fleet). `acting` says what the dispatcher
/// may do in its own fleet only ("sees devices", "creates geofences"...).
pub fn scoped_fleet(
    scope: &FleetScope,
    named: Option<&str>,
    field: &str,
    acting: &str,
) -> Result<Option<FleetId>, ApiError> {
    match (scope, named) {
        (FleetScope::One(own), None) => Ok(Some(own.clone())),
        (FleetScope::One(own), Some(named)) if named == own.as_str() => Ok(Some(own.clone())),
        (FleetScope::One(_), Some(_)) => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("a dispatcher {acting} in its own fleet only"),
        )),
        (FleetScope::All, Some(named)) => FleetId::parse(named)
            .map(Some)
            .map_err(|e| ApiError::new(ErrorCode::InvalidId, format!("`{field}`: {e}"))),
        (FleetScope::All, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> FleetId {
        FleetId::parse("acme").unwrap()
    }

    #[test]
    fn a_dispatcher_acts_on_its_own_fleet_only() {
        let scope = FleetScope::One(acme());
        assert_eq!(
            scoped_fleet(&scope, None, "fleet", "x").unwrap(),
            Some(acme())
        );
        assert_eq!(
            scoped_fleet(&scope, Some("acme"), "fleet", "x").unwrap(),
            Some(acme())
        );
        let e = scoped_fleet(&scope, Some("beta"), "fleet", "sees devices").unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
    }

    #[test]
    fn an_admin_names_a_valid_fleet_or_none() {
        let scope = FleetScope::All;
        assert_eq!(scoped_fleet(&scope, None, "fleet", "x").unwrap(), None);
        assert_eq!(
            scoped_fleet(&scope, Some("acme"), "fleet", "x").unwrap(),
            Some(acme())
        );
        let e = scoped_fleet(&scope, Some("no/pe"), "fleet", "x").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidId);
    }
}
