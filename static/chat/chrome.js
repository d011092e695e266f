// What every page has around its content: the colour theme (the system's, or the one chosen
// with the toggle, remembered in localStorage), the top bar's menus (<details>, closed by Esc
// or a click elsewhere) and, on the chat page, the conversation drawer of narrow screens.

import { THEME_KEY, effectiveTheme, toggledTheme } from "./page-logic.js";

function storedTheme() {
  try {
    return localStorage.getItem(THEME_KEY);
  } catch {
    return null; // storage refused (privacy mode): follow the system
  }
}

function applyTheme(root, toggle, dark) {
  const theme = effectiveTheme(storedTheme(), dark.matches);
  root.dataset.theme = theme;
  toggle?.setAttribute("aria-pressed", String(theme === "dark"));
}

function setUpTheme(document, window) {
  const root = document.documentElement;
  const toggle = document.getElementById("theme-toggle");
  const dark = window.matchMedia("(prefers-color-scheme: dark)");
  applyTheme(root, toggle, dark);
  dark.addEventListener("change", () => applyTheme(root, toggle, dark));
  toggle?.addEventListener("click", () => {
    try {
      localStorage.setItem(THEME_KEY, toggledTheme(storedTheme(), dark.matches));
    } catch {
      root.dataset.theme = toggledTheme(root.dataset.theme, false); // this page only
      return;
    }
    applyTheme(root, toggle, dark);
  });
}

/** Open menus close on Esc (focus back on their summary) and on a click outside them. */
function setUpMenus(document) {
  const openMenus = () => Array.from(document.querySelectorAll("details.menu[open]"));
  document.addEventListener("click", (event) => {
    for (const menu of openMenus()) if (!menu.contains(event.target)) menu.open = false;
    // A chosen link (e.g. an export) closes its menu; forms close theirs when answered.
    const chosen = event.target.closest("a.menu__item");
    if (chosen) chosen.closest("details.menu").open = false;
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    const menus = openMenus();
    if (!menus.length) return;
    for (const menu of menus) menu.open = false;
    menus[0].querySelector("summary")?.focus();
    event.stopImmediatePropagation(); // Esc closed a menu; it does not also stop a reply

  });
}

/** Open or close the drawer; `focus` (an element in it) gets the focus once it is shown. */
export function setDrawer(document, open, focus = null) {
  const sidebar = document.getElementById("sidebar");
  const toggle = document.getElementById("drawer-toggle");
  const backdrop = document.getElementById("drawer-backdrop");
  if (!sidebar || !toggle) return;
  sidebar.dataset.open = String(open);
  toggle.setAttribute("aria-expanded", String(open));
  if (backdrop) backdrop.hidden = !open;
  // A hidden drawer cannot take focus: wait for the frame that shows it.
  if (focus) requestAnimationFrame(() => requestAnimationFrame(() => focus()));
}

export function drawerOpen(document) {
  return document.getElementById("sidebar")?.dataset.open === "true";
}

function setUpDrawer(document) {
  const toggle = document.getElementById("drawer-toggle");
  if (!toggle) return;
  toggle.addEventListener("click", () => {
    const open = !drawerOpen(document);
    const first = document.querySelector("#sidebar .new-chat");
    setDrawer(document, open, open && first ? () => first.focus() : null);
  });
  document.getElementById("drawer-backdrop")?.addEventListener("click", () => {
    setDrawer(document, false);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && drawerOpen(document)) {
      setDrawer(document, false);
      toggle.focus();
    }
  });
}

/** A button with `data-copy-from` (a selector) copies that element's text (a new API key). */
function setUpCopyButtons(document) {
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy-from]");
    if (!button) return;
    const text = document.querySelector(button.dataset.copyFrom)?.textContent || "";
    const label = button.textContent;
    try {
      await navigator.clipboard.writeText(text.trim());
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy refused — select the text";
    }
    setTimeout(() => (button.textContent = label), 2000);
  });
}

setUpTheme(document, window);
setUpCopyButtons(document);
setUpMenus(document);
setUpDrawer(document);
