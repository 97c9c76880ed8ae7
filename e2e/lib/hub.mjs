// Starts the real fleethub binary for the browser tests and the benchmark:
// built from this checkout, on a free loopback port, with a random JWT secret
// (so the tests mint their own tokens) and a throwaway SQLite file.

import { spawn, spawnSync } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor } from './wait.mjs';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SCREENSHOTS = join(REPO, 'target', 'e2e-screenshots');

/**
 * `cargo build --release --bin fleethub`. Cargo itself waits for a build lock
 * held by someone else; a failing build is retried a few times because the
 * checkout is shared with people mid-edit. FLEETHUB_BIN skips the build.
 */
export async function buildHub({ attempts = 3, pauseMs = 20_000 } = {}) {
  if (process.env.FLEETHUB_BIN) return process.env.FLEETHUB_BIN;
  for (let i = 1; ; i++) {
    const r = spawnSync('cargo', ['build', '--release', '--bin', 'fleethub'], { cwd: REPO, stdio: ['ignore', 'inherit', 'inherit'] });
    if (r.status === 0) return join(REPO, 'target', 'release', 'fleethub');
    if (i >= attempts) throw new Error(`cargo build --release --bin fleethub failed ${attempts} times`);
    console.error(`# build failed (attempt ${i}/${attempts}); retrying in ${pauseMs / 1000} s`);
    await sleep(pauseMs);
  }
}

export function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 JWT the hub accepts: {"sub","role","fleet","exp","iat"}. */
export function mintToken(secret, { sub, role, fleet = null, ttlSecs = 3600 }) {
  const iat = Math.floor(Date.now() / 1000);
  const claims = { sub, role, exp: iat + ttlSecs, iat };
  if (fleet) claims.fleet = fleet;
  const body = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/**
 * Spawns `fleethub serve --demo N` and waits for /healthz.
 * Returns {url, port, secret, token(), stop(), restart(), log()}.
 */
export async function startHub({ bin, demo = 300, env = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'fleethub-e2e-'));
  const port = await freePort();
  // 40 random characters: above the hub's 32-byte minimum for the HS256 secret.
  const secret = randomBytes(30).toString('base64url').slice(0, 40);
  const url = `http://127.0.0.1:${port}`;
  const logPath = join(dir, 'hub.log');
  let child = null;

  async function launch() {
    const log = createWriteStream(logPath, { flags: 'a' });
    const args = ['serve'];
    if (demo) args.push('--demo', String(demo));
    child = spawn(bin, args, {
      cwd: dir,
      env: {
        ...process.env,
        FLEETHUB_LISTEN: `127.0.0.1:${port}`,
        FLEETHUB_JWT_SECRET: secret,
        FLEETHUB_DATABASE__SQLITE_PATH: join(dir, 't.db'),
        RUST_LOG: process.env.RUST_LOG || 'info',
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.pipe(log);
    child.stderr.pipe(log);
    const proc = child;
    let exited = null;
    proc.once('exit', (code, signal) => (exited = { code, signal }));
    await waitFor(
      async () => {
        if (exited) throw new Error(`fleethub exited (${JSON.stringify(exited)}) before it was healthy:\n${tail()}`);
        try {
          return (await fetch(`${url}/healthz`)).ok;
        } catch {
          return false;
        }
      },
      { timeoutMs: 60_000, intervalMs: 100, what: 'fleethub /healthz' },
    );
  }

  function tail(n = 40) {
    try {
      return readFileSync(logPath, 'utf8').split('\n').slice(-n).join('\n');
    } catch {
      return '';
    }
  }

  async function stop({ cleanup = true } = {}) {
    const proc = child;
    child = null;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((ok) => proc.once('exit', ok));
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(timer);
    }
    if (cleanup) rmSync(dir, { recursive: true, force: true });
  }

  await launch();
  return {
    url,
    port,
    secret,
    token: (claims) => mintToken(secret, claims),
    log: tail,
    stop,
    /** Same port, secret and database: what a dashboard sees when its hub restarts. */
    async restart({ pauseMs = 0 } = {}) {
      await stop({ cleanup: false });
      if (pauseMs) await sleep(pauseMs);
      await launch();
    },
  };
}
