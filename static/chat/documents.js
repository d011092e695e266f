// Documents on the chat page: upload by drag and drop or file picker (with upload progress),
// each document's ingestion status and progress until it is ready or failed (with the reason),
// delete, the shared collections the chat draws on, and citations under replies (links to the
// document page). Talks only to the REST API (docs/api.md, "Documents"); it follows replies by
// watching the page's message elements, so it needs nothing from the chat's own modules.

const FINAL = new Set(["complete", "incomplete"]);
const POLL_MS = 1000;

// --- pure helpers (static/chat/tests/documents.test.mjs) ------------------------------------

export function progressLabel(doc) {
  if (doc.status === "ready") return `ready · ${doc.pages} page${doc.pages === 1 ? "" : "s"}`;
  if (doc.status === "failed") return `failed: ${doc.error || "could not be processed"}`;
  if (doc.status === "processing") return `processing ${Math.round((doc.progress || 0) * 100)}%`;
  return "waiting to be processed";
}

export function citationItems(citations) {
  // Only links to Parley's own document pages: a citation is data from the server, and a
  // stray scheme (javascript:) must never become a link.
  return (citations || [])
    .filter((c) => typeof c.url === "string" && c.url.startsWith("/documents/"))
    .map((c) => ({ href: c.url, label: `[${c.n}] ${c.name}, p. ${c.page}` }));
}

export function refusalText(status, body) {
  const detail = body && body.error && body.error.detail;
  if (detail) return detail;
  if (status === 413) return "This file is too large.";
  return `The upload failed (HTTP ${status}).`;
}

export function csrfToken(doc) {
  const field = doc.querySelector("input[name=csrfmiddlewaretoken]");
  return field ? field.value : "";
}

// --- requests -------------------------------------------------------------------------------

function uploadWithProgress(win, { url, file, fields, csrf, onProgress }) {
  // XMLHttpRequest, not fetch: only it reports upload progress.
  return new Promise((resolve) => {
    const xhr = new win.XMLHttpRequest();
    xhr.open("POST", url);
    xhr.setRequestHeader("X-CSRFToken", csrf);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        body = null;
      }
      resolve({ status: xhr.status, body });
    });
    xhr.addEventListener("error", () => resolve({ status: 0, body: null }));
    const form = new win.FormData();
    form.append("file", file);
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    xhr.send(form);
  });
}

// --- the panel ------------------------------------------------------------------------------

export class DocumentsPanel {
  constructor(root, doc, win) {
    this.root = root;
    this.doc = doc;
    this.win = win;
    this.api = root.dataset.api;
    this.conversation = root.dataset.conversation;
    this.list = root.querySelector("[data-documents-list]");
    this.items = new Map(); // document id → its <li>
    this.polling = new Set();
  }

  async request(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    if (options.method && options.method !== "GET") headers["X-CSRFToken"] = csrfToken(this.doc);
    const response = await this.win.fetch(this.api + path, {
      credentials: "same-origin",
      ...options,
      headers,
    });
    const body = response.status === 204 ? null : await response.json().catch(() => null);
    return { status: response.status, body };
  }

  start() {
    const drop = this.root.querySelector("[data-documents-drop]");
    const input = this.root.querySelector("[data-documents-input]");
    input.addEventListener("change", () => {
      this.uploadAll(input.files);
      input.value = "";
    });
    for (const name of ["dragenter", "dragover"]) {
      drop.addEventListener(name, (event) => {
        event.preventDefault();
        drop.classList.add("documents__drop--over");
      });
    }
    drop.addEventListener("dragleave", () => drop.classList.remove("documents__drop--over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("documents__drop--over");
      this.root.open = true;
      this.uploadAll(event.dataTransfer.files);
    });
    this.load();
    this.loadCollections();
    this.watchReplies();
  }

  async load() {
    const { status, body } = await this.request(
      `/documents?conversation=${this.conversation}&page_size=100`,
    );
    if (status !== 200) return;
    for (const doc of body.results) this.show(doc);
    this.count();
  }

  count() {
    const counter = this.root.querySelector("[data-documents-count]");
    counter.textContent = this.items.size ? `(${this.items.size})` : "";
  }

  item(key) {
    let li = this.items.get(key);
    if (!li) {
      li = this.doc.createElement("li");
      li.className = "documents__item";
      this.list.prepend(li);
      this.items.set(key, li);
    }
    return li;
  }

  show(doc) {
    const li = this.item(String(doc.id));
    li.dataset.documentId = doc.id;
    li.dataset.status = doc.status;
    li.replaceChildren();
    const link = this.doc.createElement("a");
    link.href = doc.url;
    link.textContent = doc.name;
    const state = this.doc.createElement("span");
    state.className = `documents__state documents__state--${doc.status}`;
    state.textContent = progressLabel(doc);
    li.append(link, state);
    if (doc.status === "pending" || doc.status === "processing") {
      const bar = this.doc.createElement("progress");
      bar.max = 1;
      bar.value = doc.progress || 0;
      li.append(bar);
      this.poll(doc.id);
    }
    const remove = this.doc.createElement("button");
    remove.type = "button";
    remove.className = "documents__delete";
    remove.textContent = "Delete";
    remove.addEventListener("click", () => this.remove(doc.id));
    li.append(remove);
  }

  poll(id) {
    if (this.polling.has(id)) return;
    this.polling.add(id);
    const tick = async () => {
      const { status, body } = await this.request(`/documents/${id}`);
      if (status !== 200) {
        this.polling.delete(id);
        return;
      }
      this.polling.delete(id);
      this.show(body);
      if (body.status === "pending" || body.status === "processing") {
        this.polling.add(id);
        this.win.setTimeout(tick, POLL_MS);
      }
    };
    this.win.setTimeout(tick, POLL_MS);
  }

  async remove(id) {
    const { status, body } = await this.request(`/documents/${id}`, { method: "DELETE" });
    const li = this.items.get(String(id));
    if (status === 204 && li) {
      li.remove();
      this.items.delete(String(id));
      this.count();
    } else if (li) {
      this.error(li, refusalText(status, body));
    }
  }

  error(li, text) {
    let note = li.querySelector(".documents__error");
    if (!note) {
      note = this.doc.createElement("span");
      note.className = "documents__error";
      note.setAttribute("role", "alert");
      li.append(note);
    }
    note.textContent = text;
  }

  uploadAll(files) {
    for (const file of files) this.upload(file);
  }

  async upload(file) {
    const key = `upload-${Math.random().toString(36).slice(2)}`;
    const li = this.item(key);
    li.dataset.status = "uploading";
    const name = this.doc.createElement("span");
    name.textContent = file.name;
    const bar = this.doc.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    li.append(name, bar);
    const { status, body } = await uploadWithProgress(this.win, {
      url: `${this.api}/documents`,
      file,
      fields: { conversation: this.conversation },
      csrf: csrfToken(this.doc),
      onProgress: (share) => {
        bar.value = share;
      },
    });
    this.items.delete(key);
    if (status === 200 || status === 201) {
      li.remove();
      this.show(body);
    } else {
      bar.remove();
      li.dataset.status = "refused";
      this.error(li, refusalText(status, body));
      this.items.set(key, li);
    }
    this.count();
  }

  async loadCollections() {
    const box = this.root.querySelector("[data-documents-collections]");
    const [all, picked] = await Promise.all([
      this.request("/collections?page_size=100"),
      this.request(`/conversations/${this.conversation}/collections`),
    ]);
    if (all.status !== 200 || picked.status !== 200 || !all.body.results.length) return;
    const chosen = new Set(picked.body.map((c) => c.id));
    for (const collection of all.body.results) {
      const label = this.doc.createElement("label");
      const box_ = this.doc.createElement("input");
      box_.type = "checkbox";
      box_.value = collection.id;
      box_.checked = chosen.has(collection.id);
      box_.addEventListener("change", () => this.saveCollections(box));
      label.append(box_, ` ${collection.name} (${collection.documents})`);
      box.append(label);
    }
    box.hidden = false;
  }

  async saveCollections(box) {
    const ids = [...box.querySelectorAll("input:checked")].map((input) => Number(input.value));
    await this.request(`/conversations/${this.conversation}/collections`, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ collections: ids }),
    });
  }

  // --- citations under replies --------------------------------------------------------------

  watchReplies() {
    const messages = this.doc.getElementById("messages");
    if (!messages) return;
    this.citeAll();
    const observer = new this.win.MutationObserver((changes) => {
      for (const change of changes) {
        const article =
          change.type === "attributes" ? change.target : change.target.closest?.("[data-message-id]");
        if (article && article.dataset && FINAL.has(article.dataset.status)) this.citeOne(article);
      }
    });
    observer.observe(messages, { subtree: true, attributes: true, attributeFilter: ["data-status"] });
  }

  async citeAll() {
    const { status, body } = await this.request(
      `/conversations/${this.conversation}/messages?page_size=100`,
    );
    if (status !== 200) return;
    for (const message of body.results) {
      const article = this.doc.querySelector(`[data-message-id="${message.id}"]`);
      if (article) this.cite(article, message.citations);
    }
  }

  async citeOne(article) {
    if (article.dataset.cited) return;
    const { status, body } = await this.request(`/messages/${article.dataset.messageId}`);
    if (status === 200) this.cite(article, body.citations);
  }

  cite(article, citations) {
    const items = citationItems(citations);
    if (!items.length || article.querySelector(".citations")) return;
    article.dataset.cited = "1";
    const list = this.doc.createElement("ol");
    list.className = "citations";
    list.setAttribute("aria-label", "Sources");
    for (const { href, label } of items) {
      const li = this.doc.createElement("li");
      const link = this.doc.createElement("a");
      link.href = href;
      link.target = "_blank";
      link.rel = "noopener";
      link.textContent = label;
      li.append(link);
      list.append(li);
    }
    const body = article.querySelector(".message__body");
    (body || article).after(list);
  }
}

if (typeof document !== "undefined") {
  const root = document.getElementById("documents");
  if (root) new DocumentsPanel(root, document, window).start();
}
