// The dashboard as a person uses it: Debian's chromium, driven by Playwright,
// against a real berth server and a real token registry that
// crates/server/tests/dashboard.rs started. Exits non-zero on the first failure;
// writes a screenshot of every page to $OUT (harness.mjs).
//
// Env: BERTH_URL, ALICE_TOKEN, BOB_TOKEN, REG (the registry's host:port), REG_USER,
// REG_PASSWORD, GCP_KEY (a service account key the registry takes), OUT.

import assert from "node:assert/strict";
import { start } from "./harness.mjs";

const { BERTH_URL, ALICE_TOKEN, BOB_TOKEN, REG, REG_USER, REG_PASSWORD, GCP_KEY } = process.env;
// The part of the key that is secret (the rest of the file names the account).
const GCP_SECRET = JSON.parse(GCP_KEY).private_key.split("\n")[1];
const WRONG_PASSWORD = "not-the-Pa55word";

const { browser, page, problems, screenshot, accessible, heading, noSecretKept: noneOf } = await start();

/** The password is nowhere the page keeps: its HTML, the tab's storage, cookies,
 * the URL; nor the token in the URL. */
async function noSecretKept(where) {
  await noneOf(where, [REG_PASSWORD, WRONG_PASSWORD, GCP_SECRET]);
  assert.ok(!page.url().includes(ALICE_TOKEN) && !page.url().includes(BOB_TOKEN), `${where}: the token is in the URL`);
}

// ------------------------------------------------------------------ sign in
const first = await page.goto(`${BERTH_URL}/`);
const headers = first.headers();
assert.match(headers["content-security-policy"], /script-src 'self'/);
assert.match(headers["content-security-policy"], /frame-ancestors 'none'/);
assert.equal(headers["x-frame-options"], "DENY");
const weight = (await first.body()).length + (await (await page.request.get(`${BERTH_URL}/assets/app.js`)).body()).length + (await (await page.request.get(`${BERTH_URL}/assets/app.css`)).body()).length;
console.log(`first page: ${weight} bytes (HTML, script, stylesheet, uncompressed)`);
assert.ok(weight < 100_000, `the first page weighs ${weight} bytes`);
await heading("Sign in to berth");
await accessible("sign in");
await screenshot("sign-in");
await page.getByLabel("API token").fill("wrong-token");
await page.getByRole("button", { name: "Sign in" }).click();
await page.getByText("That token is not valid.").waitFor();
await page.getByLabel("API token").fill(ALICE_TOKEN);
await page.keyboard.press("Enter");
await heading("Projects");
assert.ok(!page.url().includes(ALICE_TOKEN));
await accessible("projects");
await screenshot("projects");

// ------------------------------------------------------------------ a project, by keyboard
await page.getByLabel("Project name").focus();
await page.keyboard.type("web");
await page.keyboard.press("Enter");
await heading("web");
await accessible("project");

// ------------------------------------------------------------------ the wizard: a failing test, then a passing one
await page.getByRole("link", { name: "Create service" }).click();
await heading("Create service");
await page.getByLabel("Service name").fill("api");
const credsToggle = page.getByRole("button", { name: "Private Registry Credentials" });
assert.equal(await credsToggle.getAttribute("aria-expanded"), "false", "collapsed at first");
await page.getByLabel("Image reference").fill(`${REG}/team/app:web`);
assert.equal(await credsToggle.getAttribute("aria-expanded"), "true", "opened by a registry host other than Docker Hub");
assert.equal(await page.getByLabel("Registry URL").inputValue(), REG, "pre-filled from the image's host");
assert.equal(await page.getByLabel("Password").getAttribute("autocomplete"), "new-password");
assert.equal(await page.getByLabel("Password").getAttribute("type"), "password");
await page.getByLabel("Username").fill(REG_USER);
await page.getByLabel("Password").fill(WRONG_PASSWORD);
const save = page.getByRole("button", { name: "Save", exact: true });
assert.ok(await save.isDisabled(), "Save waits for a passing test");
await page.getByRole("button", { name: "Test Connection" }).click();
await page.getByText("Connection test failed (auth_failed)").waitFor();
await page.getByText("Save without verifying").waitFor();
assert.ok(await save.isDisabled());
await screenshot("wizard-test-failed");
await page.getByLabel("Password").fill(REG_PASSWORD);
assert.ok(await page.getByText("Save without verifying").isHidden(), "a new password resets the test");
await page.getByRole("button", { name: "Test Connection" }).click();
await page.getByText("Connection test passed").first().waitFor();
for (const step of ["ping", "token", "manifest"]) await page.locator(".steps li", { hasText: step }).first().waitFor();
assert.ok(await save.isEnabled(), "Save is enabled once the test passes");
await accessible("wizard");
await screenshot("wizard-test-passed");
await save.click();
await heading("api");
await noSecretKept("after creating api");

// ------------------------------------------------------------------ deploy, followed live
await page.getByRole("button", { name: "Deploy" }).click();
await page.getByRole("heading", { level: 1, name: /^Deployment / }).waitFor();
await page.locator(".badge", { hasText: "Deployed" }).first().waitFor({ timeout: 60000 });
await page.locator("pre.log", { hasText: "hello from berth" }).waitFor({ timeout: 30000 });
await page.getByRole("heading", { name: /Pull waterfall/ }).waitFor();
assert.ok((await page.locator(".wf li").count()) >= 2, "config and layer in the waterfall");
await accessible("deployment");
await screenshot("deployment-deployed");

// The Overview links where the app answers.
await page.goto(`${BERTH_URL}/#/p/web/s/api`);
await heading("api");
const url = page.getByRole("link", { name: /^http:\/\/api\.web\.localhost:\d+\/$/ });
await url.waitFor();
assert.equal(await url.getAttribute("rel"), "noopener noreferrer");
await screenshot("service-overview-url");

// ------------------------------------------------------------------ a wrong tag: test fails, saved without verifying, deploy fails
await page.goto(`${BERTH_URL}/#/p/web/new`);
await heading("Create service");
await page.getByLabel("Service name").fill("draft");
await page.getByLabel("Image reference").fill(`${REG}/team/app:nope`);
await page.getByLabel("Username").fill(REG_USER);
await page.getByLabel("Password").fill(REG_PASSWORD);
await page.getByRole("button", { name: "Test Connection" }).click();
await page.getByText("Connection test failed (manifest_not_found)").waitFor();
assert.ok(await save.isDisabled());
await page.getByLabel("Save without verifying").check();
assert.ok(await save.isEnabled(), "checking Save without verifying enables Save");
await screenshot("wizard-save-without-verifying");
await save.click();
await heading("draft");
await noSecretKept("after creating draft");
await page.getByRole("button", { name: "Deploy" }).click();
await page.locator(".badge", { hasText: "Failed" }).first().waitFor({ timeout: 60000 });
await page.getByRole("alert").filter({ hasText: "manifest_not_found" }).waitFor();
await page.locator("pre.log", { hasText: /manifest unknown|MANIFEST_UNKNOWN|not found/i }).waitFor();
await screenshot("deployment-failed");

// ------------------------------------------------------------------ the rate limit: a soft message
await page.goto(`${BERTH_URL}/#/p/web/new`);
await heading("Create service");
await page.getByLabel("Image reference").fill(`${REG}/team/app:web`);
await page.getByLabel("Username").fill(REG_USER);
await page.getByLabel("Password").fill(WRONG_PASSWORD);
let limited = false;
for (let i = 0; i < 6 && !limited; i++) {
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/v1/preflight")),
    page.getByRole("button", { name: "Test Connection" }).click(),
  ]);
  limited = resp.status() === 429;
  await page.getByRole("button", { name: "Test Connection" }).waitFor();
}
assert.ok(limited, "the sixth preflight in a minute is refused");
await page.getByText(/Try again in \d+ s\./).waitFor();
await screenshot("wizard-rate-limited");

// ------------------------------------------------------------------ settings: masked values, edit leaving the password as-is, remove
await page.goto(`${BERTH_URL}/#/p/web/s/api/settings`);
await heading("api");
await page.getByRole("heading", { name: "Private Registry" }).waitFor();
await page.getByText("•••••••• (set)").waitFor();
const masked = await page.locator(".facts dd.mono").nth(1).textContent();
assert.ok(masked.includes("*") && masked !== REG_USER, `the username is masked: ${masked}`);
await accessible("settings");
await screenshot("settings");
await page.getByRole("button", { name: "Edit" }).click();
assert.equal(await page.getByLabel("Password").inputValue(), "", "the password is never pre-filled");
assert.equal(await page.getByLabel("Password").getAttribute("placeholder"), "leave as-is");
await screenshot("settings-edit");
await page.getByLabel("Username").fill(REG_USER); // retyped; the password left as-is
// The rate limit may still hold: Save answers it like the test does, and is
// tried again until the minute has passed.
for (let i = 0; i < 20; i++) {
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/services/api/registry") && r.request().method() === "PUT"),
    page.getByRole("button", { name: "Save", exact: true }).click(),
  ]);
  if (resp.status() !== 429) {
    assert.equal(resp.status(), 200, await resp.text());
    break;
  }
  await page.getByText("rate_limited").waitFor();
  await page.waitForTimeout(5000);
}
await page.getByRole("button", { name: "Edit" }).waitFor();
await page.getByText("yes: the connection test passed").waitFor();
await noSecretKept("after editing api");

await page.goto(`${BERTH_URL}/#/p/web/s/draft/settings`);
await heading("draft");
await page.getByRole("button", { name: "Remove credentials" }).click();
await page.getByRole("dialog").getByText("later deploys pull the image anonymously").waitFor();
await screenshot("remove-credentials-confirm");
await page.getByRole("dialog").getByRole("button", { name: "Remove credentials" }).click();
await page.getByRole("button", { name: "+ Add private registry credentials" }).waitFor();
await screenshot("settings-no-credentials");

// ------------------------------------------------------------------ terminate with its warning
await page.goto(`${BERTH_URL}/#/p/web/s/api`);
await heading("api");
await page.getByRole("button", { name: "Terminate" }).click();
await page.getByRole("dialog").getByText("stored registry secret is destroyed").waitFor();
await screenshot("terminate-confirm");
await page.getByRole("dialog").getByRole("button", { name: "Terminate service" }).click();
await page.locator(".service-head .badge", { hasText: "Terminated" }).waitFor();
await page.getByRole("link", { name: "Deployments" }).click();
await page.locator("tbody tr").first().waitFor();
await accessible("deployments");
await screenshot("deployments");

// ------------------------------------------------------------------ phone width
await page.setViewportSize({ width: 390, height: 844 });
await page.goto(`${BERTH_URL}/#/p/web`);
await heading("web");
await accessible("project at phone width");
await screenshot("project-phone");
await page.setViewportSize({ width: 1280, height: 900 });

// ------------------------------------------------------------------ the audit log
await page.goto(`${BERTH_URL}/#/p/web/audit`);
await heading("Audit log");
await page.getByText("preflight: passed").first().waitFor();
await page.getByText("preflight: overridden").first().waitFor();
await page.locator("tbody td", { hasText: "service.terminate" }).first().waitFor();
const times = await page.locator("tbody time").evaluateAll((els) => els.map((e) => e.getAttribute("datetime")));
assert.deepEqual(times, [...times].sort().reverse(), "newest first");
await accessible("audit");
await screenshot("audit");
await page.getByLabel("Action").selectOption("service.registry.remove");
await page.waitForURL(/action=service.registry.remove/);
// The page renders again once its answer came: wait for the filtered table, not
// the one still on screen.
await page.waitForFunction(() => document.querySelectorAll("tbody tr").length === 1);
assert.match(await page.locator("tbody tr").first().textContent(), /service\.registry\.remove/);
await page.getByLabel("Service").selectOption("api");
await page.waitForURL(/service=api/);
await page.getByText("No event matches.").waitFor();
await screenshot("audit-filtered");

// ------------------------------------------------------------------ sign out
await page.getByRole("button", { name: "Sign out" }).click();
await heading("Sign in to berth");
assert.equal(await page.evaluate(() => sessionStorage.length), 0, "signing out forgets the token");

// ------------------------------------------------------------------ cloud kinds (bob, with a preflight budget of his own)
await page.getByLabel("API token").fill(BOB_TOKEN);
await page.keyboard.press("Enter");
await heading("Projects");
await page.getByLabel("Project name").fill("cloud");
await page.keyboard.press("Enter");
await heading("cloud");
await page.getByRole("link", { name: "Create service" }).click();
await heading("Create service");
await page.getByLabel("Service name").fill("gar");
await page.getByLabel("Image reference").fill(`${REG}/team/app:web`);
await page.getByLabel("Registry", { exact: true }).selectOption("Google Artifact Registry");
assert.equal(await page.getByLabel("Credentials").inputValue(), "gcp", "the preset picks the key file");
assert.ok(await page.getByLabel("Password").isHidden(), "no password field for a key");
await page.getByLabel("Service account key").setInputFiles({ name: "key.json", mimeType: "application/json", buffer: Buffer.from(GCP_KEY) });
assert.ok(await save.isDisabled(), "a key waits for its test too");
await page.getByRole("button", { name: "Test Connection" }).click();
await page.getByText("Connection test passed").first().waitFor();
assert.ok(await save.isEnabled());
await accessible("wizard with a key file");
await screenshot("wizard-gcp-key");
await save.click();
await heading("gar");
await noSecretKept("after saving a key file");
await page.goto(`${BERTH_URL}/#/p/cloud/s/gar/settings`);
await page.getByText("•••••••• (set)").waitFor();
assert.match(await page.locator(".facts dd.mono").nth(1).textContent(), /^_j\*+$/, "the key's user, masked");

// An ECR role: nothing secret to type, the project's external id to put in the
// role's trust policy; AWS is asked at Save (not here: tests reach no AWS).
await page.goto(`${BERTH_URL}/#/p/cloud/new`);
await heading("Create service");
await page.getByLabel("Image reference").fill("123456789012.dkr.ecr.eu-west-1.amazonaws.com/api:v1");
await page.getByLabel("Registry", { exact: true }).selectOption("Amazon ECR");
assert.equal(await page.getByLabel("Credentials").inputValue(), "ecr-role", "a role is what the preset suggests");
const external = page.locator("code", { hasText: /^berth-/ });
await external.waitFor();
const projectList = await (await page.request.get(`${BERTH_URL}/v1/projects`, { headers: { authorization: `Bearer ${BOB_TOKEN}` } })).json();
assert.equal(await external.textContent(), projectList[0].aws_external_id, "the project's own external id");
assert.ok(await page.getByRole("button", { name: "Test Connection" }).isHidden(), "AWS credentials are tested by the save");
await page.getByLabel("Role ARN").fill("arn:aws:iam::123456789012:role/berth-pull");
await page.getByLabel("Service name").fill("ecr");
assert.ok(await save.isEnabled(), "Save tests the role");
await accessible("wizard with an ECR role");
await screenshot("wizard-ecr-role");
await page.getByLabel("Credentials").selectOption("ecr-keys");
await page.getByLabel("Access key id").waitFor();
assert.equal(await page.getByLabel("Secret access key").getAttribute("type"), "password");
await page.getByRole("button", { name: "Sign out" }).click();
await heading("Sign in to berth");

assert.deepEqual(problems, [], "no console errors (a CSP violation is one)");
await browser.close();
console.log("dashboard: all checks passed");
