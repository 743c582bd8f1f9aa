// The Private Registry Credentials form of the wizard and the Settings tab: the
// fields of each kind, Test Connection with each step of the preflight, and the
// state Save is gated on (its rules are credentials.js). With `existing` (the
// masked read-back), empty fields mean "leave as-is".

import { h, fill } from "./dom.js";
import { api } from "./api.js";
import { say } from "./page.js";
import { field, errorBox } from "./widgets.js";
import {
  PRESETS,
  CREDENTIAL_TYPES,
  registryUrlFor,
  isAws,
  kindOf,
  placeholders,
  kindFields,
  secretTyped,
  anyTyped,
  preflightRequest,
  tooManyTests,
} from "./credentials.js";

/** The caller's projects, fetched once per page load (the external id of each). */
let projectsOnce;
function projectInfo(p) {
  projectsOnce = projectsOnce || api("GET", "/v1/projects").catch(() => []);
  return projectsOnce.then((list) => list.find((x) => x.name === p));
}

/**
 * The form's element (`el`) and what its page asks of it: the typed values, the
 * kind's fields, whether a test passed or the override is ticked; `onState` hears
 * of every change.
 */
export function credentialsForm({ project, image, existing, onState }) {
  const form = { project, image, existing, onState, els: inputs(existing), state: "untested", urlTouched: !!existing, keyText: "" };
  form.kindRows = kindRows(form);
  form.els.kind.value = kindOf(existing);
  showKind(form);
  listen(form);
  setImage(form, image());
  return {
    el: layout(form.els, form.kindRows.el),
    setImage: (ref) => setImage(form, ref),
    values: () => ({ registry_url: form.els.url.value.trim(), username: form.els.user.value.trim(), password: form.els.pass.value }),
    fields: () => kindFields(form.els.kind.value, typedValues(form)),
    typed: () => anyTyped(typedValues(form), existing),
    secretTyped: () => secretTyped(typedValues(form)),
    testable: () => !isAws(form.els.kind.value),
    passed: () => form.state === "passed",
    override: () => form.els.override.checked,
    showResult: (r) => showFailure(form, r),
    clearSecrets: () => clearSecrets(form),
  };
}

/** The inputs of every kind (a kind shows only its own). */
function inputs(existing) {
  const ph = placeholders(existing);
  const text = (name, more) => h("input", { type: "text", name, autocomplete: "off", spellcheck: "false", ...more });
  const secret = (name, more) => h("input", { type: "password", name, autocomplete: "new-password", ...more });
  const override = h("input", { type: "checkbox", name: "save_without_verifying" });
  const overrideRow = h("div", { class: "check", hidden: true }, override, h("label", {}, "Save without verifying"));
  overrideRow.querySelector("label").htmlFor = override.id = `ov-${Math.random().toString(36).slice(2)}`;
  return {
    preset: h("select", { name: "preset" }, h("option", { value: "" }, "Choose for hints (optional)"), PRESETS.map((p, i) => h("option", { value: String(i) }, p.name))),
    presetHint: h("p", { class: "hint", "aria-live": "polite" }),
    kind: h("select", { name: "credential_type" }, CREDENTIAL_TYPES.map(([v, label]) => h("option", { value: v }, label))),
    url: h("input", { type: "text", inputmode: "url", name: "registry_url", autocomplete: "off", spellcheck: "false", placeholder: ph.url }),
    user: text("username", { placeholder: ph.username }),
    pass: secret("password", { placeholder: ph.password }),
    // A key file is read in the page and sent once; never shown.
    keyFile: h("input", { type: "file", name: "json_key", accept: ".json,application/json" }),
    keyId: text("aws_access_key_id", { placeholder: "AKIA…" }),
    keySecret: secret("aws_secret_access_key"),
    roleArn: text("role_arn", { placeholder: "arn:aws:iam::123456789012:role/berth-pull" }),
    region: text("aws_region", { placeholder: "from the registry host" }),
    externalId: h("code", { class: "mono" }, "…"),
    test: h("button", { type: "button", class: "btn" }, "Test Connection"),
    serverTests: h("p", { class: "hint", hidden: true }, "Save tests AWS credentials: berth asks AWS for a registry token with them, then runs the connection test."),
    result: h("div", { class: "preflight", "aria-live": "polite" }),
    override,
    overrideRow,
  };
}

/** Each kind's rows, and the element that shows the chosen kind's. */
function kindRows({ els, existing }) {
  const passHint = existing ? "Stored encrypted; never shown. Leave empty to keep it." : "Or an access token. Stored encrypted; never shown again.";
  return {
    el: h("div", {}),
    region: field("AWS region", els.region, "Only when the registry host names none."),
    basic: [field("Username", els.user), field("Password", els.pass, passHint)],
    gcp: [field("Service account key", els.keyFile, "The key file's JSON; checked before anything is sent, stored encrypted, never shown again.")],
    "ecr-role": [
      field("Role ARN", els.roleArn, "The role's trust policy names berth's AWS principal and requires the external id below; its permissions allow ecr:GetAuthorizationToken and the pulls."),
      h("div", { class: "field" }, h("p", { class: "hint" }, "External id of this project (the trust policy's sts:ExternalId): ", els.externalId)),
    ],
    "ecr-keys": [field("Access key id", els.keyId), field("Secret access key", els.keySecret, "Stored encrypted; never shown again. berth mints ECR's 12-hour tokens from it at each deploy.")],
  };
}

function showKind({ els, kindRows: rows, project }) {
  const kind = els.kind.value;
  fill(rows.el, rows[kind], isAws(kind) ? rows.region : null);
  els.test.hidden = isAws(kind);
  els.serverTests.hidden = !isAws(kind);
  if (kind === "ecr-role") projectInfo(project).then((info) => (els.externalId.textContent = info ? info.aws_external_id : "unknown"));
}

/** What the form holds, as credentials.js reads it. */
function typedValues({ els, keyText }) {
  const v = (el) => el.value;
  const keyChosen = Boolean(els.keyFile.files && els.keyFile.files.length);
  return { registry_url: v(els.url), username: v(els.user), password: v(els.pass), keyText, keyChosen, keyId: v(els.keyId), keySecret: v(els.keySecret), roleArn: v(els.roleArn), region: v(els.region) };
}

function update(form) {
  const { els } = form;
  form.onState({ state: form.state, typed: anyTyped(typedValues(form), form.existing), override: els.override.checked, testable: !isAws(els.kind.value) });
}

/** Any change makes an earlier test's result stale. */
function reset(form) {
  const { els } = form;
  if (form.state !== "untested") {
    form.state = "untested";
    els.result.replaceChildren();
    els.overrideRow.hidden = true;
    els.override.checked = false;
  }
  update(form);
}

function listen(form) {
  const { els } = form;
  els.url.addEventListener("input", () => {
    form.urlTouched = true;
    reset(form);
  });
  els.preset.addEventListener("change", () => choosePreset(form));
  els.kind.addEventListener("change", () => {
    showKind(form);
    reset(form);
  });
  els.keyFile.addEventListener("change", async () => {
    const f = els.keyFile.files && els.keyFile.files[0];
    // A chosen file counts at once (Save waits), before its text is read.
    reset(form);
    form.keyText = f ? await f.text() : "";
    reset(form);
  });
  for (const input of [els.user, els.pass, els.keyId, els.keySecret, els.roleArn, els.region]) input.addEventListener("input", () => reset(form));
  els.override.addEventListener("change", () => update(form));
  els.test.addEventListener("click", () => testConnection(form));
}

/** A preset shows its hint, picks its kind and (for new credentials) its URL. */
function choosePreset(form) {
  const { els } = form;
  const p = PRESETS[Number(els.preset.value)];
  els.presetHint.textContent = p ? p.hint : "";
  if (p && p.url && !form.existing) {
    els.url.value = p.url;
    form.urlTouched = true;
  }
  if (p) {
    els.kind.value = p.kind;
    showKind(form);
  }
  reset(form);
}

/** The Registry URL follows the image until someone types one. */
function setImage(form, ref) {
  if (!form.urlTouched && ref) form.els.url.value = registryUrlFor(ref);
}

async function testConnection(form) {
  const { els } = form;
  const req = preflightRequest(els.kind.value, typedValues(form), form.existing, form.image());
  if (req.notice) {
    fill(els.result, h("p", { class: "alert alert-info" }, req.notice));
    return;
  }
  els.test.disabled = true;
  els.test.textContent = "Testing…";
  fill(els.result, h("p", { class: "muted" }, "Testing the connection to the registry…"));
  try {
    const r = await api("POST", "/v1/preflight", req.body);
    form.state = r.ok ? "passed" : "failed";
    fill(els.result, preflightResult(r));
    say(r.ok ? "Connection test passed" : `Connection test failed: ${r.message}`);
  } catch (e) {
    if (e.status === 429) {
      fill(els.result, h("p", { class: "alert alert-soft", role: "status" }, tooManyTests(e.retryAfter)));
    } else {
      form.state = "failed";
      fill(els.result, errorBox(e));
    }
  } finally {
    els.test.disabled = false;
    els.test.textContent = "Test Connection";
  }
  els.overrideRow.hidden = form.state !== "failed";
  update(form);
}

/** A save refused by the server's own test: its steps, and the override offered. */
function showFailure(form, r) {
  form.state = "failed";
  fill(form.els.result, preflightResult(r));
  form.els.overrideRow.hidden = false;
  update(form);
}

function clearSecrets(form) {
  const { els } = form;
  els.pass.value = "";
  els.keySecret.value = "";
  els.keyFile.value = "";
  form.keyText = "";
}

function layout(els, kindRowsEl) {
  return h(
    "div",
    { class: "cred-fields" },
    field("Registry", els.preset),
    els.presetHint,
    field("Registry URL", els.url, "Pre-filled from the image's host."),
    field("Credentials", els.kind),
    kindRowsEl,
    h("div", { class: "actions" }, els.test),
    els.serverTests,
    els.result,
    els.overrideRow,
  );
}

/** The preflight's answer: each step, then the verdict. */
function preflightResult(r) {
  return h(
    "div",
    { class: `result ${r.ok ? "ok" : "failed"}` },
    h(
      "ol",
      { class: "steps" },
      (r.steps || []).map((s) =>
        h(
          "li",
          { class: s.ok ? "ok" : "failed" },
          h("span", { class: "mark", "aria-hidden": "true" }, s.ok ? "✓" : "✕"),
          h("strong", {}, s.step),
          ` ${s.ok ? "ok" : "failed"}`,
          s.status ? ` · HTTP ${s.status}` : "",
          ` · ${s.ms} ms`,
          s.detail ? h("span", { class: "detail" }, ` · ${s.detail}`) : "",
        ),
      ),
    ),
    h(
      "p",
      { class: r.ok ? "alert alert-ok" : "alert alert-error", role: r.ok ? "status" : "alert" },
      h("strong", {}, r.ok ? "Connection test passed" : `Connection test failed (${r.code})`),
      ". ",
      r.message,
      r.duration_ms !== undefined ? ` (${r.duration_ms} ms)` : "",
    ),
  );
}
