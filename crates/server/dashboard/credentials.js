// The rules of the Private Registry Credentials form, apart from its elements:
// the registry an image names, the presets and the kinds of credential, what a
// typed form sends (to a test and to a save), and when Save waits for a passing
// test. Pure: plain values in, plain values out.

import { DOCKER_HUB, DOCKER_HUB_NAMES } from "./registry-rules.js";

/** Registries whose users need to know what to type (the README's table), and the
 * kind of credentials each takes. */
export const PRESETS = [
  { name: "Docker Hub", url: DOCKER_HUB, kind: "basic", hint: "Username: your Docker ID. Password: an access token with Read." },
  { name: "GitHub (GHCR)", url: "ghcr.io", kind: "basic", hint: "Username: your GitHub user. Password: a personal access token with read:packages." },
  { name: "GitLab", url: "registry.gitlab.com", kind: "basic", hint: "Username: the deploy token's user name. Password: a deploy token with read_registry." },
  { name: "Quay", url: "quay.io", kind: "basic", hint: "Username: a robot account, org+name. Password: the robot's token." },
  {
    name: "Amazon ECR",
    url: "",
    kind: "ecr-role",
    hint: "Registry URL: ACCOUNT.dkr.ecr.REGION.amazonaws.com. A role of yours for berth to assume (recommended), or an access key of a user allowed ecr:GetAuthorizationToken and the pulls.",
  },
  { name: "Google Artifact Registry", url: "", kind: "gcp", hint: "Registry URL: REGION-docker.pkg.dev. The service account key file (JSON) of an account with Artifact Registry Reader." },
  { name: "Azure ACR", url: "", kind: "basic", hint: "Registry URL: NAME.azurecr.io. Username: the admin user or a service principal's app id. Password: its password or secret." },
  { name: "Harbor", url: "", kind: "basic", hint: "Registry URL: your Harbor host. Username: a robot account, robot$project+name. Password: the robot's secret." },
  { name: "Other", url: "", kind: "basic", hint: "The registry's host (and port), a user name and a password or token." },
];

/** The forms a credential can take, as the API's kinds take them. */
export const CREDENTIAL_TYPES = [
  ["basic", "Username and password or token"],
  ["gcp", "Google service account key (JSON file)"],
  ["ecr-role", "AWS role for berth to assume (ECR)"],
  ["ecr-keys", "AWS access key (ECR)"],
];

/** The registry host an image reference names (Docker Hub when none). */
export function imageHost(ref) {
  const first = ref.trim().split("/")[0];
  if (ref.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost")) return first;
  return DOCKER_HUB;
}

export function isDockerHub(host) {
  return DOCKER_HUB_NAMES.includes(host);
}

/** The Registry URL to pre-fill: the image's host (HTTPS unless the operator
 * lists the host as plain HTTP). */
export function registryUrlFor(ref) {
  const host = imageHost(ref);
  return isDockerHub(host) ? DOCKER_HUB : host;
}

/** AWS credentials are tested by the save (berth mints a registry token first),
 * not by Test Connection. */
export const isAws = (kind) => kind.startsWith("ecr");

/** The form's kind for stored credentials: an ECR role's masked "username" is its
 * ARN (arn:...), an access key's is its key id. Anything else starts as "basic". */
export function kindOf(existing) {
  if (existing && existing.kind === "ecr") return existing.username.startsWith("ar") ? "ecr-role" : "ecr-keys";
  return "basic";
}

/** The fields' placeholders: with credentials stored, an empty field keeps them. */
export function placeholders(existing) {
  return {
    url: existing ? "leave as-is" : "ghcr.io",
    username: existing ? `${existing.username} (leave as-is)` : "",
    password: existing ? "leave as-is" : "",
  };
}

/** A stored password as the page shows it: whether one is set, never what it is. */
export function maskedPassword(stored) {
  return stored.password_set ? "•••••••• (set)" : "not set";
}

export function verifiedWords(stored) {
  return stored.verified ? "yes: the connection test passed" : "no: saved without verifying";
}

/**
 * What the form holds, as typed: `{ registry_url, username, password, keyText,
 * keyChosen, keyId, keySecret, roleArn, region }` (strings; `keyText` a chosen key
 * file's content, `keyChosen` whether a file is chosen, read or not yet). The
 * functions below read it.
 */

/** The kind's own fields of a registry body (empty ones left out: "as-is"). */
export function kindFields(kind, t) {
  const out = {};
  const set = (k, v) => {
    if (v) out[k] = v;
  };
  switch (kind) {
    case "gcp":
      set("json_key", t.keyText);
      break;
    case "ecr-role":
      out.kind = "ecr";
      set("role_arn", t.roleArn.trim());
      set("aws_region", t.region.trim());
      break;
    case "ecr-keys":
      out.kind = "ecr";
      set("aws_access_key_id", t.keyId.trim());
      set("aws_secret_access_key", t.keySecret);
      set("aws_region", t.region.trim());
      break;
    default:
      set("username", t.username.trim());
      set("password", t.password);
  }
  return out;
}

/** A secret was typed (or a key file chosen): what a test must prove. */
export function secretTyped(t) {
  return Boolean(t.password || t.keyText || t.keyChosen || t.keySecret || t.roleArn.trim());
}

/** Anything was typed: the form means to save credentials. With credentials stored,
 * a new Registry URL alone is a change. */
export function anyTyped(t, existing) {
  return Boolean(t.username.trim() || secretTyped(t) || t.keyId.trim() || (existing && t.registry_url.trim()));
}

/**
 * The body of Test Connection (`{ body }`), or why the page cannot test it
 * (`{ notice }`): a stored secret is never sent back, so it is tested by Save.
 */
export function preflightRequest(kind, t, existing, image) {
  const username = t.username.trim();
  const body = { registry_url: t.registry_url.trim() || (existing && existing.registry_url) || registryUrlFor(image), image };
  if (kind === "gcp") {
    if (!t.keyText) return { notice: existing ? "Choose the key file to test it here; Save tests the stored one on the server." : "Choose the service account key file first." };
    return { body: { ...body, username: "_json_key", password: t.keyText } };
  }
  if (username || existing) body.username = username || undefined;
  if (t.password) body.password = t.password;
  if (existing && !t.password) return { notice: "Retype the password to test it here; Save tests the stored one on the server." };
  return { body };
}

/** The rate limit's answer to a test, in words. */
export function tooManyTests(retryAfter) {
  const wait = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again in a minute.";
  return `Too many connection tests for now.${wait}`;
}

const proven = ({ state, override }) => state === "passed" || override;

/** The wizard's Save: credentials typed (in the open section) wait for a passing
 * test or the override, but for the kinds the server tests at Save. */
export function wizardSaveBlocked(g) {
  return g.open && g.typed && g.testable && !proven(g);
}

/** The Settings tab's Save: nothing typed, nothing to save. With credentials
 * stored, an untouched secret is tested by the server at Save; new credentials
 * need a passing test (or the override) first, but for the kinds the server tests
 * at Save (AWS). */
export function settingsSaveBlocked(g) {
  const needsTest = g.testable && (g.stored ? g.secretTyped : g.typed);
  return !g.typed || (needsTest && !proven(g));
}

/** The body that creates a service: the credentials when the section is open and
 * something was typed. */
export function serviceBody(name, image, creds) {
  const body = { name, image };
  if (creds) {
    body.registry = { registry_url: creds.registry_url || registryUrlFor(image), ...creds.fields };
    if (creds.override) body.save_without_verifying = true;
  }
  return body;
}

/** The body that saves a service's credentials: a Registry URL left empty keeps the
 * stored one (or, with none stored, the image's host). */
export function registryBody({ registry_url, fields, override, redeploy, stored, image }) {
  const body = {};
  if (registry_url) body.registry_url = registry_url;
  else if (!stored) body.registry_url = registryUrlFor(image);
  Object.assign(body, fields);
  if (override) body.save_without_verifying = true;
  if (redeploy) body.redeploy = true;
  return body;
}
