// Pieces several pages share: a labelled field, an error box, a status badge, a
// credential's health, a time, a confirmation dialog.

import { h } from "./dom.js";
import { statusWord, statusMark, healthSummary } from "./format.js";

/** A labelled field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  const hintEl = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hintEl);
}

export function errorBox(e) {
  return h(
    "div",
    { class: "alert alert-error", role: "alert" },
    h("strong", {}, e.body && e.body.code ? `${e.body.code}: ` : "Error: "),
    e.message,
  );
}

/** A status badge: the word and a mark, not colour alone. */
export function badge(status) {
  return h(
    "span",
    { class: `badge badge-${String(status).toLowerCase()}` },
    h("span", { "aria-hidden": "true" }, statusMark(status)),
    " ",
    statusWord(status),
  );
}

/** A credential's last background check, in words (and a mark). */
export function healthText(health) {
  const { tag, text, checkedAt } = healthSummary(health);
  if (!tag) return h("span", { class: "muted" }, text);
  return h("span", { class: `tag tag-${tag}` }, text, h("span", { class: "muted" }, " (checked ", when(checkedAt), ")"));
}

/** An instant in the reader's locale, the ISO form in its title. */
export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return h("time", { datetime: iso, title: iso }, d.toLocaleString());
}

/** A confirmation dialog; resolves true if confirmed. */
export function confirmDialog(title, text, action) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { "aria-labelledby": "dlg-title" },
      h("h2", { id: "dlg-title" }, title),
      h("p", {}, text),
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "btn", value: "cancel", onclick: () => dialog.close("cancel") }, "Cancel"),
        h("button", { type: "button", class: "btn btn-danger", onclick: () => dialog.close("ok") }, action),
      ),
    );
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "ok");
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
