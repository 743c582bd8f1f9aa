// berth's dashboard: a hash-routed page over the /v1 API. Every value from the
// server is put into the page as text (textContent, attributes), never as HTML, and
// the Content-Security-Policy allows no inline script. The API token lives in this
// tab's sessionStorage only (gone when the tab closes, removed by Sign out), is
// sent in the Authorization header and never appears in a URL.

const TOKEN_KEY = "berth.token";
const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const live = document.getElementById("live");
const signout = document.getElementById("signout");

// ---------------------------------------------------------------- helpers

/** An element with attributes (on* attributes take functions) and children. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces `el`'s children (arrays flattened, empty ones left out). */
function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function say(text) {
  live.textContent = text;
}

class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.retryAfter = retryAfter;
  }
}

/** Calls the API; JSON in, JSON out; throws ApiError on a non-2xx answer. */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text };
  }
  // A token that no longer works is forgotten; the next page asks for another.
  if (resp.status === 401) sessionStorage.removeItem(TOKEN_KEY);
  if (!resp.ok) throw new ApiError(resp.status, data, resp.headers.get("Retry-After"));
  return data;
}

const enc = encodeURIComponent;
const projectPath = (p) => `/v1/projects/${enc(p)}`;
const servicePath = (p, s) => `${projectPath(p)}/services/${enc(s)}`;

const STATUS_WORDS = {
  PENDING_DEPLOY: "Pending deploy",
  DEPLOYING: "Deploying",
  DEPLOYED: "Deployed",
  FAILED: "Failed",
  TERMINATED: "Terminated",
  REMOVED: "Removed",
  CREATED: "Created",
};
const STATUS_MARKS = { DEPLOYED: "●", FAILED: "✕", DEPLOYING: "◐", PENDING_DEPLOY: "○", TERMINATED: "■", REMOVED: "–" };

/** A status badge: the word and a mark, not colour alone. */
function badge(status) {
  return h(
    "span",
    { class: `badge badge-${String(status).toLowerCase()}` },
    h("span", { "aria-hidden": "true" }, STATUS_MARKS[status] || "·"),
    " ",
    STATUS_WORDS[status] || status,
  );
}

/** A credential's last background check, in words (and a mark). */
function healthText(health) {
  if (!health) return h("span", { class: "muted" }, "not checked yet");
  if (health.status === "ok") return h("span", { class: "tag tag-passed" }, "✓ ok", h("span", { class: "muted" }, " (checked ", when(health.checked_at), ")"));
  return h("span", { class: "tag tag-failing" }, `✕ failing: ${health.code}`, h("span", { class: "muted" }, " (checked ", when(health.checked_at), ")"));
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return h("time", { datetime: iso, title: iso }, d.toLocaleString());
}

function seconds(from, to) {
  const ms = new Date(to) - new Date(from);
  return Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : "";
}

function shortDigest(d) {
  return d ? `${d.slice(0, 19)}…` : "—";
}

function errorBox(e) {
  return h(
    "div",
    { class: "alert alert-error", role: "alert" },
    h("strong", {}, e.body && e.body.code ? `${e.body.code}: ` : "Error: "),
    e.message,
  );
}

function setCrumbs(items) {
  fill(crumbs, 
    ...items.flatMap(([text, href], i) => [
      i ? h("span", { class: "sep", "aria-hidden": "true" }, "/") : null,
      href ? h("a", { href }, text) : h("span", { "aria-current": "page" }, text),
    ]).filter(Boolean),
  );
}

/** Replaces the page's content, moves focus to its heading. */
function render(title, ...children) {
  document.title = `${title} · berth`;
  const heading = h("h1", { tabindex: "-1" }, title);
  fill(main, heading, ...children);
  heading.focus({ preventScroll: true });
}

/** A confirmation dialog; resolves true if confirmed. */
function confirmDialog(title, text, action) {
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

/** A labelled field. */
function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  const hintEl = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hintEl);
}

// Timers and streams of the page on screen; stopped when the page changes.
let pageTasks = [];
function onLeave(stop) {
  pageTasks.push(stop);
}

// ---------------------------------------------------------------- registry hosts

/** The registry host an image reference names (Docker Hub when none). */
function imageHost(ref) {
  const first = ref.trim().split("/")[0];
  if (ref.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost")) return first;
  return "docker.io";
}

function isDockerHub(host) {
  return ["docker.io", "index.docker.io", "registry-1.docker.io"].includes(host);
}

/** The Registry URL to pre-fill: the image's host (HTTPS unless the operator
 * lists the host as plain HTTP). */
function registryUrlFor(ref) {
  const host = imageHost(ref);
  return isDockerHub(host) ? "docker.io" : host;
}

// ---------------------------------------------------------------- the credentials form

/**
 * The Private Registry Credentials form of the wizard and the Settings tab: the
 * fields, Test Connection with each step of the preflight, and the gate on Save.
 * `existing` (the masked read-back) makes empty fields mean "leave as-is".
 */
/** Registries whose users need to know what to type (the README's table), and the
 * kind of credentials each takes. */
const PRESETS = [
  ["Docker Hub", "docker.io", "basic", "Username: your Docker ID. Password: an access token with Read."],
  ["GitHub (GHCR)", "ghcr.io", "basic", "Username: your GitHub user. Password: a personal access token with read:packages."],
  ["GitLab", "registry.gitlab.com", "basic", "Username: the deploy token's user name. Password: a deploy token with read_registry."],
  ["Quay", "quay.io", "basic", "Username: a robot account, org+name. Password: the robot's token."],
  ["Amazon ECR", "", "ecr-role", "Registry URL: ACCOUNT.dkr.ecr.REGION.amazonaws.com. A role of yours for berth to assume (recommended), or an access key of a user allowed ecr:GetAuthorizationToken and the pulls."],
  ["Google Artifact Registry", "", "gcp", "Registry URL: REGION-docker.pkg.dev. The service account key file (JSON) of an account with Artifact Registry Reader."],
  ["Azure ACR", "", "basic", "Registry URL: NAME.azurecr.io. Username: the admin user or a service principal's app id. Password: its password or secret."],
  ["Harbor", "", "basic", "Registry URL: your Harbor host. Username: a robot account, robot$project+name. Password: the robot's secret."],
  ["Other", "", "basic", "The registry's host (and port), a user name and a password or token."],
];

/** The forms a credential can take, as the API's kinds take them. */
const CREDENTIAL_TYPES = [
  ["basic", "Username and password or token"],
  ["gcp", "Google service account key (JSON file)"],
  ["ecr-role", "AWS role for berth to assume (ECR)"],
  ["ecr-keys", "AWS access key (ECR)"],
];

/** The caller's projects, fetched once per page load (the external id of each). */
let projectsOnce;
function projectInfo(p) {
  projectsOnce = projectsOnce || api("GET", "/v1/projects").catch(() => []);
  return projectsOnce.then((list) => list.find((x) => x.name === p));
}

function credentialsForm({ project, image, existing, onState }) {
  const preset = h("select", { name: "preset" }, h("option", { value: "" }, "Choose for hints (optional)"), PRESETS.map(([name], i) => h("option", { value: String(i) }, name)));
  const presetHint = h("p", { class: "hint", "aria-live": "polite" });
  const kind = h("select", { name: "credential_type" }, CREDENTIAL_TYPES.map(([v, label]) => h("option", { value: v }, label)));
  const url = h("input", { type: "text", inputmode: "url", name: "registry_url", autocomplete: "off", spellcheck: "false", placeholder: existing ? "leave as-is" : "ghcr.io" });
  const user = h("input", { type: "text", name: "username", autocomplete: "off", spellcheck: "false", placeholder: existing ? `${existing.username} (leave as-is)` : "" });
  const pass = h("input", { type: "password", name: "password", autocomplete: "new-password", placeholder: existing ? "leave as-is" : "" });
  // A key file is read in the page and sent once; never shown.
  const keyFile = h("input", { type: "file", name: "json_key", accept: ".json,application/json" });
  let keyText = "";
  const keyId = h("input", { type: "text", name: "aws_access_key_id", autocomplete: "off", spellcheck: "false", placeholder: "AKIA…" });
  const keySecret = h("input", { type: "password", name: "aws_secret_access_key", autocomplete: "new-password" });
  const roleArn = h("input", { type: "text", name: "role_arn", autocomplete: "off", spellcheck: "false", placeholder: "arn:aws:iam::123456789012:role/berth-pull" });
  const region = h("input", { type: "text", name: "aws_region", autocomplete: "off", spellcheck: "false", placeholder: "from the registry host" });
  const externalId = h("code", { class: "mono" }, "…");
  const test = h("button", { type: "button", class: "btn" }, "Test Connection");
  const serverTests = h("p", { class: "hint", hidden: true }, "Save tests AWS credentials: berth asks AWS for a registry token with them, then runs the connection test.");
  const result = h("div", { class: "preflight", "aria-live": "polite" });
  const override = h("input", { type: "checkbox", name: "save_without_verifying" });
  const overrideRow = h("div", { class: "check", hidden: true }, override, h("label", {}, "Save without verifying"));
  overrideRow.querySelector("label").htmlFor = override.id = `ov-${Math.random().toString(36).slice(2)}`;
  let state = "untested"; // untested | passed | failed
  let urlTouched = !!existing;

  const rows = {
    basic: [field("Username", user), field("Password", pass, existing ? "Stored encrypted; never shown. Leave empty to keep it." : "Or an access token. Stored encrypted; never shown again.")],
    gcp: [field("Service account key", keyFile, "The key file's JSON; checked before anything is sent, stored encrypted, never shown again.")],
    "ecr-role": [
      field("Role ARN", roleArn, "The role's trust policy names berth's AWS principal and requires the external id below; its permissions allow ecr:GetAuthorizationToken and the pulls."),
      h("div", { class: "field" }, h("p", { class: "hint" }, "External id of this project (the trust policy's sts:ExternalId): ", externalId)),
    ],
    "ecr-keys": [field("Access key id", keyId), field("Secret access key", keySecret, "Stored encrypted; never shown again. berth mints ECR's 12-hour tokens from it at each deploy.")],
  };
  const regionRow = field("AWS region", region, "Only when the registry host names none.");
  const kindRows = h("div", {});
  const mode = () => kind.value;
  const aws = () => mode().startsWith("ecr");
  const showKind = () => {
    fill(kindRows, rows[mode()], aws() ? regionRow : null);
    test.hidden = aws();
    serverTests.hidden = !aws();
    if (mode() === "ecr-role") projectInfo(project).then((info) => (externalId.textContent = info ? info.aws_external_id : "unknown"));
  };
  if (existing && existing.kind === "ecr") kind.value = existing.username.startsWith("ar") ? "ecr-role" : "ecr-keys";
  showKind();

  const values = () => ({ registry_url: url.value.trim(), username: user.value.trim(), password: pass.value });
  /** The kind's own fields of a registry body, as typed. */
  const fields = () => {
    const v = values();
    const out = {};
    switch (mode()) {
      case "gcp":
        if (keyText) out.json_key = keyText;
        break;
      case "ecr-role":
        out.kind = "ecr";
        if (roleArn.value.trim()) out.role_arn = roleArn.value.trim();
        if (region.value.trim()) out.aws_region = region.value.trim();
        break;
      case "ecr-keys":
        out.kind = "ecr";
        if (keyId.value.trim()) out.aws_access_key_id = keyId.value.trim();
        if (keySecret.value) out.aws_secret_access_key = keySecret.value;
        if (region.value.trim()) out.aws_region = region.value.trim();
        break;
      default:
        if (v.username) out.username = v.username;
        if (v.password) out.password = v.password;
    }
    return out;
  };
  /** A secret was typed (or a key file chosen): what a test must prove. */
  const secretTyped = () => Boolean(pass.value || keyText || keySecret.value || roleArn.value.trim());
  const typed = () => {
    const v = values();
    return Boolean(v.username || secretTyped() || keyId.value.trim() || (existing && v.registry_url));
  };
  // AWS credentials are tested by the save (berth mints the token first).
  const update = () => onState({ state, typed: typed(), override: override.checked, testable: !aws() });
  const reset = () => {
    if (state !== "untested") {
      state = "untested";
      result.replaceChildren();
      overrideRow.hidden = true;
      override.checked = false;
    }
    update();
  };
  url.addEventListener("input", () => {
    urlTouched = true;
    reset();
  });
  preset.addEventListener("change", () => {
    const p = PRESETS[Number(preset.value)];
    presetHint.textContent = p ? p[3] : "";
    if (p && p[1] && !existing) {
      url.value = p[1];
      urlTouched = true;
    }
    if (p) {
      kind.value = p[2];
      showKind();
    }
    reset();
  });
  kind.addEventListener("change", () => {
    showKind();
    reset();
  });
  keyFile.addEventListener("change", async () => {
    const f = keyFile.files && keyFile.files[0];
    keyText = f ? await f.text() : "";
    reset();
  });
  for (const input of [user, pass, keyId, keySecret, roleArn, region]) input.addEventListener("input", reset);
  override.addEventListener("change", update);

  const setImage = (ref) => {
    if (!urlTouched && ref) url.value = registryUrlFor(ref);
  };
  setImage(image());

  test.addEventListener("click", async () => {
    const v = values();
    const body = {
      registry_url: v.registry_url || (existing && existing.registry_url) || registryUrlFor(image()),
      image: image(),
    };
    if (mode() === "gcp") {
      if (!keyText) {
        fill(result, h("p", { class: "alert alert-info" }, existing ? "Choose the key file to test it here; Save tests the stored one on the server." : "Choose the service account key file first."));
        return;
      }
      body.username = "_json_key";
      body.password = keyText;
    } else {
      if (v.username || existing) body.username = v.username || undefined;
      if (v.password) body.password = v.password;
      if (existing && !v.password) {
        fill(result, h("p", { class: "alert alert-info" }, "Retype the password to test it here; Save tests the stored one on the server."));
        return;
      }
    }
    test.disabled = true;
    test.textContent = "Testing…";
    fill(result, h("p", { class: "muted" }, "Testing the connection to the registry…"));
    try {
      const r = await api("POST", "/v1/preflight", body);
      state = r.ok ? "passed" : "failed";
      fill(result, preflightResult(r));
      say(r.ok ? "Connection test passed" : `Connection test failed: ${r.message}`);
    } catch (e) {
      if (e.status === 429) {
        const wait = e.retryAfter ? ` Try again in ${e.retryAfter} s.` : " Try again in a minute.";
        fill(result, h("p", { class: "alert alert-soft", role: "status" }, `Too many connection tests for now.${wait}`));
      } else {
        state = "failed";
        fill(result, errorBox(e));
      }
    } finally {
      test.disabled = false;
      test.textContent = "Test Connection";
    }
    overrideRow.hidden = state !== "failed";
    update();
  });

  const el = h(
    "div",
    { class: "cred-fields" },
    field("Registry", preset),
    presetHint,
    field("Registry URL", url, "Pre-filled from the image's host."),
    field("Credentials", kind),
    kindRows,
    h("div", { class: "actions" }, test),
    serverTests,
    result,
    overrideRow,
  );
  return {
    el,
    setImage,
    values,
    fields,
    typed,
    secretTyped,
    testable: () => !aws(),
    passed: () => state === "passed",
    override: () => override.checked,
    showResult: (r) => {
      state = "failed";
      fill(result, preflightResult(r));
      overrideRow.hidden = false;
      update();
    },
    clearSecrets: () => {
      pass.value = "";
      keySecret.value = "";
      keyFile.value = "";
      keyText = "";
    },
  };
}

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

// ---------------------------------------------------------------- pages

function signIn() {
  setCrumbs([]);
  signout.hidden = true;
  const input = h("input", { type: "password", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const status = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card narrow", "aria-label": "Sign in" },
    field("API token", input, ["An admin makes one with ", h("code", {}, "berth user create NAME"), "; the server's first one is in ", h("code", {}, "DATA_DIR/admin-token"), "."]),
    status,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, "Sign in")),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    try {
      await api("GET", "/v1/projects");
      location.hash = "#/projects";
      route();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      fill(status, errorBox(e.status === 401 ? new ApiError(401, { code: "unauthorized", message: "That token is not valid." }) : e));
    }
  });
  render("Sign in to berth", form);
}

async function projects() {
  setCrumbs([["Projects"]]);
  const list = await api("GET", "/v1/projects");
  const name = h("input", { type: "text", name: "name", required: true, pattern: "[a-z0-9][a-z0-9\\-]{0,62}", autocomplete: "off" });
  const status = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card", "aria-label": "Create project" },
    h("h2", {}, "New project"),
    field("Project name", name, "Lower-case letters, digits and dashes. Names are unique on this server."),
    status,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn" }, "Create project")),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", "/v1/projects", { name: name.value.trim() });
      location.hash = `#/p/${enc(name.value.trim())}`;
    } catch (e) {
      fill(status, errorBox(e));
    }
  });
  render(
    "Projects",
    list.length
      ? h(
          "ul",
          { class: "cards" },
          list.map((p) => h("li", { class: "card" }, h("a", { href: `#/p/${enc(p.name)}`, class: "title" }, p.name), h("span", { class: "muted" }, ` · ${p.role}`))),
        )
      : h("p", { class: "muted" }, "No project yet: create one below."),
    form,
  );
}

async function project(p) {
  setCrumbs([["Projects", "#/projects"], [p]]);
  const [services, mine] = await Promise.all([api("GET", `${projectPath(p)}/services`), api("GET", "/v1/projects")]);
  const role = (mine.find((m) => m.name === p) || {}).role;
  const table = services.length
    ? h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, "Services"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Service"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Image"), h("th", { scope: "col" }, "Registry"))),
        h(
          "tbody",
          {},
          services.map((s) =>
            h(
              "tr",
              {},
              h("th", { scope: "row" }, h("a", { href: `#/p/${enc(p)}/s/${enc(s.name)}` }, s.name)),
              h("td", {}, badge(s.status)),
              h("td", { class: "mono" }, s.image),
              h("td", {}, s.registry ? [`${s.registry.username} @ ${s.registry.registry_url} · `, healthText(s.registry.health)] : "anonymous"),
            ),
          ),
        ),
      )
    : h("p", { class: "muted" }, "No service yet.");
  const members = [];
  if (role === "owner") {
    const user = h("input", { type: "text", name: "user", required: true, autocomplete: "off" });
    const status = h("div", { "aria-live": "polite" });
    const form = h(
      "form",
      { class: "card", "aria-label": "Add member" },
      h("h2", {}, "Members"),
      field("User name", user, "Members see and deploy every service of this project."),
      status,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "btn" }, "Add member")),
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try {
        await api("POST", `${projectPath(p)}/members`, { user: user.value.trim() });
        fill(status, h("p", { class: "alert alert-ok", role: "status" }, `${user.value.trim()} is now a member.`));
        user.value = "";
      } catch (e) {
        fill(status, errorBox(e));
      }
    });
    members.push(form);
  }
  render(
    p,
    h("div", { class: "actions" }, h("a", { class: "btn btn-primary", href: `#/p/${enc(p)}/new` }, "Create service"), h("a", { class: "btn", href: `#/p/${enc(p)}/audit` }, "Audit log")),
    table,
    members,
  );
}

function createService(p) {
  setCrumbs([["Projects", "#/projects"], [p, `#/p/${enc(p)}`], ["New service"]]);
  const name = h("input", { type: "text", name: "name", required: true, pattern: "[a-z0-9][a-z0-9\\-]{0,62}", autocomplete: "off" });
  const method = h("select", { name: "build_method" }, h("option", { value: "image" }, "Docker image"));
  const image = h("input", { type: "text", name: "image", required: true, autocomplete: "off", spellcheck: "false", placeholder: "ghcr.io/acme/api:1.4" });
  const save = h("button", { type: "submit", class: "btn btn-primary" }, "Save");
  const status = h("div", { "aria-live": "polite" });
  let creds;
  const gate = ({ state, typed, override, testable }) => {
    const open = !section.hidden;
    save.disabled = open && typed && testable && !(state === "passed" || override);
  };
  creds = credentialsForm({ project: p, image: () => image.value.trim(), onState: gate });
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
  const form = h(
    "form",
    { class: "card", "aria-label": "Create service", novalidate: true },
    field("Service name", name, "Lower-case letters, digits and dashes."),
    field("Build method", method),
    field("Image reference", image, "For example nginx:1.27, ghcr.io/acme/api:1.4 or registry.example.com/team/app@sha256:…"),
    h("div", { class: "cred-box" }, toggle, section),
    status,
    h("div", { class: "actions" }, save, h("a", { class: "btn", href: `#/p/${enc(p)}` }, "Cancel")),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!name.value.trim() || !image.value.trim()) {
      fill(status, errorBox(new ApiError(400, { code: "invalid_request", message: "A service name and an image reference are needed." })));
      return;
    }
    const body = { name: name.value.trim(), image: image.value.trim() };
    if (!section.hidden && creds.typed()) {
      const v = creds.values();
      body.registry = { registry_url: v.registry_url || registryUrlFor(body.image), ...creds.fields() };
      if (creds.override()) body.save_without_verifying = true;
    }
    save.disabled = true;
    try {
      await api("POST", `${projectPath(p)}/services`, body);
      creds.clearSecrets();
      location.hash = `#/p/${enc(p)}/s/${enc(body.name)}`;
    } catch (e) {
      save.disabled = false;
      if (e.status === 422 && e.body.preflight) creds.showResult(e.body.preflight);
      fill(status, errorBox(e));
    }
  });
  render("Create service", form);
}

function serviceTabs(p, s, current) {
  const base = `#/p/${enc(p)}/s/${enc(s)}`;
  return h(
    "nav",
    { class: "tabs", "aria-label": "Service" },
    [
      ["Overview", base, "overview"],
      ["Deployments", `${base}/deployments`, "deployments"],
      ["Settings", `${base}/settings`, "settings"],
    ].map(([text, href, key]) => h("a", { href, "aria-current": key === current ? "page" : undefined }, text)),
  );
}

async function service(p, s, tab) {
  setCrumbs([["Projects", "#/projects"], [p, `#/p/${enc(p)}`], [s]]);
  const [svc, deployments] = await Promise.all([api("GET", servicePath(p, s)), api("GET", `${servicePath(p, s)}/deployments`)]);
  const head = h("div", { class: "service-head" }, badge(svc.status), h("span", { class: "mono" }, svc.image));
  let body;
  if (tab === "deployments") body = deploymentsTab(p, s, deployments);
  else if (tab === "settings") body = settingsTab(p, s, svc);
  else body = overviewTab(p, s, svc, deployments);
  render(s, head, serviceTabs(p, s, tab), body);
  if (["PENDING_DEPLOY", "DEPLOYING"].includes(svc.status)) {
    const t = setTimeout(route, 1500);
    onLeave(() => clearTimeout(t));
  }
}

function overviewTab(p, s, svc, deployments) {
  const deployed = deployments.find((d) => d.status === "DEPLOYED");
  const status = h("div", { "aria-live": "polite" });
  const terminated = svc.status === "TERMINATED";
  const deploy = h("button", { type: "button", class: "btn btn-primary", disabled: terminated }, "Deploy");
  deploy.addEventListener("click", async () => {
    deploy.disabled = true;
    try {
      const d = await api("POST", `${servicePath(p, s)}/deployments`, {});
      location.hash = `#/p/${enc(p)}/s/${enc(s)}/d/${enc(d.id)}`;
    } catch (e) {
      deploy.disabled = false;
      fill(status, errorBox(e));
    }
  });
  const terminate = h("button", { type: "button", class: "btn btn-danger", disabled: terminated }, "Terminate");
  terminate.addEventListener("click", async () => {
    const ok = await confirmDialog(
      `Terminate ${s}?`,
      "Its container is stopped and its stored registry secret is destroyed: it cannot be recovered. The service stays listed as Terminated.",
      "Terminate service",
    );
    if (!ok) return;
    try {
      await api("DELETE", servicePath(p, s));
      say(`${s} terminated`);
      route();
    } catch (e) {
      fill(status, errorBox(e));
    }
  });
  const exit = svc.last_exit ? (svc.last_exit.signal ? `signal ${svc.last_exit.signal}` : svc.last_exit.code !== null ? `code ${svc.last_exit.code}` : "unknown") : null;
  return h(
    "section",
    { class: "card" },
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Status"),
      h("dd", {}, badge(svc.status)),
      h("dt", {}, "Image"),
      h("dd", { class: "mono" }, svc.image),
      h("dt", {}, "Digest deployed"),
      h("dd", { class: "mono" }, deployed ? h("a", { href: `#/p/${enc(p)}/s/${enc(s)}/d/${enc(deployed.id)}` }, deployed.digest || "—") : "—"),
      h("dt", {}, "Registry"),
      h("dd", {}, svc.registry ? svc.registry.registry_url : "anonymous pulls"),
      h("dt", {}, "Restart policy"),
      h("dd", {}, `${svc.restart_policy}${svc.restarts ? ` · ${svc.restarts} restarts` : ""}${exit ? ` · last exit ${exit}` : ""}`),
      h("dt", {}, "Created"),
      h("dd", {}, when(svc.created_at)),
    ),
    status,
    h("div", { class: "actions" }, deploy, terminate),
  );
}

function deploymentsTab(p, s, deployments) {
  if (!deployments.length) return h("p", { class: "muted" }, "No deployment yet: Deploy starts one.");
  return h(
    "table",
    {},
    h("caption", { class: "visually-hidden" }, "Deployments, newest first"),
    h("thead", {}, h("tr", {}, ["Deployment", "Status", "Digest", "Duration", "Started"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      deployments.map((d) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, h("a", { href: `#/p/${enc(p)}/s/${enc(s)}/d/${enc(d.id)}`, class: "mono" }, d.id.slice(0, 8))),
          h("td", {}, badge(d.status), d.failure_code ? h("span", { class: "muted" }, ` ${d.failure_code}`) : ""),
          h("td", { class: "mono", title: d.digest || "" }, shortDigest(d.digest)),
          h("td", {}, ["DEPLOYED", "FAILED", "REMOVED"].includes(d.status) ? seconds(d.created_at, d.updated_at) : "…"),
          h("td", {}, when(d.created_at)),
        ),
      ),
    ),
  );
}

function settingsTab(p, s, svc) {
  const reg = svc.registry;
  const wrap = h("section", { class: "card", "aria-labelledby": "pr-title" }, h("h2", { id: "pr-title" }, "Private Registry"));
  const status = h("div", { "aria-live": "polite" });
  const showForm = () => {
    const save = h("button", { type: "submit", class: "btn btn-primary" }, "Save");
    const gate = ({ state, typed, override, testable }) => {
      // With credentials stored, an untouched password is tested by the server at
      // Save; new credentials need a passing test (or the override) first, but for
      // the kinds the server tests at Save (AWS).
      const needsTest = testable && (reg ? creds.secretTyped() : typed);
      save.disabled = !typed || (needsTest && !(state === "passed" || override));
    };
    const creds = credentialsForm({ project: p, image: () => svc.image, existing: reg, onState: gate });
    const redeploy = h("input", { type: "checkbox", id: "redeploy", name: "redeploy" });
    const redeployRow =
      svc.status === "DEPLOYED"
        ? h("div", { class: "check" }, redeploy, h("label", { for: "redeploy" }, "Redeploy with the new credentials (the running deployment is replaced only once the new one runs)"))
        : null;
    const form = h("form", { "aria-label": "Registry credentials", novalidate: true }, creds.el, redeployRow, status, h("div", { class: "actions" }, save, h("button", { type: "button", class: "btn", onclick: () => route() }, "Cancel")));
    save.disabled = true;
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const v = creds.values();
      const body = {};
      if (v.registry_url) body.registry_url = v.registry_url;
      else if (!reg) body.registry_url = registryUrlFor(svc.image);
      Object.assign(body, creds.fields());
      if (creds.override()) body.save_without_verifying = true;
      if (redeploy.checked) body.redeploy = true;
      save.disabled = true;
      try {
        const saved = await api("PUT", `${servicePath(p, s)}/registry`, body);
        creds.clearSecrets();
        say("Registry credentials saved");
        if (saved.deployment) location.hash = `#/p/${enc(p)}/s/${enc(s)}/d/${enc(saved.deployment.id)}`;
        else route();
      } catch (e) {
        save.disabled = false;
        if (e.status === 422 && e.body.preflight) creds.showResult(e.body.preflight);
        fill(status, errorBox(e));
      }
    });
    fill(wrap, wrap.firstChild, form);
    form.querySelector("input").focus();
  };
  if (reg) {
    const remove = h("button", { type: "button", class: "btn btn-danger" }, "Remove credentials");
    remove.addEventListener("click", async () => {
      const ok = await confirmDialog("Remove the registry credentials?", "The stored secret is destroyed, and later deploys pull the image anonymously.", "Remove credentials");
      if (!ok) return;
      try {
        await api("DELETE", `${servicePath(p, s)}/registry`);
        say("Registry credentials removed");
        route();
      } catch (e) {
        fill(status, errorBox(e));
      }
    });
    wrap.append(
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Registry URL"),
        h("dd", { class: "mono" }, reg.registry_url),
        h("dt", {}, "Username"),
        h("dd", { class: "mono" }, reg.username),
        h("dt", {}, "Password"),
        h("dd", {}, reg.password_set ? "•••••••• (set)" : "not set"),
        h("dt", {}, "Verified"),
        h("dd", {}, reg.verified ? "yes: the connection test passed" : "no: saved without verifying"),
        h("dt", {}, "Health"),
        h("dd", {}, healthText(reg.health)),
        h("dt", {}, "Updated"),
        h("dd", {}, when(reg.updated_at)),
      ),
      status,
      h("div", { class: "actions" }, h("button", { type: "button", class: "btn", onclick: showForm }, "Edit"), remove),
    );
  } else {
    wrap.append(h("p", { class: "muted" }, "None: deploys pull the image anonymously."), h("button", { type: "button", class: "btn", onclick: showForm }, "+ Add private registry credentials"), status);
  }
  return wrap;
}

async function deployment(p, s, id) {
  setCrumbs([["Projects", "#/projects"], [p, `#/p/${enc(p)}`], [s, `#/p/${enc(p)}/s/${enc(s)}/deployments`], [id.slice(0, 8)]]);
  const path = `${servicePath(p, s)}/deployments/${enc(id)}`;
  const summary = h("div", { class: "card" });
  const progress = h("div", { class: "progress-list" });
  const waterfall = h("div", { class: "waterfall" });
  const log = h("pre", { class: "log", tabindex: "0", "aria-label": "Infrastructure log and container output" });
  render(
    `Deployment ${id.slice(0, 8)}`,
    serviceTabs(p, s, "deployments"),
    summary,
    progress,
    waterfall,
    h("section", { "aria-labelledby": "log-title" }, h("h2", { id: "log-title" }, "Infrastructure log"), h("p", { class: "hint" }, "Each step berth took, the registry's own answers, then the container's output, followed live."), log),
  );
  let stopped = false;
  onLeave(() => {
    stopped = true;
  });
  let last;
  const poll = async () => {
    if (stopped) return;
    try {
      const d = await api("GET", path);
      showSummary(summary, d);
      if (d.progress) showProgress(progress, d.progress);
      else progress.replaceChildren();
      if (d.pull) showWaterfall(waterfall, d.pull);
      last = d.status;
    } catch (e) {
      fill(summary, errorBox(e));
    }
    if (!stopped && ["PENDING_DEPLOY", "DEPLOYING"].includes(last)) setTimeout(poll, 400);
  };
  await poll();
  followLog(`${path}/logs?follow=true`, log, () => stopped).then(() => poll());
}

function showSummary(el, d) {
  fill(el, 
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Status"),
      h("dd", {}, badge(d.status)),
      h("dt", {}, "Image"),
      h("dd", { class: "mono" }, d.image),
      h("dt", {}, "Digest"),
      h("dd", { class: "mono" }, d.digest || "—"),
      h("dt", {}, "Started"),
      h("dd", {}, when(d.created_at)),
      ["DEPLOYED", "FAILED", "REMOVED"].includes(d.status) ? [h("dt", {}, "Took"), h("dd", {}, seconds(d.created_at, d.updated_at))] : null,
    ),
    d.failure_code ? h("p", { class: "alert alert-error", role: "alert" }, h("strong", {}, `${d.failure_code}: `), d.failure_message || "") : null,
  );
}

function mb(n) {
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  return `${(n / 1e6).toFixed(n < 1e7 ? 2 : 0)} MB`;
}

function showProgress(el, blobs) {
  fill(el, 
    h("h2", {}, "Pulling"),
    blobs.map((b, i) =>
      h(
        "div",
        { class: "blob" },
        h("label", { for: `blob-${i}`, class: "mono" }, `${i === 0 ? "config" : `layer ${i}`} ${b.digest.slice(7, 19)} · ${b.state} · ${mb(b.received)} of ${mb(b.size)}`),
        h("progress", { id: `blob-${i}`, max: String(b.size || 1), value: String(b.state === "cached" ? b.size : b.received) }),
      ),
    ),
  );
}

/** A pull as a browser's network panel shows requests: each blob's download and
 * unpack on one time axis. */
function showWaterfall(el, pull) {
  const end = Math.max(1, ...pull.blobs.map((b) => Math.max(b.downloaded_ms || 0, b.applied_ms || 0)));
  const pct = (ms) => `${((100 * ms) / end).toFixed(2)}%`;
  fill(el, 
    h("h2", {}, `Pull waterfall · ${(end / 1000).toFixed(2)} s`),
    h("p", { class: "hint" }, "Each blob on one time axis: ", h("span", { class: "key key-dl" }, "download"), " (a layer unpacks while it downloads), then ", h("span", { class: "key key-un" }, "the rest of its unpack"), "; a cached blob has no bar."),
    h(
      "ol",
      { class: "wf", "aria-label": "Pull waterfall" },
      pull.blobs.map((b, i) => {
        const name = `${i === 0 ? "config" : `layer ${i}`} ${b.digest.slice(7, 19)}`;
        const dl = b.downloaded_ms !== null && b.downloaded_ms !== undefined;
        const cached = !dl && (b.started_ms === undefined || b.started_ms === null);
        const text = cached
          ? `${name}: cached`
          : `${name}: ${mb(b.size)}, downloaded ${((b.started_ms || 0) / 1000).toFixed(2)}–${((b.downloaded_ms || 0) / 1000).toFixed(2)} s${b.applied_ms ? `, unpacked by ${(b.applied_ms / 1000).toFixed(2)} s` : ""}`;
        const track = h("div", { class: "wf-track", "aria-hidden": "true" });
        if (dl) {
          const bar = h("span", { class: "wf-dl" });
          bar.style.left = pct(b.started_ms || 0);
          bar.style.width = pct(Math.max(end / 400, b.downloaded_ms - (b.started_ms || 0)));
          track.append(bar);
        }
        if (!cached && b.applied_ms && b.applied_ms > (b.downloaded_ms || 0)) {
          const bar = h("span", { class: "wf-un" });
          bar.style.left = pct(b.downloaded_ms || 0);
          bar.style.width = pct(b.applied_ms - (b.downloaded_ms || 0));
          track.append(bar);
        }
        return h("li", {}, h("span", { class: "wf-name mono" }, text), track);
      }),
    ),
  );
}

/** Streams the log into `pre`, following, until the server ends the answer. */
async function followLog(url, pre, stopped) {
  const ctl = new AbortController();
  onLeave(() => ctl.abort());
  try {
    const resp = await fetch(url, { headers: { Authorization: `Bearer ${token()}` }, signal: ctl.signal, cache: "no-store", credentials: "omit" });
    if (!resp.ok) {
      pre.textContent = `The log could not be read (HTTP ${resp.status}).`;
      return;
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    while (!stopped()) {
      const { value, done } = await reader.read();
      if (done) break;
      const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
      pre.append(value);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
  } catch (e) {
    if (e.name !== "AbortError") pre.append(`\n(the log stream stopped: ${e.message})`);
  }
}

async function audit(p) {
  setCrumbs([["Projects", "#/projects"], [p, `#/p/${enc(p)}`], ["Audit log"]]);
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const svcFilter = params.get("service") || "";
  const actionFilter = params.get("action") || "";
  const query = svcFilter ? `?service=${enc(svcFilter)}&limit=200` : "?limit=200";
  const [events, services] = await Promise.all([api("GET", `${projectPath(p)}/audit-events${query}`), api("GET", `${projectPath(p)}/services`)]);
  const actions = [...new Set(events.map((e) => e.action))].sort();
  const svcSel = h("select", { name: "service" }, h("option", { value: "" }, "All services"), services.map((s) => h("option", { value: s.name, selected: s.name === svcFilter }, s.name)));
  const actSel = h("select", { name: "action" }, h("option", { value: "" }, "All actions"), actions.map((a) => h("option", { value: a, selected: a === actionFilter }, a)));
  const apply = () => {
    const q = new URLSearchParams();
    if (svcSel.value) q.set("service", svcSel.value);
    if (actSel.value) q.set("action", actSel.value);
    location.hash = `#/p/${enc(p)}/audit${q.toString() ? `?${q}` : ""}`;
  };
  svcSel.addEventListener("change", apply);
  actSel.addEventListener("change", apply);
  const shown = events.filter((e) => !actionFilter || e.action === actionFilter);
  const meta = (m) => {
    if (!m || typeof m !== "object") return "";
    const parts = [];
    if (m.preflight) parts.push(h("span", { class: `tag tag-${m.preflight}` }, `preflight: ${m.preflight}`));
    for (const [k, v] of Object.entries(m)) if (k !== "preflight") parts.push(h("span", { class: "muted" }, ` ${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`));
    return parts;
  };
  render(
    "Audit log",
    h("form", { class: "filters", "aria-label": "Filters" }, field("Service", svcSel), field("Action", actSel)),
    shown.length
      ? h(
          "table",
          {},
          h("caption", { class: "visually-hidden" }, "Audit events, newest first"),
          h("thead", {}, h("tr", {}, ["When", "Actor", "Action", "Service", "Details"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            shown.map((e) => h("tr", {}, h("td", {}, when(e.at)), h("td", {}, e.actor), h("td", { class: "mono nowrap" }, e.action), h("td", {}, e.service || ""), h("td", {}, meta(e.metadata)))),
          ),
        )
      : h("p", { class: "muted" }, "No event matches."),
  );
}

// ---------------------------------------------------------------- router

async function route() {
  for (const stop of pageTasks) stop();
  pageTasks = [];
  if (!token()) return signIn();
  signout.hidden = false;
  const [path] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (parts[0] === "p" && parts[1]) {
      const p = parts[1];
      if (parts[2] === "new") return createService(p);
      if (parts[2] === "audit") return await audit(p);
      if (parts[2] === "s" && parts[3]) {
        if (parts[4] === "d" && parts[5]) return await deployment(p, parts[3], parts[5]);
        return await service(p, parts[3], parts[4] || "overview");
      }
      return await project(p);
    }
    return await projects();
  } catch (e) {
    if (e.status === 401) return signIn();
    render(e.status === 404 ? "Not found" : "Something went wrong", errorBox(e), h("p", {}, h("a", { href: "#/projects" }, "Back to projects")));
  }
}

signout.addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.hash = "#/";
  route();
});
window.addEventListener("hashchange", route);
route();
