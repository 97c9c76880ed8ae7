// Browser tests of the dashboard's geofences layer, event feed and SOS
// highlighting (issue #14) against the real hub: fences created through the
// API and drawn; events both injected into the dashboard's own socket (the
// page's handling of every kind, de-duplication, the bound, SOS and its
// acknowledgement) and produced by the hub from a real driver entering a
// fence and pressing SOS. A hub of its own, with no demo fleet: quiet, so the
// only events are the ones these tests cause.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { launchBrowser } from '../lib/browser.mjs';
import { buildHub, SCREENSHOTS, startHub } from '../lib/hub.mjs';
import { TestDriver } from '../lib/driver.mjs';
import { waitFor } from '../lib/wait.mjs';

const LIVE_TIMEOUT = 20_000;
let hub;
let browser;
const fenceIds = {}; // name -> id

// Arequipa, away from everything else: a polygon depot, a circle and a corridor.
const DEPOT = [
  [-71.545, -16.405],
  [-71.535, -16.405],
  [-71.535, -16.395],
  [-71.545, -16.395],
  [-71.545, -16.405],
];
const FENCES = [
  { geometry: { type: 'Polygon', coordinates: [DEPOT] }, properties: { name: 'Depósito', speed_limit_kmh: 30 } },
  { geometry: { type: 'Point', coordinates: [-71.52, -16.4] }, properties: { name: 'Plaza', radius_m: 300, dwell_secs: 600 } },
  {
    geometry: { type: 'LineString', coordinates: [[-71.56, -16.41], [-71.53, -16.412], [-71.5, -16.41]] },
    properties: { name: 'Ruta 1', width_m: 200 },
  },
];
const AREA = [-71.53, -16.402]; // in sight of all three at zoom 13

const adminToken = () => hub.token({ sub: 'e2e-admin', role: 'admin' });
const acmeDispatcher = () => hub.token({ sub: 'e2e-acme', role: 'dispatcher', fleet: 'acme' });

async function api(method, path, body) {
  const res = await fetch(`${hub.url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${adminToken()}`, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function createFence(fleet, { geometry, properties }) {
  const r = await api('POST', '/api/v1/geofences', { type: 'Feature', geometry, properties: { ...properties, fleet } });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body.id;
}

async function newPage({ locale = 'en-GB' } = {}) {
  const context = await browser.newContext({ locale, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`# page error: ${e.message}`));
  return page;
}

async function goLive(page, token) {
  await page.goto(`${hub.url}/?access_token=${encodeURIComponent(token)}`);
  await page.waitForFunction(() => window.fleethub?.connectionState === 'live', null, { timeout: LIVE_TIMEOUT });
  return page;
}

async function openSignedIn(token, opts) {
  return goLive(await newPage(opts), token);
}

/**
 * A page whose dashboard socket passes through the test: everything flows
 * as usual, and `inject(frame)` hands the page a frame as if the hub sent it.
 */
async function openWithInjector(token, opts) {
  const page = await newPage(opts);
  const routes = [];
  await page.routeWebSocket(/\/ws\/dashboard/, (ws) => {
    ws.connectToServer();
    routes.push(ws);
  });
  await goLive(page, token);
  const inject = (frame) => routes.at(-1).send(JSON.stringify(frame));
  return { page, inject };
}

async function shot(page, name) {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
}

const closePage = (page) => page.context().close();

/** Metres between two [lon, lat] points (flat earth: fine for a few km). */
function metres([lon1, lat1], [lon2, lat2]) {
  const dy = (lat2 - lat1) * 111_320;
  const dx = (lon2 - lon1) * 111_320 * Math.cos((lat1 * Math.PI) / 180);
  return Math.hypot(dx, dy);
}

/** The fence ids drawn on the map (rendered, so only those in view) by layer. */
function renderedFences(page, layers) {
  return page.evaluate(
    (ls) => [...new Set(window.fleethub.map.queryRenderedFeatures({ layers: ls }).map((f) => f.properties.fid))].sort(),
    layers,
  );
}

const hex32 = () => randomBytes(16).toString('hex');

function event(kind, driver, extra = {}) {
  return { type: 'event', id: hex32(), kind, driver, fleet: 'acme', ts: Date.now(), lat: -16.4, lon: -71.54, details: {}, ...extra };
}

/** The feed's entries as shown: [{id, kind, key, text, driver, place}]. */
function feedRows(page) {
  return page.$$eval('#event-list li', (lis) =>
    lis.map((li) => ({
      id: li.dataset.eventId,
      kind: li.dataset.kind,
      key: li.dataset.key,
      text: li.querySelector('.event-text').textContent,
      driver: li.querySelector('.event-driver').textContent,
      place: li.querySelector('.event-place').textContent,
    })),
  );
}

/** Whether the hub has the events API (the alerts work, landing separately). */
async function hubHasEvents() {
  const res = await fetch(`${hub.url}/api/v1/events?limit=1`, { headers: { Authorization: `Bearer ${adminToken()}` } });
  return res.status === 200;
}

describe('geofences, event feed and SOS on the dashboard', { timeout: 20 * 60_000 }, () => {
  before(async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    const bin = await buildHub();
    hub = await startHub({ bin, demo: 0 });
    browser = await launchBrowser();
    for (const f of FENCES) fenceIds[f.properties.name] = await createFence('acme', f);
    // Another fleet's fence, which acme's dispatcher must not see.
    fenceIds.beta = await createFence('beta', { geometry: { type: 'Point', coordinates: [-71.53, -16.4] }, properties: { name: 'Beta', radius_m: 100 } });
  });

  after(async () => {
    await browser?.close();
    if (hub) {
      if (process.env.E2E_HUB_LOG) console.error(hub.log(200));
      await hub.stop();
    }
  });

  test('draws the fleet\'s fences under the vehicles, labelled, and toggles them', { timeout: 90_000 }, async () => {
    const page = await openSignedIn(acmeDispatcher());
    const acme = [fenceIds['Depósito'], fenceIds.Plaza, fenceIds['Ruta 1']].sort();
    const loaded = await waitFor(async () => {
      const f = await page.evaluate(() => window.fleethub.fences());
      return f.count === 3 && f;
    }, { what: 'the three acme fences loaded' });
    assert.deepEqual(loaded.ids.sort(), acme, 'a dispatcher gets its own fleet\'s fences only');
    assert.equal(await page.textContent('#fence-count'), '3');

    await page.evaluate((c) => window.fleethub.map.jumpTo({ center: c, zoom: 13 }), AREA);
    const drawn = await waitFor(async () => {
      const ids = await renderedFences(page, ['fence-fill', 'fence-line', 'fence-corridor']);
      return ids.length === 3 && ids;
    }, { what: 'three fences drawn' });
    assert.deepEqual(drawn, acme);

    // Under the trail and the vehicles.
    const order = await page.evaluate(() => window.fleethub.map.getStyle().layers.map((l) => l.id));
    for (const id of ['fence-fill', 'fence-corridor', 'fence-line']) {
      assert.ok(order.indexOf(id) < order.indexOf('trail-casing') && order.indexOf(id) < order.indexOf('vehicles'), `${id} under the vehicles`);
    }

    // The circle is its radius in metres; the corridor's band its width in metres at this zoom.
    const shapes = await page.evaluate(async () => (await window.fleethub.map.getSource('fences').getData()).features);
    const circle = shapes.find((f) => f.properties.fid === fenceIds.Plaza);
    assert.equal(circle.geometry.type, 'Polygon');
    for (const p of circle.geometry.coordinates[0]) {
      const d = metres(p, [-71.52, -16.4]);
      assert.ok(Math.abs(d - 300) < 3, `circle point ${d.toFixed(1)} m from the centre`);
    }
    const corridor = shapes.find((f) => f.properties.fid === fenceIds['Ruta 1']);
    const metresPerPixel = (40_075_016.686 * Math.cos((-16.41 * Math.PI) / 180)) / (512 * 2 ** 13);
    const px = corridor.properties.w0 * 2 ** 13;
    assert.ok(Math.abs(px * metresPerPixel - 200) < 2, `corridor band ${(px * metresPerPixel).toFixed(1)} m wide`);

    // Names as labels.
    const labels = await waitFor(async () => {
      const l = await page.evaluate(() => window.fleethub.map.queryRenderedFeatures({ layers: ['fence-label'] }).map((f) => f.properties.label));
      if (process.env.E2E_DEBUG) console.error('# labels', l);
      return l.length === 3 && l.sort();
    }, { what: 'three fence labels' });
    assert.deepEqual(labels, ['fence:Depósito', 'fence:Plaza', 'fence:Ruta 1']);
    await shot(page, '20-geofences');

    // The toggle hides and shows them, and is remembered.
    await page.click('#fences-toggle');
    await waitFor(async () => (await renderedFences(page, ['fence-fill', 'fence-line', 'fence-corridor', 'fence-label'])).length === 0, {
      what: 'fences hidden',
    });
    assert.equal((await page.evaluate(() => window.fleethub.fences())).visible, false);
    await page.reload();
    await page.waitForFunction(() => window.fleethub?.connectionState === 'live', null, { timeout: LIVE_TIMEOUT });
    assert.equal(await page.isChecked('#fences-toggle'), false);
    await page.click('#fences-toggle');
    await page.evaluate((c) => window.fleethub.map.jumpTo({ center: c, zoom: 13 }), AREA);
    await waitFor(async () => (await renderedFences(page, ['fence-fill', 'fence-line', 'fence-corridor'])).length === 3, { what: 'fences shown again' });

    // A fence created elsewhere appears on refresh.
    const extra = await createFence('acme', { geometry: { type: 'Point', coordinates: [-71.525, -16.392] }, properties: { name: 'Taller', radius_m: 120 } });
    await page.click('#fences-refresh');
    await waitFor(async () => (await page.evaluate(() => window.fleethub.fences())).count === 4, { what: 'the new fence after a refresh' });
    await waitFor(async () => (await renderedFences(page, ['fence-fill'])).includes(extra), { what: 'the new fence drawn' });
    assert.equal((await api('DELETE', `/api/v1/geofences/${extra}`)).status, 204);
    await page.click('#fences-refresh');
    await waitFor(async () => (await page.evaluate(() => window.fleethub.fences())).count === 3, { what: 'the deleted fence gone after a refresh' });
    await closePage(page);

    // An admin sees every fleet's.
    const admin = await openSignedIn(adminToken());
    await waitFor(async () => (await admin.evaluate(() => window.fleethub.fences())).count === 4, { what: 'an admin\'s four fences' });
    await closePage(admin);
  });

  test('the feed shows each kind of event in both languages, once each, newest first, at most 200', { timeout: 90_000 }, async () => {
    // d7 reports positions, so it has a row in the list and a marker; outside every
    // fence, so the hub raises no event of its own for it.
    const d7 = new TestDriver(hub.url, hub.token({ sub: 'd7', role: 'driver', fleet: 'acme' }), { lat: -16.39, lon: -71.55, heading: 0, speed: 0 });
    try {
      await d7.connect();
      d7.step(0);
      const { page, inject } = await openWithInjector(acmeDispatcher(), { locale: 'es-PE' });
      await waitFor(async () => (await page.evaluate(() => window.fleethub.fences())).count === 3, { what: 'fences loaded' });
      assert.equal(await page.textContent('#events-title'), 'Eventos');
      assert.equal(await page.isVisible('#event-empty'), true);

      const t0 = Date.now() - 60_000;
      const frames = [
        // The name from the loaded fences: the details do not carry it here.
        event('geofence_enter', 'd7', { ts: t0, geofence: fenceIds['Depósito'], lat: -16.4, lon: -71.54 }),
        event('geofence_exit', 'd7', { ts: t0 + 1000, geofence: fenceIds.Plaza, details: { name: 'Plaza' } }),
        event('geofence_dwell', 'd7', { ts: t0 + 2000, geofence: fenceIds.Plaza, details: { name: 'Plaza' } }),
        event('geofence_cross', 'd7', { ts: t0 + 3000, geofence: fenceIds['Ruta 1'], details: { name: 'Ruta 1' } }),
        event('overspeed', 'd7', { ts: t0 + 4000, details: { speed_kmh: 95, limit_kmh: 50, since: t0 } }),
        event('idle', 'd7', { ts: t0 + 5000, details: { since: t0 - 720_000, secs: 720 } }),
        event('offline', 'd7', { ts: t0 + 6000, details: { last_seen: t0 } }),
        event('low_battery', 'd7', { ts: t0 + 7000, details: { battery_pct: 12 } }),
      ];
      for (const f of frames) inject(f);
      inject(frames[4]); // the same event twice (history and live): shown once
      await waitFor(async () => (await feedRows(page)).length === frames.length, { what: 'eight entries in the feed' });
      const es = await feedRows(page);
      assert.deepEqual(es.map((r) => r.kind), frames.map((f) => f.kind).reverse(), 'newest on top');
      assert.deepEqual(es.map((r) => r.text).reverse().filter((s) => !s.startsWith('Sin señal')), [
        'Entró en la geocerca Depósito',
        'Salió de la geocerca Plaza',
        'Permanencia prolongada en la geocerca Plaza',
        'Atravesó la geocerca Ruta 1',
        'Exceso de velocidad: 95 km/h (límite 50)',
        'Detenido durante 12 min',
        'Batería baja: 12 %',
      ]);
      assert.match(es.find((r) => r.kind === 'offline').text, /^Sin señal \(visto por última vez a las \d\d:\d\d:\d\d\)$/);
      assert.ok(es.every((r) => r.driver === 'd7' && r.key === 'acme/d7'), 'a dispatcher sees the driver id alone');
      assert.equal(es.at(-1).place, '-16.40000, -71.54000');
      assert.equal(await page.textContent('#event-count'), '8');
      await shot(page, '21-event-feed-es');

      await page.click('.lang button[data-lang="en"]');
      const en = await feedRows(page);
      assert.deepEqual(en.map((r) => r.text).reverse().filter((s) => !s.startsWith('Went silent')), [
        'Entered geofence Depósito',
        'Left geofence Plaza',
        'Stayed too long in geofence Plaza',
        'Crossed geofence Ruta 1',
        'Overspeed: 95 km/h (limit 50)',
        'Stopped for 12 min',
        'Low battery: 12 %',
      ]);
      assert.match(en.find((r) => r.kind === 'offline').text, /^Went silent \(last seen \d\d:\d\d:\d\d\)$/);
      assert.equal(en.at(-1).place, '-16.40000, -71.54000');
      assert.equal(await page.textContent('#events-title'), 'Events');

      // Clicking an entry shows its place and selects its driver.
      await page.click(`#event-list li[data-event-id="${frames[0].id}"] button`);
      await waitFor(
        async () => {
          const c = await page.evaluate(() => window.fleethub.map.getCenter());
          return metres([c.lng, c.lat], [-71.54, -16.4]) < 5;
        },
        { what: 'the map to centre on the event' },
      );
      assert.ok(JSON.stringify(await page.evaluate(() => window.fleethub.map.getFilter('vehicle-selected'))).includes('"acme/d7"'));

      // At most 200, the oldest dropped.
      for (let i = 0; i < 200; i++) inject(event('idle', 'd7', { ts: t0 + 10_000 + i, details: { secs: 600 + i } }));
      await waitFor(async () => (await page.evaluate(() => window.fleethub.events().length)) === 200, { what: '200 events kept' });
      const kept = await page.evaluate(() => window.fleethub.events());
      assert.equal(kept[0].ts, t0 + 10_199);
      assert.ok(!kept.some((e) => e.id === frames[0].id), 'the oldest left the feed');
      assert.equal(await page.locator('#event-list li').count(), 200);
      await closePage(page);
    } finally {
      d7.stop();
    }
  });

  test('an SOS highlights the driver until acknowledged', { timeout: 90_000 }, async () => {
    const d7 = new TestDriver(hub.url, hub.token({ sub: 'd7', role: 'driver', fleet: 'acme' }), { lat: -16.39, lon: -71.55, heading: 0, speed: 0 });
    try {
      await d7.connect();
      d7.step(0);
      const { page, inject } = await openWithInjector(acmeDispatcher(), { locale: 'es-PE' });
      await page.fill('#driver-search', 'd7');
      await page.waitForSelector('#driver-list li[data-key="acme/d7"]');
      assert.equal(await page.isVisible('#sos-banner'), false);

      // An SOS older than half an hour is history, not an alarm.
      inject(event('sos', 'd7', { ts: Date.now() - 31 * 60_000 }));
      const sos = event('sos', 'd7', { lat: d7.lat, lon: d7.lon });
      inject(sos);
      await page.waitForSelector('#sos-banner:not([hidden])');
      assert.equal(await page.textContent('#sos-banner .sos-who'), 'SOS: d7');
      assert.equal(await page.locator('#sos-banner .sos-item').count(), 1);
      assert.equal(await page.textContent('#sos-banner .sos-ack'), 'Atendido');
      assert.deepEqual(await page.evaluate(() => window.fleethub.sos()), ['acme/d7']);
      await waitFor(() => page.$eval('#driver-list li[data-key="acme/d7"]', (li) => li.classList.contains('sos')), { what: 'the row marked' });
      assert.equal(await page.textContent(`#event-list li[data-event-id="${sos.id}"] .event-text`), 'SOS: botón de emergencia pulsado');

      // "Ver" goes to the driver; its marker is red and ringed.
      await page.click('#sos-banner .sos-show');
      await waitFor(async () => (await page.evaluate(() => window.fleethub.following())) === 'acme/d7', { what: 'following d7' });
      const ringed = await waitFor(
        async () => {
          const keys = await page.evaluate(() => window.fleethub.map.queryRenderedFeatures({ layers: ['vehicle-sos'] }).map((f) => f.properties.key));
          return keys.length > 0 && keys;
        },
        { what: 'the SOS ring drawn', intervalMs: 200 },
      );
      assert.deepEqual(ringed, ['acme/d7']);
      const marker = await page.evaluate(() => window.fleethub.map.queryRenderedFeatures({ layers: ['vehicles'] })[0]?.properties);
      assert.equal(marker?.sos, 1);
      await shot(page, '22-sos');

      await page.click('#sos-banner .sos-ack');
      await page.waitForSelector('#sos-banner', { state: 'hidden' });
      assert.deepEqual(await page.evaluate(() => window.fleethub.sos()), []);
      await waitFor(async () => !(await page.$eval('#driver-list li[data-key="acme/d7"]', (li) => li.classList.contains('sos'))), { what: 'the row unmarked' });
      await waitFor(async () => (await page.evaluate(() => window.fleethub.map.queryRenderedFeatures({ layers: ['vehicle-sos'] }).length)) === 0, {
        what: 'the ring gone',
      });
      // Still in the feed, as history.
      assert.equal(await page.locator(`#event-list li[data-event-id="${sos.id}"]`).count(), 1);

      // A new SOS from the same driver raises it again.
      inject(event('sos', 'd7'));
      await page.waitForSelector('#sos-banner:not([hidden])');
      await closePage(page);
    } finally {
      d7.stop();
    }
  });

  test('a real driver entering a fence and pressing SOS, through the hub', { timeout: 120_000 }, async (t) => {
    if (!(await hubHasEvents())) {
      t.skip('PENDING ON ALERTS: GET /api/v1/events is not on this hub yet');
      return;
    }
    // d5 starts 1 km west of the depot, heading east.
    const d5 = new TestDriver(hub.url, hub.token({ sub: 'd5', role: 'driver', fleet: 'acme' }), { lat: -16.4, lon: -71.555, heading: 90, speed: 15 });
    try {
      await d5.connect();
      const page = await openSignedIn(acmeDispatcher(), { locale: 'es-PE' });
      await waitFor(async () => (await page.evaluate(() => window.fleethub.fences())).count === 3, { what: 'fences loaded' });
      await page.evaluate((c) => window.fleethub.map.jumpTo({ center: c, zoom: 13 }), AREA);
      const outside = d5.step(0);
      await waitFor(() => d5.acked >= outside, { what: 'the fix outside acked' });
      const inside = d5.step(80); // 1.2 km east: 130 m into the depot
      await waitFor(() => d5.acked >= inside, { what: 'the fix inside acked' });

      const entered = await waitFor(
        async () => (await feedRows(page)).find((r) => r.kind === 'geofence_enter' && r.key === 'acme/d5'),
        { what: 'the enter event in the feed', timeoutMs: 20_000 },
      );
      assert.equal(entered.text, 'Entró en la geocerca Depósito');
      assert.equal(entered.driver, 'd5');
      assert.match(entered.place, /^-16\.\d{5}, -71\.5\d{4}$/);
      const ev = (await page.evaluate(() => window.fleethub.events())).find((e) => e.id === entered.id);
      assert.equal(ev.geofence, fenceIds['Depósito']);
      assert.ok(metres([ev.lon, ev.lat], [d5.lon, d5.lat]) < 5, 'the event is where the fix inside was');
      await page.click('.lang button[data-lang="en"]');
      assert.equal(await page.textContent(`#event-list li[data-event-id="${entered.id}"] .event-text`), 'Entered geofence Depósito');

      // A reload finds it in the history, once.
      await page.reload();
      await page.waitForFunction(() => window.fleethub?.connectionState === 'live', null, { timeout: LIVE_TIMEOUT });
      await waitFor(async () => (await feedRows(page)).filter((r) => r.id === entered.id).length === 1, { what: 'the enter event from the history' });

      // SOS.
      const sosSeq = d5.sos();
      await waitFor(() => d5.acked >= sosSeq, { what: 'the SOS acked' });
      await page.waitForSelector('#sos-banner:not([hidden])', { timeout: 20_000 });
      assert.equal(await page.textContent('#sos-banner .sos-who'), 'SOS: d5');
      assert.equal(await page.textContent('#sos-banner .sos-ack'), 'Acknowledge');
      await page.fill('#driver-search', 'd5');
      await waitFor(() => page.$eval('#driver-list li[data-key="acme/d5"]', (li) => li.classList.contains('sos')).catch(() => false), {
        what: 'd5\'s row marked',
      });
      const sosRow = (await feedRows(page)).find((r) => r.kind === 'sos' && r.key === 'acme/d5');
      assert.equal(sosRow?.text, 'SOS: emergency button pressed');
      await shot(page, '23-real-sos');
      await page.click('#sos-banner .sos-ack');
      await page.waitForSelector('#sos-banner', { state: 'hidden' });
      await waitFor(async () => !(await page.$eval('#driver-list li[data-key="acme/d5"]', (li) => li.classList.contains('sos'))), { what: 'd5\'s row unmarked' });

      // Acknowledged here stays acknowledged after a reload, though the history still has the SOS.
      await page.reload();
      await page.waitForFunction(() => window.fleethub?.connectionState === 'live', null, { timeout: LIVE_TIMEOUT });
      await waitFor(async () => (await feedRows(page)).some((r) => r.id === sosRow.id), { what: 'the SOS in the history' });
      assert.equal(await page.isVisible('#sos-banner'), false);
      await closePage(page);
    } finally {
      d5.stop();
    }
  });
});
