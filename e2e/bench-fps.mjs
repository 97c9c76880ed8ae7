// Frame-rate benchmark of the dashboard: `fleethub serve --demo 5000` (5,000
// simulated vehicles at 1 Hz), the dashboard in headless Chromium (software
// WebGL: SwiftShader), frame times measured with requestAnimationFrame over
// ~10 s once the vehicles are loaded.
//
//   cd e2e && npm run bench:fps            (BENCH_DRIVERS=5000 BENCH_SECONDS=10 by default)
//
// Prints median and p95 frame time and the frame rate for each view.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { launchBrowser } from './lib/browser.mjs';
import { buildHub, SCREENSHOTS, startHub } from './lib/hub.mjs';
import { waitFor } from './lib/wait.mjs';

const DRIVERS = Number(process.env.BENCH_DRIVERS || 5000);
const SECONDS = Number(process.env.BENCH_SECONDS || 10);

function quantile(sorted, q) {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))));
  return sorted[i];
}

/**
 * Records every requestAnimationFrame delta in the page for `secs` seconds.
 * `repaint` forces the map to redraw every frame (the control run).
 */
function measure(page, secs, repaint = false) {
  return page.evaluate(
    ([ms, repaint]) =>
      new Promise((resolve) => {
        const deltas = [];
        let last = 0;
        let start = 0;
        const step = (now) => {
          if (repaint) window.fleethub.map.triggerRepaint();
          if (!start) start = now;
          else deltas.push(now - last);
          last = now;
          if (now - start < ms) requestAnimationFrame(step);
          else resolve({ deltas, elapsed: now - start });
        };
        requestAnimationFrame(step);
      }),
    [secs * 1000, repaint],
  );
}

async function scenario(page, name, { repaint = false } = {}) {
  const info = await page.evaluate(() => {
    const m = window.fleethub.map;
    return {
      zoom: Math.round(m.getZoom() * 100) / 100,
      vehiclesInView: window.fleethub.vehicles().length,
      drawnSingles: m.queryRenderedFeatures({ layers: ['vehicles'] }).length,
      drawnClusters: m.queryRenderedFeatures({ layers: ['clusters'] }).length,
    };
  });
  const { deltas, elapsed } = await measure(page, SECONDS, repaint);
  const sorted = [...deltas].sort((a, b) => a - b);
  const result = {
    scenario: name,
    ...info,
    frames: deltas.length,
    median_ms: Math.round(quantile(sorted, 0.5) * 10) / 10,
    p95_ms: Math.round(quantile(sorted, 0.95) * 10) / 10,
    max_ms: Math.round(sorted[sorted.length - 1] * 10) / 10,
    fps: Math.round((deltas.length / elapsed) * 1000 * 10) / 10,
  };
  await page.screenshot({ path: join(SCREENSHOTS, `bench-${name}.png`) });
  console.log(
    `${name}: zoom ${result.zoom}, ${result.vehiclesInView} vehicles in view ` +
      `(${result.drawnSingles} drawn singly, ${result.drawnClusters} clusters): ` +
      `median ${result.median_ms} ms, p95 ${result.p95_ms} ms, max ${result.max_ms} ms, ${result.fps} fps over ${result.frames} frames`,
  );
  return result;
}

async function main() {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const bin = await buildHub();
  const hub = await startHub({ bin, demo: DRIVERS });
  const browser = await launchBrowser();
  try {
    const admin = hub.token({ sub: 'bench', role: 'admin' });
    // Wait until the simulator has all its drivers on the hub.
    const drivers = await waitFor(
      async () => {
        const res = await fetch(`${hub.url}/api/v1/drivers`, { headers: { Authorization: `Bearer ${admin}` } });
        const list = (await res.json()).drivers ?? [];
        return list.length >= DRIVERS * 0.95 && list;
      },
      { timeoutMs: 120_000, intervalMs: 1000, what: `${DRIVERS} demo drivers on the hub` },
    );
    const lons = drivers.map((d) => d.lon);
    const lats = drivers.map((d) => d.lat);
    const bounds = [
      [Math.min(...lons), Math.min(...lats)],
      [Math.max(...lons), Math.max(...lats)],
    ];

    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    await page.goto(`${hub.url}/?access_token=${admin}`);
    await page.waitForFunction(() => window.fleethub?.connectionState === 'live', null, { timeout: 30_000 });

    // Waits until the view's box is subscribed and a few live frames have arrived for it.
    async function settle() {
      await waitFor(() => page.evaluate(() => window.fleethub.viewSubscribed()), { what: 'the view to be subscribed' });
      const seen = await page.evaluate(() => window.fleethub.framesReceived);
      await waitFor(async () => (await page.evaluate(() => window.fleethub.framesReceived)) >= seen + 3, {
        what: 'live frames for the view',
      });
    }

    // Every vehicle in view, each drawn as an arrow: the worst case for the live layer.
    await page.evaluate((b) => window.fleethub.map.fitBounds(b, { padding: 20, duration: 0 }), bounds);
    await waitFor(async () => (await page.evaluate(() => window.fleethub.vehicles().length)) >= DRIVERS * 0.95, {
      timeoutMs: 60_000,
      what: 'the vehicles in the page',
    });
    await settle();
    const results = [await scenario(page, 'all-vehicles-in-view')];

    // Zoomed out: the same vehicles merged into clusters.
    await page.evaluate(() => window.fleethub.map.jumpTo({ zoom: 9 }));
    await settle();
    results.push(await scenario(page, 'overview-clustered'));

    // A dispatcher's working zoom: part of the city.
    await page.evaluate(() => window.fleethub.map.jumpTo({ zoom: 13 }));
    await settle();
    results.push(await scenario(page, 'district-zoom-13'));

    // Control: open sea with no vehicle, the map forced to redraw every frame.
    // What any full redraw costs on this machine (software WebGL), vehicles or not.
    await page.evaluate(() => window.fleethub.map.jumpTo({ center: [-85, -12.05], zoom: 11.27 }));
    await waitFor(() => page.evaluate(() => window.fleethub.viewSubscribed() && window.fleethub.vehicles().length === 0), {
      what: 'an empty view',
    });
    results.push(await scenario(page, 'control-no-vehicles-forced-redraw', { repaint: true }));

    console.log(JSON.stringify({ drivers: DRIVERS, seconds: SECONDS, results }, null, 2));
    await context.close();
  } finally {
    await browser.close();
    await hub.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
