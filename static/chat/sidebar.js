// The conversation list: search as you type, and each chat's menu (pin, rename, delete) posting
// its form in the background (chat/views.py answers JSON to `Accept: application/json`). The
// forms work without this script too: the server redirects back to the page.

import { filterConversations } from "./page-logic.js";

function csrfToken(form) {
  return form.querySelector("input[name=csrfmiddlewaretoken]")?.value || "";
}

export async function postForm(form) {
  const response = await fetch(form.action, {
    method: "POST",
    body: new FormData(form),
    headers: { Accept: "application/json", "X-CSRFToken": csrfToken(form) },
    credentials: "same-origin",
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `The server answered ${response.status}.`);
  return body;
}

export class Sidebar {
  constructor(document, { onCurrentDeleted, toast }) {
    this.document = document;
    this.list = document.querySelector("#conversations ul");
    this.search = document.getElementById("conversation-search");
    this.empty = document.getElementById("search-empty");
    this.onCurrentDeleted = onCurrentDeleted;
    this.toast = toast;
  }

  start() {
    this.search?.addEventListener("input", () => this.filter());
    this.search?.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.search.value) {
        this.search.value = "";
        this.filter();
        event.stopPropagation();
      }
    });
    this.list?.addEventListener("submit", (event) => this.onSubmit(event));
  }

  items() {
    return Array.from(this.list?.querySelectorAll("li.conversation") || []);
  }

  filter() {
    const items = this.items();
    const entries = items.map((li) => ({
      id: li.dataset.conversationId,
      title: li.querySelector(".conversation__title")?.textContent || "",
    }));
    const shown = new Set(filterConversations(entries, this.search.value));
    for (const li of items) li.hidden = !shown.has(li.dataset.conversationId);
    if (this.empty) this.empty.hidden = shown.size > 0 || items.length === 0;
  }

  focusSearch() {
    this.search?.focus();
    this.search?.select();
  }

  async onSubmit(event) {
    const form = event.target.closest("form[data-action]");
    if (!form) return;
    const item = form.closest("li.conversation");
    const title = item.querySelector(".conversation__title")?.textContent || "this chat";
    if (form.dataset.action === "delete" && !window.confirm(`Delete “${title}”? This cannot be undone.`)) {
      event.preventDefault();
      return;
    }
    event.preventDefault();
    try {
      const answer = await postForm(form);
      this.applied(form.dataset.action, item, answer);
    } catch (error) {
      this.toast(`Could not ${form.dataset.action}: ${error.message}`);
    }
  }

  applied(action, item, answer) {
    const menu = item.querySelector("details");
    if (menu) menu.open = false;
    if (action === "delete") {
      const current = item.querySelector("a[aria-current]") !== null;
      item.remove();
      this.toast("Chat deleted.");
      if (current) this.onCurrentDeleted();
      return;
    }
    item.querySelector(".conversation__title").textContent = answer.title;
    item.querySelector("summary")?.setAttribute("aria-label", `Actions for ${answer.title}`);
    item.querySelector("input[name=title]").value = answer.title;
    if (action === "rename") {
      this.toast("Chat renamed.");
      if (item.querySelector("a[aria-current]")) this.document.title = `${answer.title} · Parley`;
    }
    if (action === "pin") {
      item.dataset.pinned = String(answer.pinned);
      item.classList.toggle("conversation--pinned", answer.pinned);
      item.querySelector(".conversation__pin").textContent = answer.pinned ? "★ " : "";
      item.querySelector("input[name=pinned]").value = String(!answer.pinned);
      const button = item.querySelector("form[data-action=pin] button");
      button.textContent = answer.pinned ? "Unpin" : "Pin";
      // Pinned chats first, the rest as they were (most recent first).
      const pinned = this.items().filter((li) => li !== item && li.dataset.pinned === "true");
      if (answer.pinned) this.list.prepend(item);
      else if (pinned.length) pinned[pinned.length - 1].after(item);
      this.toast(answer.pinned ? "Chat pinned." : "Chat unpinned.");
      button.focus();
    }
  }
}
