// Entry point: signs the dispatcher in, builds the map, the driver list, the
// trail replay, the geofences layer and the event feed, and wires the hub's
// live frames into them.

import { t, lang, setLang, translateDom, onLangChange, fmtNumber } from './i18n.js';
import { adoptTokenFromUrl, apiGet, getToken, setToken, HttpError, Unauthorized } from './auth.js';
import { Connection } from './connection.js';
import { FleetMap } from './map.js';
import { VehicleStore } from './vehicles.js';
import { DriverList } from './drivers.js';
import { TrailReplay } from './trail.js';
import { driverLabel, keyOf, splitKey } from './keys.js';
import { FenceStore } from './fences.js';
import { EventFeed, fmtTime } from './events.js';
import { SosTracker } from './sos.js';

const $ = (id) => document.getElementById(id);

const SUBSCRIBE_DEBOUNCE_MS = 150;
// While the map moves without pause (following a vehicle) the box is still sent
// at least this often, so the followed vehicle never drives out of the subscription.
const SUBSCRIBE_MAX_WAIT_MS = 1000;
const DRIVERS_REFRESH_MS = 10_000;
const LIST_REFRESH_MS = 1000;
const FENCES_REFRESH_MS = 60_000;
// An event naming a fence this page has not loaded reloads them, at most this often.
const FENCES_UNKNOWN_RELOAD_MS = 10_000;
const EVENTS_HISTORY = 50;
const SOS_PULSE_MS = 1400;
const FENCES_SHOWN_KEY = 'fleethub.fences';

const store = new VehicleStore();
let fleetMap;
let list;
let trail;
let connection = null;
let token = ''; // also kept here: sessionStorage may be unavailable
let session = null; // timers of the signed-in session
let lastSentBbox = '';
let connState = { state: 'connecting', info: undefined };
const stateLog = []; // recent connection states, for diagnostics and the tests
let identity = null;
let following = null; // a vehicle key (keys.js)
let noticeTimer;
const fences = new FenceStore();
const sos = new SosTracker();
let feed;
let fencesVisible = readFencesShown();
let fencesLoading = null;
let lastUnknownFenceReload = 0;
let sosShown = ''; // what the banner shows, to redraw it only on change
let liveTimes = 0; // 'live' states this session: from the second on, the feed's gap is refetched
const reducedMotion = matchMedia('(prefers-reduced-motion: reduce)');

// ---------- language ----------

function syncLangButtons() {
  for (const b of document.querySelectorAll('.lang button')) b.setAttribute('aria-pressed', String(b.dataset.lang === lang()));
}

for (const b of document.querySelectorAll('.lang button')) b.addEventListener('click', () => setLang(b.dataset.lang));
onLangChange(() => {
  syncLangButtons();
  renderConnState();
  renderIdentity();
  renderFollow();
  list?.refresh();
  feed?.render();
  sosShown = '';
  if (feed) updateSos();
});
translateDom();
syncLangButtons();

// ---------- small UI pieces ----------

function renderConnState() {
  const { state, info } = connState;
  $('conn').dataset.state = state;
  $('conn-text').dataset.i18n = `conn.${state}`;
  $('conn-text').textContent = t(`conn.${state}`);
  $('conn-detail').textContent = state === 'reconnecting' && info?.retryInMs ? t('conn.retryIn', { s: Math.ceil(info.retryInMs / 1000) }) : '';
}

/** An admin sees every fleet: driver ids repeat there, so labels name the fleet too. */
function seesSeveralFleets() {
  return !!identity && identity.fleet == null;
}

function renderIdentity() {
  $('identity').hidden = !identity;
  if (!identity) return;
  $('role-badge').textContent = t(`role.${identity.role}`);
  $('role-badge').dataset.role = identity.role;
  $('fleet-name').textContent = identity.fleet ?? t('fleet.all');
  $('node-wrap').hidden = !identity.node;
  $('node-name').textContent = identity.node ?? '';
  feed?.queueRender(); // admins' entries name the fleet
}

function showNotice(text, ms = 6000) {
  const el = $('notice');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (el.hidden = true), ms);
}

function renderFollow() {
  $('follow-chip').hidden = !following;
  if (!following) return;
  const { fleet, driver } = splitKey(following);
  $('follow-text').textContent = t('drivers.following', { id: driverLabel(fleet, driver, seesSeveralFleets()) });
}

function renderCounts() {
  const c = store.counts();
  $('count-moving').textContent = fmtNumber(c.moving);
  $('count-stopped').textContent = fmtNumber(c.stopped);
  $('count-offline').textContent = fmtNumber(c.offline);
}

// ---------- following a driver ----------

/** Selects and follows the vehicle with this key (keys.js). */
function follow(key) {
  following = key;
  fleetMap.setSelected(key);
  list.setFollowed(key);
  renderFollow();
  const listed = list.get(key);
  const at = store.drawnAt(key) ?? (listed?.lon != null ? [listed.lon, listed.lat] : null);
  if (at) fleetMap.centreOn(at);
}

function stopFollowing() {
  if (!following) return;
  following = null;
  list.setFollowed(null);
  renderFollow();
}

/** Selects a driver without following it, and shows `lonLat` (an event's place). */
function selectAt(key, lonLat) {
  stopFollowing();
  fleetMap.setSelected(key);
  list.setFollowed(key);
  list.reveal(key);
  if (lonLat) fleetMap.centreOn(lonLat);
}

$('follow-stop').addEventListener('click', () => {
  stopFollowing();
  fleetMap.setSelected(null);
});

// ---------- the map's view drives the subscription ----------

function sendView() {
  if (!connection) return;
  const bbox = fleetMap.currentBbox();
  const key = bbox.join(',');
  if (key === lastSentBbox) return; // an identical box would only cost a snapshot
  lastSentBbox = key;
  connection.subscribe('view', bbox);
}

/** Debounce that still fires every maxWait while calls keep coming. */
function debounce(fn, wait, maxWait) {
  let timer = null;
  let firstCall = 0;
  return () => {
    const now = performance.now();
    if (!firstCall) firstCall = now;
    clearTimeout(timer);
    const delay = Math.max(0, Math.min(wait, maxWait - (now - firstCall)));
    timer = setTimeout(() => {
      firstCall = 0;
      fn();
    }, delay);
  };
}

// ---------- animation: one loop for every vehicle ----------

/**
 * How often the vehicle source is re-sent to MapLibre. Each setData re-indexes
 * every point in a worker and redraws the map; with thousands of vehicles doing
 * it every frame only queues work, so large fleets glide at ~10 updates a second.
 * On a slow machine (software WebGL, a weak laptop) the interval also stretches
 * to a few times what a redraw costs there, so panning and zooming stay responsive.
 */
function pushIntervalMs(n) {
  const base = n <= 500 ? 0 : Math.min(100, (n - 500) / 40);
  // Frames beyond ~17 ms are time the page could not give to the user.
  return Math.min(1000, Math.max(base, 3 * (frameMs - 17)));
}

let pending = false;
let lastPush = 0;
let lastPulse = 0;
let lastFrame = 0;
let frameMs = 16.7; // smoothed frame length
function frame(now) {
  if (lastFrame) frameMs = 0.9 * frameMs + 0.1 * Math.min(1000, now - lastFrame);
  lastFrame = now;
  if (store.tick(now)) pending = true;
  if (pending && now - lastPush >= pushIntervalMs(store.size)) {
    fleetMap.setVehicles(store.featureCollection());
    lastPush = now;
    pending = false;
  }
  // The ring pulses only while a driver in SOS is on the map: each step is a redraw.
  if (store.sosKeys.size && !reducedMotion.matches && now - lastPulse >= 80 && [...store.sosKeys].some((k) => store.get(k))) {
    fleetMap.setSosPulse((now % SOS_PULSE_MS) / SOS_PULSE_MS);
    lastPulse = now;
  }
  if (following && now > fleetMap.easingUntil) {
    const at = store.drawnAt(following);
    const c = fleetMap.map.getCenter();
    if (at && (Math.abs(at[0] - c.lng) > 1e-7 || Math.abs(at[1] - c.lat) > 1e-7)) fleetMap.centreOn(at, { animate: false });
  }
  requestAnimationFrame(frame);
}

// ---------- geofences ----------

function readFencesShown() {
  try {
    return localStorage.getItem(FENCES_SHOWN_KEY) !== '0';
  } catch {
    return true;
  }
}

/** GET /api/v1/geofences and redraws them; one request at a time. */
function loadFences() {
  if (!token) return Promise.resolve();
  if (fencesLoading) return fencesLoading;
  const asked = token;
  $('fences-refresh').setAttribute('aria-busy', 'true');
  fencesLoading = (async () => {
    try {
      const body = await apiGet('/api/v1/geofences', { token: asked });
      if (token !== asked) return; // signed out meanwhile
      fleetMap.setFences(fences.replace(body));
      $('fence-count').textContent = fmtNumber(fences.size);
      feed?.queueRender(); // events naming a fence by id only now have its name
    } catch (e) {
      if (e instanceof Unauthorized) expired();
      else if (!(e instanceof HttpError && e.status === 404)) showNotice(t('fences.failed', { msg: e.message }));
      // 404: no geofences on this hub; nothing to draw.
    } finally {
      fencesLoading = null;
      $('fences-refresh').removeAttribute('aria-busy');
    }
  })();
  return fencesLoading;
}

function clearFences() {
  fleetMap.setFences(fences.replace(null));
  fences.clear();
  $('fence-count').textContent = fmtNumber(0);
}

$('fences-toggle').checked = fencesVisible;
$('fences-toggle').addEventListener('change', () => {
  fencesVisible = $('fences-toggle').checked;
  fleetMap?.setFencesVisible(fencesVisible);
  try {
    localStorage.setItem(FENCES_SHOWN_KEY, fencesVisible ? '1' : '0');
  } catch {
    // Not remembered; the choice holds for this page.
  }
});
$('fences-refresh').addEventListener('click', () => loadFences());

// ---------- events and SOS ----------

/** The recent history (newest first); the live frames do the rest. */
async function loadEventHistory() {
  if (!token) return;
  const asked = token;
  try {
    const body = await apiGet(`/api/v1/events?limit=${EVENTS_HISTORY}`, { token: asked });
    if (token === asked) feed.add(body.events ?? []);
  } catch (e) {
    if (e instanceof Unauthorized) expired();
    // 404: no events on this hub (yet); other failures: the live frames still come.
  }
}

/** Every event the feed takes in, from the history or live. */
function onEvent(ev) {
  if (sos.note(ev)) updateSos();
  if (ev.geofence != null && !fences.has(ev.geofence) && Date.now() - lastUnknownFenceReload > FENCES_UNKNOWN_RELOAD_MS) {
    lastUnknownFenceReload = Date.now();
    loadFences();
  }
}

function pickEvent(ev) {
  selectAt(ev.key, Number.isFinite(ev.lat) && Number.isFinite(ev.lon) ? [ev.lon, ev.lat] : null);
}

/** Brings the banner, the markers and the list up to date with the drivers in SOS. */
function updateSos() {
  const active = sos.active();
  store.setSos(active.map((a) => a.key));
  const sig = active.map((a) => a.ev.id).join();
  if (sig === sosShown) return;
  sosShown = sig;
  const banner = $('sos-banner');
  const items = active.map(({ key, ev }) => {
    const label = driverLabel(ev.fleet, ev.driver, seesSeveralFleets());
    const item = document.createElement('div');
    item.className = 'sos-item';
    item.dataset.key = key;
    item.innerHTML = `<strong class="sos-who"></strong><span class="sos-when"></span>
      <button type="button" class="btn-ghost small sos-show" data-action="show"></button>
      <button type="button" class="btn small sos-ack" data-action="ack"></button>`;
    item.querySelector('.sos-who').textContent = t('sos.label', { id: label });
    item.querySelector('.sos-when').textContent = t('sos.since', { time: fmtTime(ev.ts) });
    item.querySelector('.sos-show').textContent = t('sos.show');
    const ack = item.querySelector('.sos-ack');
    ack.textContent = t('sos.ack');
    ack.setAttribute('aria-label', t('sos.ackFor', { id: label }));
    return item;
  });
  banner.replaceChildren(...items);
  banner.hidden = items.length === 0;
  list?.refresh();
}

$('sos-banner').addEventListener('click', (e) => {
  const btn = e.target.closest('button[data-action]');
  const key = btn?.closest('.sos-item')?.dataset.key;
  if (!key) return;
  if (btn.dataset.action === 'ack') {
    sos.acknowledge(key);
    updateSos();
    return;
  }
  // Show: follow the vehicle where the map has it, else go to where the SOS was sent.
  const ev = sos.latest.get(key);
  if (store.get(key) || list.get(key)?.lon != null) {
    follow(key);
    list.reveal(key);
  } else if (ev) pickEvent(ev);
});

// ---------- frames from the hub ----------

let framesReceived = 0;

function onFrame(f) {
  const now = performance.now();
  framesReceived += 1;
  switch (f.type) {
    case 'hello':
      identity = { role: f.role, fleet: f.fleet ?? null, node: f.node };
      renderIdentity();
      break;
    case 'snapshot':
      if (f.id !== 'view') break;
      store.applySnapshot(f.drivers ?? [], now);
      for (const p of f.drivers ?? []) list.mergeLive(p);
      break;
    case 'positions':
      store.applyPositions(f.items ?? [], now);
      for (const p of f.items ?? []) list.mergeLive(p);
      break;
    case 'status': {
      const key = keyOf(f);
      store.applyStatus(key, f.status);
      list.setStatus(key, f.status);
      break;
    }
    case 'event':
      feed.add([f], { live: true });
      break;
    case 'error':
      showNotice(t('error.generic', { msg: `${f.code}: ${f.message}` }));
      break;
    default:
      break; // Frames added to the protocol later are ignored, not fatal.
  }
}

// ---------- session ----------

async function refreshDrivers() {
  try {
    const body = await apiGet('/api/v1/drivers', { token });
    list.mergeRest(body.drivers ?? []);
    list.refresh();
  } catch (e) {
    if (e instanceof Unauthorized) expired();
    else if (e instanceof HttpError && e.status === 404) clearInterval(session?.drivers); // not on this hub
    // Other failures: the live feed still fills the list; try again next round.
  }
}

function startSession() {
  connection = new Connection({
    token: () => token,
    onFrame,
    onState: (state, info) => {
      connState = { state, info };
      // Back after a cut: events sent meanwhile come from the history.
      if (state === 'live' && ++liveTimes > 1) loadEventHistory();
      stateLog.push(state);
      if (stateLog.length > 50) stateLog.shift();
      renderConnState();
    },
    isUnauthorized: async () => {
      try {
        await apiGet('/api/v1/me', { token });
        return false;
      } catch (e) {
        return e instanceof Unauthorized;
      }
    },
    onUnauthorized: expired,
  });
  lastSentBbox = '';
  liveTimes = 0;
  connection.start();
  sendView();
  session = {
    drivers: setInterval(refreshDrivers, DRIVERS_REFRESH_MS),
    list: setInterval(() => {
      list.refresh();
      renderCounts();
      updateSos(); // an SOS older than the window stops being one
    }, LIST_REFRESH_MS),
    fences: setInterval(loadFences, FENCES_REFRESH_MS),
  };
  refreshDrivers();
  loadFences();
  loadEventHistory();
  $('signout').hidden = false;
}

function endSession() {
  connection?.stop();
  connection = null;
  if (session) {
    clearInterval(session.drivers);
    clearInterval(session.list);
    clearInterval(session.fences);
    session = null;
  }
  clearFences();
  feed.clear();
  sos.clear();
  updateSos();
  store.applySnapshot([], performance.now());
  identity = null;
  renderIdentity();
  stopFollowing();
  trail.close();
  token = '';
  setToken('');
  $('signout').hidden = true;
  connState = { state: 'offline' };
  renderConnState();
}

/** The hub refused the token (expired or revoked): back to sign-in, saying why. */
function expired() {
  endSession();
  showSignIn('signin.expired');
}

function showSignIn(messageKey) {
  const dlg = $('signin');
  $('signin-error').hidden = !messageKey;
  $('signin-error').dataset.i18n = messageKey ?? '';
  $('signin-error').textContent = messageKey ? t(messageKey) : '';
  if (!dlg.open) dlg.showModal();
  $('signin-token').focus();
}

async function signIn(candidate, { fresh = false } = {}) {
  let me = null;
  try {
    me = await apiGet('/api/v1/me', { token: candidate });
  } catch (e) {
    if (e instanceof Unauthorized) return showSignIn(fresh ? 'signin.invalid' : 'signin.expired');
    if (!(e instanceof HttpError && e.status === 404)) return showSignIn('signin.unreachable');
    // No /me on this hub: the WebSocket's hello frame will tell who we are.
  }
  if (me?.role === 'driver') return showSignIn('signin.wrongRole');
  token = candidate;
  setToken(candidate);
  if (me) {
    identity = { role: me.role, fleet: me.fleet ?? null, node: identity?.node };
    renderIdentity();
  }
  if ($('signin').open) $('signin').close();
  startSession();
}

$('signin').addEventListener('cancel', (e) => e.preventDefault()); // nothing to show without a token
$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const candidate = $('signin-token').value.trim();
  if (!candidate) return;
  const button = $('signin-submit');
  button.disabled = true;
  $('signin-error').hidden = false;
  $('signin-error').dataset.i18n = 'signin.checking';
  $('signin-error').textContent = t('signin.checking');
  try {
    await signIn(candidate, { fresh: true });
  } finally {
    button.disabled = false;
  }
});
$('signout').addEventListener('click', () => {
  endSession();
  showSignIn();
});

// ---------- start ----------

async function loadUiConfig() {
  try {
    return await apiGet('/api/v1/ui-config', { token: '' });
  } catch (e) {
    if (e instanceof Unauthorized && getToken()) {
      try {
        return await apiGet('/api/v1/ui-config');
      } catch {
        return {};
      }
    }
    return {}; // No config: the bundled outline alone.
  }
}

async function main() {
  const fromUrl = adoptTokenFromUrl();
  const uiConfig = await loadUiConfig();
  fleetMap = new FleetMap($('map'), uiConfig, new URL('vendor/natural-earth/world-50m.geojson', location.href).href);
  list = new DriverList(
    {
      search: $('driver-search'),
      status: $('status-filter'),
      inView: $('in-view'),
      count: $('driver-count'),
      scroller: $('driver-scroller'),
      list: $('driver-list'),
      empty: $('driver-empty'),
    },
    {
      isInView: (key) => !!store.get(key),
      onPick: follow,
      onTrail: (key) => trail.open(key),
      withFleet: seesSeveralFleets,
      isSos: (key) => store.sosKeys.has(key),
    },
  );
  feed = new EventFeed(
    { list: $('event-list'), empty: $('event-empty'), count: $('event-count') },
    { withFleet: seesSeveralFleets, fenceName: (id) => fences.name(id), onPick: pickEvent, onEvent },
  );
  trail = new TrailReplay(
    {
      panel: $('trail-panel'),
      form: $('trail-form'),
      driver: $('trail-driver'),
      datalist: $('trail-drivers'),
      fleetField: $('trail-fleet-field'),
      fleet: $('trail-fleet'),
      fleetDatalist: $('trail-fleets'),
      from: $('trail-from'),
      to: $('trail-to'),
      close: $('trail-close'),
      message: $('trail-message'),
      player: $('trail-player'),
      play: $('trail-play'),
      slider: $('trail-slider'),
      time: $('trail-time'),
      speed: $('trail-speed'),
      summary: $('trail-summary'),
    },
    fleetMap,
    { onUnauthorized: expired, knownKeys: () => list.keys(), withFleet: seesSeveralFleets },
  );
  fleetMap.on('vehicleClick', (key) => {
    follow(key);
    list.reveal(key);
  });
  fleetMap.on('userPan', stopFollowing);
  fleetMap.on('tilesFailed', () => showNotice(t('map.tilesFailed'), 10_000));
  await fleetMap.ready;
  fleetMap.setFencesVisible(fencesVisible);
  fleetMap.map.on('move', debounce(sendView, SUBSCRIBE_DEBOUNCE_MS, SUBSCRIBE_MAX_WAIT_MS));
  requestAnimationFrame(frame);
  renderConnState();

  const saved = getToken();
  // A token just taken from the URL that fails is invalid; a stored one that fails has expired.
  if (saved) await signIn(saved, { fresh: fromUrl });
  else showSignIn();
}

// For the browser tests and the frame-rate benchmark: read-only views of the state.
window.fleethub = {
  get map() {
    return fleetMap?.map;
  },
  get connectionState() {
    return connState.state;
  },
  connectionStates: () => stateLog.slice(),
  get framesReceived() {
    return framesReceived;
  },
  /** True once the box of the current view is the one subscribed. */
  viewSubscribed: () => !!fleetMap && fleetMap.currentBbox().join(',') === lastSentBbox,
  get subscribedBbox() {
    return lastSentBbox ? lastSentBbox.split(',').map(Number) : null;
  },
  vehicles: () =>
    Array.from(store.byKey.values(), (r) => ({
      key: r.key,
      id: r.id,
      fleet: r.fleet,
      lon: r.feature.geometry.coordinates[0],
      lat: r.feature.geometry.coordinates[1],
      ts: r.ts,
      status: r.feature.properties.s,
      heading: r.feature.properties.h,
    })),
  /** The followed vehicle's key (keys.js), or null. */
  following: () => following,
  /** The geofences as loaded: how many, their ids, whether the layer is shown. */
  fences: () => ({ count: fences.size, ids: Array.from(fences.byId.keys()), visible: fencesVisible, loadedAt: fences.loadedAt }),
  /** The event feed as shown, newest first. */
  events: () => feed?.shown() ?? [],
  /** The drivers in SOS now (vehicle keys). */
  sos: () => sos.active().map((a) => a.key),
};

main();
