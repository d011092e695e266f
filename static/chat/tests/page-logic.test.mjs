// The page's small decisions (page-logic.js): theme, search, shortcuts, versions. node --test.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  composerKey,
  effectiveTheme,
  filterConversations,
  shortcutFor,
  toggledTheme,
  versionLabel,
  versionStep,
  waitingLabel,
} from "../page-logic.js";

test("the theme follows the system until one is chosen, and the toggle flips what is shown", () => {
  assert.equal(effectiveTheme(null, true), "dark");
  assert.equal(effectiveTheme(null, false), "light");
  assert.equal(effectiveTheme("light", true), "light");
  assert.equal(effectiveTheme("dark", false), "dark");
  assert.equal(effectiveTheme("purple", false), "light"); // a bad stored value is ignored
  assert.equal(toggledTheme(null, true), "light");
  assert.equal(toggledTheme(null, false), "dark");
  assert.equal(toggledTheme("dark", false), "light");
});

test("search keeps the chats whose title has every word, ignoring case and accents", () => {
  const items = [
    { id: 1, title: "Crème brûlée recipe" },
    { id: 2, title: "Python list comprehension" },
    { id: 3, title: "Recipe for python soup" },
  ];
  assert.deepEqual(filterConversations(items, ""), [1, 2, 3]);
  assert.deepEqual(filterConversations(items, "  "), [1, 2, 3]);
  assert.deepEqual(filterConversations(items, "recipe"), [1, 3]);
  assert.deepEqual(filterConversations(items, "CREME"), [1]);
  assert.deepEqual(filterConversations(items, "python recipe"), [3]);
  assert.deepEqual(filterConversations(items, "soup list"), []);
});

const key = (k, extra = {}) => ({
  key: k,
  ctrlKey: false,
  metaKey: false,
  shiftKey: false,
  altKey: false,
  isComposing: false,
  ...extra,
});

test("shortcuts: Ctrl or Cmd+K searches, even while typing", () => {
  assert.equal(shortcutFor(key("k", { ctrlKey: true })), "search");
  assert.equal(shortcutFor(key("k", { metaKey: true }), { typing: true }), "search");
  assert.equal(shortcutFor(key("K", { metaKey: true, shiftKey: true })), "search");
  assert.equal(shortcutFor(key("O", { ctrlKey: true, shiftKey: true })), "new-chat");
});

test("shortcuts: Esc closes what is open first, else stops a running reply", () => {
  assert.equal(shortcutFor(key("Escape"), { overlay: true, streaming: true }), "close");
  assert.equal(shortcutFor(key("Escape"), { streaming: true, typing: true }), "stop");
  assert.equal(shortcutFor(key("Escape"), {}), null);
});

test("shortcuts: ? and / only when not typing, and never during IME composition", () => {
  assert.equal(shortcutFor(key("?", { shiftKey: true })), "help");
  assert.equal(shortcutFor(key("?", { shiftKey: true }), { typing: true }), null);
  assert.equal(shortcutFor(key("/")), "focus-composer");
  assert.equal(shortcutFor(key("/", { ctrlKey: true })), null);
  assert.equal(shortcutFor(key("k", { ctrlKey: true, isComposing: true })), null);
  assert.equal(shortcutFor(key("a")), null);
});

test("the composer sends on Enter and keeps Shift+Enter for a new line", () => {
  assert.equal(composerKey(key("Enter")), "send");
  assert.equal(composerKey(key("Enter", { shiftKey: true })), null);
  assert.equal(composerKey(key("Enter", { isComposing: true })), null);
  assert.equal(composerKey(key("a")), null);
});

test("versions step within their count and read 1-based", () => {
  assert.equal(versionStep(1, 2, -1), 0);
  assert.equal(versionStep(0, 2, -1), 0);
  assert.equal(versionStep(0, 3, 1), 1);
  assert.equal(versionStep(2, 3, 1), 2);
  assert.equal(versionStep(0, 1, 1), 0);
  assert.equal(versionLabel(0, 2), "1/2");
  assert.equal(versionLabel(1, 2), "2/2");
});

test("waiting for the model says the queue position when the server tells it", () => {
  assert.equal(waitingLabel(null), "Waiting for the model…");
  assert.equal(waitingLabel(undefined), "Waiting for the model…");
  assert.equal(waitingLabel(1), "Waiting for the model — next in line");
  assert.equal(waitingLabel(4), "Waiting for the model — 3 ahead in the queue");
});
