// The words the page shows for a reply's state, and the new chat's title: node --test.

import assert from "node:assert/strict";
import { test } from "node:test";

import { statusLabel, titleFrom } from "../rendering.js";
import { applyDone, applyError, newReply } from "../reply-state.js";

test("a reply stopped at the token cap says so, and never Complete", () => {
  const reply = newReply({ id: 1, text: "Hello", status: "streaming" });
  applyDone(reply, { seq: 5, status: "incomplete", finish_reason: "length" });
  assert.equal(statusLabel(reply), "Stopped at the length limit");
  assert.equal(statusLabel({ status: "incomplete" }), "Stopped at the length limit");
  assert.equal(statusLabel({ status: "complete", finishReason: "length" }), statusLabel(reply));
});

test("a reply cut off upstream says it was cut off and can be regenerated", () => {
  const reply = newReply({ id: 1, text: "Hello", status: "streaming" });
  applyError(reply, { code: "interrupted", detail: "stopped", seq: 5 });
  const label = statusLabel(reply);
  assert.match(label, /cut off/i);
  assert.match(label, /regenerate/i);
  assert.doesNotMatch(label, /complete/i);
});

test("a reply stopped by the user says Stopped", () => {
  assert.equal(statusLabel({ status: "cancelled", finishReason: "cancelled" }), "Stopped");
});

test("other states read as one word", () => {
  assert.equal(statusLabel({ status: "complete", finishReason: "stop" }), "Complete");
  assert.equal(statusLabel({ status: "failed", errorCode: "provider_unavailable" }), "Failed");
  assert.equal(statusLabel({ status: "streaming" }), "Streaming");
});

test("a reply with no text yet says it waits for the model, with its place when known", () => {
  assert.equal(statusLabel({ status: "pending" }), "Waiting for the model…");
  assert.match(statusLabel({ status: "pending", position: 3 }), /2 ahead in the queue/);
  assert.match(statusLabel({ status: "pending", position: 1 }), /next in line/);
});

test("a server-rendered article's data attributes label it the same way", () => {
  // DOMStringMap of <article data-status="failed" data-error-code="interrupted">
  const dataset = { status: "failed", errorCode: "interrupted", seq: "5" };
  assert.equal(statusLabel(dataset), statusLabel({ status: "failed", errorCode: "interrupted" }));
});

test("a new chat's title is its first 60 characters, whitespace collapsed", () => {
  assert.equal(titleFrom("  Hello\n\n  world  "), "Hello world");
  assert.equal(titleFrom("x".repeat(61)), `${"x".repeat(60)}…`);
  assert.equal(titleFrom("😀".repeat(60)), "😀".repeat(60));
});
