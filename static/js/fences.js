// The fleet's geofences (GET /api/v1/geofences), turned into what the map
// draws: polygons as they are, circles as polygons of their radius in metres,
// corridors as lines whose width in pixels follows the zoom so that they stay
// their width in metres, and one label point per fence. MapLibre tiles these
// in its worker and draws only what is in view, so a fleet's 1,000 fences
// (an admin's 10,000) cost one upload per refresh, nothing per frame.

const R = 6371008.8;
const rad = Math.PI / 180;
// Web Mercator at zoom 0 in MapLibre's 512-pixel tiles: metres per pixel at the equator.
const EQUATOR_M = 2 * Math.PI * 6378137;
const CIRCLE_STEPS = 64;
const LABEL_MAX_CHARS = 40;

/** The point `distM` metres from [lon, lat] on bearing `deg` (great circle). */
export function destination([lon, lat], distM, deg) {
  const d = distM / R;
  const b = deg * rad;
  const p1 = lat * rad;
  const l1 = lon * rad;
  const p2 = Math.asin(Math.sin(p1) * Math.cos(d) + Math.cos(p1) * Math.sin(d) * Math.cos(b));
  const l2 = l1 + Math.atan2(Math.sin(b) * Math.sin(d) * Math.cos(p1), Math.cos(d) - Math.sin(p1) * Math.sin(p2));
  return [l2 / rad, p2 / rad];
}

/** A closed ring approximating the circle of `radiusM` metres around `centre`. */
export function circleRing(centre, radiusM, steps = CIRCLE_STEPS) {
  const ring = [];
  for (let i = 0; i < steps; i++) ring.push(destination(centre, radiusM, (360 * i) / steps));
  ring.push(ring[0]);
  return ring;
}

/** Pixels per metre at zoom 0 at this latitude: the width expression scales it by 2^zoom. */
export function pixelsPerMetreZ0(lat) {
  return 512 / (EQUATOR_M * Math.max(0.01, Math.cos(lat * rad)));
}

/** Where a polygon's label goes: its ring's area centroid (the mean of its points if degenerate). */
function ringCentroid(ring) {
  let a = 0;
  let x = 0;
  let y = 0;
  for (let i = 0; i < ring.length - 1; i++) {
    const [x0, y0] = ring[i];
    const [x1, y1] = ring[i + 1];
    const f = x0 * y1 - x1 * y0;
    a += f;
    x += (x0 + x1) * f;
    y += (y0 + y1) * f;
  }
  if (Math.abs(a) < 1e-12) {
    const n = Math.max(1, ring.length - 1);
    return [ring.slice(0, n).reduce((s, p) => s + p[0], 0) / n, ring.slice(0, n).reduce((s, p) => s + p[1], 0) / n];
  }
  return [x / (3 * a), y / (3 * a)];
}

/** The point halfway along a line (in degrees: fine for a label). */
function lineMiddle(coords) {
  let total = 0;
  const seg = [];
  for (let i = 1; i < coords.length; i++) {
    const l = Math.hypot(coords[i][0] - coords[i - 1][0], coords[i][1] - coords[i - 1][1]);
    seg.push(l);
    total += l;
  }
  let half = total / 2;
  for (let i = 0; i < seg.length; i++) {
    if (half <= seg[i] && seg[i] > 0) {
      const k = half / seg[i];
      return [coords[i][0] + (coords[i + 1][0] - coords[i][0]) * k, coords[i][1] + (coords[i + 1][1] - coords[i][1]) * k];
    }
    half -= seg[i];
  }
  return coords[0];
}

function labelOf(name) {
  const s = String(name ?? '').trim();
  return s.length > LABEL_MAX_CHARS ? `${s.slice(0, LABEL_MAX_CHARS - 1)}…` : s;
}

/**
 * The map's data for a FeatureCollection of fences:
 * {shapes: polygons (fill and outline) and corridors (lines), labels: points}.
 * Each drawn feature carries `fid` (the fence id), `kind` (polygon|circle|corridor)
 * and, for corridors, `w0`: their width in pixels at zoom 0.
 */
export function fenceDrawing(collection) {
  const shapes = [];
  const labels = [];
  for (const f of collection?.features ?? []) {
    const g = f?.geometry;
    const p = f?.properties ?? {};
    if (!g) continue;
    const fid = String(f.id ?? p.id ?? '');
    const label = labelOf(p.name);
    let at = null;
    if (g.type === 'Polygon' && g.coordinates?.[0]?.length >= 4) {
      shapes.push({ type: 'Feature', properties: { fid, kind: 'polygon' }, geometry: g });
      at = ringCentroid(g.coordinates[0]);
    } else if (g.type === 'Point' && Number(p.radius_m) > 0) {
      const c = [g.coordinates[0], g.coordinates[1]];
      shapes.push({ type: 'Feature', properties: { fid, kind: 'circle' }, geometry: { type: 'Polygon', coordinates: [circleRing(c, Number(p.radius_m))] } });
      at = c;
    } else if (g.type === 'LineString' && g.coordinates?.length >= 2 && Number(p.width_m) > 0) {
      const coords = g.coordinates.map((c) => [c[0], c[1]]);
      const midLat = coords.reduce((s, c) => s + c[1], 0) / coords.length;
      const w0 = Number(p.width_m) * pixelsPerMetreZ0(midLat);
      shapes.push({ type: 'Feature', properties: { fid, kind: 'corridor', w0 }, geometry: { type: 'LineString', coordinates: coords } });
      at = lineMiddle(coords);
    } else {
      continue; // a shape this page does not know: not drawn rather than drawn wrong
    }
    if (label) labels.push({ type: 'Feature', properties: { fid, label: `fence:${label}` }, geometry: { type: 'Point', coordinates: at } });
  }
  return {
    shapes: { type: 'FeatureCollection', features: shapes },
    labels: { type: 'FeatureCollection', features: labels },
  };
}

/** The fences as loaded, by id, for event names and the tests. */
export class FenceStore {
  constructor() {
    this.byId = new Map();
    this.loadedAt = 0;
  }

  /** Takes a FeatureCollection from the API; returns the map's drawing of it. */
  replace(collection) {
    this.byId.clear();
    for (const f of collection?.features ?? []) {
      if (f?.id != null) this.byId.set(String(f.id), f);
    }
    this.loadedAt = Date.now();
    return fenceDrawing(collection);
  }

  has(id) {
    return this.byId.has(String(id));
  }

  name(id) {
    return this.byId.get(String(id))?.properties?.name ?? null;
  }

  get size() {
    return this.byId.size;
  }

  clear() {
    this.byId.clear();
    this.loadedAt = 0;
  }
}
