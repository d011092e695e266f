// Parley chat page: one WebSocket per tab (transport.js), what the page holds of each reply
// (reply-state.js) and what it shows (rendering.js), wired to the frames of docs/protocol.md.
// No framework and no build step: ES modules from 'self', so the CSP needs no inline script.

import * as replyState from "./reply-state.js";
import { View } from "./rendering.js";
import { Transport } from "./transport.js";

/** Assistant replies by message id: {state (reply-state.js), article, timers, cancelWanted}. */
const replies = new Map();
/** Ids of every message on the page, to skip `message` frames we already show. */
const knownMessages = new Set();
/** Sends not yet acknowledged, by client_id: the transport re-sends them on every connection. */
const pendingSends = new Map();
const orphans = new replyState.OrphanFrames();
let view;
let transport;

function start() {
  view = new View(document, window);
  for (const m of view.serverMessages()) {
    knownMessages.add(m.id);
    if (m.role !== "assistant") continue;
    const state = replyState.newReply({
      id: m.id,
      text: m.content,
      seq: m.seq,
      status: m.status,
      now: Date.now(),
    });
    replies.set(m.id, track(m.article, state));
  }
  view.adoptServerRendered();

  view.composer.addEventListener("submit", onSubmit);
  view.input.addEventListener("keydown", onComposerKey);
  view.messages.addEventListener("click", onMessagesClick);
  transport = new Transport({
    url: view.socketUrl(),
    onFrame: dispatch,
    onOpen,
    onStatus: (text, kind) => view.setStatus(text, kind),
  });
  transport.start(window, document);
  setInterval(resumeStalled, replyState.STALL_RESUME_MS / 3);
}

function track(article, state) {
  return { state, article, renderFrame: 0, resumeTimer: 0, cancelWanted: false };
}

/** Each connection: follow the open conversation, and resume every reply not yet final. */
function onOpen() {
  const conversation = view.currentConversation();
  if (conversation !== null) transport.send({ type: "subscribe", conversation });
  const entries = Array.from(replies.values());
  const wanted = new Set(replyState.repliesToResume(entries.map((r) => r.state)));
  for (const reply of entries) if (wanted.has(reply.state)) sendResume(reply);
}

function resumeStalled() {
  const entries = Array.from(replies.values());
  const stalled = new Set(replyState.stalledReplies(entries.map((r) => r.state), Date.now()));
  for (const reply of entries) if (stalled.has(reply.state)) sendResume(reply);
}

// --- Composer and buttons ----------------------------------------------------------------

function onComposerKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    view.composer.requestSubmit();
  }
}

function onSubmit(event) {
  event.preventDefault();
  const text = view.input.value;
  if (!text.trim() || pendingSends.size) return; // one send in flight at a time
  const send = {
    clientId: crypto.randomUUID(),
    text,
    userArticle: view.userArticle(text),
    userId: null,
    reply: null,
  };
  view.appendArticle(send.userArticle);
  const placeholder = view.assistantArticle(null, "pending");
  view.appendArticle(placeholder);
  send.reply = track(placeholder, replyState.newReply({ now: Date.now() }));
  pendingSends.set(send.clientId, send);
  view.setComposerBusy(true); // the text stays until the ack
  view.scrollToBottom();
  const frame = {
    type: "send",
    client_id: send.clientId,
    conversation: view.currentConversation(),
    text,
  };
  if (!transport.sendUntilAcked(send.clientId, frame)) {
    view.setStatus("Not connected — your message will be sent when the connection is back.", "warn");
  }
}

function onMessagesClick(event) {
  const again = event.target.closest("[data-regenerate]");
  if (again && again.dataset.regenerate) {
    // The server supersedes this reply and announces the new one (`superseded`, `message`).
    again.disabled = true;
    transport.send({ type: "regenerate", message: Number(again.dataset.regenerate) });
    return;
  }
  const button = event.target.closest("[data-stop]");
  if (!button) return;
  const article = button.closest("article.message");
  const reply =
    Array.from(replies.values()).find((r) => r.article === article) ||
    Array.from(pendingSends.values()).find((s) => s.reply.article === article)?.reply;
  if (!reply || reply.state.final) return;
  button.disabled = true;
  if (reply.state.id === null) reply.cancelWanted = true; // sent once the ack names the reply
  else transport.send({ type: "cancel", message: reply.state.id }, { queue: true });
}

// --- Frames from the server --------------------------------------------------------------

function dispatch(frame) {
  switch (frame.type) {
    case "ack":
      return onAck(frame);
    case "message":
      return onMessage(frame);
    case "delta":
      return withReply(frame, onDelta);
    case "done":
      return withReply(frame, onDone);
    case "error":
      return frame.message == null ? onFrameError(frame) : withReply(frame, onReplyError);
    case "superseded":
      return onSuperseded(frame);
    default:
      return; // a type this page does not know
  }
}

function withReply(frame, handler) {
  const reply = replies.get(frame.message);
  if (reply) {
    replyState.heard(reply.state, Date.now());
    handler(reply, frame);
  } else {
    orphans.hold(frame); // about a reply we do not know yet: its ack is on the way
  }
}

function bindReply(reply, id) {
  if (reply.state.id === id) return;
  replyState.bindReply(reply.state, id, Date.now());
  view.bindArticle(reply.article, id);
  replies.set(id, reply);
  knownMessages.add(id);
  if (reply.cancelWanted) transport.send({ type: "cancel", message: id }, { queue: true });
  for (const frame of orphans.take(id)) dispatch(frame);
}

function onAck(frame) {
  const send = pendingSends.get(frame.client_id);
  if (!send) return;
  pendingSends.delete(frame.client_id);
  transport.acked(frame.client_id);
  send.userArticle.dataset.messageId = String(frame.message);
  knownMessages.add(frame.message);
  if (view.currentConversation() === null) view.conversationStarted(frame.conversation, send.text);
  bindReply(send.reply, frame.reply);
  if (view.input.value === send.text) view.input.value = "";
  view.setComposerBusy(false);
  view.input.focus();
  if (view.statusKind() !== "error") view.setStatus("Connected", "ok");
}

function onMessage(frame) {
  if (frame.conversation !== view.currentConversation() || knownMessages.has(frame.message)) {
    return;
  }
  // Our own send, announced before its ack: attach the ids to what we already show.
  const ours = Array.from(pendingSends.values());
  const mine = ours.find((s) => frame.role === "user" && s.clientId === frame.client_id);
  if (mine) {
    mine.userId = frame.message;
    mine.userArticle.dataset.messageId = String(frame.message);
    knownMessages.add(frame.message);
    return;
  }
  const answered = ours.find((s) => frame.role === "assistant" && s.userId === frame.reply_to);
  if (answered) {
    bindReply(answered.reply, frame.message);
    return;
  }
  // Another tab's message.
  knownMessages.add(frame.message);
  const stick = view.isAtBottom();
  if (frame.role === "user") {
    view.appendArticle(view.userArticle(frame.content, frame.message));
  } else if (frame.role === "assistant") {
    const state = replyState.newReply({
      id: frame.message,
      text: frame.content || "",
      status: frame.status,
      now: Date.now(),
    });
    const reply = track(view.assistantArticle(frame.message, frame.status), state);
    replies.set(frame.message, reply);
    view.appendArticle(reply.article);
    renderNow(reply);
    for (const orphan of orphans.take(frame.message)) dispatch(orphan);
  }
  if (stick) view.scrollToBottom();
}

function onDelta(reply, frame) {
  const outcome = replyState.applyDelta(reply.state, frame);
  if (outcome.kind === "gap") {
    requestResume(reply); // the text between what we hold and frame.start is missing
  } else if (outcome.kind === "appended") {
    clearTimeout(reply.resumeTimer);
    reply.resumeTimer = 0;
    if (reply.article.dataset.status !== reply.state.status) {
      view.showReplyStatus(reply.article, reply.state);
    }
    scheduleRender(reply);
  }
}

function onDone(reply, frame) {
  const outcome = replyState.applyDone(reply.state, frame);
  if (outcome.kind === "resume") {
    requestResume(reply, { urgent: true }); // final, but we miss the end: resume sends it
  } else if (outcome.kind === "final") {
    clearTimeout(reply.resumeTimer);
    view.showReplyStatus(reply.article, reply.state);
    view.showReplyFacts(reply.article, frame);
    renderNow(reply);
  }
}

function onReplyError(reply, frame) {
  const outcome = replyState.applyError(reply.state, frame);
  if (outcome.kind === "resume") {
    requestResume(reply, { urgent: true }); // keep the partial text, then the error again
  } else if (outcome.kind === "final") {
    clearTimeout(reply.resumeTimer);
    view.showReplyStatus(reply.article, reply.state);
    renderNow(reply);
  }
}

/** A regenerate or an edit (e.g. in another tab) replaced these messages: take them away. */
function onSuperseded(frame) {
  if (frame.conversation !== view.currentConversation()) return;
  for (const id of frame.messages || []) {
    const reply = replies.get(id);
    if (reply) {
      replyState.retire(reply.state); // no more resumes or renders for it
      clearTimeout(reply.resumeTimer);
      if (reply.renderFrame) cancelAnimationFrame(reply.renderFrame);
      replies.delete(id);
    }
    view.removeMessage(id);
  }
}

/** An error about a frame rather than a reply. A non-final send was probably refused. */
function onFrameError(frame) {
  view.setStatus(`Error: ${frame.detail || frame.code}`, "error");
  const key = transport.inFlight().find((k) => pendingSends.has(k));
  if (key === undefined || frame.retryable) return;
  // Give the text back to the composer for editing; drop the optimistic articles.
  const refused = pendingSends.get(key);
  pendingSends.delete(key);
  transport.acked(key);
  refused.userArticle.remove();
  refused.reply.article.remove();
  view.setComposerBusy(false);
  view.input.focus();
}

// --- Resume and render scheduling --------------------------------------------------------

function requestResume(reply, { urgent = false } = {}) {
  if (reply.resumeTimer) return;
  const delay = replyState.resumeDelay(reply.state, Date.now(), { urgent });
  reply.resumeTimer = setTimeout(() => {
    reply.resumeTimer = 0;
    sendResume(reply);
  }, delay);
}

function sendResume(reply) {
  const frame = replyState.resumeFrame(reply.state);
  if (frame && transport.send(frame)) replyState.resumeSent(reply.state, Date.now());
}

function scheduleRender(reply) {
  if (reply.renderFrame) return;
  reply.renderFrame = requestAnimationFrame(() => {
    reply.renderFrame = 0;
    view.renderReplyText(reply.article, reply.state);
  });
}

function renderNow(reply) {
  if (reply.renderFrame) {
    cancelAnimationFrame(reply.renderFrame);
    reply.renderFrame = 0;
  }
  view.renderReplyText(reply.article, reply.state);
}

if (document.getElementById("chat")) start();
