// Parley chat page: one WebSocket per tab (transport.js) feeding the open conversation
// (conversation.js), which keeps each reply's text by seq (reply-state.js) and shows it
// (rendering.js); the conversation list (sidebar.js); keyboard shortcuts and small decisions
// (page-logic.js); theme, menus and drawer (chrome.js). The wire protocol is
// docs/protocol.md. No framework and no build step: ES modules from 'self', loaded after the
// vendored markdown-it, DOMPurify and highlight.js (deferred scripts), so the CSP needs no
// inline script.

import { drawerOpen, setDrawer } from "./chrome.js";
import { Conversation } from "./conversation.js";
import { shortcutFor } from "./page-logic.js";
import { STALL_RESUME_MS } from "./reply-state.js";
import { View } from "./rendering.js";
import { Sidebar, postForm } from "./sidebar.js";
import { Transport } from "./transport.js";

const MODEL_KEY = "parley-model";
const NARROW = "(max-width: 720px)";

function rememberModel(picker) {
  if (!picker) return;
  try {
    const stored = localStorage.getItem(MODEL_KEY);
    if (stored && Array.from(picker.options).some((o) => o.value === stored)) {
      picker.value = stored;
    }
    picker.addEventListener("change", () => localStorage.setItem(MODEL_KEY, picker.value));
  } catch {
    // storage refused: the default model each time
  }
}

function setUpInstructions(view) {
  const form = document.getElementById("instructions-form");
  if (!form) return;
  const saved = document.getElementById("instructions-saved");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await postForm(form);
      saved.textContent = "Saved — used from the next reply on.";
    } catch (error) {
      saved.textContent = "";
      view.toast(`Could not save: ${error.message}`);
    }
  });
}

function setUpShortcuts(view, conversation, sidebar) {
  const help = document.getElementById("shortcuts");
  document.getElementById("shortcuts-button")?.addEventListener("click", () => help.showModal());
  document.addEventListener("keydown", (event) => {
    const active = document.activeElement;
    const typing = !!active && (active.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName));
    const overlay = help.open || drawerOpen(document);
    const action = shortcutFor(event, {
      typing,
      overlay,
      streaming: conversation.runningReply() !== null,
    });
    if (!action) return;
    event.preventDefault();
    switch (action) {
      case "search":
        if (window.matchMedia(NARROW).matches && !drawerOpen(document)) {
          setDrawer(document, true, () => sidebar.focusSearch());
        } else {
          sidebar.focusSearch();
        }
        break;
      case "new-chat":
        document.querySelector("#sidebar form")?.requestSubmit();
        break;
      case "stop":
        conversation.runningReply()?.querySelector("[data-stop]:not([hidden])")?.click();
        break;
      case "help":
        help.showModal();
        break;
      case "focus-composer":
        view.input.focus();
        break;
      case "close":
        if (help.open) help.close();
        else setDrawer(document, false);
        break;
    }
  });
}

function start() {
  const view = new View(document, window);
  const conversation = new Conversation(view);
  conversation.adopt();
  const transport = new Transport({
    url: view.socketUrl(),
    onFrame: (frame) => conversation.dispatch(frame),
    onOpen: () => conversation.onOpen(),
    onStatus: (text, kind) => view.setStatus(text, kind),
  });
  conversation.transport = transport;
  const sidebar = new Sidebar(document, {
    toast: (text) => view.toast(text),
    onCurrentDeleted: () => window.location.assign("/"),
  });
  sidebar.start();
  rememberModel(view.modelPicker);
  setUpInstructions(view);
  setUpShortcuts(view, conversation, sidebar);

  view.composer.addEventListener("submit", (event) => conversation.onSubmit(event));
  view.input.addEventListener("keydown", (event) => conversation.onComposerKey(event));
  view.messages.addEventListener("click", (event) => conversation.onMessagesClick(event));
  transport.start(window, document);
  setInterval(() => conversation.resumeStalled(), STALL_RESUME_MS / 3);
}

if (document.getElementById("chat")) start();
