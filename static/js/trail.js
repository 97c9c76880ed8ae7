// Trail replay: fetch one driver's history for a time range from the trails
// API (GeoJSON LineString + per-point timestamps), draw it, and move a marker
// along it with a time slider and play/pause.

import { apiGet, HttpError, Unauthorized } from './auth.js';
import { t, lang, fmtNumber, onLangChange } from './i18n.js';
import { bearingDeg, distanceM } from './vehicles.js';
import { driverLabel, splitKey } from './keys.js';

const HOUR_MS = 3_600_000;
const DATALIST_MAX = 500; // a datalist of thousands helps nobody and costs layout

/** datetime-local wants local time as YYYY-MM-DDTHH:MM. */
function toLocalInput(ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

function fmtDuration(s) {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h ? `${h} h ${String(m).padStart(2, '0')} min` : `${m} min ${String(sec).padStart(2, '0')} s`;
}

/** Index i such that ts[i] <= at < ts[i+1] (clamped). */
function segmentAt(ts, at) {
  let lo = 0;
  let hi = ts.length - 1;
  if (at <= ts[0]) return 0;
  if (at >= ts[hi]) return Math.max(0, hi - 1);
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (ts[mid] <= at) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** When the API leaves the summary out, work it out from the points. */
function computeSummary(coords, ts) {
  let distance = 0;
  let maxSpeed = 0;
  for (let i = 1; i < coords.length; i++) {
    const d = distanceM(coords[i - 1][1], coords[i - 1][0], coords[i][1], coords[i][0]);
    distance += d;
    const dt = (ts[i] - ts[i - 1]) / 1000;
    if (dt > 0) maxSpeed = Math.max(maxSpeed, d / dt);
  }
  const duration = ts.length > 1 ? (ts[ts.length - 1] - ts[0]) / 1000 : 0;
  return {
    points: coords.length,
    distance_m: distance,
    duration_s: duration,
    max_speed_mps: maxSpeed,
    avg_speed_mps: duration > 0 ? distance / duration : 0,
  };
}

export class TrailReplay {
  /**
   * @param {object} els   panel elements (see index.html, ids trail-*)
   * @param {FleetMap} fleetMap
   * @param {object} opts  {onUnauthorized(), knownKeys(): Iterable<string> (keys.js), withFleet(): bool}
   *        withFleet: whether the viewer sees several fleets (an admin), who must name the fleet
   */
  constructor(els, fleetMap, { onUnauthorized, knownKeys, withFleet }) {
    this.els = els;
    this.map = fleetMap;
    this.onUnauthorized = onUnauthorized;
    this.knownKeys = knownKeys;
    this.withFleet = withFleet;
    this.trail = null; // {coords, ts, driver, fleet}
    this.at = 0;
    this.playing = false;
    this.lastFrame = 0;
    this.abort = null;

    els.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.load();
    });
    els.close.addEventListener('click', () => this.close());
    els.play.addEventListener('click', () => (this.playing ? this.pause() : this.play()));
    els.slider.addEventListener('input', () => {
      this.pause();
      this.seek(this.trail.ts[0] + Number(els.slider.value));
    });
    els.driver.addEventListener('focus', () => this.fillDatalists());
    els.fleet.addEventListener('focus', () => this.fillDatalists());
    // Another driver typed in: the fleet chosen for the previous one no longer applies.
    els.driver.addEventListener('input', () => (els.fleet.value = ''));
    onLangChange(() => {
      this.renderSummary();
      this.updatePlayButton();
      if (this.trail) this.seek(this.at);
      if (this.messageKey) this.showMessage(this.messageKey, this.messageParams);
    });
  }

  /** Opens the panel for a vehicle (its key, keys.js) with the default range: the last hour. */
  open(key) {
    const now = Date.now();
    this.els.panel.hidden = false;
    this.els.fleetField.hidden = !this.withFleet();
    if (key) {
      const { fleet, driver } = splitKey(key);
      this.els.driver.value = driver;
      this.els.fleet.value = fleet;
    }
    this.els.from.value = toLocalInput(now - HOUR_MS);
    this.els.to.value = toLocalInput(now + 60_000); // the minute in progress is included
    this.fillDatalists();
    if (key) this.load();
    else this.els.driver.focus();
  }

  close() {
    this.pause();
    this.abort?.abort();
    this.trail = null;
    this.map.setTrail(null);
    this.map.setTrailCursor(null);
    this.els.panel.hidden = true;
    this.showMessage(null);
    this.renderSummary();
  }

  /** Suggestions: the driver ids and the fleets the page knows. */
  fillDatalists() {
    const drivers = new Set();
    const fleets = new Set();
    for (const key of this.knownKeys()) {
      const { fleet, driver } = splitKey(key);
      if (drivers.size < DATALIST_MAX) drivers.add(driver);
      fleets.add(fleet);
    }
    const options = (values) =>
      Array.from(values, (v) => {
        const o = document.createElement('option');
        o.value = v;
        return o;
      });
    this.els.datalist.replaceChildren(...options(drivers));
    this.els.fleetDatalist.replaceChildren(...options(fleets));
  }

  /**
   * The fleet to ask for `driver`'s trail: the one in the form, else the only
   * fleet the page knows with that driver. Several such fleets: ambiguous (null);
   * none: '' (a dispatcher's own fleet, or for an admin an id no fleet has).
   */
  fleetFor(driver) {
    const named = this.els.fleet.value.trim();
    if (named) return named;
    const fleets = [];
    for (const key of this.knownKeys()) {
      const k = splitKey(key);
      if (k.driver === driver) fleets.push(k.fleet);
    }
    if (fleets.length > 1) return null;
    return fleets[0] ?? '';
  }

  showMessage(key, params) {
    this.messageKey = key;
    this.messageParams = params;
    this.els.message.textContent = key ? t(key, params) : '';
    this.els.message.hidden = !key;
  }

  async load() {
    const driver = this.els.driver.value.trim();
    const from = new Date(this.els.from.value).getTime();
    const to = new Date(this.els.to.value).getTime();
    if (!driver) return this.showMessage('trail.needDriver');
    if (!(from < to)) return this.showMessage('trail.badRange');
    const fleet = this.fleetFor(driver);
    if (fleet === null) return this.showMessage('trail.needFleet', { id: driver });
    const who = driverLabel(fleet, driver, this.withFleet());
    this.pause();
    this.abort?.abort();
    this.abort = new AbortController();
    this.showMessage('trail.loading');
    this.els.panel.setAttribute('aria-busy', 'true');
    // A driver id is per fleet: admins must name the fleet (dispatchers may, their own).
    const inFleet = fleet ? `&fleet=${encodeURIComponent(fleet)}` : '';
    let feature;
    try {
      feature = await apiGet(
        `/api/v1/drivers/${encodeURIComponent(driver)}/trail?from=${from}&to=${to}&format=geojson${inFleet}`,
        { signal: this.abort.signal },
      );
    } catch (e) {
      if (e.name === 'AbortError') return;
      this.setTrail(null);
      if (e instanceof Unauthorized) return this.onUnauthorized();
      // 404: no such driver in the caller's fleet. 400 without a fleet: an
      // admin asked for an id no fleet on the map has, so no fleet to name.
      const unknown = e instanceof HttpError && (e.status === 404 || (e.status === 400 && !fleet));
      if (unknown) return this.showMessage('trail.none', { id: who });
      if (e instanceof HttpError && (e.status === 501 || e.status === 405)) return this.showMessage('trail.unavailable');
      return this.showMessage('trail.error', { msg: e.message });
    } finally {
      this.els.panel.removeAttribute('aria-busy');
    }
    const coords = feature?.geometry?.coordinates ?? [];
    const ts = feature?.properties?.timestamps ?? [];
    if (!coords.length || ts.length !== coords.length) {
      this.setTrail(null);
      return this.showMessage('trail.none', { id: who });
    }
    this.showMessage(null);
    this.setTrail({
      driver,
      fleet,
      coords,
      ts,
      feature,
      summary: feature.properties.summary ?? computeSummary(coords, ts),
    });
    this.map.fitTo(coords);
  }

  setTrail(trail) {
    this.trail = trail;
    const has = !!trail;
    this.els.player.hidden = !has;
    if (!has) {
      this.map.setTrail(null);
      this.map.setTrailCursor(null);
      this.renderSummary();
      return;
    }
    // A single point is not a line; draw it as a zero-length one so the cursor still shows.
    const coords = trail.coords.length > 1 ? trail.coords : [trail.coords[0], trail.coords[0]];
    this.map.setTrail({ type: 'Feature', properties: {}, geometry: { type: 'LineString', coordinates: coords } });
    const span = trail.ts[trail.ts.length - 1] - trail.ts[0];
    this.els.slider.max = String(span);
    this.els.slider.step = String(Math.max(1, Math.round(span / 1000)));
    this.renderSummary();
    this.seek(trail.ts[0]);
  }

  renderSummary() {
    const dl = this.els.summary;
    const s = this.trail?.summary;
    dl.hidden = !s;
    if (!s) return dl.replaceChildren();
    const kmh = (mps) => t('units.kmh', { v: fmtNumber((mps ?? 0) * 3.6) });
    const items = [
      ['trail.points', fmtNumber(s.points ?? this.trail.coords.length)],
      ['trail.distance', t('units.km', { v: fmtNumber((s.distance_m ?? 0) / 1000, 2) })],
      ['trail.duration', fmtDuration(s.duration_s ?? 0)],
      ['trail.maxSpeed', kmh(s.max_speed_mps)],
      ['trail.avgSpeed', kmh(s.avg_speed_mps)],
    ];
    const nodes = [];
    for (const [key, value] of items) {
      const div = document.createElement('div');
      const dt = document.createElement('dt');
      dt.textContent = t(key);
      const dd = document.createElement('dd');
      dd.textContent = value;
      div.append(dt, dd);
      nodes.push(div);
    }
    dl.replaceChildren(...nodes);
  }

  /** Places the replay marker at time `at` (ms), interpolating between fixes. */
  seek(at) {
    const tr = this.trail;
    if (!tr) return;
    const { coords, ts } = tr;
    this.at = Math.min(Math.max(at, ts[0]), ts[ts.length - 1]);
    let pos = coords[0];
    let heading = 0;
    if (coords.length > 1) {
      const i = segmentAt(ts, this.at);
      const a = coords[i];
      const b = coords[i + 1];
      const span = ts[i + 1] - ts[i];
      const k = span > 0 ? Math.min(1, Math.max(0, (this.at - ts[i]) / span)) : 0;
      pos = [a[0] + (b[0] - a[0]) * k, a[1] + (b[1] - a[1]) * k];
      heading = bearingDeg(a[1], a[0], b[1], b[0]);
    }
    this.map.setTrailCursor(pos, heading);
    this.els.slider.value = String(this.at - ts[0]);
    const when = new Date(this.at).toLocaleTimeString(lang() === 'es' ? 'es-PE' : 'en-GB');
    this.els.time.textContent = when;
    this.els.slider.setAttribute('aria-valuetext', when);
  }

  play() {
    if (!this.trail) return;
    if (this.at >= this.trail.ts[this.trail.ts.length - 1]) this.seek(this.trail.ts[0]); // replay from the start
    this.playing = true;
    this.lastFrame = performance.now();
    this.updatePlayButton();
    const step = (now) => {
      if (!this.playing) return;
      const speed = Number(this.els.speed.value) || 60;
      this.seek(this.at + (now - this.lastFrame) * speed);
      this.lastFrame = now;
      if (this.at >= this.trail.ts[this.trail.ts.length - 1]) return this.pause();
      requestAnimationFrame(step);
    };
    requestAnimationFrame(step);
  }

  pause() {
    this.playing = false;
    this.updatePlayButton();
  }

  updatePlayButton() {
    const key = this.playing ? 'trail.pause' : 'trail.play';
    this.els.play.setAttribute('aria-label', t(key));
    this.els.play.title = t(key);
    this.els.play.dataset.state = this.playing ? 'playing' : 'paused';
  }
}
