// A service's Settings tab: its run settings (environment, secrets by name,
// command, volume, region) in a form that saves only what changed, then its
// private registry credentials as stored (masked), the form that edits or adds
// them, and Remove.

import { h, fill } from "./dom.js";
import { api, servicePath } from "./api.js";
import { say, reload } from "./page.js";
import { errorBox, healthText, when, confirmDialog } from "./widgets.js";
import { credentialsForm } from "./credentials-form.js";
import { registryBody, settingsSaveBlocked, maskedPassword, verifiedWords } from "./credentials.js";
import { runSettingsForm, problemsBox } from "./run-settings-form.js";
import { updateBody, changesAnything } from "./run-settings.js";
import { deploymentHref } from "./routes.js";

export function settingsTab(p, s, svc) {
  return [runSettingsCard(p, s, svc), registryCard(p, s, svc)];
}

// What the last save said, shown once by the page drawn after it.
let savedNote = null;

/** The run settings as stored, editable; Save sends what changed, Save and
 * redeploy also starts a deployment with them. */
function runSettingsCard(p, s, svc) {
  const form = runSettingsForm({ stored: svc });
  const status = h("div", { "aria-live": "polite" }, savedNote ? h("p", { class: "alert alert-ok", role: "status" }, savedNote) : null);
  savedNote = null;
  const terminated = svc.status === "TERMINATED";
  const save = h("button", { type: "submit", class: "btn btn-primary", disabled: terminated }, "Save settings");
  const saveDeploy = h("button", { type: "submit", class: "btn", disabled: terminated, value: "redeploy" }, "Save and redeploy");
  const el = h(
    "form",
    { class: "card", "aria-labelledby": "rs-title", novalidate: true },
    h("h2", { id: "rs-title" }, "Environment and runtime"),
    h("p", { class: "hint intro" }, "Changes apply at the next deploy; Save and redeploy starts one now (the running deployment is replaced only once the new one runs)."),
    form.el,
    status,
    h("div", { class: "actions" }, save, saveDeploy, h("button", { type: "button", class: "btn", onclick: () => reload() }, "Reset")),
  );
  // What was said about the last attempt is stale once the form changes.
  form.el.addEventListener("input", () => status.replaceChildren());
  el.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const redeploy = ev.submitter === saveDeploy;
    const { body, errors } = updateBody(svc, form.state(), { redeploy });
    if (errors.length) return fill(status, problemsBox(errors));
    if (!redeploy && !changesAnything(body)) return fill(status, h("p", { class: "alert alert-info", role: "status" }, "Nothing changed."));
    save.disabled = saveDeploy.disabled = true;
    try {
      const saved = await api("PUT", servicePath(p, s), body);
      form.clearSecrets();
      say(redeploy ? "Settings saved; deploying" : "Settings saved");
      if (saved.deployment) return (location.hash = deploymentHref(p, s, saved.deployment.id));
      savedNote = "Settings saved. They apply at the next deploy.";
      reload();
    } catch (e) {
      save.disabled = saveDeploy.disabled = false;
      fill(status, errorBox(e));
    }
  });
  return el;
}

function registryCard(p, s, svc) {
  const reg = svc.registry;
  const wrap = h("section", { class: "card", "aria-labelledby": "pr-title" }, h("h2", { id: "pr-title" }, "Private Registry"));
  const status = h("div", { "aria-live": "polite" });
  const showForm = () => {
    const form = editForm(p, s, svc, status);
    fill(wrap, wrap.firstChild, form);
    form.querySelector("input").focus();
  };
  if (reg) {
    wrap.append(registryFacts(reg), status, h("div", { class: "actions" }, h("button", { type: "button", class: "btn", onclick: showForm }, "Edit"), removeButton(p, s, status)));
  } else {
    wrap.append(h("p", { class: "muted" }, "None: deploys pull the image anonymously."), h("button", { type: "button", class: "btn", onclick: showForm }, "+ Add private registry credentials"), status);
  }
  return wrap;
}

/** The stored credentials as the API reads them back: never the secret. */
function registryFacts(reg) {
  return h(
    "dl",
    { class: "facts" },
    h("dt", {}, "Registry URL"),
    h("dd", { class: "mono" }, reg.registry_url),
    h("dt", {}, "Username"),
    h("dd", { class: "mono" }, reg.username),
    h("dt", {}, "Password"),
    h("dd", {}, maskedPassword(reg)),
    h("dt", {}, "Verified"),
    h("dd", {}, verifiedWords(reg)),
    h("dt", {}, "Health"),
    h("dd", {}, healthText(reg.health)),
    h("dt", {}, "Updated"),
    h("dd", {}, when(reg.updated_at)),
  );
}

function removeButton(p, s, status) {
  const remove = h("button", { type: "button", class: "btn btn-danger" }, "Remove credentials");
  remove.addEventListener("click", async () => {
    const ok = await confirmDialog("Remove the registry credentials?", "The stored secret is destroyed, and later deploys pull the image anonymously.", "Remove credentials");
    if (!ok) return;
    try {
      await api("DELETE", `${servicePath(p, s)}/registry`);
      say("Registry credentials removed");
      reload();
    } catch (e) {
      fill(status, errorBox(e));
    }
  });
  return remove;
}

/** The credentials form with Save (gated), the redeploy choice and Cancel. */
function editForm(p, s, svc, status) {
  const reg = svc.registry;
  const save = h("button", { type: "submit", class: "btn btn-primary" }, "Save");
  const gate = (g) => {
    save.disabled = settingsSaveBlocked({ ...g, stored: Boolean(reg), secretTyped: creds.secretTyped() });
  };
  const creds = credentialsForm({ project: p, image: () => svc.image, existing: reg, onState: gate });
  const redeploy = h("input", { type: "checkbox", id: "redeploy", name: "redeploy" });
  const redeployRow =
    svc.status === "DEPLOYED"
      ? h("div", { class: "check" }, redeploy, h("label", { for: "redeploy" }, "Redeploy with the new credentials (the running deployment is replaced only once the new one runs)"))
      : null;
  const form = h("form", { "aria-label": "Registry credentials", novalidate: true }, creds.el, redeployRow, status, h("div", { class: "actions" }, save, h("button", { type: "button", class: "btn", onclick: () => reload() }, "Cancel")));
  save.disabled = true;
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = registryBody({ registry_url: creds.values().registry_url, fields: creds.fields(), override: creds.override(), redeploy: redeploy.checked, stored: Boolean(reg), image: svc.image });
    save.disabled = true;
    try {
      const saved = await api("PUT", `${servicePath(p, s)}/registry`, body);
      creds.clearSecrets();
      say("Registry credentials saved");
      if (saved.deployment) location.hash = deploymentHref(p, s, saved.deployment.id);
      else reload();
    } catch (e) {
      save.disabled = false;
      if (e.status === 422 && e.body.preflight) creds.showResult(e.body.preflight);
      fill(status, errorBox(e));
    }
  });
  return form;
}
