// A service's run settings as a person sets them: through the wizard (a variable,
// two secrets, one as a file, a command, a volume), then in the Settings tab (a
// variable changed, a secret removed, one added, a server's refusal shown, a
// region no replica serves saved with a redeploy: the pending deployment says
// why it waits). No secret value may appear in the page or in any answer of the
// API. crates/server/tests/dashboard.rs runs it against a real server.
//
// Env: BERTH_URL, TOKEN, OUT, CHROMIUM.

import assert from "node:assert/strict";
import { start } from "./harness.mjs";

const { BERTH_URL, TOKEN } = process.env;
const SECRETS = ["db-Pw-9f3Kq-first", "-----BEGIN KEY zT8v-----", "tok-N4wR2-added"];
const [DB_PASSWORD, TLS_KEY, API_TOKEN] = SECRETS;

const { browser, page, problems, screenshot, accessible, heading, noSecretKept } = await start();

// Every answer of the API the page reads, kept to search for secrets (the
// followed log, an endless stream, aside).
const answers = [];
page.on("response", (r) => {
  if (r.url().includes("/v1/") && !r.url().includes("/logs")) answers.push(r.text().then((t) => [r.url(), t], () => [r.url(), ""]));
});
const api = async (path) => {
  const r = await page.request.get(`${BERTH_URL}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(r.status(), 200, path);
  const text = await r.text();
  for (const s of SECRETS) assert.ok(!text.includes(s), `GET ${path} answers a secret's value`);
  return JSON.parse(text);
};
const kept = (where) => noSecretKept(where, SECRETS);

// A failure leaves a screenshot of the page as it was, and what the console said.
try {
  // ------------------------------------------------------------------ sign in, a project
  await page.goto(`${BERTH_URL}/`);
  await heading("Sign in to berth");
  await page.getByLabel("API token").fill(TOKEN);
  await page.keyboard.press("Enter");
  await heading("Projects");
  await page.getByLabel("Project name").fill("conf");
  await page.keyboard.press("Enter");
  await heading("conf");

  // ------------------------------------------------------------------ the wizard's settings
  await page.getByRole("link", { name: "Create service" }).click();
  await heading("Create service");
  await page.getByLabel("Service name").fill("app");
  await page.getByLabel("Image reference").fill("busybox:1.36");
  const advanced = page.getByRole("button", { name: /Advanced: environment/ });
  assert.equal(await advanced.getAttribute("aria-expanded"), "false", "collapsed at first");
  await advanced.click();
  await page.getByRole("button", { name: "+ Add variable" }).click();
  assert.ok(await page.getByLabel("Variable name").evaluate((el) => el === document.activeElement), "a new row takes the focus");
  await page.keyboard.type("1GREETING");
  await page.getByLabel("Value of 1GREETING").fill("hello world");
  await page.getByRole("button", { name: "+ Add secret" }).click();
  await page.getByLabel("Secret name").last().fill("DB_PASSWORD");
  await page.getByLabel("Secret value").last().fill(DB_PASSWORD);
  await page.getByRole("button", { name: "+ Add secret" }).click();
  await page.getByLabel("Secret name").last().fill("TLS_KEY");
  await page.getByLabel("Secret value").last().fill(TLS_KEY);
  await page.getByLabel("as a file in /run/secrets").last().check();
  assert.equal(await page.getByLabel("Secret value").first().getAttribute("type"), "password", "a secret's value is masked");
  await page.getByLabel(/^Command/).fill(`sh -c 'echo "$GREETING"; exec sleep 600`);
  await page.getByText("a single quote is not closed").waitFor();
  await page.getByLabel(/^Command/).fill(`sh -c 'echo "$GREETING"; exec sleep 600'`);
  await page.getByText("3 words:").waitFor();
  await page.locator("code.word", { hasText: `echo "$GREETING"; exec sleep 600` }).waitFor();
  await page.getByLabel("Mounted at").fill("/data");
  await page.getByLabel("Size (MB)").fill("256");
  // A name the server would refuse is caught here, named.
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await page.getByRole("alert").filter({ hasText: "1GREETING: a variable's name is letters, digits and _" }).waitFor();
  await kept("wizard");
  await screenshot("wizard-settings-refused");
  await page.getByLabel("Variable name").fill("GREETING");
  await accessible("wizard with settings");
  await screenshot("wizard-settings");
  await page.getByRole("button", { name: "Save", exact: true }).click();
  await heading("app");
  await kept("after creating app");

  let svc = await api("/v1/projects/conf/services/app");
  assert.deepEqual(svc.env, { GREETING: "hello world" });
  assert.deepEqual(svc.secrets.map((s) => [s.name, s.as]), [["DB_PASSWORD", "env"], ["TLS_KEY", "file"]]);
  assert.deepEqual(svc.command, ["sh", "-c", `echo "$GREETING"; exec sleep 600`]);
  assert.equal(svc.args, null);
  assert.deepEqual(svc.volume, { path: "/data", size_mb: 256 });

  // ------------------------------------------------------------------ the Settings tab: names, never values
  await page.getByRole("link", { name: "Settings" }).click();
  await page.getByRole("heading", { name: "Environment and runtime" }).waitFor();
  assert.equal(await page.getByLabel("Value of GREETING").inputValue(), "hello world");
  for (const name of ["DB_PASSWORD", "TLS_KEY"]) {
    await page.locator(".secret-name", { hasText: name }).waitFor();
    const value = page.getByLabel(`New value of ${name}`);
    assert.equal(await value.inputValue(), "", "a secret's value is never filled in");
    assert.equal(await value.getAttribute("placeholder"), "leave as-is");
    assert.equal(await value.getAttribute("type"), "password");
  }
  await page.locator("tr", { hasText: "TLS_KEY" }).getByText(/^set .* · as a file$/).waitFor();
  await page.locator("tr", { hasText: "DB_PASSWORD" }).getByText(/^set .* · as env$/).waitFor();
  assert.ok(await page.locator("tr", { hasText: "TLS_KEY" }).getByLabel("as a file in /run/secrets").isChecked());
  assert.equal(await page.getByLabel(/^Command/).inputValue(), `sh -c 'echo "$GREETING"; exec sleep 600'`, "the command written back as typed");
  assert.equal(await page.getByLabel("Size (MB)").inputValue(), "256");
  await kept("settings");
  await accessible("settings with run settings");
  await screenshot("settings-run");
  await page.setViewportSize({ width: 390, height: 844 });
  await accessible("run settings at phone width");
  await screenshot("settings-run-phone");
  await page.setViewportSize({ width: 1280, height: 900 });

  // ------------------------------------------------------------------ change a variable, remove a secret, add one
  await page.getByLabel("Value of GREETING").fill("hello again");
  await page.getByRole("button", { name: "Remove secret DB_PASSWORD" }).click();
  await page.locator("tr.removed", { hasText: "DB_PASSWORD" }).getByText("removed on save").waitFor();
  await page.getByRole("button", { name: "+ Add secret" }).click();
  await page.getByLabel("Secret name").fill("API_TOKEN");
  await page.getByLabel("Secret value").fill(API_TOKEN);
  await kept("settings, edited");
  await screenshot("settings-run-edited");
  const [put] = await Promise.all([
    page.waitForRequest((r) => r.url().endsWith("/services/app") && r.method() === "PUT"),
    page.getByRole("button", { name: "Save settings" }).click(),
  ]);
  // Only what changed: the variable, the removed secret as null, the new one.
  assert.deepEqual(JSON.parse(put.postData()), { env: { GREETING: "hello again" }, secrets: { API_TOKEN, DB_PASSWORD: null } });
  await page.getByText("Settings saved. They apply at the next deploy.").waitFor();
  await page.locator(".secret-name", { hasText: "API_TOKEN" }).waitFor();
  assert.equal(await page.locator(".secret-name", { hasText: "DB_PASSWORD" }).count(), 0, "the removed secret is gone");
  await kept("after saving settings");
  svc = await api("/v1/projects/conf/services/app");
  assert.deepEqual(svc.env, { GREETING: "hello again" });
  assert.deepEqual(svc.secrets.map((s) => [s.name, s.as]), [["API_TOKEN", "env"], ["TLS_KEY", "file"]]);

  // ------------------------------------------------------------------ a refusal of the server, next to the form
  await page.getByLabel("Size (MB)").fill("128");
  await page.getByRole("button", { name: "Save settings" }).click();
  await page.getByRole("alert").filter({ hasText: "The volume cannot shrink below its 256 MB" }).waitFor();
  await page.getByLabel("Size (MB)").fill("512");
  await page.getByLabel("Region").fill("Mars!");
  await page.getByRole("button", { name: "Save settings" }).click();
  await page.getByRole("alert").filter({ hasText: /invalid_settings: the region "Mars!" is not a name/ }).waitFor();
  await screenshot("settings-run-refused");

  // ------------------------------------------------------------------ a region no replica serves, saved and redeployed
  await page.getByLabel("Region").fill("mars-1");
  await page.getByRole("button", { name: "Save and redeploy" }).click();
  await page.getByRole("heading", { level: 1, name: /^Deployment / }).waitFor();
  await page.getByRole("status").filter({ hasText: "Waiting: no replica serves region mars-1" }).waitFor();
  await accessible("a deployment waiting for its region");
  await screenshot("deployment-waiting-for-region");
  svc = await api("/v1/projects/conf/services/app");
  assert.equal(svc.region, "mars-1");
  assert.deepEqual(svc.volume, { path: "/data", size_mb: 512 });
  const deployments = await api("/v1/projects/conf/services/app/deployments");
  assert.equal(deployments[0].status, "PENDING_DEPLOY");
  assert.match(deployments[0].message, /no replica serves region mars-1/);
  await page.getByRole("link", { name: "Deployments" }).click();
  await page.locator("tbody td", { hasText: "no replica serves region mars-1" }).waitFor();
  await screenshot("deployments-waiting");

  // The audit names the secrets, never their values.
  const audit = await api("/v1/projects/conf/audit-events");
  assert.ok(audit.some((e) => e.action === "service.secret.remove"), JSON.stringify(audit.map((e) => e.action)));
  await page.goto(`${BERTH_URL}/#/p/conf/audit`);
  await heading("Audit log");
  await page.locator("tbody td", { hasText: "service.secret.set" }).first().waitFor();
  await kept("audit");
} catch (e) {
  await screenshot("failure");
  console.log(problems.join("\n"));
  throw e;
}

for (const [url, text] of await Promise.all(answers)) {
  for (const s of SECRETS) assert.ok(!text.includes(s), `the answer of ${url} holds a secret's value`);
}
console.log(`${answers.length} answers of the API searched for secrets`);
assert.deepEqual(problems, [], "no console errors (a CSP violation is one)");
await browser.close();
console.log("settings: all checks passed");
