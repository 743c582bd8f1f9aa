// The Create service wizard: a name, an image, (for a private image) the
// credentials form in a disclosure that opens by itself for a registry other than
// Docker Hub, and the run settings (environment, secrets, command, volume,
// region) in a disclosure of their own.

import { h, fill } from "./dom.js";
import { api, ApiError, projectPath } from "./api.js";
import { render, setCrumbs } from "./page.js";
import { field, errorBox } from "./widgets.js";
import { credentialsForm } from "./credentials-form.js";
import { imageHost, isDockerHub, serviceBody, wizardSaveBlocked } from "./credentials.js";
import { runSettingsForm, problemsBox } from "./run-settings-form.js";
import { createBody } from "./run-settings.js";
import { projectsHref, projectHref, serviceHref } from "./routes.js";

export function createService(p) {
  setCrumbs([["Projects", projectsHref], [p, projectHref(p)], ["New service"]]);
  const name = h("input", { type: "text", name: "name", required: true, pattern: "[a-z0-9][a-z0-9\\-]{0,62}", autocomplete: "off" });
  const method = h("select", { name: "build_method" }, h("option", { value: "image" }, "Docker image"));
  const image = h("input", { type: "text", name: "image", required: true, autocomplete: "off", spellcheck: "false", placeholder: "ghcr.io/acme/api:1.4" });
  const save = h("button", { type: "submit", class: "btn btn-primary" }, "Save");
  const status = h("div", { "aria-live": "polite" });
  const box = credentialsBox(p, image, save);
  const settings = settingsBox();
  const form = h(
    "form",
    { class: "card", "aria-label": "Create service", novalidate: true },
    field("Service name", name, "Lower-case letters, digits and dashes."),
    field("Build method", method),
    field("Image reference", image, "For example nginx:1.27, ghcr.io/acme/api:1.4 or registry.example.com/team/app@sha256:…"),
    box.el,
    settings.el,
    status,
    h("div", { class: "actions" }, save, h("a", { class: "btn", href: projectHref(p) }, "Cancel")),
  );
  // The problems found in the settings are stale once they change.
  settings.el.addEventListener("input", () => status.replaceChildren());
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit({ p, name: name.value.trim(), image: image.value.trim(), box, settings, save, status });
  });
  render("Create service", form);
}

/** The disclosure with the credentials form; Save waits on its state while open. */
function credentialsBox(p, image, save) {
  const gate = (g) => {
    save.disabled = wizardSaveBlocked({ ...g, open: !section.hidden });
  };
  const creds = credentialsForm({ project: p, image: () => image.value.trim(), onState: gate });
  const toggle = h("button", { type: "button", class: "disclosure", "aria-expanded": "false", "aria-controls": "creds" }, "Private Registry Credentials");
  const section = h("div", { id: "creds", class: "cred-section", hidden: true }, h("p", { class: "hint" }, "Needed when the image is private. berth tests them against the registry before it saves them."), creds.el);
  const setOpen = (open) => {
    section.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    gate({ state: creds.passed() ? "passed" : "untested", typed: creds.typed(), override: creds.override(), testable: creds.testable() });
  };
  toggle.addEventListener("click", () => setOpen(section.hidden));
  image.addEventListener("input", () => {
    creds.setImage(image.value.trim());
    if (!isDockerHub(imageHost(image.value)) && section.hidden) setOpen(true);
  });
  return {
    el: h("div", { class: "cred-box" }, toggle, section),
    creds,
    /** The credentials to send, or null (section closed or nothing typed). */
    typed: () => (!section.hidden && creds.typed() ? { registry_url: creds.values().registry_url, fields: creds.fields(), override: creds.override() } : null),
  };
}

/** The run settings in a disclosure, closed at first (an image's own defaults
 * are often all a service needs). */
function settingsBox() {
  const form = runSettingsForm();
  const toggle = h("button", { type: "button", class: "disclosure", "aria-expanded": "false", "aria-controls": "run-settings" }, "Advanced: environment, secrets, command, volume, region");
  const section = h("div", { id: "run-settings", class: "cred-section", hidden: true }, form.el);
  const setOpen = (open) => {
    section.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
  };
  toggle.addEventListener("click", () => setOpen(section.hidden));
  return { el: h("div", { class: "cred-box" }, toggle, section), form, reveal: () => setOpen(true) };
}

async function submit({ p, name, image, box, settings, save, status }) {
  if (!name || !image) {
    fill(status, errorBox(new ApiError(400, { code: "invalid_request", message: "A service name and an image reference are needed." })));
    return;
  }
  const body = serviceBody(name, image, box.typed());
  // What the closed disclosure holds is sent too: closing it hides, not discards.
  const run = createBody(settings.form.state());
  if (run.errors.length) {
    settings.reveal();
    fill(status, problemsBox(run.errors));
    return;
  }
  Object.assign(body, run.body);
  save.disabled = true;
  try {
    await api("POST", `${projectPath(p)}/services`, body);
    box.creds.clearSecrets();
    settings.form.clearSecrets();
    location.hash = serviceHref(p, body.name);
  } catch (e) {
    save.disabled = false;
    if (e.status === 422 && e.body.preflight) box.creds.showResult(e.body.preflight);
    fill(status, errorBox(e));
  }
}
