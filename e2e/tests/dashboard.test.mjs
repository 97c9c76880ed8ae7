// Browser end-to-end tests of the dispatcher dashboard against the real hub:
// `fleethub serve --demo 300` built from this checkout, driven through
// Debian's Chromium. Every wait is on a condition with a deadline.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { launchBrowser } from '../lib/browser.mjs';
import { buildHub, SCREENSHOTS, startHub } from '../lib/hub.mjs';
import { TestDriver } from '../lib/driver.mjs';
import { waitFor } from '../lib/wait.mjs';

const LIVE_TIMEOUT = 20_000;
let hub;
let browser;
let car; // a driver of our own with ten minutes of history, for the list and the trail
const CAR_ID = 'e2e-car';

async function newPage({ locale = 'en-GB' } = {}) {
  const context = await browser.newContext({ locale, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`# page error: ${e.message}`));
  return page;
}

/** Opens the dashboard the way dev mode's printed link does, and waits for "live". */
async function openSignedIn(token, opts) {
  const page = await newPage(opts);
  await page.goto(`${hub.url}/?access_token=${encodeURIComponent(token)}`);
  await page.waitForFunction(() => window.fleethub?.connectionState === 'live', null, { timeout: LIVE_TIMEOUT });
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
}

async function closePage(page) {
  await page.context().close();
}

const adminToken = (ttlSecs = 3600) => hub.token({ sub: 'e2e-admin', role: 'admin', ttlSecs });

async function hubSubscriptions() {
  const res = await fetch(`${hub.url}/api/v1/subscriptions`, { headers: { Authorization: `Bearer ${adminToken()}` } });
  assert.equal(res.status, 200, 'GET /api/v1/subscriptions');
  return (await res.json()).dashboards;
}

/** The trail line drawn on the map ([lon, lat] points), once `accept` takes it. */
async function drawnTrail(page, accept, what) {
  return waitFor(
    async () => {
      const coords = await page.evaluate(async () => {
        const data = await window.fleethub.map.getSource('trail').getData();
        return data?.geometry?.type === 'LineString' ? data.geometry.coordinates : null;
      });
      return coords && accept(coords) && coords;
    },
    { what },
  );
}

/** Metres between two [lon, lat] points (flat earth: fine for a few km). */
function metres([lon1, lat1], [lon2, lat2]) {
  const dy = (lat2 - lat1) * 111_320;
  const dx = (lon2 - lon1) * 111_320 * Math.cos((lat1 * Math.PI) / 180);
  return Math.hypot(dx, dy);
}

const sameBox = (a, b) => a.length === 4 && a.every((v, i) => Math.abs(v - b[i]) < 1e-4);

/** Waits until the hub holds a `view` subscription equal to `bbox` (within rounding). */
async function hubHasView(bbox, what) {
  return waitFor(
    async () => (await hubSubscriptions()).some((d) => d.subscriptions.some((s) => s.id === 'view' && sameBox(s.bbox, bbox))),
    { timeoutMs: 10_000, what },
  );
}

/**
 * Waits until the page's latest box satisfies `accept` and the hub holds that
 * same box. Compared afresh on every poll: a drag's inertia may send more than one.
 */
async function hubFollowsPage(page, accept, what) {
  return waitFor(
    async () => {
      const box = await page.evaluate(() => window.fleethub.subscribedBbox);
      if (!box || !accept(box)) return false;
      const held = (await hubSubscriptions()).some((d) => d.subscriptions.some((s) => s.id === 'view' && sameBox(s.bbox, box)));
      return held && box;
    },
    { timeoutMs: 15_000, what },
  );
}

describe('dispatcher dashboard', { timeout: 30 * 60_000 }, () => {
  before(async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    const bin = await buildHub();
    hub = await startHub({ bin, demo: 300 });
    browser = await launchBrowser();
    car = new TestDriver(hub.url, hub.token({ sub: CAR_ID, role: 'driver', fleet: 'demo' }), {
      lat: -12.07,
      lon: -77.05,
      heading: 60,
      speed: 12,
    });
    await car.connect();
    const lastSeq = car.backfill(120, 5);
    await waitFor(() => car.acked >= lastSeq, { timeoutMs: 10_000, what: 'the backfilled trail to be acked' });
    car.drive();
  });

  after(async () => {
    car?.stop();
    await browser?.close();
    if (hub) {
      if (process.env.E2E_HUB_LOG) console.error(hub.log(200));
      await hub.stop();
    }
  });

  test('signs in with the token in the URL, removes it, and goes live', { timeout: 60_000 }, async () => {
    const token = adminToken();
    const page = await openSignedIn(token);
    assert.ok(!page.url().includes('access_token'), `token left in the address bar: ${page.url()}`);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('fleethub.token')), token);
    assert.equal(await page.textContent('#conn-text'), 'Live');
    assert.equal(await page.textContent('#role-badge'), 'Admin');
    assert.equal(await page.textContent('#fleet-name'), 'all fleets');
    await shot(page, '01-signed-in-admin');
    await closePage(page);
  });

  test('signs in with a pasted dispatcher token and shows its fleet', { timeout: 60_000 }, async () => {
    const page = await newPage();
    await page.goto(hub.url);
    await page.waitForSelector('#signin[open]');
    await shot(page, '02-sign-in');
    await page.fill('#signin-token', hub.token({ sub: 'e2e-dispatcher', role: 'dispatcher', fleet: 'demo' }));
    await page.click('#signin-submit');
    await page.waitForFunction(() => window.fleethub?.connectionState === 'live', null, { timeout: LIVE_TIMEOUT });
    assert.equal(await page.isVisible('#signin'), false);
    assert.equal(await page.textContent('#role-badge'), 'Dispatcher');
    assert.equal(await page.textContent('#fleet-name'), 'demo');
    // Fleet-scoped: every vehicle this dispatcher sees is in its fleet.
    const fleets = await waitFor(
      async () => {
        const v = await page.evaluate(() => window.fleethub.vehicles());
        return v.length > 0 && [...new Set(v.map((x) => x.fleet))];
      },
      { timeoutMs: 15_000, what: 'vehicles for the dispatcher' },
    );
    assert.deepEqual(fleets, ['demo']);
    await closePage(page);
  });

  test('a wrong token is refused at sign-in', { timeout: 30_000 }, async () => {
    const page = await newPage();
    await page.goto(`${hub.url}/?access_token=not-a-token`);
    await page.waitForSelector('#signin[open]');
    await page.waitForFunction(() => !document.getElementById('signin-error').hidden);
    assert.equal(await page.textContent('#signin-error'), 'That token was not accepted.');
    await closePage(page);
  });

  test('simulated drivers appear on the map and move', { timeout: 60_000 }, async () => {
    const page = await openSignedIn(adminToken());
    const first = await waitFor(
      async () => {
        const v = await page.evaluate(() => window.fleethub.vehicles());
        return v.filter((x) => x.fleet === 'demo').length >= 20 && v;
      },
      { timeoutMs: 20_000, what: 'at least 20 demo vehicles in the view' },
    );
    // Drawn by WebGL layers (arrows, dots or cluster bubbles), not DOM nodes.
    const rendered = await waitFor(
      () => page.evaluate(() => window.fleethub.map.queryRenderedFeatures({ layers: ['vehicles', 'clusters'] }).length),
      { what: 'vehicle features rendered on the map' },
    );
    assert.ok(rendered > 0);
    assert.equal(await page.locator('.maplibregl-marker').count(), 0, 'no DOM marker per vehicle');
    const before = new Map(first.map((v) => [v.key, `${v.lon},${v.lat}`]));
    const moved = await waitFor(
      async () => {
        const now = await page.evaluate(() => window.fleethub.vehicles());
        const n = now.filter((v) => before.has(v.key) && before.get(v.key) !== `${v.lon},${v.lat}`).length;
        return n >= 10 && n;
      },
      { timeoutMs: 15_000, what: 'at least 10 vehicles to move' },
    );
    assert.ok(moved >= 10);
    // Vehicles start at a stop; wait until some are under way.
    const legend = await waitFor(
      async () => Number((await page.textContent('#count-moving')).replace(/\D/g, '')) || false,
      { timeoutMs: 20_000, what: 'the legend to count moving vehicles' },
    );
    assert.ok(legend > 0, 'the legend counts moving vehicles');
    await shot(page, '03-live-vehicles');
    await closePage(page);
  });

  test('panning the map changes the subscription the hub holds', { timeout: 90_000 }, async () => {
    const page = await openSignedIn(adminToken());
    const initial = await hubFollowsPage(page, () => true, 'the hub to hold the first view box');

    // A real drag with the mouse, as a dispatcher would pan.
    const box = await page.locator('#map canvas').boundingBox();
    const cx = box.x + box.width / 2;
    const cy = box.y + box.height / 2;
    await page.mouse.move(cx, cy);
    await page.mouse.down();
    await page.mouse.move(cx - 150, cy - 80, { steps: 8 });
    await page.mouse.move(cx - 300, cy - 160, { steps: 8 });
    await page.mouse.up();
    const panned = await hubFollowsPage(page, (b) => b.join() !== initial.join(), 'the hub to hold the box sent after the drag');
    assert.ok(panned[0] > initial[0] && panned[1] < initial[1], `dragging up-left moves the view east and south: ${initial} -> ${panned}`);
    await shot(page, '04-after-pan');

    // Across the antimeridian (Fiji): west > east.
    await page.evaluate(() => window.fleethub.map.jumpTo({ center: [180, -17], zoom: 5 }));
    const fiji = await hubFollowsPage(page, (b) => b[0] > b[2], 'the hub to hold an antimeridian box (west > east)');
    assert.ok(fiji[0] > 160 && fiji[2] < -160, `Fiji box: ${fiji}`);

    // The whole world.
    await page.evaluate(() => window.fleethub.map.jumpTo({ center: [0, 0], zoom: 0 }));
    await hubFollowsPage(page, (b) => b.join() === '-180,-90,180,90', 'the hub to hold the world box');
    await shot(page, '05-world');
    await closePage(page);
  });

  test('the driver list searches, filters by status, and follows a driver', { timeout: 60_000 }, async () => {
    const page = await openSignedIn(adminToken());
    const rowIds = () => page.$$eval('#driver-list li', (lis) => lis.map((li) => li.dataset.id));
    await waitFor(async () => (await rowIds()).length >= 10, { what: 'rows in the driver list' });

    await page.fill('#driver-search', CAR_ID);
    await waitFor(async () => (await rowIds()).join() === CAR_ID, { what: `the list to show only ${CAR_ID}` });
    assert.match(await page.textContent('#driver-count'), /^1 of \d/);
    const row = page.locator(`#driver-list li[data-id="${CAR_ID}"]`);
    assert.equal(await row.locator('.row-status').textContent(), 'Moving');
    assert.match(await row.locator('.row-speed').textContent(), /^43 km\/h$/); // 12 m/s

    // Clicking a driver centres the map on it and follows it.
    await row.locator('button[data-action="pick"]').click();
    await waitFor(() => page.evaluate(() => window.fleethub.following()), { what: 'following to start' });
    assert.equal(await page.evaluate(() => window.fleethub.following()), `demo/${CAR_ID}`);
    assert.equal(await page.isVisible('#follow-chip'), true);
    const centred = await waitFor(
      async () => {
        const r = await page.evaluate((key) => {
          const v = window.fleethub.vehicles().find((x) => x.key === key);
          const c = window.fleethub.map.getCenter();
          return v && Math.hypot(v.lon - c.lng, v.lat - c.lat);
        }, `demo/${CAR_ID}`);
        return r !== undefined && r < 1e-3 && r + 1; // distance in degrees, truthy even when 0
      },
      { what: 'the map to centre on the followed driver' },
    );
    assert.ok(centred);
    await shot(page, '06-following');
    // The user's own pan stops following.
    const box = await page.locator('#map canvas').boundingBox();
    await page.mouse.move(box.x + 400, box.y + 300);
    await page.mouse.down();
    await page.mouse.move(box.x + 300, box.y + 250, { steps: 5 });
    await page.mouse.up();
    await waitFor(async () => (await page.evaluate(() => window.fleethub.following())) === null, { what: 'following to stop on pan' });

    // Status filter: every row shown has that status.
    await page.fill('#driver-search', '');
    for (const [value, label] of [['moving', 'Moving'], ['stopped', 'Stopped'], ['offline', 'Offline']]) {
      await page.selectOption('#status-filter', value);
      const statuses = await page.$$eval('#driver-list li .row-status', (els) => els.map((e) => e.textContent));
      assert.ok(statuses.every((s) => s === label), `${value}: ${[...new Set(statuses)]}`);
      if (value === 'moving') assert.ok(statuses.length > 0, 'some drivers are moving');
    }
    await page.selectOption('#status-filter', 'moving');
    await shot(page, '07-list-filtered');
    await closePage(page);
  });

  test('trail replay draws a driver\'s trail and plays it', { timeout: 60_000 }, async (t) => {
    // The trails API is another engineer's work; the hub's static fallback answers
    // an unknown route with "no such page", which is not a trail 404.
    const from = Date.now() - 3_600_000;
    const probe = await fetch(`${hub.url}/api/v1/drivers/${CAR_ID}/trail?fleet=demo&from=${from}&to=${Date.now()}&format=geojson`, {
      headers: { Authorization: `Bearer ${adminToken()}` },
    });
    const probeBody = await probe.text();
    if (probe.status === 404 && /no such page/.test(probeBody)) {
      t.skip('PENDING ON TRAILS: GET /api/v1/drivers/{id}/trail is not on this hub yet');
      return;
    }
    assert.equal(probe.status, 200, probeBody.slice(0, 300));

    const page = await openSignedIn(adminToken());
    await page.fill('#driver-search', CAR_ID);
    const trailButton = page.locator(`#driver-list li[data-id="${CAR_ID}"] button[data-action="trail"]`);
    await trailButton.waitFor();
    await trailButton.click();
    await page.waitForSelector('#trail-player:not([hidden])', { timeout: 15_000 });
    const line = (await drawnTrail(page, () => true, 'the trail line on the map')).length;
    assert.ok(line >= 100, `the backfilled trail has 120 points; drawn: ${line}`);
    const summary = await page.$$eval('#trail-summary dd', (dds) => dds.map((d) => d.textContent));
    assert.ok(Number(summary[0].replace(/\D/g, '')) >= 100, `points in the summary: ${summary}`);
    assert.match(summary[1], /km$/);

    await page.selectOption('#trail-speed', '300');
    await page.click('#trail-play');
    const start = Number(await page.inputValue('#trail-slider'));
    await waitFor(async () => Number(await page.inputValue('#trail-slider')) > start + 30_000, { what: 'playback to advance' });
    await page.click('#trail-play'); // pause
    const cursor = await page.evaluate(async () => (await window.fleethub.map.getSource('trail-cursor').getData())?.geometry?.coordinates);
    assert.equal(cursor?.length, 2, 'the replay marker is on the map');
    await shot(page, '08-trail-replay');

    // A driver with no history: a message, no line.
    await page.fill('#trail-driver', 'nobody-here');
    await page.click('#trail-form button[type="submit"]');
    await page.waitForSelector('#trail-message:not([hidden])');
    await waitFor(async () => /No trail for nobody-here/.test(await page.textContent('#trail-message')), { what: 'the no-trail message' });
    assert.equal(await page.isVisible('#trail-player'), false);
    await closePage(page);
  });

  test('an admin tells apart two fleets\' drivers with the same id', { timeout: 120_000 }, async () => {
    // Each fleet has a `d1`, in Cusco (away from the demo fleet in Lima), 5.8 km apart.
    const places = {
      acme: { lat: -13.52, lon: -71.98, heading: 90, speed: 12 },
      beta: { lat: -13.5, lon: -71.93, heading: 0, speed: 12 },
    };
    const centre = [-71.955, -13.51];
    const drivers = {};
    try {
      for (const [fleet, start] of Object.entries(places)) {
        drivers[fleet] = new TestDriver(hub.url, hub.token({ sub: 'd1', role: 'driver', fleet }), start);
        await drivers[fleet].connect();
        const lastSeq = drivers[fleet].backfill(30, 5);
        await waitFor(() => drivers[fleet].acked >= lastSeq, { timeoutMs: 10_000, what: `${fleet}'s d1 trail to be acked` });
      }
      const at = (fleet) => [drivers[fleet].lon, drivers[fleet].lat];

      const page = await openSignedIn(adminToken());
      const d1s = () => page.evaluate(() => window.fleethub.vehicles().filter((v) => v.id === 'd1'));
      /** Shows both, unclustered, and waits until the page holds both vehicles. */
      const viewBoth = async () => {
        await page.evaluate((c) => window.fleethub.map.jumpTo({ center: c, zoom: 12 }), centre);
        return waitFor(async () => ((await d1s()).length === 2 ? d1s() : false), { what: 'both d1 vehicles in the view' });
      };

      // Two vehicles, each where its own fleet's d1 is.
      const both = await viewBoth();
      assert.deepEqual(both.map((v) => v.key).sort(), ['acme/d1', 'beta/d1']);
      for (const v of both) assert.ok(metres([v.lon, v.lat], at(v.fleet)) < 1, `${v.key} drawn at its own place`);

      // Two markers on the map.
      const markers = await waitFor(
        async () => {
          const keys = await page.evaluate(() =>
            window.fleethub.map.queryRenderedFeatures({ layers: ['vehicles'] }).map((f) => f.properties.key),
          );
          const d1Keys = keys.filter((k) => k.endsWith('/d1')).sort();
          return d1Keys.length === 2 && d1Keys;
        },
        { what: 'two d1 markers rendered' },
      );
      assert.deepEqual(markers, ['acme/d1', 'beta/d1']);
      await shot(page, '08b-two-fleets-same-id');

      // Clicking a marker selects that fleet's driver.
      const pixel = await page.evaluate((lonLat) => {
        const p = window.fleethub.map.project(lonLat);
        const r = window.fleethub.map.getCanvas().getBoundingClientRect();
        return { x: r.left + p.x, y: r.top + p.y };
      }, at('acme'));
      await page.mouse.click(pixel.x, pixel.y);
      await waitFor(async () => (await page.evaluate(() => window.fleethub.following())) === 'acme/d1', { what: 'a marker click to follow acme/d1' });

      // Two rows, each naming its fleet; picking one follows that one only.
      await page.fill('#driver-search', 'd1');
      const rows = () =>
        page.$$eval('#driver-list li[data-id="d1"]', (lis) =>
          lis.map((li) => ({ key: li.dataset.key, label: li.querySelector('.row-id').textContent, followed: li.classList.contains('followed') })),
        );
      await waitFor(async () => (await rows()).length === 2, { what: 'two d1 rows in the list' });
      assert.deepEqual(await rows(), [
        { key: 'acme/d1', label: 'd1 · acme', followed: true },
        { key: 'beta/d1', label: 'd1 · beta', followed: false },
      ]);
      await page.click('#driver-list li[data-key="beta/d1"] button[data-action="pick"]');
      await waitFor(async () => (await page.evaluate(() => window.fleethub.following())) === 'beta/d1', { what: 'following beta/d1' });
      // The list marks the followed row when it next renders, not in the same task.
      await waitFor(async () => JSON.stringify((await rows()).map((r) => r.followed)) === '[false,true]', {
        what: 'the beta/d1 row marked followed, the acme/d1 row not',
      });
      assert.equal(await page.textContent('#follow-text'), 'Following d1 · beta');
      assert.ok(JSON.stringify(await page.evaluate(() => window.fleethub.map.getFilter('vehicle-selected'))).includes('"beta/d1"'));
      await page.click('#follow-stop');

      // Each row's trail is its own fleet's: every point near that d1, far from the other.
      for (const [fleet, other] of [['acme', 'beta'], ['beta', 'acme']]) {
        await page.click(`#driver-list li[data-key="${fleet}/d1"] button[data-action="trail"]`);
        const trail = await drawnTrail(
          page,
          (coords) => coords.length >= 25 && coords.every((c) => metres(c, at(fleet)) < 2000),
          `the trail of ${fleet}'s d1`,
        );
        assert.ok(trail.every((c) => metres(c, at(other)) > 3000), `no point of ${other}'s d1 in ${fleet}'s trail`);
        assert.equal(await page.inputValue('#trail-fleet'), fleet);
        assert.equal(await page.isVisible('#trail-fleet-field'), true, 'admins see the fleet of the trail');
      }
      await page.click('#trail-close');

      // A new fix of acme's d1 moves its marker and leaves beta's where it was.
      const before = Object.fromEntries((await viewBoth()).map((v) => [v.fleet, [v.lon, v.lat]]));
      drivers.acme.step(5);
      await waitFor(
        async () => {
          const acme = (await d1s()).find((v) => v.fleet === 'acme');
          return acme && metres([acme.lon, acme.lat], at('acme')) < 0.5;
        },
        { what: 'acme/d1 to reach its new fix' },
      );
      assert.ok(metres(before.acme, at('acme')) > 50, 'acme/d1 moved');
      const beta = (await d1s()).find((v) => v.fleet === 'beta');
      assert.deepEqual([beta.lon, beta.lat], before.beta, 'beta/d1 did not move');

      // acme's d1 going offline leaves beta's online.
      drivers.acme.stop();
      await waitFor(
        async () => (await d1s()).find((v) => v.fleet === 'acme')?.status === 'offline',
        { what: 'acme/d1 to go offline' },
      );
      assert.notEqual((await d1s()).find((v) => v.fleet === 'beta').status, 'offline');
      await closePage(page);
    } finally {
      for (const d of Object.values(drivers)) d.stop();
    }
  });

  test('Spanish first when the browser asks for it; the switch persists', { timeout: 60_000 }, async () => {
    const page = await openSignedIn(adminToken(), { locale: 'es-PE' });
    assert.equal(await page.getAttribute('html', 'lang'), 'es');
    assert.equal(await page.textContent('#conn-text'), 'En vivo');
    assert.equal(await page.textContent('#drivers-title'), 'Conductores');
    assert.equal(await page.textContent('#role-badge'), 'Administrador');
    assert.equal(await page.getAttribute('#driver-search', 'placeholder'), 'Buscar por id');
    await waitFor(async () => /^[1-9]/.test(await page.textContent('#count-moving')), { what: 'the legend to count vehicles' });
    assert.match(await page.textContent('#driver-list li .row-status'), /^(En marcha|Detenido|Desconectado)$/);
    await shot(page, '09-spanish');

    await page.click('.lang button[data-lang="en"]');
    assert.equal(await page.getAttribute('html', 'lang'), 'en');
    assert.equal(await page.textContent('#conn-text'), 'Live');
    assert.equal(await page.textContent('#drivers-title'), 'Drivers');
    assert.equal(await page.getAttribute('.lang button[data-lang="en"]', 'aria-pressed'), 'true');

    // Persisted: a reload (same tab, token still in the session) stays in English.
    await page.reload();
    await page.waitForFunction(() => window.fleethub?.connectionState === 'live', null, { timeout: LIVE_TIMEOUT });
    assert.equal(await page.getAttribute('html', 'lang'), 'en');
    assert.equal(await page.textContent('#conn-text'), 'Live');
    await shot(page, '10-english-after-switch');
    await closePage(page);

    const english = await openSignedIn(adminToken(), { locale: 'en-US' });
    assert.equal(await english.getAttribute('html', 'lang'), 'en');
    await closePage(english);
  });

  test('an expired token sends the user back to sign-in with a message', { timeout: 60_000 }, async () => {
    // Long enough to load and go live on a busy machine; then the hub closes the socket.
    const page = await openSignedIn(adminToken(15));
    // The hub closes the socket when the token expires; the page then finds the token refused.
    await page.waitForSelector('#signin[open]', { timeout: 30_000 });
    assert.equal(await page.textContent('#signin-error'), 'Your session has expired. Please sign in again.');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('fleethub.token')), null);
    await shot(page, '11-expired');
    await closePage(page);
  });

  // Last: it restarts the hub.
  test('reconnects after the hub restarts and subscribes the view again', { timeout: 90_000 }, async () => {
    const page = await openSignedIn(adminToken());
    const view = await waitFor(() => page.evaluate(() => window.fleethub.subscribedBbox), { what: 'a view box' });
    await hubHasView(view, 'the initial view on the hub');
    await hub.restart({ pauseMs: 1500 });
    await page.waitForFunction(
      () => {
        const log = window.fleethub.connectionStates();
        const i = log.lastIndexOf('reconnecting');
        return i >= 0 && log.slice(i).includes('live');
      },
      null,
      { timeout: 40_000 },
    );
    assert.equal(await page.textContent('#conn-text'), 'Live');
    await shot(page, '12-after-reconnect');
    await hubHasView(view, 'the same view re-subscribed on the restarted hub');
    await closePage(page);
  });
});
