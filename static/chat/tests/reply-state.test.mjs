// The page's reply state against docs/protocol.md "Sequence numbers": node --test (make jstest).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  OrphanFrames,
  RESUME_DEBOUNCE_MS,
  RESUME_REPEAT_MS,
  STALL_RESUME_MS,
  applyDelta,
  applyDone,
  applyError,
  bindReply,
  codePointLength,
  dropCodePoints,
  heard,
  keepCodePoints,
  newReply,
  repliesToResume,
  resumeDelay,
  resumeFrame,
  resumeSent,
  retire,
  stalledReplies,
} from "../reply-state.js";

function streaming(text, id = 7) {
  return newReply({ id, text, status: "streaming" });
}

function delta(start, text, message = 7) {
  return { type: "delta", message, start, seq: start + codePointLength(text), text };
}

function done(seq, extra = {}) {
  return { type: "done", message: 7, seq, status: "complete", finish_reason: "stop", ...extra };
}

describe("deltas", () => {
  test("a delta that starts where the reply ends is appended", () => {
    const reply = streaming("Hello");
    assert.deepEqual(applyDelta(reply, delta(5, ", world")), { kind: "appended" });
    assert.equal(reply.text, "Hello, world");
    assert.equal(reply.seq, 12);
  });

  test("the first delta turns a pending reply into a streaming one", () => {
    const reply = newReply({ id: 7 });
    applyDelta(reply, delta(0, "Hi"));
    assert.equal(reply.status, "streaming");
  });

  test("a delta the reply already holds is a duplicate and changes nothing", () => {
    const reply = streaming("Hello, world");
    assert.deepEqual(applyDelta(reply, delta(5, ", world")), { kind: "duplicate" });
    assert.deepEqual(applyDelta(reply, delta(0, "Hello")), { kind: "duplicate" });
    assert.equal(reply.text, "Hello, world");
    assert.equal(reply.seq, 12);
  });

  test("a delta overlapping the held text adds only what is new", () => {
    const reply = streaming("Hello, wo");
    assert.deepEqual(applyDelta(reply, delta(5, ", world!")), { kind: "appended" });
    assert.equal(reply.text, "Hello, world!");
    assert.equal(reply.seq, 13);
  });

  test("overlaps are counted in code points, not UTF-16 units", () => {
    const reply = streaming("a😀b");
    assert.equal(reply.seq, 3);
    applyDelta(reply, delta(1, "😀b😀c"));
    assert.equal(reply.text, "a😀b😀c");
    assert.equal(reply.seq, 5);
  });

  test("a gap asks to resume after what the reply holds and keeps the held text", () => {
    const reply = streaming("Hello");
    assert.deepEqual(applyDelta(reply, delta(9, "more")), { kind: "gap", resumeAfter: 5 });
    assert.equal(reply.text, "Hello");
    assert.equal(reply.seq, 5);
  });

  test("a final reply ignores deltas", () => {
    const reply = streaming("Hello");
    applyDone(reply, done(5));
    assert.deepEqual(applyDelta(reply, delta(5, " again")), { kind: "ignored" });
    assert.equal(reply.text, "Hello");
  });
});

describe("done", () => {
  test("done at the held seq makes the reply final with its status", () => {
    const reply = streaming("Hello");
    assert.deepEqual(applyDone(reply, done(5)), { kind: "final", trimmed: false });
    assert.equal(reply.final, true);
    assert.equal(reply.status, "complete");
    assert.equal(reply.finishReason, "stop");
  });

  test("done past the held text asks to resume and is not final yet", () => {
    const reply = streaming("Hello");
    assert.deepEqual(applyDone(reply, done(9)), { kind: "resume", resumeAfter: 5 });
    assert.equal(reply.final, false);
    assert.equal(reply.status, "streaming");
  });

  test("done short of the held text cuts it back to the server's seq", () => {
    const reply = streaming("Hello, world");
    assert.deepEqual(applyDone(reply, done(5)), { kind: "final", trimmed: true });
    assert.equal(reply.text, "Hello");
    assert.equal(reply.seq, 5);
  });

  test("a reply stopped by the token cap is incomplete, not complete", () => {
    const reply = streaming("Hello");
    applyDone(reply, done(5, { status: "incomplete", finish_reason: "length" }));
    assert.equal(reply.final, true);
    assert.equal(reply.status, "incomplete");
    assert.equal(reply.finishReason, "length");
  });

  test("a length finish is incomplete even if the status says complete", () => {
    const reply = streaming("Hello");
    applyDone(reply, done(5, { status: "complete", finish_reason: "length" }));
    assert.equal(reply.status, "incomplete");
  });

  test("a cancelled reply is final and keeps its partial text", () => {
    const reply = streaming("Hel");
    applyDone(reply, done(3, { status: "cancelled", finish_reason: "cancelled" }));
    assert.equal(reply.status, "cancelled");
    assert.equal(reply.text, "Hel");
  });

  test("a second done is ignored", () => {
    const reply = streaming("Hello");
    applyDone(reply, done(5));
    assert.deepEqual(applyDone(reply, done(5, { status: "cancelled" })), { kind: "ignored" });
    assert.equal(reply.status, "complete");
  });
});

describe("errors", () => {
  const interrupted = (seq) => ({
    type: "error",
    message: 7,
    code: "interrupted",
    detail: "The reply stopped before it was complete.",
    retryable: true,
    seq,
  });

  test("an error at the held seq fails the reply and keeps the text", () => {
    const reply = streaming("Hello");
    assert.deepEqual(applyError(reply, interrupted(5)), { kind: "final", trimmed: false });
    assert.equal(reply.final, true);
    assert.equal(reply.status, "failed");
    assert.equal(reply.errorCode, "interrupted");
    assert.equal(reply.detail, "The reply stopped before it was complete.");
    assert.equal(reply.text, "Hello");
  });

  test("an error with a seq smaller than held cuts the text back to the stored text", () => {
    const reply = streaming("Hello, world😀!");
    assert.deepEqual(applyError(reply, interrupted(7)), { kind: "final", trimmed: true });
    assert.equal(reply.text, "Hello, ");
    assert.equal(reply.seq, 7);
  });

  test("a trim counts code points", () => {
    const reply = streaming("😀😀😀😀");
    applyError(reply, interrupted(2));
    assert.equal(reply.text, "😀😀");
  });

  test("an error past the held text asks to resume first", () => {
    const reply = streaming("Hello");
    assert.deepEqual(applyError(reply, interrupted(9)), { kind: "resume", resumeAfter: 5 });
    assert.equal(reply.final, false);
  });

  test("an error without seq fails the reply and keeps what it holds", () => {
    const reply = streaming("Hello");
    const frame = { type: "error", message: 7, code: "internal", detail: "", retryable: false };
    assert.deepEqual(applyError(reply, frame), { kind: "final", trimmed: false });
    assert.equal(reply.text, "Hello");
    assert.equal(reply.errorCode, "internal");
  });

  test("an error after done is ignored", () => {
    const reply = streaming("Hello");
    applyDone(reply, done(5));
    assert.deepEqual(applyError(reply, interrupted(2)), { kind: "ignored" });
    assert.equal(reply.text, "Hello");
    assert.equal(reply.status, "complete");
  });
});

describe("resume", () => {
  test("a resume frame asks after what the reply holds", () => {
    assert.deepEqual(resumeFrame(streaming("Hello")), {
      type: "resume",
      message: 7,
      after_seq: 5,
    });
  });

  test("an unbound or final reply cannot be resumed", () => {
    assert.equal(resumeFrame(newReply()), null);
    const reply = streaming("Hello");
    applyDone(reply, done(5));
    assert.equal(resumeFrame(reply), null);
  });

  test("a gap waits for the debounce; done or error past the text asks at once", () => {
    const reply = streaming("Hello");
    assert.equal(resumeDelay(reply, 1_000), RESUME_DEBOUNCE_MS);
    assert.equal(resumeDelay(reply, 1_000, { urgent: true }), 0);
  });

  test("the same position is not asked for again within the repeat interval", () => {
    const reply = streaming("Hello");
    resumeSent(reply, 1_000);
    assert.equal(resumeDelay(reply, 1_500, { urgent: true }), RESUME_REPEAT_MS - 500);
    assert.equal(resumeDelay(reply, 1_000 + RESUME_REPEAT_MS, { urgent: true }), 0);
    applyDelta(reply, delta(5, "!"));
    assert.equal(resumeDelay(reply, 1_500, { urgent: true }), 0); // a new position
  });

  test("after a reconnect every bound reply that is not final is resumed", () => {
    const running = streaming("a", 1);
    const ended = streaming("b", 2);
    applyDone(ended, { ...done(1), message: 2 });
    const unbound = newReply();
    const bound = newReply();
    bindReply(bound, 4, 0);
    assert.deepEqual(repliesToResume([running, ended, unbound, bound]), [running, bound]);
  });

  test("a reply silent for 15 s is resumed, then not again for another 15 s", () => {
    assert.equal(STALL_RESUME_MS, 15_000);
    const quiet = newReply({ id: 1, status: "streaming", now: 0 });
    const chatty = newReply({ id: 2, status: "streaming", now: 0 });
    heard(chatty, 10_000);
    assert.deepEqual(stalledReplies([quiet, chatty], 14_999), []);
    assert.deepEqual(stalledReplies([quiet, chatty], 15_000), [quiet]);
    assert.deepEqual(stalledReplies([quiet, chatty], 20_000), []);
    assert.deepEqual(stalledReplies([quiet, chatty], 25_000), [chatty]);
    assert.deepEqual(stalledReplies([quiet, chatty], 30_000), [quiet]);
  });

  test("final and superseded replies are never resumed", () => {
    const ended = newReply({ id: 1, text: "x", status: "complete", now: 0 });
    const gone = newReply({ id: 2, status: "streaming", now: 0 });
    retire(gone);
    assert.deepEqual(stalledReplies([ended, gone], 60_000), []);
    assert.deepEqual(repliesToResume([ended, gone]), []);
  });
});

describe("replies as the page starts with them", () => {
  test("a server-rendered reply keeps the seq the server saved", () => {
    const reply = newReply({ id: 3, text: "Hel", seq: 3, status: "streaming" });
    applyDelta(reply, delta(3, "lo", 3));
    assert.equal(reply.text, "Hello");
  });

  test("a final status makes the reply final", () => {
    for (const status of ["complete", "incomplete", "failed", "cancelled"]) {
      assert.equal(newReply({ status }).final, true, status);
    }
    for (const status of ["pending", "streaming"]) {
      assert.equal(newReply({ status }).final, false, status);
    }
  });
});

describe("frames before the ack", () => {
  test("are kept per reply, in order, and handed over once", () => {
    const orphans = new OrphanFrames();
    orphans.hold(delta(0, "a", 9));
    orphans.hold(delta(0, "x", 8));
    orphans.hold(delta(1, "b", 9));
    assert.deepEqual(
      orphans.take(9).map((f) => f.text),
      ["a", "b"],
    );
    assert.deepEqual(orphans.take(9), []);
    assert.equal(orphans.count, 1);
  });

  test("are capped, so a flood of unknown ids cannot grow the page without bound", () => {
    const orphans = new OrphanFrames(2);
    assert.equal(orphans.hold(delta(0, "a", 1)), true);
    assert.equal(orphans.hold(delta(0, "b", 2)), true);
    assert.equal(orphans.hold(delta(0, "c", 3)), false);
    orphans.take(1);
    assert.equal(orphans.hold(delta(0, "c", 3)), true);
  });
});

describe("code points", () => {
  test("drop and keep split at code points", () => {
    assert.equal(dropCodePoints("😀ab", 1), "ab");
    assert.equal(keepCodePoints("😀ab", 1), "😀");
    assert.equal(dropCodePoints("ab", 0), "ab");
    assert.equal(dropCodePoints("ab", 5), "");
    assert.equal(keepCodePoints("ab", 5), "ab");
    assert.equal(codePointLength("a😀"), 2);
  });
});
