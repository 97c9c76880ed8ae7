// Launches Debian's Chromium through playwright-core (playwright's own browser
// downloads are not reachable here) with a fresh profile for every run.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-quic',
  '--no-first-run',
  '--disable-component-update',
  '--disable-sync',
  // No GPU here: MapLibre needs WebGL, which SwiftShader provides in software.
  '--use-angle=swiftshader',
  '--enable-unsafe-swiftshader',
  // A hidden or throttled page would measure nothing useful in the frame-rate bench.
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

/** Returns {context, close}; the profile directory is removed on close. */
export async function launch({ viewport = { width: 1280, height: 800 }, locale = 'en-GB' } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'fleethub-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport,
    locale,
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
