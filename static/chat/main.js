// Parley chat page: one WebSocket per tab (transport.js) feeding the open conversation
// (conversation.js), which keeps each reply's text by seq (reply-state.js) and shows it
// (rendering.js). The wire protocol is docs/protocol.md. No framework and no build step: ES
// modules from 'self', loaded after the vendored markdown-it, DOMPurify and highlight.js
// (deferred scripts), so the CSP needs no inline script.

import { Conversation } from "./conversation.js";
import { STALL_RESUME_MS } from "./reply-state.js";
import { View } from "./rendering.js";
import { Transport } from "./transport.js";

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

  view.composer.addEventListener("submit", (event) => conversation.onSubmit(event));
  view.input.addEventListener("keydown", (event) => conversation.onComposerKey(event));
  view.messages.addEventListener("click", (event) => conversation.onMessagesClick(event));
  transport.start(window, document);
  setInterval(() => conversation.resumeStalled(), STALL_RESUME_MS / 3);
}

if (document.getElementById("chat")) start();
