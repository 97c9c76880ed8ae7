// The access token and the calls that carry it. The token lives in
// sessionStorage: it survives a reload but not the tab, and never reaches
// other tabs or the disk the way localStorage would.

const TOKEN_KEY = 'fleethub.token';

/** Raised when the hub answers 401: the token is missing, forged or expired. */
export class Unauthorized extends Error {
  constructor() {
    super('unauthorized');
    this.name = 'Unauthorized';
  }
}

/** An HTTP failure other than 401, with the status for callers that branch on it (404...). */
export class HttpError extends Error {
  constructor(status, message) {
    super(message || `HTTP ${status}`);
    this.name = 'HttpError';
    this.status = status;
  }
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Without storage the token still lives in memory for this page (see app.js).
  }
}

/**
 * Takes `?access_token=` (the link dev mode prints) into the session and
 * removes it from the address bar, so it is not bookmarked, shared or kept in history.
 */
export function adoptTokenFromUrl() {
  const url = new URL(location.href);
  const token = url.searchParams.get('access_token');
  if (!token) return false;
  setToken(token.trim());
  url.searchParams.delete('access_token');
  history.replaceState(history.state, '', url.pathname + url.search + url.hash);
  return true;
}

/** GET a JSON API with the bearer token. */
export async function apiGet(path, { token = getToken(), signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(path, { headers, signal, cache: 'no-store' });
  if (res.status === 401) throw new Unauthorized();
  if (!res.ok) {
    let message = '';
    try {
      const body = await res.json();
      message = body.message || body.error || body.code || '';
    } catch {
      // Not JSON; the status is enough.
    }
    throw new HttpError(res.status, message || `HTTP ${res.status}`);
  }
  return res.json();
}
