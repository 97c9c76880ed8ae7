// Drivers in SOS: one whose latest `sos` event is recent (SOS_WINDOW_MS) and
// that no dispatcher at this browser has acknowledged. Acknowledging is local
// to the browser (localStorage): it clears the banner, the red marker and the
// row mark here, and a later SOS from the same driver raises them again.

export const SOS_WINDOW_MS = 30 * 60_000;
const STORAGE_KEY = 'fleethub.sosAcked';
const MAX_ACKED = 500;

function loadAcked() {
  try {
    const ids = JSON.parse(localStorage.getItem(STORAGE_KEY) ?? '[]');
    return Array.isArray(ids) ? ids.filter((x) => typeof x === 'string') : [];
  } catch {
    return [];
  }
}

export class SosTracker {
  constructor() {
    this.latest = new Map(); // vehicle key -> the newest sos event of that driver
    this.acked = new Set(loadAcked()); // event ids
  }

  /** Takes any event; keeps the sos ones. Returns true when the active set may have changed. */
  note(ev) {
    if (ev.kind !== 'sos') return false;
    const prev = this.latest.get(ev.key);
    if (prev && (prev.ts ?? 0) >= (ev.ts ?? 0)) return false;
    this.latest.set(ev.key, ev);
    return true;
  }

  /** The drivers in SOS at `now`: [{key, ev}], newest first. */
  active(now = Date.now()) {
    const out = [];
    for (const [key, ev] of this.latest) {
      if (this.acked.has(ev.id)) continue;
      if (ev.ts != null && now - ev.ts > SOS_WINDOW_MS) continue;
      out.push({ key, ev });
    }
    return out.sort((a, b) => (b.ev.ts ?? 0) - (a.ev.ts ?? 0));
  }

  /** A dispatcher has seen to this driver: its SOS events up to now are acknowledged. */
  acknowledge(key) {
    const ev = this.latest.get(key);
    if (!ev) return;
    this.acked.add(ev.id);
    const ids = [...this.acked].slice(-MAX_ACKED);
    this.acked = new Set(ids);
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(ids));
    } catch {
      // Not persisted: the acknowledgement holds for this page.
    }
  }

  clear() {
    this.latest.clear();
  }
}
