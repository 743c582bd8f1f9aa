// The run settings form of the wizard and the Settings tab: environment variables
// and secrets as rows (add, remove), command and arguments (split like a shell,
// the words shown as they will be run), one volume, a region. Its rules are
// run-settings.js. With `stored` (the read-back), secrets show by name only and
// an empty value means "leave as-is".

import { h, fill } from "./dom.js";
import { field, when } from "./widgets.js";
import { initialState, splitWords } from "./run-settings.js";

const uid = () => Math.random().toString(36).slice(2);

/** The form's element (`el`), its state as run-settings.js reads it, and a way to
 * forget the secret values typed (after a save). */
export function runSettingsForm({ stored } = {}) {
  const init = initialState(stored);
  const env = envTable(init.env);
  const secrets = secretsTable(init.secrets, stored ? stored.secrets : []);
  const command = wordsInput("command", init.command, "for example node server.js");
  const args = wordsInput("args", init.args, "for example --port 8080");
  const volPath = h("input", { type: "text", name: "volume_path", autocomplete: "off", spellcheck: "false", placeholder: "/data", value: init.volume.path });
  const volSize = h("input", { type: "number", name: "volume_size_mb", min: stored && stored.volume ? String(stored.volume.size_mb) : "1", step: "1", inputmode: "numeric", placeholder: "1024", value: init.volume.size_mb });
  const region = h("input", { type: "text", name: "region", autocomplete: "off", spellcheck: "false", placeholder: "any", value: init.region });
  const hasVolume = Boolean(stored && stored.volume);
  const el = h(
    "div",
    { class: "run-settings" },
    group("Environment variables", env.el, "Merged over the image's own variables. Anyone who can read the service sees them: put passwords and keys in secrets."),
    group("Secrets", secrets.el, "Write-only: stored encrypted and never shown again, not even here. Each is given to the app as an environment variable or, ticked, as the file /run/secrets/NAME."),
    group(
      "Command and arguments",
      [
        field("Command (replaces the image's entrypoint)", command.input),
        command.preview,
        field("Arguments (replace the image's command)", args.input),
        args.preview,
      ],
      "Split like a shell: quote an argument that holds spaces, as in sh -c 'echo hello; exec app'. Nothing is expanded. Empty: the image's own.",
    ),
    group(
      "Volume",
      h("div", { class: "row" }, field("Mounted at", volPath), field("Size (MB)", volSize)),
      hasVolume ? "Kept across deploys and restarts. Its size can grow, never shrink, and it cannot be removed (terminating the service deletes it)." : "Optional. Kept across deploys and restarts; deleted with the service. Its size can grow later, never shrink.",
    ),
    group("Placement", field("Region", region, "Only servers started with --region NAME run the service. Empty: any server."), null),
  );
  return {
    el,
    state: () => ({
      env: env.rows(),
      secrets: secrets.rows(),
      command: command.input.value,
      args: args.input.value,
      volume: { path: volPath.value, size_mb: volSize.value },
      region: region.value,
    }),
    clearSecrets: () => secrets.clear(),
  };
}

/** A titled part of the form. */
function group(title, body, hint) {
  const id = `g-${uid()}`;
  return h("fieldset", { class: "rs-group", "aria-describedby": hint ? `${id}-hint` : undefined }, h("legend", {}, title), hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null, body);
}

/** A field split into words, and a line that shows the words (or what is wrong). */
function wordsInput(name, value, placeholder) {
  const input = h("input", { type: "text", name, autocomplete: "off", spellcheck: "false", placeholder, value, class: "mono" });
  const preview = h("p", { class: "words", "aria-live": "polite" });
  const show = () => {
    const r = splitWords(input.value);
    if (r.error) fill(preview, h("span", { class: "tag tag-failing" }, `✕ ${r.error}`));
    else if (!r.words.length) fill(preview, h("span", { class: "muted" }, "The image's own."));
    else fill(preview, h("span", { class: "muted" }, `${r.words.length} ${r.words.length === 1 ? "word" : "words"}: `), r.words.map((w) => h("code", { class: "word" }, w)));
  };
  input.addEventListener("input", show);
  show();
  return { input, preview };
}

/** A table of rows, each a `tr`; shows `empty` when there is none. */
function rowsTable(head, empty, addLabel, makeRow) {
  const tbody = h("tbody", {});
  const table = h("table", { class: "kv" }, h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))), tbody);
  const none = h("p", { class: "muted none" }, empty);
  const rows = [];
  const refresh = () => {
    table.hidden = rows.length === 0;
    none.hidden = rows.length !== 0;
  };
  const add = (init, focus) => {
    const row = makeRow(init, () => {
      rows.splice(rows.indexOf(row), 1);
      row.tr.remove();
      refresh();
    });
    rows.push(row);
    tbody.append(row.tr);
    refresh();
    if (focus) row.focus();
  };
  const addButton = h("button", { type: "button", class: "btn btn-small", onclick: () => add(null, true) }, addLabel);
  return { el: [none, table, h("div", { class: "actions" }, addButton)], rows, add, refresh };
}

function envTable(init) {
  const t = rowsTable(["Name", "Value", h("span", { class: "visually-hidden" }, "Remove")], "None.", "+ Add variable", (v, drop) => {
    const name = h("input", { type: "text", class: "mono", autocomplete: "off", spellcheck: "false", "aria-label": "Variable name", placeholder: "NAME", value: v ? v.name : "" });
    const value = h("input", { type: "text", class: "mono", autocomplete: "off", spellcheck: "false", "aria-label": `Value of ${v ? v.name : "the new variable"}`, value: v ? v.value : "" });
    name.addEventListener("input", () => value.setAttribute("aria-label", `Value of ${name.value || "the new variable"}`));
    const remove = h("button", { type: "button", class: "btn btn-small btn-danger", "aria-label": `Remove variable ${v ? v.name : ""}`.trim(), onclick: drop }, "Remove");
    return {
      tr: h("tr", {}, h("td", {}, name), h("td", {}, value), h("td", { class: "end" }, remove)),
      read: () => ({ name: name.value, value: value.value }),
      focus: () => name.focus(),
    };
  });
  for (const v of init) t.add(v, false);
  t.refresh();
  return { el: t.el, rows: () => t.rows.map((r) => r.read()) };
}

function secretsTable(init, storedList) {
  const t = rowsTable(["Name", "Value", "Given as", h("span", { class: "visually-hidden" }, "Remove")], "None.", "+ Add secret", (v, drop) => {
    const stored = Boolean(v && v.stored);
    const meta = stored ? storedList.find((k) => k.name === v.name) : null;
    const name = stored
      ? h("div", {}, h("span", { class: "mono secret-name" }, v.name), h("div", { class: "hint" }, "set ", when(meta.updated_at), ` · ${meta.as === "file" ? "as a file" : "as env"}`))
      : h("input", { type: "text", class: "mono", autocomplete: "off", spellcheck: "false", "aria-label": "Secret name", placeholder: "NAME" });
    // Typed values stay in the input's property, never its attribute, so no
    // secret enters the page's HTML.
    const value = h("input", { type: "password", autocomplete: "new-password", "aria-label": stored ? `New value of ${v.name}` : "Secret value", placeholder: stored ? "leave as-is" : "value" });
    const fileId = `sf-${uid()}`;
    const file = h("input", { type: "checkbox", id: fileId, checked: stored && v.file });
    const fileLabel = h("label", { for: fileId }, "as a file in /run/secrets");
    const removedNote = h("span", { class: "tag tag-failing", hidden: true }, "removed on save");
    let removed = false;
    const tr = h("tr", {});
    const remove = h("button", { type: "button", class: "btn btn-small btn-danger", "aria-label": stored ? `Remove secret ${v.name}` : "Remove secret" }, "Remove");
    remove.addEventListener("click", () => {
      if (!stored) return drop();
      // A stored secret stays listed, marked, until the save (Undo brings it back).
      removed = !removed;
      tr.classList.toggle("removed", removed);
      value.disabled = file.disabled = removed;
      if (removed) value.value = "";
      removedNote.hidden = !removed;
      remove.textContent = removed ? "Undo" : "Remove";
      remove.setAttribute("aria-label", `${removed ? "Keep" : "Remove"} secret ${v.name}`);
      remove.classList.toggle("btn-danger", !removed);
    });
    tr.append(
      h("td", {}, name, removedNote),
      h("td", {}, value),
      h("td", {}, h("div", { class: "check" }, file, fileLabel)),
      h("td", { class: "end" }, remove),
    );
    return {
      tr,
      read: () => ({ name: stored ? v.name : name.value, value: value.value, file: file.checked, stored, removed }),
      clear: () => (value.value = ""),
      focus: () => (stored ? value : name).focus(),
    };
  });
  for (const v of init) t.add(v, false);
  t.refresh();
  return { el: t.el, rows: () => t.rows.map((r) => r.read()), clear: () => t.rows.forEach((r) => r.clear()) };
}

/** What the rules found wrong in the form, as one alert. */
export function problemsBox(errors) {
  return h("div", { class: "alert alert-error", role: "alert" }, h("strong", {}, "Check the settings:"), h("ul", { class: "problems" }, errors.map((e) => h("li", {}, e))));
}
