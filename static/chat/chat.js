// Parley chat page: one WebSocket per tab, replies streamed as Markdown, reconnect and resume.
// The wire protocol is docs/protocol.md. No framework and no build step: an ES module that the
// page loads after the vendored markdown-it, DOMPurify and highlight.js (deferred scripts).

const FINAL_STATUSES = new Set(["complete", "incomplete", "failed", "cancelled"]);
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const HEARTBEAT_MS = 25_000;
const PONG_TIMEOUT_MS = 10_000;
const RESUME_DEBOUNCE_MS = 200; // one resume for a burst of out-of-order deltas
const RESUME_REPEAT_MS = 1_500; // before asking again from the same position
// A reply that is not final and has heard nothing for this long is resumed: the channel layer
// may drop a reply's last event (its `done`), which no later seq would reveal.
const STALL_RESUME_MS = 15_000;
const STICKY_BOTTOM_PX = 48;
const MAX_ORPHAN_FRAMES = 500;

// The same allow-list as chat/rendering.py (ALLOWED_TAGS / ALLOWED_ATTRIBUTES), so a reply
// looks the same streamed and reloaded, and model output never becomes live HTML or script.
const ALLOWED_TAGS = [
  "p", "br", "hr", "pre", "code", "em", "strong", "del", "blockquote", "ul", "ol", "li",
  "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td",
];
const ALLOWED_ATTRIBUTES = { a: ["href", "title"], code: ["class"], ol: ["start"] };
// http(s), mailto and relative URLs; no javascript:, data: or other schemes.
const SAFE_URL = /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i;
const PURIFY_CONFIG = {
  ALLOWED_TAGS,
  ALLOWED_ATTR: ["href", "title", "class", "start"],
  FORBID_ATTR: ["style"],
  ALLOWED_URI_REGEXP: SAFE_URL,
  ALLOW_DATA_ATTR: false,
  ALLOW_ARIA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

const chat = document.getElementById("chat");

// --- Page state ------------------------------------------------------------------------------

const page = {
  messages: null, // #messages
  status: null, // #status
  composer: null, // #composer
  input: null, // #composer-text
  sendButton: null, // #send-button
  markdown: null, // markdown-it instance, or null if the library failed to load
};

/** Assistant replies by message id: {id, article, body, text, seq, final, ...}. */
const replies = new Map();
/** Ids of every message on the page, to skip `message` frames we already show. */
const knownMessages = new Set();
/** Sends not yet acknowledged, by client_id (re-sent with the same id after a reconnect). */
const pendingSends = new Map();
/** Frames about a reply whose id we do not know yet (it arrives with the ack). */
const orphanFrames = new Map();
let orphanCount = 0;

const socket = {
  ws: null,
  attempt: 0, // failed connects since the last open
  retryTimer: 0,
  heartbeatTimer: 0,
  pongTimer: 0,
  outbox: [], // frames (cancel) to send once connected
};

function start() {
  page.messages = document.getElementById("messages");
  page.status = document.getElementById("status");
  page.composer = document.getElementById("composer");
  page.input = document.getElementById("composer-text");
  page.sendButton = document.getElementById("send-button");
  page.markdown = createMarkdown();

  for (const article of page.messages.querySelectorAll("article.message[data-message-id]")) {
    adoptServerMessage(article);
  }
  highlightWithin(page.messages, { auto: true });
  scrollToBottom();

  page.composer.addEventListener("submit", onSubmit);
  page.input.addEventListener("keydown", onComposerKey);
  page.messages.addEventListener("click", onMessagesClick);
  // After a network change or a sleeping tab, check the socket at once rather than at the
  // next heartbeat, and skip what is left of a reconnect wait.
  window.addEventListener("online", () => (socket.ws ? probeSocket() : reconnectNow()));
  window.addEventListener("offline", () => probeSocket());
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") socket.ws ? probeSocket() : reconnectNow();
  });
  connect();
  setInterval(resumeStalledReplies, STALL_RESUME_MS / 3);
}

/** Resume every bound, non-final reply that has been silent for STALL_RESUME_MS. */
function resumeStalledReplies() {
  const now = Date.now();
  for (const reply of replies.values()) {
    if (reply.final || reply.id === null || now - reply.heardAt < STALL_RESUME_MS) continue;
    reply.heardAt = now;
    sendResume(reply);
  }
}

function currentConversation() {
  const value = chat.dataset.conversation;
  return value ? Number(value) : null;
}

// --- Markdown ------------------------------------------------------------------------------

function createMarkdown() {
  if (typeof window.markdownit !== "function" || !window.DOMPurify) return null;
  // Same parser settings as the server (chat/rendering.py).
  return window
    .markdownit("commonmark", { html: false, linkify: false })
    .enable(["table", "strikethrough"]);
}

/** Render raw model text into `target` as sanitized Markdown (or plain text as a fallback). */
function renderMarkdown(target, text, { final }) {
  if (!page.markdown) {
    const p = document.createElement("p");
    p.className = "plain";
    p.textContent = text;
    target.replaceChildren(p);
    return;
  }
  const fragment = window.DOMPurify.sanitize(page.markdown.render(text), PURIFY_CONFIG);
  tidyAttributes(fragment);
  target.replaceChildren(fragment);
  highlightWithin(target, { auto: final });
}

/** Per-tag attribute allow-list, `language-xyz` classes only, and safe rel on links. */
function tidyAttributes(root) {
  for (const element of root.querySelectorAll("*")) {
    const tag = element.localName;
    const allowed = ALLOWED_ATTRIBUTES[tag] || [];
    for (const { name } of Array.from(element.attributes)) {
      if (!allowed.includes(name)) element.removeAttribute(name);
    }
    if (tag === "code" && element.hasAttribute("class")) {
      const kept = Array.from(element.classList).filter((c) => /^language-[a-z0-9]+$/i.test(c));
      if (kept.length) element.className = kept.join(" ");
      else element.removeAttribute("class");
    }
    if (tag === "a") element.setAttribute("rel", "noopener noreferrer nofollow");
  }
}

/** Highlight code blocks; auto-detecting a language is costly, so only for final text. */
function highlightWithin(root, { auto }) {
  const hljs = window.hljs;
  if (!hljs) return;
  for (const code of root.querySelectorAll("pre code")) {
    if (code.classList.contains("hljs")) continue;
    const languageClass = Array.from(code.classList).find((c) => c.startsWith("language-"));
    const language = languageClass ? languageClass.slice("language-".length) : null;
    if (language ? hljs.getLanguage(language) : auto) {
      hljs.highlightElement(code);
    } else {
      code.classList.add("hljs"); // themed, just not coloured
    }
  }
}

// --- Messages in the DOM -----------------------------------------------------------------

function adoptServerMessage(article) {
  const id = Number(article.dataset.messageId);
  knownMessages.add(id);
  if (article.dataset.role !== "assistant") return;
  const reply = newReply(article);
  reply.id = id;
  reply.seq = Number(article.dataset.seq || 0);
  reply.text = article.dataset.content || "";
  reply.final = FINAL_STATUSES.has(article.dataset.status);
  replies.set(id, reply);
}

function newReply(article) {
  return {
    id: null,
    article,
    body: article.querySelector(".message__body"),
    text: "", // raw Markdown held so far
    seq: 0, // code points held (docs/protocol.md)
    final: false,
    renderFrame: 0,
    resumeTimer: 0,
    lastResume: { seq: -1, at: 0 },
    heardAt: Date.now(), // the last frame about this reply (stall watchdog)
    cancelWanted: false,
  };
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function userArticle(text, id) {
  const article = element("article", "message message--user");
  article.dataset.messageId = id ?? "";
  article.dataset.role = "user";
  article.dataset.status = "complete";
  const body = element("div", "message__body");
  body.append(element("p", "plain", text));
  article.append(body);
  return article;
}

function assistantArticle(id, status) {
  const article = element("article", "message message--assistant");
  article.dataset.messageId = id ?? "";
  article.dataset.role = "assistant";
  article.dataset.status = status;
  article.dataset.seq = "0";
  const meta = element("footer", "message__meta");
  meta.append(element("span", "message__status", status));
  const stop = element("button", "stop", "Stop");
  stop.type = "button";
  stop.dataset.stop = id ?? "";
  stop.hidden = FINAL_STATUSES.has(status);
  const regenerate = element("button", "regenerate", "Regenerate");
  regenerate.type = "button";
  regenerate.dataset.regenerate = id ?? "";
  regenerate.hidden = !FINAL_STATUSES.has(status);
  meta.append(stop, regenerate);
  article.append(element("div", "message__body"), meta);
  return article;
}

function appendArticle(article) {
  document.getElementById("empty-chat")?.remove();
  page.messages.append(article);
}

function setReplyStatus(reply, status) {
  reply.article.dataset.status = status;
  metaSpan(reply, "message__status").textContent = status;
  const stop = reply.article.querySelector("[data-stop]");
  if (stop) stop.hidden = FINAL_STATUSES.has(status);
  const regenerate = reply.article.querySelector("[data-regenerate]");
  if (regenerate) regenerate.hidden = !FINAL_STATUSES.has(status);
}

/** The `.message__meta` span with this class, created before the Stop button if missing. */
function metaSpan(reply, className) {
  const meta = reply.article.querySelector(".message__meta");
  let span = meta.querySelector(`.${className}`);
  if (!span) {
    span = element("span", className);
    meta.insertBefore(span, meta.querySelector("[data-stop]"));
  }
  return span;
}

function bindReply(reply, id) {
  if (reply.id === id) return;
  reply.id = id;
  reply.heardAt = Date.now();
  reply.article.dataset.messageId = String(id);
  const stop = reply.article.querySelector("[data-stop]");
  if (stop) stop.dataset.stop = String(id);
  const regenerate = reply.article.querySelector("[data-regenerate]");
  if (regenerate) regenerate.dataset.regenerate = String(id);
  replies.set(id, reply);
  knownMessages.add(id);
  if (reply.cancelWanted) sendFrame({ type: "cancel", message: id }, { queue: true });
  replayOrphans(id);
}

function scheduleRender(reply) {
  if (reply.renderFrame) return;
  reply.renderFrame = requestAnimationFrame(() => {
    reply.renderFrame = 0;
    renderReply(reply);
  });
}

function renderReply(reply) {
  if (reply.renderFrame) {
    cancelAnimationFrame(reply.renderFrame);
    reply.renderFrame = 0;
  }
  const stick = isAtBottom();
  renderMarkdown(reply.body, reply.text, { final: reply.final });
  reply.article.dataset.seq = String(reply.seq);
  if (stick) scrollToBottom();
}

function isAtBottom() {
  const m = page.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight <= STICKY_BOTTOM_PX;
}

function scrollToBottom() {
  page.messages.scrollTop = page.messages.scrollHeight;
}

function setStatus(text, kind = "info") {
  page.status.textContent = text;
  page.status.dataset.kind = kind;
}

// --- Composer ------------------------------------------------------------------------------

function onComposerKey(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    page.composer.requestSubmit();
  }
}

function onSubmit(event) {
  event.preventDefault();
  const text = page.input.value;
  if (!text.trim() || pendingSends.size) return; // one send in flight at a time
  const send = {
    clientId: crypto.randomUUID(),
    text,
    conversation: currentConversation(),
    userArticle: userArticle(text),
    userId: null,
    reply: null,
    sent: false,
  };
  appendArticle(send.userArticle);
  const placeholder = assistantArticle(null, "pending");
  appendArticle(placeholder);
  send.reply = newReply(placeholder);
  pendingSends.set(send.clientId, send);
  setComposerBusy(true); // the text stays until the ack
  scrollToBottom();
  transmitSend(send);
}

function transmitSend(send) {
  send.sent = sendFrame({
    type: "send",
    client_id: send.clientId,
    conversation: send.conversation,
    text: send.text,
  });
  if (!send.sent) {
    setStatus("Not connected — your message will be sent when the connection is back.", "warn");
  }
}

function setComposerBusy(busy) {
  page.input.readOnly = busy;
  page.sendButton.disabled = busy;
  page.composer.setAttribute("aria-busy", String(busy));
}

function onMessagesClick(event) {
  const again = event.target.closest("[data-regenerate]");
  if (again && again.dataset.regenerate) {
    // The server supersedes this reply and announces the new one (`superseded`, `message`).
    again.disabled = true;
    sendFrame({ type: "regenerate", message: Number(again.dataset.regenerate) });
    return;
  }
  const button = event.target.closest("[data-stop]");
  if (!button) return;
  const article = button.closest("article.message");
  const reply =
    Array.from(replies.values()).find((r) => r.article === article) ||
    Array.from(pendingSends.values()).find((s) => s.reply.article === article)?.reply;
  if (!reply || reply.final) return;
  button.disabled = true;
  if (reply.id === null) reply.cancelWanted = true; // sent once the ack names the reply
  else sendFrame({ type: "cancel", message: reply.id }, { queue: true });
}

// --- Socket ------------------------------------------------------------------------------------

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}${chat.dataset.wsPath}`;
}

function connect() {
  clearTimeout(socket.retryTimer);
  socket.retryTimer = 0;
  setStatus(socket.attempt ? "Reconnecting…" : "Connecting…", "warn");
  const ws = new WebSocket(socketUrl());
  socket.ws = ws;
  ws.addEventListener("open", () => ws === socket.ws && onOpen());
  ws.addEventListener("message", (event) => ws === socket.ws && onFrame(event.data));
  ws.addEventListener("close", () => ws === socket.ws && onClosed());
}

function onOpen() {
  socket.attempt = 0;
  setStatus("Connected", "ok");
  startHeartbeat();
  // The unacknowledged send first: any error without a message id that follows at once is its.
  for (const send of pendingSends.values()) transmitSend(send);
  const conversation = currentConversation();
  if (conversation !== null) sendFrame({ type: "subscribe", conversation });
  for (const reply of replies.values()) {
    if (!reply.final) sendResume(reply);
  }
  for (const frame of socket.outbox.splice(0)) sendFrame(frame);
}

function onClosed() {
  stopHeartbeat();
  socket.ws = null;
  for (const send of pendingSends.values()) send.sent = false;
  scheduleReconnect();
}

function scheduleReconnect() {
  if (socket.retryTimer || socket.ws) return;
  // Exponential backoff with jitter: 0.5 s doubling up to 10 s, each wait 50–100 % of that.
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** socket.attempt);
  const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  socket.attempt += 1;
  const seconds = Math.max(1, Math.round(delay / 1000));
  const why = navigator.onLine === false ? "Offline" : "Connection lost";
  setStatus(`${why} — reconnecting in ${seconds} s…`, "warn");
  socket.retryTimer = setTimeout(connect, delay);
}

function reconnectNow() {
  if (socket.ws || !socket.retryTimer) return; // connected, connecting, or not started
  socket.attempt = Math.min(socket.attempt, 1);
  connect();
}

/** Drop a socket that stopped answering, without waiting for its closing handshake. */
function dropSocket() {
  const ws = socket.ws;
  if (!ws) return;
  socket.ws = null;
  ws.close();
  onClosed();
}

function startHeartbeat() {
  stopHeartbeat();
  socket.heartbeatTimer = setInterval(probeSocket, HEARTBEAT_MS);
}

/** Ping; a socket that sends nothing back within PONG_TIMEOUT_MS is dropped and replaced. */
function probeSocket() {
  if (socket.pongTimer || !sendFrame({ type: "ping" })) return;
  socket.pongTimer = setTimeout(dropSocket, PONG_TIMEOUT_MS);
}

function stopHeartbeat() {
  clearInterval(socket.heartbeatTimer);
  clearTimeout(socket.pongTimer);
  socket.heartbeatTimer = socket.pongTimer = 0;
}

/** Send a frame if the socket is open; with `queue`, keep it for the next connection. */
function sendFrame(frame, { queue = false } = {}) {
  const ws = socket.ws;
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify(frame));
    return true;
  }
  if (queue) socket.outbox.push(frame);
  return false;
}

// --- Frames from the server --------------------------------------------------------------

function onFrame(data) {
  clearTimeout(socket.pongTimer); // anything at all shows the socket is alive
  socket.pongTimer = 0;
  let frame;
  try {
    frame = JSON.parse(data);
  } catch {
    return;
  }
  dispatch(frame);
}

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
    case "live":
      return setStatus("Connected", "ok"); // live updates are back after an outage
    default:
      return; // pong, or a type this page does not know
  }
}

function withReply(frame, handler) {
  const reply = replies.get(frame.message);
  if (reply) {
    reply.heardAt = Date.now();
    handler(reply, frame);
  } else if (orphanCount < MAX_ORPHAN_FRAMES) {
    // About a reply we do not know yet (its ack is on the way): keep it for then.
    if (!orphanFrames.has(frame.message)) orphanFrames.set(frame.message, []);
    orphanFrames.get(frame.message).push(frame);
    orphanCount += 1;
  }
}

function replayOrphans(id) {
  const frames = orphanFrames.get(id);
  if (!frames) return;
  orphanFrames.delete(id);
  orphanCount -= frames.length;
  for (const frame of frames) dispatch(frame);
}

function onAck(frame) {
  const send = pendingSends.get(frame.client_id);
  if (!send) return;
  pendingSends.delete(frame.client_id);
  send.userArticle.dataset.messageId = String(frame.message);
  knownMessages.add(frame.message);
  if (currentConversation() === null) conversationStarted(frame.conversation, send.text);
  bindReply(send.reply, frame.reply);
  if (page.input.value === send.text) page.input.value = "";
  setComposerBusy(false);
  page.input.focus();
  if (page.status.dataset.kind !== "error") setStatus("Connected", "ok");
}

/** The first send of a new chat created a conversation: show it as the open one. */
function conversationStarted(id, text) {
  chat.dataset.conversation = String(id);
  const url = chat.dataset.conversationUrl.replace(/0(\/?)$/, `${id}$1`);
  history.replaceState(null, "", url);
  const list = document.querySelector("#conversations ul");
  if (!list) return;
  list.querySelector("li.empty")?.remove();
  for (const link of list.querySelectorAll("a[aria-current]")) link.removeAttribute("aria-current");
  const title = titleFrom(text);
  const link = element("a", "", title);
  link.href = url;
  link.dataset.conversationId = String(id);
  link.setAttribute("aria-current", "page");
  const item = element("li");
  item.append(link);
  list.prepend(item);
  document.title = `${title} · Parley`;
}

/** As chat/services.py _title_from: the first 60 characters, whitespace collapsed. */
function titleFrom(text) {
  const line = text.split(/\s+/).filter(Boolean).join(" ");
  const chars = Array.from(line);
  return chars.length > 60 ? `${chars.slice(0, 60).join("")}…` : line;
}

function onMessage(frame) {
  if (frame.conversation !== currentConversation() || knownMessages.has(frame.message)) return;
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
  const stick = isAtBottom();
  if (frame.role === "user") {
    appendArticle(userArticle(frame.content, frame.message));
  } else if (frame.role === "assistant") {
    const reply = newReply(assistantArticle(frame.message, frame.status));
    reply.id = frame.message;
    reply.text = frame.content || "";
    reply.seq = Array.from(reply.text).length;
    reply.final = FINAL_STATUSES.has(frame.status);
    replies.set(reply.id, reply);
    appendArticle(reply.article);
    renderReply(reply);
    replayOrphans(reply.id);
  }
  if (stick) scrollToBottom();
}

function onDelta(reply, frame) {
  if (reply.final || frame.seq <= reply.seq) return; // a duplicate
  if (frame.start > reply.seq) {
    requestResume(reply); // a gap: the text between reply.seq and frame.start is missing
    return;
  }
  reply.text += dropCodePoints(frame.text, reply.seq - frame.start); // trims any overlap
  reply.seq = frame.seq;
  clearTimeout(reply.resumeTimer);
  reply.resumeTimer = 0;
  if (reply.article.dataset.status === "pending") setReplyStatus(reply, "streaming");
  scheduleRender(reply);
}

function onDone(reply, frame) {
  if (reply.final) return;
  if (frame.seq > reply.seq) {
    // Final, but we miss the end: resume sends the rest and `done` again.
    requestResume(reply, { now: true });
    return;
  }
  reply.final = true;
  clearTimeout(reply.resumeTimer);
  setReplyStatus(reply, frame.status);
  if (frame.provider) {
    metaSpan(reply, "message__model").textContent = `${frame.provider} · ${frame.model}`;
  }
  const usage = frame.usage || {};
  if (usage.completion_tokens) {
    const estimated = usage.estimated ? " (est.)" : "";
    const tokens = `${usage.completion_tokens} tokens${estimated}`;
    metaSpan(reply, "message__tokens").textContent = tokens;
  }
  const firstToken = frame.timings?.first_token_ms;
  if (firstToken != null) {
    metaSpan(reply, "message__timing").textContent = `first token ${firstToken} ms`;
  }
  renderReply(reply);
}

function onReplyError(reply, frame) {
  if (reply.final) return;
  if ((frame.seq ?? 0) > reply.seq) {
    requestResume(reply, { now: true }); // keep the partial text, then the error again
    return;
  }
  reply.final = true;
  clearTimeout(reply.resumeTimer);
  setReplyStatus(reply, "failed");
  metaSpan(reply, "message__error").textContent = frame.detail || "The reply failed.";
  renderReply(reply);
}

/** A regenerate or an edit (e.g. in another tab) replaced these messages: take them away. */
function onSuperseded(frame) {
  if (frame.conversation !== currentConversation()) return;
  for (const id of frame.messages || []) {
    const reply = replies.get(id);
    if (reply) {
      reply.final = true; // no more resumes or renders for it
      clearTimeout(reply.resumeTimer);
      if (reply.renderFrame) cancelAnimationFrame(reply.renderFrame);
      replies.delete(id);
    }
    page.messages.querySelector(`article.message[data-message-id="${Number(id)}"]`)?.remove();
  }
}

/** An error about a frame rather than a reply. A non-final send was probably refused. */
function onFrameError(frame) {
  if (frame.code === "unavailable") {
    // The server lost its live feed (Redis); it re-sends what was missed and then says `live`.
    setStatus(frame.detail || "Live updates are interrupted.", "warn");
    return;
  }
  setStatus(`Error: ${frame.detail || frame.code}`, "error");
  const refused = Array.from(pendingSends.values()).find((s) => s.sent);
  if (!refused || frame.retryable) return;
  // Give the text back to the composer for editing; drop the optimistic articles.
  pendingSends.delete(refused.clientId);
  refused.userArticle.remove();
  refused.reply.article.remove();
  setComposerBusy(false);
  page.input.focus();
}

function requestResume(reply, { now = false } = {}) {
  if (reply.resumeTimer) return;
  const repeated = reply.lastResume.seq === reply.seq;
  const wait = repeated ? Math.max(RESUME_REPEAT_MS - (Date.now() - reply.lastResume.at), 0) : 0;
  reply.resumeTimer = setTimeout(() => {
    reply.resumeTimer = 0;
    if (!reply.final) sendResume(reply);
  }, now ? wait : Math.max(wait, RESUME_DEBOUNCE_MS));
}

function sendResume(reply) {
  if (reply.id === null) return;
  if (sendFrame({ type: "resume", message: reply.id, after_seq: reply.seq })) {
    reply.lastResume = { seq: reply.seq, at: Date.now() };
  }
}

/** `text` without its first `count` code points (seq counts code points, not UTF-16 units). */
function dropCodePoints(text, count) {
  if (count <= 0) return text;
  let index = 0;
  for (const char of text) {
    if (count-- <= 0) break;
    index += char.length;
  }
  return text.slice(index);
}

// Last, once every declaration above is initialised.
if (chat) start();
