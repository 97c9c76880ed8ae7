// The side list of drivers. It merges two sources: the REST list
// (GET /api/v1/drivers, every driver of the fleet, refreshed every ~10 s) and
// the live frames (only what the map's view subscribes to, every second).
// With thousands of drivers only the rows in sight exist in the DOM: the list
// is virtual, with fixed-height rows placed by offset.
// Rows are keyed by fleet and driver (keys.js): an admin's list holds every
// fleet, and two fleets may each have a `d1`.

import { t, fmtNumber, relativeTime } from './i18n.js';
import { statusOf } from './vehicles.js';
import { driverLabel, keyOf, splitKey } from './keys.js';

const ROW_HEIGHT = 48;
const OVERSCAN = 6; // rows rendered above and below the visible ones, so fast scrolls show no gaps
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });
// By driver id, then fleet: an admin sees the drivers sharing an id side by side.
const byDriverThenFleet = (a, b) => collator.compare(a.id, b.id) || collator.compare(a.fleet, b.fleet);

/** last_seen may come as ms or as an RFC 3339 string; both become ms. */
function toMs(v) {
  if (v == null) return null;
  if (typeof v === 'number') return v;
  const ms = Date.parse(v);
  return Number.isNaN(ms) ? null : ms;
}

export class DriverList {
  /**
   * Every `key` here is a vehicle key (keys.js).
   * @param {object} els  {search, status, inView, count, scroller, list}
   * @param {object} opts {isInView(key): bool, onPick(key), onTrail(key), withFleet(): bool, isSos(key): bool}
   *        withFleet: whether the viewer sees several fleets, so rows name the fleet
   *        isSos: whether the driver is in SOS (sos.js), so its row is marked
   */
  constructor(els, { isInView, onPick, onTrail, withFleet, isSos = () => false }) {
    this.els = els;
    this.isInView = isInView;
    this.onPick = onPick;
    this.onTrail = onTrail;
    this.withFleet = withFleet;
    this.isSos = isSos;
    this.byKey = new Map();
    this.sorted = []; // records, byDriverThenFleet
    this.needsSort = false;
    this.filtered = [];
    this.followed = null;
    this.renderQueued = false;
    this.rows = new Map(); // vehicle key -> <li> currently in the DOM

    els.search.addEventListener('input', () => this.refresh());
    els.status.addEventListener('change', () => this.refresh());
    els.inView.addEventListener('change', () => this.refresh());
    els.scroller.addEventListener('scroll', () => this.queueRender(), { passive: true });
    els.list.addEventListener('click', (e) => {
      const btn = e.target.closest('button[data-action]');
      const key = btn?.closest('li')?.dataset.key;
      if (!key) return;
      if (btn.dataset.action === 'trail') this.onTrail(key);
      else this.onPick(key);
    });
    // Up/down arrows move between rows, as in a list box.
    els.list.addEventListener('keydown', (e) => {
      if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
      const li = e.target.closest('li');
      if (!li) return;
      e.preventDefault();
      const pos = Number(li.dataset.pos) + (e.key === 'ArrowDown' ? 1 : -1);
      if (pos < 0 || pos >= this.filtered.length) return;
      this.scrollToIndex(pos);
      this.render();
      this.els.list.querySelector(`li[data-pos="${pos}"] button[data-action="pick"]`)?.focus();
    });
    new ResizeObserver(() => this.queueRender()).observe(els.scroller);
  }

  /** Rows from GET /api/v1/drivers. */
  mergeRest(drivers) {
    for (const d of drivers) {
      const rec = this.ensure(keyOf(d));
      if (rec.ts == null || d.ts == null || d.ts >= rec.ts) {
        Object.assign(rec, { lat: d.lat, lon: d.lon, ts: d.ts, speed: d.speed, heading: d.heading });
      }
      if (d.status) rec.status = d.status;
      rec.lastSeen = Math.max(rec.lastSeen ?? 0, toMs(d.last_seen) ?? d.ts ?? 0) || null;
    }
  }

  /** A live fix (snapshot or positions item). */
  mergeLive(p) {
    const rec = this.ensure(keyOf(p));
    if (rec.ts != null && p.ts != null && p.ts < rec.ts) return;
    rec.lat = p.lat;
    rec.lon = p.lon;
    rec.ts = p.ts;
    if (p.speed != null) rec.speed = p.speed;
    if (p.heading != null) rec.heading = p.heading;
    if (p.status) rec.status = p.status;
    else if (rec.status === 'offline') rec.status = 'online';
    rec.lastSeen = Math.max(rec.lastSeen ?? 0, p.ts ?? 0) || null;
  }

  setStatus(key, status) {
    this.ensure(key).status = status;
  }

  ensure(key) {
    let rec = this.byKey.get(key);
    if (!rec) {
      const { fleet, driver } = splitKey(key);
      rec = { key, id: driver, fleet, status: 'online' };
      this.byKey.set(key, rec);
      this.needsSort = true;
    }
    return rec;
  }

  has(key) {
    return this.byKey.has(key);
  }

  get(key) {
    return this.byKey.get(key);
  }

  keys() {
    return this.byKey.keys();
  }

  setFollowed(key) {
    this.followed = key;
    this.queueRender();
  }

  /** The driver's name as the rows show it: with its fleet when the viewer sees several. */
  label(rec) {
    return driverLabel(rec.fleet, rec.id, this.withFleet());
  }

  /** The search box matches the driver id, and the fleet where rows show it. */
  matches(rec, q) {
    return rec.id.toLowerCase().includes(q) || (this.withFleet() && rec.fleet.toLowerCase().includes(q));
  }

  /** Re-applies the filters (cheap: one pass) and redraws the visible rows. */
  refresh() {
    if (this.needsSort) {
      this.sorted = Array.from(this.byKey.values()).sort(byDriverThenFleet);
      this.needsSort = false;
    }
    const q = this.els.search.value.trim().toLowerCase();
    const wanted = this.els.status.value; // all | moving | stopped | offline
    const onlyInView = this.els.inView.checked;
    const out = [];
    for (const rec of this.sorted) {
      if (q && !this.matches(rec, q)) continue;
      if (wanted !== 'all' && statusOf(rec) !== wanted) continue;
      if (onlyInView && !this.isInView(rec.key)) continue;
      out.push(rec);
    }
    this.filtered = out;
    this.els.count.textContent = t('drivers.count', { shown: fmtNumber(out.length), total: fmtNumber(this.byKey.size) });
    this.els.list.style.height = `${out.length * ROW_HEIGHT}px`;
    this.els.empty.hidden = out.length > 0;
    this.render();
  }

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  scrollToIndex(i) {
    const top = i * ROW_HEIGHT;
    const s = this.els.scroller;
    if (top < s.scrollTop) s.scrollTop = top;
    else if (top + ROW_HEIGHT > s.scrollTop + s.clientHeight) s.scrollTop = top + ROW_HEIGHT - s.clientHeight;
  }

  /** Scrolls the list to a vehicle (after a click on the map). */
  reveal(key) {
    const i = this.filtered.findIndex((r) => r.key === key);
    if (i >= 0) {
      this.scrollToIndex(i);
      this.render();
    }
  }

  /**
   * Draws the rows in sight. Rows are keyed by vehicle and updated in place:
   * a row recreated every second would swallow a click that straddles the
   * redraw and lose keyboard focus.
   */
  render() {
    const s = this.els.scroller;
    const first = Math.max(0, Math.floor(s.scrollTop / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(this.filtered.length, Math.ceil((s.scrollTop + s.clientHeight) / ROW_HEIGHT) + OVERSCAN);
    const now = Date.now();
    const wanted = new Set();
    for (let i = first; i < last; i++) {
      const rec = this.filtered[i];
      wanted.add(rec.key);
      let li = this.rows.get(rec.key);
      if (!li) {
        li = this.createRow(rec);
        this.rows.set(rec.key, li);
        this.els.list.append(li);
      }
      this.updateRow(li, rec, i, now);
    }
    for (const [key, li] of this.rows) {
      if (!wanted.has(key)) {
        li.remove();
        this.rows.delete(key);
      }
    }
  }

  createRow(rec) {
    const li = document.createElement('li');
    li.dataset.key = rec.key;
    // Also the parts, for styling and the browser tests; clicks go by the key.
    li.dataset.fleet = rec.fleet;
    li.dataset.id = rec.id;
    li.innerHTML = `<button type="button" class="row-main" data-action="pick" aria-pressed="false">
        <span class="status-dot" aria-hidden="true"></span><span class="row-id"></span>
        <span class="row-status"></span><span class="row-speed"></span><span class="row-seen"></span>
      </button>
      <button type="button" class="row-trail" data-action="trail"><svg viewBox="0 0 24 24" width="18" height="18" aria-hidden="true"><path d="M4 18c3-6 5 0 8-6s5-2 8-8" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round"/><circle cx="4" cy="18" r="2" fill="currentColor"/></svg></button>`;
    return li;
  }

  updateRow(li, rec, i, now) {
    // Writes only what changed: most rows are identical from one second to the next.
    const set = (el, prop, value) => {
      if (el[prop] !== value) el[prop] = value;
    };
    const attr = (el, name, value) => {
      if (el.getAttribute(name) !== value) el.setAttribute(name, value);
    };
    const status = statusOf(rec);
    const followed = rec.key === this.followed;
    attr(li, 'data-pos', String(i));
    attr(li, 'aria-setsize', String(this.filtered.length));
    attr(li, 'aria-posinset', String(i + 1));
    set(li.style, 'transform', `translateY(${i * ROW_HEIGHT}px)`);
    li.classList.toggle('followed', followed);
    const sos = this.isSos(rec.key);
    li.classList.toggle('sos', sos);
    if (sos) attr(li, 'data-sos', '1');
    else if (li.hasAttribute('data-sos')) li.removeAttribute('data-sos');
    const [pick, trail] = li.children;
    attr(pick, 'aria-pressed', String(followed));
    const [dot, name, st, speed, seen] = pick.children;
    const label = this.label(rec); // may change: the viewer's identity arrives after the first rows
    set(name, 'textContent', label);
    set(dot, 'className', `status-dot ${status}`);
    set(st, 'textContent', t(`status.${status}`));
    set(
      speed,
      'textContent',
      rec.speed != null && status !== 'offline' ? t('drivers.speed', { v: fmtNumber(rec.speed * 3.6) }) : t('drivers.noSpeed'),
    );
    set(seen, 'textContent', relativeTime(rec.lastSeen ?? rec.ts, now));
    const trailFor = t('drivers.trailFor', { id: label });
    attr(trail, 'aria-label', trailFor);
    attr(trail, 'title', trailFor);
  }
}
