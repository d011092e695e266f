// What the page holds of each reply, and what a frame about it does to that: pure data and
// functions (no DOM, no WebSocket, no timers, no clock: callers pass `now`), so every rule of
// docs/protocol.md "Sequence numbers" is unit-tested in tests/reply-state.test.mjs.

export const FINAL_STATUSES = new Set(["complete", "incomplete", "failed", "cancelled"]);
// A reply that is not final and has heard nothing for this long is resumed: the channel layer
// may drop a reply's last event (its `done`), which no later seq would reveal.
export const STALL_RESUME_MS = 15_000;
export const RESUME_DEBOUNCE_MS = 200; // one resume for a burst of out-of-order deltas
export const RESUME_REPEAT_MS = 1_500; // before asking again from the same position
export const MAX_ORPHAN_FRAMES = 500;

/**
 * A reply as the page holds it. `seq` counts code points of `text` (docs/protocol.md); a
 * server-rendered reply may hold less text than its seq says only when it is final.
 */
export function newReply({ id = null, text = "", seq = null, status = "pending", now = 0 } = {}) {
  return {
    id,
    text, // raw Markdown held so far
    seq: seq ?? codePointLength(text),
    status,
    final: FINAL_STATUSES.has(status),
    errorCode: "",
    detail: "",
    finishReason: null,
    heardAt: now, // the last frame about this reply (stall watchdog)
    lastResume: { seq: -1, at: 0 },
  };
}

/** The ack (or a `message` frame) named the reply: from now on frames about it find it. */
export function bindReply(reply, id, now) {
  reply.id = id;
  reply.heardAt = now;
}

/** Any frame about the reply shows it is alive. */
export function heard(reply, now) {
  reply.heardAt = now;
}

/**
 * Apply a `delta` {start, seq, text}. Returns what happened:
 * `ignored` (final), `duplicate` (nothing new), `appended` (overlap trimmed), or `gap` with
 * `resumeAfter`: the text between what is held and `start` is missing, ask from there.
 */
export function applyDelta(reply, frame) {
  if (reply.final) return { kind: "ignored" };
  if (frame.seq <= reply.seq) return { kind: "duplicate" };
  if (frame.start > reply.seq) return { kind: "gap", resumeAfter: reply.seq };
  reply.text += dropCodePoints(frame.text, reply.seq - frame.start);
  reply.seq = frame.seq;
  if (reply.status === "pending") reply.status = "streaming";
  return { kind: "appended" };
}

/**
 * Apply a `done` {seq, status, finish_reason}. `resume` when the end is missing (resume sends
 * the rest and `done` again); else the reply is final, its text cut back to `seq` if it held
 * more (the server's stored text is the truth).
 */
export function applyDone(reply, frame) {
  if (reply.final) return { kind: "ignored" };
  if (frame.seq > reply.seq) return { kind: "resume", resumeAfter: reply.seq };
  const trimmed = frame.seq != null && trimTo(reply, frame.seq);
  reply.final = true;
  reply.finishReason = frame.finish_reason ?? null;
  // A reply stopped by the token cap is never complete, whatever an older server calls it.
  reply.status = reply.finishReason === "length" ? "incomplete" : frame.status;
  return { kind: "final", trimmed };
}

/**
 * Apply an `error` about the reply {code, detail, seq}. `seq` is the length of the text that is
 * final: more than held → `resume` (keep the partial text, then the error again); less than
 * held → cut back to it. Without `seq` the held text stays as it is.
 */
export function applyError(reply, frame) {
  if (reply.final) return { kind: "ignored" };
  if (frame.seq != null && frame.seq > reply.seq) {
    return { kind: "resume", resumeAfter: reply.seq };
  }
  const trimmed = frame.seq != null && trimTo(reply, frame.seq);
  reply.final = true;
  reply.status = "failed";
  reply.errorCode = frame.code || "";
  reply.detail = frame.detail || "";
  return { kind: "final", trimmed };
}

/** The `superseded` reply gets no more resumes or frames. */
export function retire(reply) {
  reply.final = true;
}

/**
 * Milliseconds to wait before sending a resume: a burst of gaps is answered once (debounce,
 * unless `urgent`), and the same position is not asked for again within RESUME_REPEAT_MS.
 */
export function resumeDelay(reply, now, { urgent = false } = {}) {
  const repeated = reply.lastResume.seq === reply.seq;
  const wait = repeated ? Math.max(RESUME_REPEAT_MS - (now - reply.lastResume.at), 0) : 0;
  return urgent ? wait : Math.max(wait, RESUME_DEBOUNCE_MS);
}

/** The `resume` frame for the reply, or null when it cannot be asked for (unbound or final). */
export function resumeFrame(reply) {
  if (reply.id === null || reply.final) return null;
  return { type: "resume", message: reply.id, after_seq: reply.seq };
}

/** Remember a resume that went out, for resumeDelay's repeat guard. */
export function resumeSent(reply, now) {
  reply.lastResume = { seq: reply.seq, at: now };
}

/** After a reconnect: every bound reply that is not final. */
export function repliesToResume(replies) {
  return Array.from(replies).filter((r) => r.id !== null && !r.final);
}

/**
 * Bound, non-final replies silent for STALL_RESUME_MS; each counts as heard now, so the next
 * one for it is STALL_RESUME_MS later.
 */
export function stalledReplies(replies, now) {
  const stalled = repliesToResume(replies).filter((r) => now - r.heardAt >= STALL_RESUME_MS);
  for (const reply of stalled) reply.heardAt = now;
  return stalled;
}

/** Frames about a reply whose id the page does not know yet (it arrives with the ack). */
export class OrphanFrames {
  constructor(limit = MAX_ORPHAN_FRAMES) {
    this.limit = limit;
    this.count = 0;
    this.byReply = new Map();
  }

  /** Keep the frame for later; false when the page already keeps `limit` of them. */
  hold(frame) {
    if (this.count >= this.limit) return false;
    if (!this.byReply.has(frame.message)) this.byReply.set(frame.message, []);
    this.byReply.get(frame.message).push(frame);
    this.count += 1;
    return true;
  }

  /** The frames kept for reply `id`, in arrival order, and forget them. */
  take(id) {
    const frames = this.byReply.get(id) || [];
    this.byReply.delete(id);
    this.count -= frames.length;
    return frames;
  }
}

/** Cut the held text back to `seq` code points; true if there was more. */
function trimTo(reply, seq) {
  if (seq >= reply.seq) return false;
  reply.text = keepCodePoints(reply.text, seq);
  reply.seq = seq;
  return true;
}

export function codePointLength(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

/** `text` without its first `count` code points (seq counts code points, not UTF-16 units). */
export function dropCodePoints(text, count) {
  return text.slice(codeUnitIndex(text, count));
}

/** The first `count` code points of `text`. */
export function keepCodePoints(text, count) {
  return text.slice(0, codeUnitIndex(text, count));
}

function codeUnitIndex(text, count) {
  let index = 0;
  for (const char of text) {
    if (count-- <= 0) break;
    index += char.length;
  }
  return index;
}
