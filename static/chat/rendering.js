// Everything the page shows: messages as articles, reply text as sanitized Markdown (the
// vendored markdown-it, DOMPurify and highlight.js, loaded as deferred scripts before the
// modules run), status labels, the status line, the composer and the sidebar. Nothing here
// touches the document at import time, so the pure parts (statusLabel, titleFrom) are
// unit-tested under Node.

import { versionLabel, waitingLabel } from "./page-logic.js";
import { FINAL_STATUSES } from "./reply-state.js";

const STICKY_BOTTOM_PX = 48;

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

/**
 * The words under a reply for its state. A reply cut short never reads as complete: the token
 * cap (`incomplete`, finish reason `length`) and an upstream cut (`interrupted`) say so.
 */
export function statusLabel({ status, errorCode = "", finishReason = null, position = null }) {
  if (status === "incomplete" || finishReason === "length") return "Stopped at the length limit";
  switch (status) {
    case "pending":
      return waitingLabel(position);
    case "streaming":
      return "Streaming";
    case "complete":
      return "Complete";
    case "cancelled":
      return "Stopped";
    case "failed":
      return errorCode === "interrupted" ? "Cut off — regenerate to try again" : "Failed";
    default:
      return status;
  }
}

/** As chat/services/messages.py title_from: the first 60 characters, whitespace collapsed. */
export function titleFrom(text) {
  const line = text.split(/\s+/).filter(Boolean).join(" ");
  const chars = Array.from(line);
  return chars.length > 60 ? `${chars.slice(0, 60).join("")}…` : line;
}

/** The page's fixed elements and the Markdown renderer, found once the document is parsed. */
export class View {
  constructor(document, window) {
    this.document = document;
    this.window = window;
    this.chat = document.getElementById("chat");
    this.messages = document.getElementById("messages");
    this.status = document.getElementById("status");
    this.composer = document.getElementById("composer");
    this.input = document.getElementById("composer-text");
    this.sendButton = document.getElementById("send-button");
    this.modelPicker = document.getElementById("model-picker");
    this.announcer = document.getElementById("announcer");
    this.markdown = createMarkdown(window);
  }

  currentConversation() {
    const value = this.chat.dataset.conversation;
    return value ? Number(value) : null;
  }

  socketUrl() {
    const { protocol, host } = this.window.location;
    return `${protocol === "https:" ? "wss" : "ws"}://${host}${this.chat.dataset.wsPath}`;
  }

  /** Server-rendered messages: [{id, role, status, seq, content, errorCode, article}]. */
  serverMessages() {
    return Array.from(this.messages.querySelectorAll("article.message[data-message-id]"), (a) => ({
      id: Number(a.dataset.messageId),
      role: a.dataset.role,
      status: a.dataset.status,
      seq: Number(a.dataset.seq || 0),
      content: a.dataset.content || "",
      errorCode: a.dataset.errorCode || "",
      article: a,
    }));
  }

  /** Highlight the server-rendered code and label its replies as streamed ones are. */
  adoptServerRendered() {
    for (const article of this.messages.querySelectorAll("article.message--assistant")) {
      const span = article.querySelector(".message__status");
      if (span) span.textContent = statusLabel(article.dataset);
      this.showVersions(article);
    }
    highlightWithin(this.window, this.messages, { auto: true });
    this.addCodeButtons(this.messages);
    this.scrollToBottom();
  }

  // --- articles ------------------------------------------------------------------------------

  userArticle(text, id) {
    const article = this.element("article", "message message--user");
    article.dataset.messageId = id ?? "";
    article.dataset.role = "user";
    article.dataset.status = "complete";
    const body = this.element("div", "message__body");
    body.append(this.element("p", "plain", text));
    const meta = this.element("footer", "message__meta message__meta--user");
    meta.append(this.button("chip copy", "Copy", { copy: "" }));
    meta.append(this.button("chip edit", "Edit", { edit: "" }));
    article.append(body, meta);
    return article;
  }

  button(className, text, data = {}) {
    const button = this.element("button", className, text);
    button.type = "button";
    Object.assign(button.dataset, data);
    return button;
  }

  assistantArticle(id, status) {
    const article = this.element("article", "message message--assistant");
    article.dataset.messageId = id ?? "";
    article.dataset.role = "assistant";
    article.dataset.status = status;
    article.dataset.seq = "0";
    const meta = this.element("footer", "message__meta");
    meta.append(this.element("span", "message__status", statusLabel({ status })));
    const actions = this.element("span", "message__actions");
    const stop = this.button("chip stop", "Stop", { stop: id ?? "" });
    stop.hidden = FINAL_STATUSES.has(status);
    const regenerate = this.button("chip regenerate", "Regenerate", { regenerate: id ?? "" });
    regenerate.hidden = !FINAL_STATUSES.has(status);
    actions.append(this.button("chip copy", "Copy", { copy: "" }), stop, regenerate);
    meta.append(actions);
    article.append(this.element("div", "message__body"), meta);
    return article;
  }

  appendArticle(article) {
    this.document.getElementById("empty-chat")?.remove();
    this.messages.append(article);
  }

  /** The reply's article now has id `id` (its Stop and Regenerate buttons too). */
  bindArticle(article, id) {
    article.dataset.messageId = String(id);
    const stop = article.querySelector("[data-stop]");
    if (stop) stop.dataset.stop = String(id);
    const regenerate = article.querySelector("[data-regenerate]");
    if (regenerate) regenerate.dataset.regenerate = String(id);
  }

  removeMessage(id) {
    this.messages.querySelector(`article.message[data-message-id="${Number(id)}"]`)?.remove();
  }

  // --- replies -------------------------------------------------------------------------------

  /** Show the reply's state (reply-state.js): label, buttons, and the error detail if failed. */
  showReplyStatus(article, reply) {
    article.dataset.status = reply.status;
    if (reply.errorCode) article.dataset.errorCode = reply.errorCode;
    this.metaSpan(article, "message__status").textContent = statusLabel(reply);
    const stop = article.querySelector("[data-stop]");
    if (stop) stop.hidden = reply.final;
    const regenerate = article.querySelector("[data-regenerate]");
    if (regenerate) regenerate.hidden = !reply.final;
    if (reply.status === "failed") {
      this.metaSpan(article, "message__error").textContent = reply.detail || "The reply failed.";
    }
  }

  /** Provider, tokens and first-token time from a `done` frame. */
  showReplyFacts(article, frame) {
    if (frame.provider) {
      this.metaSpan(article, "message__model").textContent = `${frame.provider} · ${frame.model}`;
    }
    const usage = frame.usage || {};
    if (usage.completion_tokens) {
      const estimated = usage.estimated ? " (est.)" : "";
      const tokens = `${usage.completion_tokens} tokens${estimated}`;
      this.metaSpan(article, "message__tokens").textContent = tokens;
    }
    const firstToken = frame.timings?.first_token_ms;
    if (firstToken != null) {
      this.metaSpan(article, "message__timing").textContent = `first token ${firstToken} ms`;
    }
  }

  /** Render the reply's text, keeping the view at the bottom if it was there. */
  renderReplyText(article, reply) {
    const stick = this.isAtBottom();
    this.renderMarkdown(article.querySelector(".message__body"), reply.text, reply.final);
    article.dataset.seq = String(reply.seq);
    if (stick) this.scrollToBottom();
  }

  /** Raw model text into `target` as sanitized Markdown (or plain text as a fallback). */
  renderMarkdown(target, text, final) {
    if (!this.markdown) {
      target.replaceChildren(this.element("p", "plain", text));
      return;
    }
    const fragment = this.window.DOMPurify.sanitize(this.markdown.render(text), PURIFY_CONFIG);
    tidyAttributes(fragment);
    target.replaceChildren(fragment);
    highlightWithin(this.window, target, { auto: final });
    this.addCodeButtons(target);
  }

  /** A "Copy code" button above each code block (its text is the block's, not the label). */
  addCodeButtons(root) {
    for (const pre of root.querySelectorAll("pre")) {
      if (pre.parentElement?.classList.contains("code-block")) continue;
      const wrapper = this.element("div", "code-block");
      pre.tabIndex = 0; // a wide block scrolls sideways from the keyboard too
      pre.replaceWith(wrapper);
      wrapper.append(this.button("chip copy-code", "Copy code", { copyCode: "" }), pre);
    }
  }

  // --- earlier versions of a reply (regenerated) ---------------------------------------------

  /** The reply's versions: the earlier ones (hidden divs), then its body; "‹ 2/2 ›" if any. */
  showVersions(article, index = null) {
    const earlier = article.querySelectorAll(".message__version");
    const count = earlier.length + 1;
    let nav = article.querySelector(".versions");
    if (count < 2) {
      nav?.remove();
      return;
    }
    const shown = index ?? count - 1;
    article.dataset.versionIndex = String(shown);
    earlier.forEach((div, i) => (div.hidden = i !== shown));
    article.querySelector(".message__body").hidden = shown !== count - 1;
    if (!nav) {
      nav = this.element("span", "versions");
      nav.setAttribute("role", "group");
      nav.setAttribute("aria-label", "Answer versions");
      const previous = this.button("chip versions__step", "‹", { versionStep: "-1" });
      previous.setAttribute("aria-label", "Previous answer");
      const next = this.button("chip versions__step", "›", { versionStep: "1" });
      next.setAttribute("aria-label", "Next answer");
      const label = this.element("span", "versions__label");
      label.setAttribute("aria-live", "polite");
      nav.append(previous, label, next);
      article.querySelector(".message__meta").prepend(nav);
    }
    nav.querySelector(".versions__label").textContent = versionLabel(shown, count);
    nav.querySelector("[data-version-step='-1']").disabled = shown === 0;
    nav.querySelector("[data-version-step='1']").disabled = shown === count - 1;
  }

  /** Versions of a reply being replaced, kept for the reply that replaces it. */
  takeVersions(article) {
    const versions = Array.from(article.querySelectorAll(".message__version"));
    const current = this.element("div", "message__version");
    current.dataset.versionId = article.dataset.messageId;
    current.dataset.status = article.dataset.status;
    current.append(...article.querySelector(".message__body").childNodes);
    return [...versions, current];
  }

  giveVersions(article, versions) {
    const body = article.querySelector(".message__body");
    for (const version of versions) body.before(version);
    this.showVersions(article);
  }

  /** Say the finished reply once to screen readers (not every token as it streams). */
  announce(text) {
    if (!this.announcer) return;
    const chars = Array.from(text);
    this.announcer.textContent = chars.length > 1000 ? `${chars.slice(0, 1000).join("")}…` : text;
  }

  toast(text) {
    const toast = this.document.getElementById("toast");
    if (!toast) return;
    toast.textContent = text;
    toast.hidden = false;
    this.window.clearTimeout(this.toastTimer);
    this.toastTimer = this.window.setTimeout(() => (toast.hidden = true), 4000);
  }

  /** The `.message__meta` span with this class, created before the Stop button if missing. */
  metaSpan(article, className) {
    const meta = article.querySelector(".message__meta");
    let span = meta.querySelector(`.${className}`);
    if (!span) {
      span = this.element("span", className);
      meta.insertBefore(span, meta.querySelector(".message__actions"));
    }
    return span;
  }

  // --- the rest of the page ------------------------------------------------------------------

  isAtBottom() {
    const m = this.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight <= STICKY_BOTTOM_PX;
  }

  scrollToBottom() {
    this.messages.scrollTop = this.messages.scrollHeight;
  }

  setStatus(text, kind = "info") {
    const wasDown = this.status.dataset.kind === "warn" || this.status.dataset.kind === "error";
    this.status.textContent = text;
    this.status.dataset.kind = kind;
    // The banner: offline / reconnecting (warn), an error, and "back" for a while after.
    const banner = this.status.parentElement;
    banner.dataset.kind = kind;
    if (kind === "ok" && wasDown && this.hadConnected) banner.dataset.back = "true";
    if (kind === "ok") this.hadConnected = true;
    this.window.clearTimeout(this.backTimer);
    if (banner.dataset.back === "true") {
      this.backTimer = this.window.setTimeout(() => delete banner.dataset.back, 5000);
    }
    if (kind !== "ok") delete banner.dataset.back;
  }

  statusKind() {
    return this.status.dataset.kind;
  }

  setComposerBusy(busy) {
    this.input.readOnly = busy;
    this.sendButton.disabled = busy;
    this.composer.setAttribute("aria-busy", String(busy));
  }

  /** The first send of a new chat created a conversation: show it as the open one. */
  conversationStarted(id, text) {
    this.chat.dataset.conversation = String(id);
    const url = this.chat.dataset.conversationUrl.replace(/0(\/?)$/, `${id}$1`);
    this.window.history.replaceState(null, "", url);
    // The chat's settings and export now have a conversation to act on.
    for (const tool of this.document.querySelectorAll("[data-per-conversation]")) {
      for (const node of tool.querySelectorAll("form[action], a[href]")) {
        const attribute = node.localName === "form" ? "action" : "href";
        node.setAttribute(attribute, node.getAttribute(attribute).replace("/0/", `/${id}/`));
      }
      tool.hidden = false;
    }
    const list = this.document.querySelector("#conversations ul");
    if (!list) return;
    list.querySelector("li.empty")?.remove();
    for (const link of list.querySelectorAll("a[aria-current]")) {
      link.removeAttribute("aria-current");
    }
    const title = titleFrom(text);
    const template = this.document.getElementById("conversation-item");
    const item = template.content.firstElementChild.cloneNode(true);
    item.dataset.conversationId = String(id);
    const link = item.querySelector("a");
    link.href = url;
    link.dataset.conversationId = String(id);
    link.setAttribute("aria-current", "page");
    item.querySelector(".conversation__title").textContent = title;
    item.querySelector("summary").setAttribute("aria-label", `Actions for ${title}`);
    for (const form of item.querySelectorAll("form")) {
      form.action = form.getAttribute("action").replace("/c/0/", `/c/${id}/`);
    }
    const rename = item.querySelector("input[name=title]");
    rename.value = title;
    rename.id = `rename-${id}`;
    item.querySelector("label[for='rename-0']").htmlFor = rename.id;
    const pinned = list.querySelectorAll("li[data-pinned='true']");
    if (pinned.length) pinned[pinned.length - 1].after(item);
    else list.prepend(item);
    this.document.title = `${title} · Parley`;
  }

  element(tag, className, text) {
    const node = this.document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
}

function createMarkdown(window) {
  if (typeof window.markdownit !== "function" || !window.DOMPurify) return null;
  // Same parser settings as the server (chat/rendering.py).
  return window
    .markdownit("commonmark", { html: false, linkify: false })
    .enable(["table", "strikethrough"]);
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
function highlightWithin(window, root, { auto }) {
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
