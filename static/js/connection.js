// The dashboard's WebSocket to the hub: connects, reconnects with exponential
// backoff and jitter, and re-sends the current subscriptions after every
// reconnect, so a network hiccup costs a snapshot, not a broken map.
//
// States: 'connecting' (first attempt), 'live' (hello received),
// 'reconnecting' (waiting to retry), 'offline' (the browser reports no network).

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;

export class Connection {
  /**
   * @param {object} opts
   * @param {() => string} opts.token       current access token
   * @param {(frame: object) => void} opts.onFrame   every parsed frame from the hub
   * @param {(state: string, info?: object) => void} opts.onState
   * @param {() => Promise<boolean>} opts.isUnauthorized  asked after an abnormal close:
   *        a browser hides the HTTP status of a refused upgrade, so a 401 can only be
   *        told apart by asking the API with the same token.
   */
  constructor({ token, onFrame, onState, isUnauthorized, onUnauthorized }) {
    this.token = token;
    this.onFrame = onFrame;
    this.onState = onState;
    this.isUnauthorized = isUnauthorized;
    this.onUnauthorized = onUnauthorized;
    this.subscriptions = new Map(); // id -> bbox; replayed on every (re)connect
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.state = 'connecting';
    this.onOnline = () => this.retryNow();
    this.onOffline = () => this.setState('offline');
  }

  start() {
    this.stopped = false;
    addEventListener('online', this.onOnline);
    addEventListener('offline', this.onOffline);
    this.open();
  }

  stop() {
    this.stopped = true;
    removeEventListener('online', this.onOnline);
    removeEventListener('offline', this.onOffline);
    clearTimeout(this.timer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000, 'signed out');
      this.ws = null;
    }
  }

  /** Sends (or replaces) a named region subscription; kept to be replayed after a reconnect. */
  subscribe(id, bbox) {
    this.subscriptions.set(id, bbox);
    this.send({ type: 'subscribe', id, bbox });
  }

  unsubscribe(id) {
    this.subscriptions.delete(id);
    this.send({ type: 'unsubscribe', id });
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false; // Sent again on open from this.subscriptions.
  }

  setState(state, info) {
    this.state = state;
    this.onState(state, info);
  }

  open() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    if (navigator.onLine === false) {
      this.setState('offline');
      return; // The 'online' event brings us back.
    }
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // Browsers cannot set headers on a WebSocket: the token goes in the query.
    const url = `${scheme}//${location.host}/ws/dashboard?access_token=${encodeURIComponent(this.token())}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    let sawHello = false;

    ws.onopen = () => {
      for (const [id, bbox] of this.subscriptions) ws.send(JSON.stringify({ type: 'subscribe', id, bbox }));
    };
    ws.onmessage = (ev) => {
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return; // The hub only sends JSON; ignore anything else rather than die.
      }
      if (frame.type === 'hello') {
        sawHello = true;
        this.attempt = 0; // A healthy session resets the backoff.
        this.setState('live', frame);
      }
      this.onFrame(frame);
    };
    ws.onclose = async (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      // A refused upgrade (401) and an expired token (1008) look like ordinary
      // closes from here; ask the API whether the token still works.
      if (!sawHello || ev.code === 1008) {
        let unauthorized = false;
        try {
          unauthorized = await this.isUnauthorized();
        } catch {
          unauthorized = false; // Hub unreachable: keep retrying.
        }
        if (this.stopped) return;
        if (unauthorized) {
          this.stop();
          this.onUnauthorized();
          return;
        }
      }
      this.scheduleRetry();
    };
  }

  scheduleRetry() {
    if (this.stopped) return;
    if (navigator.onLine === false) {
      this.setState('offline');
      return;
    }
    // Full jitter on an exponential ceiling: many dashboards dropped at once by a
    // hub restart come back spread out instead of in one thundering herd.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.attempt += 1;
    this.setState('reconnecting', { retryInMs: delay });
    this.timer = setTimeout(() => this.open(), delay);
  }

  /** Skip the wait (the browser came back online). */
  retryNow() {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    this.open();
  }
}
