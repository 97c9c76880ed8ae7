// A test driver speaking the real driver protocol (GET /ws/driver): it can
// backfill a stretch of history in one batch (so a trail exists at once) and
// then report a position every second, like a phone in a vehicle.

import WebSocket from 'ws';

const M_PER_DEG_LAT = 111_320;

export class TestDriver {
  /**
   * @param {string} url   hub base URL (http://127.0.0.1:port)
   * @param {string} token a driver token
   * @param {object} start {lat, lon, heading (deg), speed (m/s)}
   */
  constructor(url, token, { lat, lon, heading = 90, speed = 10 }) {
    this.wsUrl = `${url.replace(/^http/, 'ws')}/ws/driver?access_token=${encodeURIComponent(token)}`;
    this.lat = lat;
    this.lon = lon;
    this.heading = heading;
    this.speed = speed;
    this.seq = 0;
    this.acked = 0;
    this.timer = null;
  }

  async connect() {
    this.ws = new WebSocket(this.wsUrl);
    this.ws.on('message', (data) => {
      const f = JSON.parse(String(data));
      if (f.type === 'ack') this.acked = Math.max(this.acked, f.seq);
    });
    await new Promise((ok, fail) => {
      this.ws.once('open', ok);
      this.ws.once('error', fail);
      this.ws.once('unexpected-response', (_req, res) => fail(new Error(`driver socket refused: HTTP ${res.statusCode}`)));
    });
  }

  /** Moves the vehicle `secs` seconds along its heading (flat-earth: fine for a few km). */
  advance(secs) {
    const d = this.speed * secs;
    const rad = (this.heading * Math.PI) / 180;
    this.lat += (d * Math.cos(rad)) / M_PER_DEG_LAT;
    this.lon += (d * Math.sin(rad)) / (M_PER_DEG_LAT * Math.cos((this.lat * Math.PI) / 180));
  }

  fix(ts) {
    this.seq += 1;
    return { seq: this.seq, ts, lat: this.lat, lon: this.lon, speed: this.speed, heading: this.heading, acc: 5 };
  }

  /** Sends `count` fixes `stepSecs` apart ending now, as one batch (an offline buffer flushing). */
  backfill(count, stepSecs = 5) {
    const now = Date.now();
    // Walk back first so the batch ends where the vehicle is now.
    this.advance(-count * stepSecs);
    const items = [];
    for (let i = count - 1; i >= 0; i--) {
      this.advance(stepSecs);
      items.push(this.fix(now - i * stepSecs * 1000));
    }
    this.ws.send(JSON.stringify({ type: 'batch', items }));
    return this.seq;
  }

  /** Moves `secs` seconds on and reports the new position (one `pos` frame). */
  step(secs = 1) {
    this.advance(secs);
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: 'pos', ...this.fix(Date.now()) }));
    return this.seq;
  }

  /** Presses SOS: a `sos` frame where the vehicle is now, acknowledged like a position. */
  sos() {
    this.seq += 1;
    this.ws.send(JSON.stringify({ type: 'sos', seq: this.seq, ts: Date.now(), lat: this.lat, lon: this.lon }));
    return this.seq;
  }

  /** One fix per second until stop(). */
  drive() {
    this.timer = setInterval(() => this.step(1), 1000);
  }

  stop() {
    clearInterval(this.timer);
    this.ws?.close();
  }
}
