// A driver's identity is its fleet and its id: two fleets may both have a
// driver `d1`, and an admin's dashboard shows both. Everything the page keeps
// per vehicle (markers, list rows, selection, following, trails) is keyed by
// the key built here, never by the driver id alone.

import { t } from './i18n.js';

// Ids are 1–64 bytes of `A-Z a-z 0-9 - _ . :` (src/domain/ids.rs): no id holds
// a '/', so the key splits back unambiguously.
const SEP = '/';

/** The key of driver `driver` of fleet `fleet`. */
export function vehicleKey(fleet, driver) {
  return `${fleet ?? ''}${SEP}${driver}`;
}

/** The key of anything carrying `driver` and `fleet` (P, a status frame, a REST row). */
export function keyOf(item) {
  return vehicleKey(item.fleet, item.driver);
}

/** {fleet, driver} back from a key. */
export function splitKey(key) {
  const i = key.indexOf(SEP);
  return { fleet: key.slice(0, i), driver: key.slice(i + 1) };
}

/**
 * How a driver is named to the user: its id alone when the viewer sees one
 * fleet, its id and fleet when it sees several (an admin), where ids repeat.
 */
export function driverLabel(fleet, driver, withFleet) {
  return withFleet && fleet ? t('drivers.inFleet', { id: driver, fleet }) : driver;
}
