// The event feed: what the hub says needs a dispatcher's attention (fence
// entries and exits, overspeed, idle, offline, low battery, SOS), from the
// recent history (GET /api/v1/events) and the live `event` frames. Newest on
// top, at most MAX_EVENTS, each event once by its id (history and the live
// socket may both carry it). Clicking an entry shows its place on the map.

import { t, lang, fmtNumber } from './i18n.js';
import { driverLabel, keyOf } from './keys.js';

export const MAX_EVENTS = 200;
export const KINDS = [
  'geofence_enter',
  'geofence_exit',
  'geofence_dwell',
  'geofence_cross',
  'overspeed',
  'idle',
  'offline',
  'low_battery',
  'sos',
];

/** "45 s", "12 min", "1 h 05 min", "2 d 3 h". */
export function fmtDuration(secs) {
  const s = Math.max(0, Math.round(Number(secs) || 0));
  if (s < 60) return t('units.s', { v: s });
  const m = Math.floor(s / 60);
  if (m < 60) return t('units.min', { v: m });
  const h = Math.floor(m / 60);
  if (h < 48) return t('units.hmin', { h, m: String(m % 60).padStart(2, '0') });
  return t('units.dh', { d: Math.floor(h / 24), h: h % 24 });
}

/** ms since the epoch, or an RFC 3339 string, as ms; null otherwise. */
function toMs(v) {
  if (v == null) return null;
  if (typeof v === 'number') return v;
  const ms = Date.parse(v);
  return Number.isNaN(ms) ? null : ms;
}

/** The time of day (and the date when not today) in the UI's language. */
export function fmtTime(ms, now = Date.now()) {
  if (ms == null) return '';
  const d = new Date(ms);
  const locale = lang() === 'es' ? 'es-PE' : 'en-GB';
  const sameDay = new Date(now).toDateString() === d.toDateString();
  const opts = { hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' };
  if (!sameDay) Object.assign(opts, { day: 'numeric', month: 'short' });
  return new Intl.DateTimeFormat(locale, opts).format(d);
}

/** "-12.04630, -77.04280": coordinates keep the decimal point in every language. */
export function fmtPlace(lat, lon) {
  if (!Number.isFinite(lat) || !Number.isFinite(lon)) return '';
  return t('events.place', { lat: lat.toFixed(5), lon: lon.toFixed(5) });
}

/**
 * What an event says, in the UI's language. `fenceName(id)` names a fence the
 * details do not (from the loaded fences); failing both, the id is shown.
 */
export function describeEvent(ev, fenceName = () => null) {
  const d = ev.details ?? {};
  switch (ev.kind) {
    case 'geofence_enter':
    case 'geofence_exit':
    case 'geofence_dwell':
    case 'geofence_cross': {
      const name = d.name ?? (ev.geofence != null ? fenceName(ev.geofence) : null) ?? ev.geofence ?? '?';
      const secs = d.secs ?? d.dwell_secs;
      if (ev.kind === 'geofence_dwell' && secs != null) return t('event.geofence_dwell_for', { name, dur: fmtDuration(secs) });
      return t(`event.${ev.kind}`, { name });
    }
    case 'overspeed': {
      const speed = d.speed_kmh != null ? fmtNumber(d.speed_kmh) : '?';
      if (d.limit_kmh == null) return t('event.overspeed_nolimit', { speed });
      return t('event.overspeed', { speed, limit: fmtNumber(d.limit_kmh) });
    }
    case 'idle': {
      const secs = d.secs ?? (toMs(d.since) != null && ev.ts ? (ev.ts - toMs(d.since)) / 1000 : null);
      return secs != null ? t('event.idle', { dur: fmtDuration(secs) }) : t('event.idle_plain');
    }
    case 'offline': {
      const seen = toMs(d.last_seen);
      return seen != null ? t('event.offline', { time: fmtTime(seen) }) : t('event.offline_plain');
    }
    case 'low_battery':
      return d.battery_pct != null ? t('event.low_battery', { pct: fmtNumber(d.battery_pct) }) : t('event.low_battery_plain');
    case 'sos':
      return t('event.sos');
    default:
      return t('event.other', { kind: String(ev.kind ?? '?') });
  }
}

/** Whether an object looks like an event the feed can show. */
function valid(ev) {
  return ev && typeof ev.id === 'string' && ev.id && typeof ev.kind === 'string' && typeof ev.driver === 'string';
}

const newestFirst = (a, b) => (b.ts ?? 0) - (a.ts ?? 0) || (b.arrived ?? 0) - (a.arrived ?? 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export class EventFeed {
  /**
   * @param {object} els  {list, empty, count}
   * @param {object} opts {withFleet(): bool, fenceName(id), onPick(ev), onEvent(ev, live)}
   */
  constructor(els, { withFleet, fenceName, onPick, onEvent }) {
    this.els = els;
    this.withFleet = withFleet;
    this.fenceName = fenceName;
    this.onPick = onPick;
    this.onEvent = onEvent ?? (() => {});
    this.byId = new Map();
    this.items = []; // newest first, at most MAX_EVENTS
    this.arrivals = 0;
    this.rows = new Map(); // event id -> <li>
    this.renderQueued = false;
    els.list.addEventListener('click', (e) => {
      const li = e.target.closest('li[data-event-id]');
      const ev = li && this.byId.get(li.dataset.eventId);
      if (ev) this.onPick(ev);
    });
    this.render();
  }

  /**
   * Adds events (any order); those already held are skipped. Returns the new ones.
   * `live`: from the socket (as opposed to the history fetched on sign-in).
   */
  add(events, { live = false } = {}) {
    const added = [];
    for (const ev of events) {
      if (!valid(ev) || this.byId.has(ev.id)) continue;
      const rec = { ...ev, key: keyOf(ev), arrived: ++this.arrivals };
      this.byId.set(rec.id, rec);
      this.items.push(rec);
      added.push(rec);
    }
    if (!added.length) return added;
    this.items.sort(newestFirst);
    // The oldest beyond the bound leave the list; their ids stay known for a while,
    // so the same old event from a later history fetch does not come back.
    for (const gone of this.items.splice(MAX_EVENTS)) gone.dropped = true;
    if (this.byId.size > 4 * MAX_EVENTS) {
      for (const [id, rec] of this.byId) {
        if (rec.dropped) this.byId.delete(id);
        if (this.byId.size <= 2 * MAX_EVENTS) break;
      }
    }
    for (const rec of added) if (!rec.dropped) this.onEvent(rec, live);
    this.queueRender();
    return added;
  }

  clear() {
    this.byId.clear();
    this.items = [];
    this.render();
  }

  /** The events shown, newest first (for the tests). */
  shown() {
    return this.items.map(({ id, kind, driver, fleet, ts, lat, lon, geofence }) => ({ id, kind, driver, fleet, ts, lat, lon, geofence }));
  }

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  /**
   * Brings the list up to date: rows are kept by event id and only moved,
   * added or rewritten as needed, so a click in progress is not lost to a redraw.
   */
  render() {
    const { list, empty, count } = this.els;
    const withFleet = this.withFleet();
    const now = Date.now();
    const wanted = new Set(this.items.map((ev) => ev.id));
    for (const li of [...list.children]) if (!wanted.has(li.dataset.eventId)) li.remove();
    let at = list.firstElementChild;
    for (const ev of this.items) {
      let li = this.rowOf(ev.id);
      if (!li) li = this.createRow(ev);
      this.updateRow(li, ev, withFleet, now);
      if (li !== at) list.insertBefore(li, at);
      else at = at.nextElementSibling;
    }
    empty.hidden = this.items.length > 0;
    count.textContent = this.items.length ? fmtNumber(this.items.length) : '';
  }

  rowOf(id) {
    const li = this.rows?.get(id);
    return li?.isConnected ? li : null;
  }

  createRow(ev) {
    this.rows ??= new Map();
    const li = document.createElement('li');
    li.dataset.eventId = ev.id;
    li.dataset.kind = ev.kind;
    li.dataset.key = ev.key;
    li.innerHTML = `<button type="button" class="event-main"><span class="event-text"></span><span class="event-driver"></span><time class="event-time"></time><span class="event-place"></span></button>`;
    if (ev.ts != null) li.querySelector('time').dateTime = new Date(ev.ts).toISOString();
    this.rows.set(ev.id, li);
    if (this.rows.size > 2 * MAX_EVENTS) {
      for (const [id, row] of this.rows) if (!row.isConnected && id !== ev.id) this.rows.delete(id);
    }
    return li;
  }

  updateRow(li, ev, withFleet, now) {
    const set = (el, value) => {
      if (el.textContent !== value) el.textContent = value;
    };
    const btn = li.firstElementChild;
    const [text, who, when, where] = btn.children;
    set(text, describeEvent(ev, this.fenceName));
    set(who, driverLabel(ev.fleet, ev.driver, withFleet));
    set(when, fmtTime(ev.ts, now));
    set(where, fmtPlace(ev.lat, ev.lon));
    const title = t('events.showOnMap');
    if (btn.title !== title) btn.title = title;
  }
}
