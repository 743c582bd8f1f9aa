// The credentials form's rules: the registry an image names, presets and kinds,
// masking of stored values, what a test and a save send, and Save's gate.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as c from "../credentials.js";

function check(fn, cases) {
  for (const [input, want] of cases) assert.deepEqual(fn(...input), want, JSON.stringify(input));
}

/** A form as typed: empty but for `over`. */
const typed = (over = {}) => ({ registry_url: "", username: "", password: "", keyText: "", keyChosen: false, keyId: "", keySecret: "", roleArn: "", region: "", ...over });
const STORED = { kind: "basic", registry_url: "ghcr.io", username: "ci", password_set: true, verified: true };

test("the registry an image names", () => {
  check((ref) => [c.imageHost(ref), c.registryUrlFor(ref)], [
    [["nginx"], ["docker.io", "docker.io"]],
    [["nginx:1.27"], ["docker.io", "docker.io"]],
    [["library/nginx"], ["docker.io", "docker.io"]],
    [["acme/api:1.4"], ["docker.io", "docker.io"]],
    [["ghcr.io/acme/api:1.4"], ["ghcr.io", "ghcr.io"]],
    [["  ghcr.io/acme/api  "], ["ghcr.io", "ghcr.io"]],
    [["localhost/app"], ["localhost", "localhost"]],
    [["localhost:5000/app"], ["localhost:5000", "localhost:5000"]],
    [["127.0.0.1:5000/team/app@sha256:abc"], ["127.0.0.1:5000", "127.0.0.1:5000"]],
    [["index.docker.io/library/nginx"], ["index.docker.io", "docker.io"]],
    [["registry-1.docker.io/library/nginx"], ["registry-1.docker.io", "docker.io"]],
    [["ghcr.io"], ["docker.io", "docker.io"]],
    [[""], ["docker.io", "docker.io"]],
  ]);
  check(c.isDockerHub, [
    [["docker.io"], true],
    [["index.docker.io"], true],
    [["registry-1.docker.io"], true],
    [["ghcr.io"], false],
    [["docker.io.evil.example"], false],
  ]);
});

test("presets name a kind the form has, and a hint", () => {
  const kinds = c.CREDENTIAL_TYPES.map(([k]) => k);
  for (const p of c.PRESETS) {
    assert.ok(kinds.includes(p.kind), p.name);
    assert.ok(p.hint.length > 20, p.name);
    assert.ok(p.url === "" || c.registryUrlFor(`${p.url}/x/y`) === p.url || p.url === "docker.io", p.name);
  }
  const byName = Object.fromEntries(c.PRESETS.map((p) => [p.name, [p.url, p.kind]]));
  assert.deepEqual(byName["Docker Hub"], ["docker.io", "basic"]);
  assert.deepEqual(byName["GitHub (GHCR)"], ["ghcr.io", "basic"]);
  assert.deepEqual(byName["Amazon ECR"], ["", "ecr-role"]);
  assert.deepEqual(byName["Google Artifact Registry"], ["", "gcp"]);
});

test("the kind stored credentials edit as, and which kinds Save tests", () => {
  check(c.kindOf, [
    [[undefined], "basic"],
    [[STORED], "basic"],
    [[{ kind: "ecr", username: "arn:aws:iam::123456789012:role/berth-pull" }], "ecr-role"],
    [[{ kind: "ecr", username: "AKIAEXAMPLE" }], "ecr-keys"],
  ]);
  check(c.isAws, [
    [["basic"], false],
    [["gcp"], false],
    [["ecr-role"], true],
    [["ecr-keys"], true],
  ]);
});

test("stored credentials are shown masked: never the secret", () => {
  check(c.placeholders, [
    [[undefined], { url: "ghcr.io", username: "", password: "" }],
    [[STORED], { url: "leave as-is", username: "ci (leave as-is)", password: "leave as-is" }],
  ]);
  check(c.maskedPassword, [
    [[{ ...STORED, password: "hunter2" }], "•••••••• (set)"],
    [[{ password_set: false }], "not set"],
  ]);
  check(c.verifiedWords, [
    [[{ verified: true }], "yes: the connection test passed"],
    [[{ verified: false }], "no: saved without verifying"],
  ]);
});

test("each kind sends its own fields, trimmed, empty ones left as-is", () => {
  const all = typed({ username: " ci ", password: " p w ", keyText: "{}", keyId: " AKIA1 ", keySecret: " s ", roleArn: " arn:r ", region: " eu-west-1 " });
  check(c.kindFields, [
    [["basic", all], { username: "ci", password: " p w " }],
    [["gcp", all], { json_key: "{}" }],
    [["ecr-role", all], { kind: "ecr", role_arn: "arn:r", aws_region: "eu-west-1" }],
    [["ecr-keys", all], { kind: "ecr", aws_access_key_id: "AKIA1", aws_secret_access_key: " s ", aws_region: "eu-west-1" }],
    [["basic", typed()], {}],
    [["gcp", typed()], {}],
    [["ecr-role", typed({ region: "  " })], { kind: "ecr" }],
    [["ecr-keys", typed()], { kind: "ecr" }],
  ]);
});

test("what counts as typed, and as a secret a test must prove", () => {
  check((t, existing) => [c.anyTyped(t, existing), c.secretTyped(t)], [
    [[typed()], [false, false]],
    [[typed({ username: "  " })], [false, false]],
    [[typed({ username: "ci" })], [true, false]],
    [[typed({ password: "x" })], [true, true]],
    [[typed({ keyText: "{}" })], [true, true]],
    // A key file counts from the moment it is chosen, before its text is read.
    [[typed({ keyChosen: true })], [true, true]],
    [[typed({ keySecret: "x" })], [true, true]],
    [[typed({ roleArn: "arn" })], [true, true]],
    [[typed({ roleArn: "  " })], [false, false]],
    [[typed({ keyId: "AKIA" })], [true, false]],
    [[typed({ region: "eu-west-1" })], [false, false]],
    // A new URL is a change only to stored credentials.
    [[typed({ registry_url: "quay.io" })], [false, false]],
    [[typed({ registry_url: "quay.io" }), STORED], [true, false]],
    [[typed({ registry_url: "  " }), STORED], [false, false]],
  ]);
});

test("Test Connection's body, or why the page cannot test", () => {
  const img = "ghcr.io/acme/api:1";
  check(c.preflightRequest, [
    [["basic", typed({ username: " ci ", password: "pw" }), undefined, img], { body: { registry_url: "ghcr.io", image: img, username: "ci", password: "pw" } }],
    [["basic", typed({ registry_url: " quay.io ", password: "pw" }), undefined, img], { body: { registry_url: "quay.io", image: img, password: "pw" } }],
    [["basic", typed(), undefined, "nginx"], { body: { registry_url: "docker.io", image: "nginx" } }],
    [["basic", typed({ password: "pw" }), STORED, "quay.io/x/y"], { body: { registry_url: "ghcr.io", image: "quay.io/x/y", username: undefined, password: "pw" } }],
    [["basic", typed({ username: "ci2" }), STORED, img], { notice: "Retype the password to test it here; Save tests the stored one on the server." }],
    [["gcp", typed({ keyText: "{\"k\":1}" }), undefined, img], { body: { registry_url: "ghcr.io", image: img, username: "_json_key", password: "{\"k\":1}" } }],
    [["gcp", typed(), undefined, img], { notice: "Choose the service account key file first." }],
    [["gcp", typed(), STORED, img], { notice: "Choose the key file to test it here; Save tests the stored one on the server." }],
  ]);
  check(c.tooManyTests, [
    [["30"], "Too many connection tests for now. Try again in 30 s."],
    [[null], "Too many connection tests for now. Try again in a minute."],
  ]);
});

test("the wizard's Save waits for a passing test, or the override", () => {
  const g = (over) => ({ open: true, typed: true, testable: true, state: "untested", override: false, ...over });
  check(c.wizardSaveBlocked, [
    [[g({})], true],
    [[g({ state: "failed" })], true],
    [[g({ state: "passed" })], false],
    [[g({ state: "failed", override: true })], false],
    [[g({ open: false })], false],
    [[g({ typed: false })], false],
    [[g({ testable: false })], false],
  ]);
});

test("the Settings tab's Save: nothing typed, nothing to save; a kept secret is tested by the server", () => {
  const g = (over) => ({ stored: false, typed: true, secretTyped: true, testable: true, state: "untested", override: false, ...over });
  check(c.settingsSaveBlocked, [
    [[g({ typed: false })], true],
    [[g({})], true],
    [[g({ state: "passed" })], false],
    [[g({ override: true })], false],
    [[g({ testable: false })], false],
    // Stored credentials, a new URL only: the server tests the stored secret.
    [[g({ stored: true, secretTyped: false })], false],
    [[g({ stored: true, secretTyped: true })], true],
    [[g({ stored: true, secretTyped: true, state: "passed" })], false],
    [[g({ stored: false, secretTyped: false })], true],
  ]);
});

test("the bodies that save", () => {
  check(c.serviceBody, [
    [["web", "nginx", null], { name: "web", image: "nginx" }],
    [["web", "ghcr.io/a/b", { registry_url: "", fields: { username: "ci", password: "pw" }, override: false }], { name: "web", image: "ghcr.io/a/b", registry: { registry_url: "ghcr.io", username: "ci", password: "pw" } }],
    [["web", "ghcr.io/a/b", { registry_url: "quay.io", fields: {}, override: true }], { name: "web", image: "ghcr.io/a/b", registry: { registry_url: "quay.io" }, save_without_verifying: true }],
  ]);
  const save = (over) => ({ registry_url: "", fields: {}, override: false, redeploy: false, stored: false, image: "ghcr.io/a/b", ...over });
  check(c.registryBody, [
    [[save({})], { registry_url: "ghcr.io" }],
    [[save({ stored: true })], {}],
    [[save({ stored: true, registry_url: "quay.io" })], { registry_url: "quay.io" }],
    [[save({ fields: { password: "pw" }, override: true, redeploy: true })], { registry_url: "ghcr.io", password: "pw", save_without_verifying: true, redeploy: true }],
  ]);
});
