// Launches Debian's Chromium through playwright-core (playwright's own browser
// downloads are not reachable here) with a fresh profile for every run.

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

/**
 * Launches Chromium. Playwright gives every launch a fresh temporary profile
 * (user-data-dir) and removes it on close; each context is a clean slate too.
 */
export function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
}
