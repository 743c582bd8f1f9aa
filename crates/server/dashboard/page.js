// The frame every page draws into: the main region, the breadcrumbs, the live
// region that screen readers announce, and what a page leaves behind when the
// route changes (its timers and streams).

import { h, fill } from "./dom.js";

const byId = (id) => document.getElementById(id);

/** Replaces the page's content, moves focus to its heading. */
export function render(title, ...children) {
  document.title = `${title} · berth`;
  const heading = h("h1", { tabindex: "-1" }, title);
  fill(byId("main"), heading, ...children);
  heading.focus({ preventScroll: true });
}

/** The breadcrumbs: `[text, href]` pairs, the last one (no href) the current page. */
export function setCrumbs(items) {
  fill(
    byId("crumbs"),
    ...items
      .flatMap(([text, href], i) => [
        i ? h("span", { class: "sep", "aria-hidden": "true" }, "/") : null,
        href ? h("a", { href }, text) : h("span", { "aria-current": "page" }, text),
      ])
      .filter(Boolean),
  );
}

/** Says `text` to screen readers (the polite live region). */
export function say(text) {
  byId("live").textContent = text;
}

export function showSignOut(shown) {
  byId("signout").hidden = !shown;
}

// Timers and streams of the page on screen; stopped when the page changes.
let pageTasks = [];

export function onLeave(stop) {
  pageTasks.push(stop);
}

export function leavePage() {
  for (const stop of pageTasks) stop();
  pageTasks = [];
}

// The router (app.js) registers itself here, so that a page can draw the current
// route again without importing the module that imports it.
let router = () => {};

export function setRouter(route) {
  router = route;
}

/** Draws the page the hash names again (after a change the page made). */
export function reload() {
  return router();
}
