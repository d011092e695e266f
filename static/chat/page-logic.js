// The page's small decisions as pure functions (no DOM, no storage, no clock), so each is
// unit-tested under Node (tests/page-logic.test.mjs): the colour theme, the sidebar search,
// which keyboard shortcut a key press is, and browsing a reply's earlier versions.

export const THEME_KEY = "parley-theme";
const THEMES = new Set(["light", "dark"]);

/** The theme to show: the one the person chose (remembered), else the system's. */
export function effectiveTheme(stored, systemDark) {
  if (THEMES.has(stored)) return stored;
  return systemDark ? "dark" : "light";
}

/** The toggle flips what is shown now, whichever way it was chosen. */
export function toggledTheme(stored, systemDark) {
  return effectiveTheme(stored, systemDark) === "dark" ? "light" : "dark";
}

/** Case- and accent-insensitive words of `text`, for matching. */
export function searchKey(text) {
  return String(text)
    .normalize("NFKD")
    .replace(/\p{M}/gu, "")
    .toLowerCase();
}

/**
 * Which conversations a search shows: every word of the query appears in the title (any order).
 * `items` are {id, title}; returns the ids to show, in the given order. An empty query shows all.
 */
export function filterConversations(items, query) {
  const words = searchKey(query).split(/\s+/).filter(Boolean);
  return items
    .filter((item) => {
      const title = searchKey(item.title);
      return words.every((word) => title.includes(word));
    })
    .map((item) => item.id);
}

/**
 * The action a key press asks for, or null. `event` has key, ctrlKey, metaKey, shiftKey, altKey,
 * isComposing; `context` says where the focus is (`typing`: a text field has it) and whether a
 * reply is running (`streaming`) and a menu, the drawer or a dialog is open (`overlay`).
 */
export function shortcutFor(event, context = {}) {
  if (event.isComposing) return null;
  const mod = event.ctrlKey || event.metaKey;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (mod && !event.altKey && key === "k") return "search";
  if (mod && event.shiftKey && key === "o") return "new-chat";
  if (key === "Escape") {
    if (context.overlay) return "close";
    if (context.streaming) return "stop";
    return null;
  }
  if (mod || event.altKey || context.typing) return null;
  if (event.key === "?") return "help";
  if (event.key === "/") return "focus-composer";
  return null;
}

/** What the composer does with Enter: send, or leave the key alone (a new line). */
export function composerKey(event) {
  if (event.key !== "Enter" || event.isComposing) return null;
  return event.shiftKey ? null : "send";
}

/**
 * Browsing a reply's versions: `count` versions, the last the current answer; `index` is
 * 0-based. Returns the index after a step of `delta`, kept within the versions.
 */
export function versionStep(index, count, delta) {
  return Math.min(Math.max(index + delta, 0), Math.max(count - 1, 0));
}

/** "2/3": the version shown, counted from 1, of how many. */
export function versionLabel(index, count) {
  return `${index + 1}/${count}`;
}

/**
 * The status words while a reply waits for its first text: the model may be busy with
 * another reply (the bundled model answers one at a time); `position` (1 = next) when known.
 */
export function waitingLabel(position) {
  if (position == null) return "Waiting for the model…";
  if (position <= 1) return "Waiting for the model — next in line";
  return `Waiting for the model — ${position - 1} ahead in the queue`;
}
