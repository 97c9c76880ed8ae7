// The live vehicles the map shows: last fix per driver as the hub sent it, plus
// where its marker is drawn right now. Markers glide from where they are drawn
// to each new fix over about a second (the hub's 1 Hz cadence), so movement
// looks continuous without drawing anything per vehicle in the DOM.
// Vehicles are keyed by fleet and driver (keys.js): an admin sees every fleet,
// and fleets may reuse driver ids.

import { keyOf } from './keys.js';

const GLIDE_MS = 1000;
// A jump longer than this (metres) is a teleport (snapshot after a pan, a GPS
// glitch, a reconnect): snap instead of sweeping a marker across the city.
const SNAP_DISTANCE_M = 3000;
const MOVING_MPS = 1; // Above ~3.6 km/h a vehicle counts as moving; GPS jitter stays below.

/** The marker class a record is drawn with. */
export function statusOf(rec) {
  if (rec.status === 'offline') return 'offline';
  return (rec.speed ?? 0) > MOVING_MPS ? 'moving' : 'stopped';
}

const R = 6371008.8;
const rad = Math.PI / 180;

export function distanceM(lat1, lon1, lat2, lon2) {
  const dLat = (lat2 - lat1) * rad;
  const dLon = (lon2 - lon1) * rad;
  const a = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * R * Math.asin(Math.min(1, Math.sqrt(a)));
}

export function bearingDeg(lat1, lon1, lat2, lon2) {
  const y = Math.sin((lon2 - lon1) * rad) * Math.cos(lat2 * rad);
  const x = Math.cos(lat1 * rad) * Math.sin(lat2 * rad) - Math.sin(lat1 * rad) * Math.cos(lat2 * rad) * Math.cos((lon2 - lon1) * rad);
  return (Math.atan2(y, x) / rad + 360) % 360;
}

export class VehicleStore {
  constructor() {
    this.byKey = new Map();
    // One FeatureCollection whose features are updated in place: the animation
    // loop then allocates nothing per frame for unchanged vehicles.
    this.collection = { type: 'FeatureCollection', features: [] };
    this.structureChanged = true; // features added/removed since the last collection()
    this.dirty = true; // anything to push to the map
    this.animating = 0; // records still gliding
    this.sosKeys = new Set(); // drivers in SOS: drawn red and ringed (sos.js)
  }

  /** The drivers in SOS now (vehicle keys); their features get `sos: 1`. */
  setSos(keys) {
    const next = new Set(keys);
    if (next.size === this.sosKeys.size && [...next].every((k) => this.sosKeys.has(k))) return;
    const touched = new Set([...this.sosKeys, ...next]);
    this.sosKeys = next;
    for (const key of touched) {
      const rec = this.byKey.get(key);
      if (rec) this.restyle(rec);
    }
    this.dirty = true;
  }

  get size() {
    return this.byKey.size;
  }

  get(key) {
    return this.byKey.get(key);
  }

  /** A `snapshot` for the view: it replaces what we had (the view is all we subscribe to). */
  applySnapshot(drivers, now) {
    const keep = new Set();
    for (const p of drivers) {
      keep.add(keyOf(p));
      this.upsert(p, now);
    }
    for (const key of this.byKey.keys()) {
      if (!keep.has(key)) {
        this.byKey.delete(key);
        this.structureChanged = true;
      }
    }
    this.dirty = true;
  }

  /** A `positions` batch. Several fixes of one driver may share a batch; the newest wins. */
  applyPositions(items, now) {
    for (const p of items) this.upsert(p, now);
    this.dirty = true;
  }

  applyStatus(key, status) {
    const rec = this.byKey.get(key);
    if (!rec) return;
    rec.status = status;
    this.restyle(rec);
    this.dirty = true;
  }

  upsert(p, now) {
    if (!Number.isFinite(p.lat) || !Number.isFinite(p.lon)) return;
    const key = keyOf(p);
    let rec = this.byKey.get(key);
    if (!rec) {
      rec = {
        key,
        id: p.driver,
        fleet: p.fleet,
        lat: p.lat,
        lon: p.lon,
        ts: p.ts,
        speed: p.speed,
        heading: p.heading,
        status: p.status ?? 'online',
        fromLat: p.lat,
        fromLon: p.lon,
        t0: 0,
        feature: {
          type: 'Feature',
          // The map selects and reports clicks by `key`.
          properties: { key, s: 'stopped', h: 0, a: 0, sos: 0 },
          geometry: { type: 'Point', coordinates: [p.lon, p.lat] },
        },
      };
      this.byKey.set(key, rec);
      this.structureChanged = true;
      this.restyle(rec);
      return;
    }
    // Time only goes forward on the map: an older fix never moves a marker back.
    if (rec.ts != null && p.ts != null && p.ts < rec.ts) return;
    const [curLon, curLat] = rec.feature.geometry.coordinates;
    const prevLat = rec.lat;
    const prevLon = rec.lon;
    const prevTs = rec.ts;
    rec.lat = p.lat;
    rec.lon = p.lon;
    rec.ts = p.ts;
    if (p.status) rec.status = p.status;
    else if (rec.status === 'offline') rec.status = 'online'; // a fresh fix means it is back
    const moved = distanceM(prevLat, prevLon, p.lat, p.lon);
    // Speed and heading are optional on the wire: derive them from the last fix when absent.
    if (p.speed != null) rec.speed = p.speed;
    else if (prevTs != null && p.ts > prevTs) rec.speed = moved / ((p.ts - prevTs) / 1000);
    if (p.heading != null) rec.heading = p.heading;
    else if (moved > 2) rec.heading = bearingDeg(prevLat, prevLon, p.lat, p.lon);
    if (distanceM(curLat, curLon, p.lat, p.lon) > SNAP_DISTANCE_M) {
      rec.fromLat = p.lat;
      rec.fromLon = p.lon;
      rec.t0 = 0;
      rec.feature.geometry.coordinates = [p.lon, p.lat];
    } else {
      // Glide from where the marker is drawn now, so a fix arriving mid-glide does not jerk.
      rec.fromLat = curLat;
      rec.fromLon = curLon;
      rec.t0 = now;
      this.animating += 1;
    }
    this.restyle(rec);
  }

  restyle(rec) {
    const props = rec.feature.properties;
    props.s = statusOf(rec);
    props.a = rec.heading != null ? 1 : 0;
    props.h = Math.round(rec.heading ?? 0);
    props.sos = this.sosKeys.has(rec.key) ? 1 : 0;
  }

  /**
   * Moves gliding markers to where they should be at `now`. Returns true when
   * something changed and the map source needs the new data.
   */
  tick(now) {
    if (this.animating > 0) {
      let still = 0;
      for (const rec of this.byKey.values()) {
        if (rec.t0 === 0) continue;
        const k = (now - rec.t0) / GLIDE_MS;
        if (k >= 1) {
          rec.t0 = 0;
          rec.feature.geometry.coordinates = [rec.lon, rec.lat];
        } else {
          const e = k < 0 ? 0 : k;
          // A new array, not a mutation: MapLibre may still hold the previous data.
          rec.feature.geometry.coordinates = [
            rec.fromLon + (rec.lon - rec.fromLon) * e,
            rec.fromLat + (rec.lat - rec.fromLat) * e,
          ];
          still += 1;
        }
      }
      this.animating = still;
      this.dirty = true;
    }
    const changed = this.dirty;
    this.dirty = false;
    return changed;
  }

  /** Where a vehicle's marker is drawn now ([lon, lat]), for following it. */
  drawnAt(key) {
    return this.byKey.get(key)?.feature.geometry.coordinates;
  }

  featureCollection() {
    if (this.structureChanged) {
      this.collection = { type: 'FeatureCollection', features: Array.from(this.byKey.values(), (r) => r.feature) };
      this.structureChanged = false;
    }
    return this.collection;
  }

  counts() {
    const c = { moving: 0, stopped: 0, offline: 0 };
    for (const rec of this.byKey.values()) c[rec.feature.properties.s] += 1;
    return c;
  }
}
