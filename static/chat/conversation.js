// The open conversation as the page shows it: its messages, the replies it holds
// (reply-state.js) and sends not yet acknowledged, and what each frame of docs/protocol.md
// and each click does to them. main.js builds it with the view and the transport.

import { composerKey, versionStep } from "./page-logic.js";
import * as replyState from "./reply-state.js";

export class Conversation {
  constructor(view) {
    this.view = view;
    this.transport = null; // set by main.js: the transport calls back into this
    /** Assistant replies by message id: {state (reply-state.js), article, timers, …}. */
    this.replies = new Map();
    /** Ids of every message on the page, to skip `message` frames we already show. */
    this.knownMessages = new Set();
    /** Sends not yet acknowledged, by client_id (the transport re-sends them). */
    this.pendingSends = new Map();
    this.orphans = new replyState.OrphanFrames();
    /** Earlier versions of a regenerated reply, by the user message id, until the new reply. */
    this.stashedVersions = new Map();
  }

  /** Take over the server-rendered messages. */
  adopt() {
    for (const m of this.view.serverMessages()) {
      this.knownMessages.add(m.id);
      if (m.role !== "assistant") continue;
      const state = replyState.newReply({
        id: m.id,
        text: m.content,
        seq: m.seq,
        status: m.status,
        now: Date.now(),
      });
      this.replies.set(m.id, this.track(m.article, state));
    }
    this.view.adoptServerRendered();
  }

  track(article, state) {
    return { state, article, renderFrame: 0, resumeTimer: 0, cancelWanted: false };
  }

  /** Each connection: follow the open conversation, and resume every reply not yet final. */
  onOpen() {
    const conversation = this.view.currentConversation();
    if (conversation !== null) this.transport.send({ type: "subscribe", conversation });
    const entries = Array.from(this.replies.values());
    const wanted = new Set(replyState.repliesToResume(entries.map((r) => r.state)));
    for (const reply of entries) if (wanted.has(reply.state)) this.sendResume(reply);
  }

  resumeStalled() {
    const entries = Array.from(this.replies.values());
    const stalled = new Set(replyState.stalledReplies(entries.map((r) => r.state), Date.now()));
    for (const reply of entries) if (stalled.has(reply.state)) this.sendResume(reply);
  }

  // --- Composer and buttons ----------------------------------------------------------------

  onComposerKey(event) {
    if (composerKey(event) === "send") {
      event.preventDefault();
      this.view.composer.requestSubmit();
    }
  }

  onSubmit(event) {
    event.preventDefault();
    this.startSend(this.view.input.value);
  }

  /** Is a reply of this page still running (for Esc)? Returns the last one's article. */
  runningReply() {
    const running = Array.from(this.replies.values()).filter((r) => !r.state.final);
    const pending = Array.from(this.pendingSends.values()).map((s) => s.reply);
    const all = [...running, ...pending];
    return all.length ? all[all.length - 1].article : null;
  }

  /**
   * Post a message: a `send`, or with `edit` (a user message id) an `edit` that replaces that
   * message and everything after it. Shown at once, sent until acknowledged.
   */
  startSend(text, { edit = null } = {}) {
    if (!text.trim() || this.pendingSends.size) return false; // one send in flight at a time
    const send = {
      clientId: crypto.randomUUID(),
      text,
      userArticle: this.view.userArticle(text),
      userId: null,
      reply: null,
      edit,
    };
    this.view.appendArticle(send.userArticle);
    const placeholder = this.view.assistantArticle(null, "pending");
    this.view.appendArticle(placeholder);
    send.reply = this.track(placeholder, replyState.newReply({ now: Date.now() }));
    this.pendingSends.set(send.clientId, send);
    this.view.setComposerBusy(true); // the text stays until the ack
    this.view.scrollToBottom();
    const frame = edit
      ? { type: "edit", client_id: send.clientId, message: edit, text }
      : {
          type: "send",
          client_id: send.clientId,
          conversation: this.view.currentConversation(),
          text,
        };
    const model = this.view.modelPicker?.value;
    if (!edit && model) frame.model = model;
    if (!this.transport.sendUntilAcked(send.clientId, frame)) {
      const why = "Not connected — your message will be sent when the connection is back.";
      this.view.setStatus(why, "warn");
    }
    return true;
  }

  /** Edit a sent message in place: a text box with Save & send and Cancel. */
  startEdit(article) {
    if (article.querySelector(".edit-form")) return;
    const id = Number(article.dataset.messageId);
    if (!id) return;
    const text = article.querySelector(".plain")?.textContent || "";
    const form = this.view.element("form", "edit-form");
    const label = this.view.element("label", "visually-hidden", "Edit your message");
    const box = this.view.element("textarea");
    box.id = `edit-${id}`;
    label.htmlFor = box.id;
    box.value = text;
    box.rows = 3;
    const save = this.view.element("button", "", "Save & send");
    save.type = "submit";
    const cancel = this.view.button("link", "Cancel");
    form.append(label, box, save, cancel);
    const body = article.querySelector(".message__body");
    body.hidden = true;
    body.after(form);
    box.focus();
    const close = () => {
      form.remove();
      body.hidden = false;
      article.querySelector("[data-edit]")?.focus();
    };
    cancel.addEventListener("click", close);
    box.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        close();
      } else if (composerKey(event) === "send") {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (box.value.trim() === text.trim()) return close();
      if (this.startSend(box.value, { edit: id })) {
        form.remove();
        body.hidden = false;
        article.dataset.editing = "true";
      }
    });
  }

  async copy(button, text) {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
      this.view.toast("Copied to the clipboard.");
    } catch {
      this.view.toast("Could not copy: the browser refused the clipboard.");
      return;
    }
    const label = button.dataset.copyCode !== undefined ? "Copy code" : "Copy";
    setTimeout(() => (button.textContent = label), 2000);
  }

  /** The raw text of a message: a reply's Markdown as held, a user's message as written. */
  messageText(article) {
    if (article.dataset.role === "user") return article.querySelector(".plain")?.textContent || "";
    const reply = this.replies.get(Number(article.dataset.messageId));
    if (reply) return reply.state.text;
    return article.dataset.content || article.querySelector(".message__body").innerText;
  }

  onMessagesClick(event) {
    const article = event.target.closest("article.message");
    const codeButton = event.target.closest("[data-copy-code]");
    if (codeButton) {
      const code = codeButton.parentElement.querySelector("pre code, pre");
      this.copy(codeButton, code?.textContent || "");
      return;
    }
    if (event.target.closest("[data-copy]") && article) {
      this.copy(event.target.closest("[data-copy]"), this.messageText(article));
      return;
    }
    if (event.target.closest("[data-edit]") && article) {
      this.startEdit(article);
      return;
    }
    const step = event.target.closest("[data-version-step]");
    if (step && article) {
      const earlier = article.querySelectorAll(".message__version").length;
      const index = Number(article.dataset.versionIndex ?? earlier);
      const next = versionStep(index, earlier + 1, Number(step.dataset.versionStep));
      this.view.showVersions(article, next);
      return;
    }
    const again = event.target.closest("[data-regenerate]");
    if (again && again.dataset.regenerate) {
      // The server supersedes this reply and announces the new one (`superseded`, `message`).
      again.disabled = true;
      this.transport.send({ type: "regenerate", message: Number(again.dataset.regenerate) });
      return;
    }
    const button = event.target.closest("[data-stop]");
    if (!button) return;
    const reply =
      Array.from(this.replies.values()).find((r) => r.article === article) ||
      Array.from(this.pendingSends.values()).find((s) => s.reply.article === article)?.reply;
    if (!reply || reply.state.final) return;
    button.disabled = true;
    if (reply.state.id === null) reply.cancelWanted = true; // sent once the ack names the reply
    else this.transport.send({ type: "cancel", message: reply.state.id }, { queue: true });
  }

  // --- Frames from the server --------------------------------------------------------------

  dispatch(frame) {
    switch (frame.type) {
      case "ack":
        return this.onAck(frame);
      case "message":
        return this.onMessage(frame);
      case "delta":
        return this.withReply(frame, this.onDelta);
      case "done":
        return this.withReply(frame, this.onDone);
      case "error":
        if (frame.message == null) return this.onFrameError(frame);
        return this.withReply(frame, this.onReplyError);
      case "superseded":
        return this.onSuperseded(frame);
      default:
        return; // a type this page does not know
    }
  }

  withReply(frame, handler) {
    const reply = this.replies.get(frame.message);
    if (reply) {
      replyState.heard(reply.state, Date.now());
      handler.call(this, reply, frame);
    } else {
      this.orphans.hold(frame); // about a reply we do not know yet: its ack is on the way
    }
  }

  bindReply(reply, id) {
    if (reply.state.id === id) return;
    replyState.bindReply(reply.state, id, Date.now());
    this.view.bindArticle(reply.article, id);
    this.replies.set(id, reply);
    this.knownMessages.add(id);
    if (reply.cancelWanted) this.transport.send({ type: "cancel", message: id }, { queue: true });
    for (const frame of this.orphans.take(id)) this.dispatch(frame);
  }

  onAck(frame) {
    const send = this.pendingSends.get(frame.client_id);
    if (!send) return;
    this.pendingSends.delete(frame.client_id);
    this.transport.acked(frame.client_id);
    send.userArticle.dataset.messageId = String(frame.message);
    this.knownMessages.add(frame.message);
    if (this.view.currentConversation() === null) {
      this.view.conversationStarted(frame.conversation, send.text);
    }
    this.bindReply(send.reply, frame.reply);
    if (this.view.input.value === send.text) this.view.input.value = "";
    this.view.setComposerBusy(false);
    this.view.input.focus();
    if (this.view.statusKind() !== "error") this.view.setStatus("Connected", "ok");
  }

  onMessage(frame) {
    if (frame.conversation !== this.view.currentConversation()) return;
    if (this.knownMessages.has(frame.message)) return;
    // Our own send, announced before its ack: attach the ids to what we already show.
    const ours = Array.from(this.pendingSends.values());
    const mine = ours.find((s) => frame.role === "user" && s.clientId === frame.client_id);
    if (mine) {
      mine.userId = frame.message;
      mine.userArticle.dataset.messageId = String(frame.message);
      this.knownMessages.add(frame.message);
      return;
    }
    const answered = ours.find((s) => frame.role === "assistant" && s.userId === frame.reply_to);
    if (answered) {
      this.bindReply(answered.reply, frame.message);
      answered.reply.article.dataset.replyTo = String(frame.reply_to);
      return;
    }
    // Another tab's message.
    this.knownMessages.add(frame.message);
    const stick = this.view.isAtBottom();
    if (frame.role === "user") {
      this.view.appendArticle(this.view.userArticle(frame.content, frame.message));
    } else if (frame.role === "assistant") {
      const state = replyState.newReply({
        id: frame.message,
        text: frame.content || "",
        status: frame.status,
        now: Date.now(),
      });
      const reply = this.track(this.view.assistantArticle(frame.message, frame.status), state);
      this.replies.set(frame.message, reply);
      this.view.appendArticle(reply.article);
      if (frame.reply_to != null) {
        reply.article.dataset.replyTo = String(frame.reply_to);
        this.giveStashedVersions(reply.article);
      }
      this.renderNow(reply);
      for (const orphan of this.orphans.take(frame.message)) this.dispatch(orphan);
    }
    if (stick) this.view.scrollToBottom();
  }

  onDelta(reply, frame) {
    const outcome = replyState.applyDelta(reply.state, frame);
    if (outcome.kind === "gap") {
      this.requestResume(reply); // the text between what we hold and frame.start is missing
    } else if (outcome.kind === "appended") {
      clearTimeout(reply.resumeTimer);
      reply.resumeTimer = 0;
      if (reply.article.dataset.status !== reply.state.status) {
        this.view.showReplyStatus(reply.article, reply.state);
      }
      this.scheduleRender(reply);
    }
  }

  onDone(reply, frame) {
    const outcome = replyState.applyDone(reply.state, frame);
    if (outcome.kind === "resume") {
      this.requestResume(reply, { urgent: true }); // final, but we miss the end: resume sends it
    } else if (outcome.kind === "final") {
      clearTimeout(reply.resumeTimer);
      this.view.showReplyStatus(reply.article, reply.state);
      this.view.showReplyFacts(reply.article, frame);
      this.renderNow(reply);
      this.view.announce(reply.article.querySelector(".message__body").innerText);
    }
  }

  onReplyError(reply, frame) {
    const outcome = replyState.applyError(reply.state, frame);
    if (outcome.kind === "resume") {
      this.requestResume(reply, { urgent: true }); // keep the partial text, then the error again
    } else if (outcome.kind === "final") {
      clearTimeout(reply.resumeTimer);
      this.view.showReplyStatus(reply.article, reply.state);
      this.renderNow(reply);
      this.view.announce(`The reply failed: ${reply.state.detail || reply.state.errorCode}`);
    }
  }

  /** A regenerate or an edit (e.g. in another tab) replaced these messages: take them away. */
  onSuperseded(frame) {
    if (frame.conversation !== this.view.currentConversation()) return;
    const gone = new Set(frame.messages || []);
    for (const id of gone) {
      // A regenerated reply (its question stays): kept as an earlier version of the answer.
      const article = this.view.messages.querySelector(`article[data-message-id="${Number(id)}"]`);
      const question = article?.previousElementSibling;
      if (article?.dataset.role === "assistant" && question?.dataset.role === "user") {
        const questionId = Number(question.dataset.messageId);
        if (questionId && !gone.has(questionId)) {
          this.stashedVersions.set(questionId, this.view.takeVersions(article));
        }
      }
    }
    for (const id of gone) {
      const reply = this.replies.get(id);
      if (reply) {
        replyState.retire(reply.state); // no more resumes or renders for it
        clearTimeout(reply.resumeTimer);
        if (reply.renderFrame) cancelAnimationFrame(reply.renderFrame);
        this.replies.delete(id);
      }
      this.view.removeMessage(id);
    }
    // The new reply may have been announced before the old one was superseded.
    for (const article of this.view.messages.querySelectorAll("article[data-reply-to]")) {
      this.giveStashedVersions(article);
    }
  }

  giveStashedVersions(article) {
    const questionId = Number(article.dataset.replyTo);
    const versions = this.stashedVersions.get(questionId);
    if (!versions) return;
    this.stashedVersions.delete(questionId);
    this.view.giveVersions(article, versions);
  }

  /** An error about a frame rather than a reply. A non-final send was probably refused. */
  onFrameError(frame) {
    this.view.setStatus(`Error: ${frame.detail || frame.code}`, "error");
    const key = this.transport.inFlight().find((k) => this.pendingSends.has(k));
    if (key === undefined) return;
    if (frame.retryable) {
      // Kept (e.g. `not_started`: saved, its reply not started yet) and sent again when the
      // server says; the same client_id gets the first message, never a second one.
      if (frame.retry_after != null) this.transport.resendAfter(key, frame.retry_after);
      return;
    }
    // Give the text back to the composer for editing; drop the optimistic articles.
    const refused = this.pendingSends.get(key);
    this.pendingSends.delete(key);
    this.transport.acked(key);
    refused.userArticle.remove();
    refused.reply.article.remove();
    this.view.setComposerBusy(false);
    this.view.input.focus();
  }

  // --- Resume and render scheduling --------------------------------------------------------

  requestResume(reply, { urgent = false } = {}) {
    if (reply.resumeTimer) return;
    const delay = replyState.resumeDelay(reply.state, Date.now(), { urgent });
    reply.resumeTimer = setTimeout(() => {
      reply.resumeTimer = 0;
      this.sendResume(reply);
    }, delay);
  }

  sendResume(reply) {
    const frame = replyState.resumeFrame(reply.state);
    if (frame && this.transport.send(frame)) replyState.resumeSent(reply.state, Date.now());
  }

  scheduleRender(reply) {
    if (reply.renderFrame) return;
    reply.renderFrame = requestAnimationFrame(() => {
      reply.renderFrame = 0;
      this.view.renderReplyText(reply.article, reply.state);
    });
  }

  renderNow(reply) {
    if (reply.renderFrame) {
      cancelAnimationFrame(reply.renderFrame);
      reply.renderFrame = 0;
    }
    this.view.renderReplyText(reply.article, reply.state);
  }
}
