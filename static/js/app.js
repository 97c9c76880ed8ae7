// Entry point: signs the dispatcher in, builds the map, the driver list and the
// trail replay, and wires the hub's live frames into them.

import { t, lang, setLang, translateDom, onLangChange, fmtNumber } from './i18n.js';
import { adoptTokenFromUrl, apiGet, getToken, setToken, HttpError, Unauthorized } from './auth.js';
import { Connection } from './connection.js';
import { FleetMap } from './map.js';
import { VehicleStore } from './vehicles.js';
import { DriverList } from './drivers.js';
import { TrailReplay } from './trail.js';
import { driverLabel, keyOf, splitKey } from './keys.js';

const $ = (id) => document.getElementById(id);

const SUBSCRIBE_DEBOUNCE_MS = 150;
// While the map moves without pause (following a vehicle) the box is still sent
// at least this often, so the followed vehicle never drives out of the subscription.
const SUBSCRIBE_MAX_WAIT_MS = 1000;
const DRIVERS_REFRESH_MS = 10_000;
const LIST_REFRESH_MS = 1000;

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
  if (following && now > fleetMap.easingUntil) {
    const at = store.drawnAt(following);
    const c = fleetMap.map.getCenter();
    if (at && (Math.abs(at[0] - c.lng) > 1e-7 || Math.abs(at[1] - c.lat) > 1e-7)) fleetMap.centreOn(at, { animate: false });
  }
  requestAnimationFrame(frame);
}

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
  connection.start();
  sendView();
  session = {
    drivers: setInterval(refreshDrivers, DRIVERS_REFRESH_MS),
    list: setInterval(() => {
      list.refresh();
      renderCounts();
    }, LIST_REFRESH_MS),
  };
  refreshDrivers();
  $('signout').hidden = false;
}

function endSession() {
  connection?.stop();
  connection = null;
  if (session) {
    clearInterval(session.drivers);
    clearInterval(session.list);
    session = null;
  }
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
    },
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
};

main();
