// The page's one WebSocket (docs/protocol.md): the session cookie authenticates it, so no
// ticket. Connects and reconnects with backoff, pings to find a dead socket, keeps sends until
// they are acknowledged and other frames until a socket is open, and reports the connection
// (including the server's `unavailable` … `live` outage signals) as a status line.

export const BACKOFF_FIRST_MS = 500;
export const BACKOFF_MAX_MS = 10_000;
export const FIRST_RETRY_SPREAD_MS = 10_000;
export const HEARTBEAT_MS = 25_000;
export const PONG_TIMEOUT_MS = 10_000;

const OPEN = 1; // WebSocket.OPEN

/**
 * The wait before reconnect attempt `attempt`. The first is anywhere in 0–10 s: when a server
 * replica dies, its thousands of pages reconnect to the others spread over 10 s; all within
 * half a second, none of 5,000 was back within 30 s, spread, 93–100 % (docs/benchmarks.md). Then exponential backoff with jitter: 0.5 s doubling up to 10 s, each
 * wait 50–100 % of that. Coming online or back to the tab skips the wait.
 */
export function backoffDelay(attempt, random = Math.random) {
  if (attempt === 0) return Math.round(random() * FIRST_RETRY_SPREAD_MS);
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

const browserClock = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (id) => clearInterval(id),
  random: () => Math.random(),
};

export class Transport {
  /**
   * `onFrame(frame)` gets every parsed frame except `pong`, `live` and `unavailable`;
   * `onOpen()` runs on each open, after unacknowledged sends went out again and before queued
   * frames; `onStatus(text, kind)` shows the connection. `WebSocket` and `clock` are the
   * browser's unless a test passes its own.
   */
  constructor({ url, onFrame, onOpen, onStatus, WebSocket = globalThis.WebSocket, clock }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onOpen = onOpen;
    this.onStatus = onStatus;
    this.WebSocket = WebSocket;
    this.clock = clock || browserClock;
    this.online = () => globalThis.navigator?.onLine !== false;
    this.ws = null;
    this.attempt = 0; // failed connects since the last open
    this.retryTimer = 0;
    this.heartbeatTimer = 0;
    this.pongTimer = 0;
    this.outbox = []; // frames (cancel) to send once connected
    this.unacked = new Map(); // key → {frame, sent}: re-sent on every open until acked
  }

  /** Connect, and watch the page's network and visibility to check the socket at once. */
  start(window, document) {
    if (window) {
      // After a network change or a sleeping tab, check the socket now rather than at the next
      // heartbeat, and skip what is left of a reconnect wait.
      window.addEventListener("online", () => this.wake());
      window.addEventListener("offline", () => this.probe());
      document.addEventListener("visibilitychange", () => {
        if (document.visibilityState === "visible") this.wake();
      });
    }
    this.connect();
  }

  connect() {
    this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    this.onStatus(this.attempt ? "Reconnecting…" : "Connecting…", "warn");
    const ws = new this.WebSocket(this.url);
    this.ws = ws;
    ws.addEventListener("open", () => ws === this.ws && this.opened());
    ws.addEventListener("message", (event) => ws === this.ws && this.received(event.data));
    ws.addEventListener("close", () => ws === this.ws && this.closed());
  }

  /** Send a frame if the socket is open; with `queue`, keep it for the next connection. */
  send(frame, { queue = false } = {}) {
    const ws = this.ws;
    if (ws && ws.readyState === OPEN) {
      ws.send(JSON.stringify(frame));
      return true;
    }
    if (queue) this.outbox.push(frame);
    return false;
  }

  /**
   * Send `frame` now if connected and again on every new connection until `acked(key)`: the
   * server answers a repeated `client_id` with the first message, so a lost ack costs nothing.
   * Returns whether it went out now.
   */
  sendUntilAcked(key, frame) {
    const entry = { frame, sent: this.send(frame) };
    this.unacked.set(key, entry);
    return entry.sent;
  }

  acked(key) {
    this.unacked.delete(key);
  }

  /**
   * Send an unacknowledged frame again in `seconds`, if it is still unacknowledged then: the
   * server refused it for now and said when to repeat it (`not_started`, `rate_limited`).
   */
  resendAfter(key, seconds) {
    const entry = this.unacked.get(key);
    if (!entry) return;
    this.clock.setTimeout(() => {
      if (this.unacked.get(key) === entry) entry.sent = this.send(entry.frame);
    }, seconds * 1000);
  }

  /** Keys of unacknowledged frames sent on the current connection, oldest first. */
  inFlight() {
    return Array.from(this.unacked).filter(([, entry]) => entry.sent).map(([key]) => key);
  }

  /** Ping; a socket that sends nothing back within PONG_TIMEOUT_MS is dropped and replaced. */
  probe() {
    if (this.pongTimer || !this.send({ type: "ping" })) return;
    this.pongTimer = this.clock.setTimeout(() => this.drop(), PONG_TIMEOUT_MS);
  }

  /** Probe a socket we have; reconnect at once if we are waiting to reconnect. */
  wake() {
    if (this.ws) {
      this.probe();
    } else if (this.retryTimer) {
      this.attempt = Math.min(this.attempt, 1);
      this.connect();
    }
  }

  /** Close and forget the socket (a test's teardown; the page never stops). */
  stop() {
    const ws = this.ws;
    this.ws = null;
    this.stopHeartbeat();
    this.clock.clearTimeout(this.retryTimer);
    this.retryTimer = 0;
    ws?.close();
  }

  opened() {
    this.attempt = 0;
    this.onStatus("Connected", "ok");
    this.startHeartbeat();
    // Unacknowledged sends first: an error without a message id that follows at once is theirs.
    for (const entry of this.unacked.values()) entry.sent = this.send(entry.frame);
    this.onOpen();
    for (const frame of this.outbox.splice(0)) this.send(frame);
  }

  received(data) {
    this.clock.clearTimeout(this.pongTimer); // anything at all shows the socket is alive
    this.pongTimer = 0;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    if (frame.type === "pong") return;
    if (frame.type === "live") {
      this.onStatus("Connected", "ok"); // live updates are back after an outage
      return;
    }
    if (frame.type === "error" && frame.message == null && frame.code === "unavailable") {
      // The server lost its live feed (Redis); it re-sends what was missed, then says `live`.
      this.onStatus(frame.detail || "Live updates are interrupted.", "warn");
      return;
    }
    this.onFrame(frame);
  }

  closed() {
    this.stopHeartbeat();
    this.ws = null;
    for (const entry of this.unacked.values()) entry.sent = false;
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.retryTimer || this.ws) return;
    const delay = backoffDelay(this.attempt, this.clock.random);
    this.attempt += 1;
    const seconds = Math.max(1, Math.round(delay / 1000));
    const why = this.online() ? "Connection lost" : "Offline";
    this.onStatus(`${why} — reconnecting in ${seconds} s…`, "warn");
    this.retryTimer = this.clock.setTimeout(() => this.connect(), delay);
  }

  /** Drop a socket that stopped answering, without waiting for its closing handshake. */
  drop() {
    this.pongTimer = 0;
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    ws.close();
    this.closed();
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.heartbeatTimer = this.clock.setInterval(() => this.probe(), HEARTBEAT_MS);
  }

  stopHeartbeat() {
    this.clock.clearInterval(this.heartbeatTimer);
    this.clock.clearTimeout(this.pongTimer);
    this.heartbeatTimer = this.pongTimer = 0;
  }
}
