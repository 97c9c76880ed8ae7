// Synchronising on conditions, never on fixed sleeps: poll until a check
// returns something truthy, or fail with what was awaited and the last value seen.

export async function waitFor(check, { timeoutMs = 15_000, intervalMs = 100, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}` + (last === undefined ? '' : ` (last: ${JSON.stringify(last)})`));
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
