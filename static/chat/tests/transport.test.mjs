// The page's socket handling with a scripted WebSocket and a hand-driven clock: node --test.
// (The real socket, through Daphne, is exercised by tests/browser/test_chat_page.py.)

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  BACKOFF_FIRST_MS,
  BACKOFF_MAX_MS,
  FIRST_RETRY_SPREAD_MS,
  HEARTBEAT_MS,
  PONG_TIMEOUT_MS,
  Transport,
  backoffDelay,
} from "../transport.js";

/** Timers that run only when the test advances time. */
class ManualClock {
  constructor() {
    this.now = 0;
    this.nextId = 1;
    this.timers = new Map(); // id → {at, fn, every}
    this.random = () => 0.5;
  }

  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.now + ms, fn, every: 0 });
    return id;
  }

  setInterval(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.now + ms, fn, every: ms });
    return id;
  }

  clearTimeout(id) {
    this.timers.delete(id);
  }

  clearInterval(id) {
    this.timers.delete(id);
  }

  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.timers].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at);
      if (!due.length) break;
      const [id, timer] = due[0];
      this.now = timer.at;
      if (timer.every) timer.at += timer.every;
      else this.timers.delete(id);
      timer.fn();
    }
    this.now = end;
  }
}

/** A WebSocket the test opens, feeds and closes; it records what the page sent. */
class ScriptedSocket {
  static made = [];

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.listeners = {};
    ScriptedSocket.made.push(this);
  }

  addEventListener(type, fn) {
    (this.listeners[type] ||= []).push(fn);
  }

  send(data) {
    this.sent.push(JSON.parse(data));
  }

  close() {
    this.readyState = 3;
  }

  open() {
    this.readyState = 1;
    for (const fn of this.listeners.open || []) fn({});
  }

  receive(frame) {
    const data = typeof frame === "string" ? frame : JSON.stringify(frame);
    for (const fn of this.listeners.message || []) fn({ data });
  }

  lose() {
    this.readyState = 3;
    for (const fn of this.listeners.close || []) fn({});
  }

  /** What a browser reports for a handshake answered with an HTTP error (503 + Retry-After
   * from a busy replica): `error`, then `close` with 1006; the status is not exposed. */
  refuse() {
    this.readyState = 3;
    for (const fn of this.listeners.error || []) fn({});
    for (const fn of this.listeners.close || []) fn({ code: 1006, wasClean: false });
  }
}

function setUp({ onOpen = () => {} } = {}) {
  ScriptedSocket.made = [];
  const clock = new ManualClock();
  const frames = [];
  const statuses = [];
  const transport = new Transport({
    url: "ws://parley.test/ws/chat/",
    onFrame: (frame) => frames.push(frame),
    onOpen: () => onOpen(transport),
    onStatus: (text, kind) => statuses.push([text, kind]),
    WebSocket: ScriptedSocket,
    clock,
  });
  transport.online = () => true;
  transport.start();
  const socket = () => ScriptedSocket.made.at(-1);
  return { clock, frames, statuses, transport, socket };
}

test("the first retry spreads over 0-10 s, then backoff doubles from 1 s to at most 10 s", () => {
  // A dead replica's pages come back spread over 10 s, not all within half a second.
  assert.equal(backoffDelay(0, () => 0), 0);
  assert.equal(backoffDelay(0, () => 1), FIRST_RETRY_SPREAD_MS);
  assert.equal(backoffDelay(1, () => 0), BACKOFF_FIRST_MS);
  assert.equal(backoffDelay(1, () => 1), BACKOFF_FIRST_MS * 2);
  assert.equal(backoffDelay(3, () => 1), BACKOFF_FIRST_MS * 8);
  assert.equal(backoffDelay(20, () => 1), BACKOFF_MAX_MS);
  assert.equal(backoffDelay(20, () => 0), BACKOFF_MAX_MS / 2);
});

test("on open: unacknowledged sends, then the page's frames, then queued frames", () => {
  const { transport, socket } = setUp({
    onOpen: (t) => t.send({ type: "subscribe", conversation: 3 }),
  });
  assert.equal(transport.sendUntilAcked("c-1", { type: "send", client_id: "c-1" }), false);
  assert.equal(transport.send({ type: "cancel", message: 9 }, { queue: true }), false);
  assert.equal(transport.send({ type: "regenerate", message: 9 }), false); // not queued
  socket().open();
  assert.deepEqual(
    socket().sent.map((f) => f.type),
    ["send", "subscribe", "cancel"],
  );
  assert.deepEqual(transport.inFlight(), ["c-1"]);
});

test("a send is repeated on every new connection until it is acknowledged", () => {
  const { clock, transport, socket } = setUp();
  socket().open();
  transport.sendUntilAcked("c-1", { type: "send", client_id: "c-1" });
  socket().lose();
  assert.deepEqual(transport.inFlight(), []); // not sent on any live connection
  clock.advance(FIRST_RETRY_SPREAD_MS);
  socket().open();
  assert.deepEqual(socket().sent, [{ type: "send", client_id: "c-1" }]);
  transport.acked("c-1");
  socket().lose();
  clock.advance(FIRST_RETRY_SPREAD_MS);
  socket().open();
  assert.deepEqual(socket().sent, []);
});

test("a send refused for now is sent again when the server said, unless acknowledged by then", () => {
  const { clock, transport, socket } = setUp();
  socket().open();
  transport.sendUntilAcked("c-1", { type: "send", client_id: "c-1" });
  transport.sendUntilAcked("c-2", { type: "send", client_id: "c-2" });
  transport.resendAfter("c-1", 5); // e.g. `not_started` with retry_after 5
  transport.resendAfter("c-2", 5);
  transport.resendAfter("c-3", 5); // not in flight: nothing to send
  transport.acked("c-2"); // its ack came meanwhile
  clock.advance(4999);
  assert.equal(socket().sent.length, 2);
  clock.advance(1);
  assert.deepEqual(socket().sent.slice(2), [{ type: "send", client_id: "c-1" }]);
  assert.deepEqual(transport.inFlight(), ["c-1"]);
});

test("a lost connection reconnects after a backoff that grows until one opens", () => {
  const { clock, statuses, socket } = setUp();
  socket().open();
  socket().lose();
  assert.deepEqual(statuses.at(-1), ["Connection lost — reconnecting in 5 s…", "warn"]);
  clock.advance(4999); // random 0.5: the first wait is 5 s
  assert.equal(ScriptedSocket.made.length, 1);
  clock.advance(1);
  assert.equal(ScriptedSocket.made.length, 2);
  assert.deepEqual(statuses.at(-1), ["Reconnecting…", "warn"]);
  socket().lose();
  clock.advance(749); // the second wait is 750 ms
  assert.equal(ScriptedSocket.made.length, 2);
  clock.advance(1);
  assert.equal(ScriptedSocket.made.length, 3);
  socket().open();
  assert.deepEqual(statuses.at(-1), ["Connected", "ok"]);
});

test("a socket that does not answer a ping is dropped and replaced", () => {
  const { clock, transport, socket } = setUp();
  const first = socket();
  first.open();
  clock.advance(HEARTBEAT_MS);
  assert.deepEqual(first.sent.at(-1), { type: "ping" });
  clock.advance(PONG_TIMEOUT_MS - 1);
  assert.equal(transport.ws, first);
  clock.advance(1);
  assert.equal(first.readyState, 3);
  clock.advance(FIRST_RETRY_SPREAD_MS);
  assert.notEqual(socket(), first);
  transport.stop();
});

test("any frame counts as an answer to the ping", () => {
  const { clock, transport, socket } = setUp();
  const first = socket();
  first.open();
  clock.advance(HEARTBEAT_MS);
  first.receive({ type: "delta", message: 1, start: 0, seq: 1, text: "a" });
  clock.advance(PONG_TIMEOUT_MS);
  assert.equal(transport.ws, first);
  transport.stop();
});

test("the server's outage and recovery show as status; other frames go to the page", () => {
  const { frames, statuses, socket } = setUp();
  socket().open();
  socket().receive({
    type: "error",
    message: null,
    code: "unavailable",
    detail: "Live updates paused.",
  });
  assert.deepEqual(statuses.at(-1), ["Live updates paused.", "warn"]);
  socket().receive({ type: "live" });
  assert.deepEqual(statuses.at(-1), ["Connected", "ok"]);
  socket().receive({ type: "pong" });
  socket().receive("not json");
  socket().receive({ type: "error", message: null, code: "bad_frame", detail: "?" });
  socket().receive({ type: "done", message: 4, seq: 0, status: "complete" });
  assert.deepEqual(
    frames.map((f) => f.type),
    ["error", "done"],
  );
});

test("coming back online skips the rest of a reconnect wait", () => {
  const { clock, transport, socket } = setUp();
  socket().open();
  socket().lose();
  clock.advance(FIRST_RETRY_SPREAD_MS); // reconnects, fails again: another wait
  socket().lose();
  assert.equal(ScriptedSocket.made.length, 2);
  transport.wake();
  assert.equal(ScriptedSocket.made.length, 3);
  transport.stop();
});

test("a refused handshake (503 from a busy replica) backs off, jittered, until one opens", () => {
  // After a replica dies its pages reconnect to a survivor that admits handshakes in turn and
  // answers the rest 503 (docs/protocol.md): each refusal must make the page wait longer, at a
  // random point of the window, so thousands of pages do not come back in step.
  const { clock, socket, transport } = setUp();
  socket().open();
  socket().lose(); // the replica died: the first wait is 0-10 s (random 0.5: 5 s)
  clock.advance(FIRST_RETRY_SPREAD_MS / 2);
  const draws = [0.9, 0.1, 0.9, 0.1, 0.9, 0.1];
  const waits = [];
  for (const draw of draws) {
    clock.random = () => draw;
    const made = ScriptedSocket.made.length;
    socket().refuse();
    const started = clock.now;
    while (ScriptedSocket.made.length === made) clock.advance(1);
    waits.push(clock.now - started);
  }
  const expected = draws.map((draw, index) => backoffDelay(index + 1, () => draw));
  assert.deepEqual(waits, expected);
  // Windows double from 0.5-1 s up to 5-10 s; the draw picks the point in each.
  assert.deepEqual(expected, [950, 1100, 3800, 4400, 9500, 5500]);
  socket().open();
  assert.equal(transport.attempt, 0); // an open socket starts the count again
  socket().lose();
  clock.random = () => 1;
  const made = ScriptedSocket.made.length;
  clock.advance(FIRST_RETRY_SPREAD_MS);
  assert.equal(ScriptedSocket.made.length, made + 1); // again spread over the first 10 s
});
