// The rules of a service's run settings (environment, secrets, command and args,
// volume, region), apart from their form: names checked, the command field split
// like a shell and written back, and what a form sends: the part of a new
// service's body, or the body of an update holding only what changed. Pure: plain
// values in, plain values out.
//
// The form's state, as settings-form.js reads it:
//   { env: [{ name, value }],
//     secrets: [{ name, value, file, stored, removed }],   (stored: the name is saved)
//     command: "text", args: "text", volume: { path, size_mb: "text" }, region: "text" }
// The stored settings are the API's read-back (`ServiceView`): `env` a map,
// `secrets` [{ name, as, updated_at }], `command`/`args` arrays or null, `volume`
// { path, size_mb } or null, `region` a string or null.

/** A variable's or a secret's name, as the server takes it (POSIX, at most 255). */
export function validName(name) {
  return name.length <= 255 && /^[A-Za-z_][A-Za-z0-9_]*$/.test(name);
}

/**
 * A command line split into words like a POSIX shell does, without expanding
 * anything: blanks separate, '...' keeps everything, "..." keeps everything but
 * \" and \\, a backslash outside quotes keeps the next character. `{ words }`, or
 * `{ error }` for an unclosed quote.
 */
export function splitWords(text) {
  const words = [];
  let word = null;
  let quote = null;
  const add = (c) => (word = (word || "") + c);
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote === "'") {
      if (c === "'") quote = null;
      else add(c);
    } else if (quote === '"') {
      if (c === '"') quote = null;
      else if (c === "\\" && (text[i + 1] === '"' || text[i + 1] === "\\")) add(text[++i]);
      else add(c);
    } else if (c === "'" || c === '"') {
      quote = c;
      add("");
    } else if (c === "\\" && i + 1 < text.length) {
      add(text[++i]);
    } else if (/\s/.test(c)) {
      if (word !== null) words.push(word);
      word = null;
    } else {
      add(c);
    }
  }
  if (quote) return { error: `a ${quote === "'" ? "single" : "double"} quote is not closed` };
  if (word !== null) words.push(word);
  return { words };
}

/** Words as one line `splitWords` reads back the same (quoted when needed). */
export function joinWords(words) {
  return (words || []).map((w) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(" ");
}

/** The form's first state: empty, or the stored settings (secrets by name only). */
export function initialState(stored) {
  const s = stored || {};
  return {
    env: Object.entries(s.env || {}).map(([name, value]) => ({ name, value })),
    secrets: (s.secrets || []).map((k) => ({ name: k.name, value: "", file: k.as === "file", stored: true, removed: false })),
    command: joinWords(s.command),
    args: joinWords(s.args),
    volume: s.volume ? { path: s.volume.path, size_mb: String(s.volume.size_mb) } : { path: "", size_mb: "" },
    region: s.region || "",
  };
}

/** The variables typed (blank rows left out), or errors. */
function envOf(rows, errors) {
  const out = {};
  for (const [i, r] of rows.entries()) {
    const name = r.name.trim();
    if (!name && !r.value) continue;
    if (!name) errors.push(`Variable ${i + 1} has a value but no name.`);
    else if (!validName(name)) errors.push(`${name}: a variable's name is letters, digits and _, not starting with a digit.`);
    else if (name in out) errors.push(`${name} is set twice.`);
    else out[name] = r.value;
  }
  return out;
}

/** The secrets kept after the change (by name), the ones given a value, and the
 * ones given as files; checks each. */
function secretsOf(rows, errors) {
  const kept = new Set();
  const given = {};
  const files = [];
  for (const [i, r] of rows.entries()) {
    const name = r.name.trim();
    if (r.removed) continue;
    if (!r.stored && !name && !r.value) continue;
    if (!name) {
      errors.push(`Secret ${i + 1} has a value but no name.`);
      continue;
    }
    if (!r.stored && !validName(name)) {
      errors.push(`${name}: a secret's name is letters, digits and _, not starting with a digit.`);
      continue;
    }
    if (kept.has(name)) {
      errors.push(`The secret ${name} is set twice.`);
      continue;
    }
    kept.add(name);
    if (!r.stored && !r.value) errors.push(`The new secret ${name} needs a value.`);
    if (r.value) {
      given[name] = r.value;
      if (r.file) files.push(name);
    }
  }
  return { kept, given, files };
}

function wordsOf(label, text, errors) {
  const r = splitWords(text);
  if (r.error) errors.push(`${label}: ${r.error}.`);
  return r.words || [];
}

/** The volume typed: null (none), or { path, size_mb }. */
function volumeOf(v, errors) {
  const path = v.path.trim();
  const size = v.size_mb.trim();
  if (!path && !size) return null;
  if (!path.startsWith("/")) errors.push("The volume's path is an absolute path, such as /data.");
  if (!/^[0-9]+$/.test(size) || Number(size) < 1) {
    errors.push("The volume's size is a whole number of MB, at least 1.");
    return { path, size_mb: 0 };
  }
  return { path, size_mb: Number(size) };
}

function bothKinds(env, secretNames, errors) {
  for (const n of secretNames) if (n in env) errors.push(`${n} is both a variable and a secret; remove one.`);
}

/**
 * A new service's settings, to merge into its body: `{ body, errors }`, `body`
 * holding only what was typed.
 */
export function createBody(form) {
  const errors = [];
  const body = {};
  const env = envOf(form.env, errors);
  const { given, files } = secretsOf(form.secrets, errors);
  bothKinds(env, Object.keys(given), errors);
  const command = wordsOf("Command", form.command, errors);
  const args = wordsOf("Arguments", form.args, errors);
  const volume = volumeOf(form.volume, errors);
  const region = form.region.trim();
  if (Object.keys(env).length) body.env = env;
  if (Object.keys(given).length) body.secrets = given;
  if (files.length) body.secret_files = files;
  if (command.length) body.command = command;
  if (args.length) body.args = args;
  if (volume) body.volume = volume;
  if (region) body.region = region;
  return { body, errors };
}

const sameWords = (a, b) => JSON.stringify(a || []) === JSON.stringify(b || []);

/**
 * The body of `PUT .../services/{s}` for a form over `stored`: `{ body, errors }`,
 * `body` holding only what changed (a removed variable or secret as null, a
 * secret only when it was given a value), `{}` when nothing did.
 */
export function updateBody(stored, form, { redeploy = false } = {}) {
  const errors = [];
  const body = {};
  const env = envOf(form.env, errors);
  const old = stored.env || {};
  const envChange = {};
  for (const n of Object.keys(old)) if (!(n in env)) envChange[n] = null;
  for (const [n, v] of Object.entries(env)) if (old[n] !== v) envChange[n] = v;
  if (Object.keys(envChange).length) body.env = envChange;

  const { kept, given, files } = secretsOf(form.secrets, errors);
  const storedSecrets = stored.secrets || [];
  for (const r of form.secrets) {
    const was = storedSecrets.find((k) => k.name === r.name);
    if (r.stored && !r.removed && !r.value && was && (was.as === "file") !== r.file) {
      errors.push(`Type the value of ${r.name} again to change how it is given.`);
    }
  }
  const secretChange = { ...given };
  for (const k of storedSecrets) if (!kept.has(k.name)) secretChange[k.name] = null;
  bothKinds(env, kept, errors);
  if (Object.keys(secretChange).length) body.secrets = secretChange;
  if (files.length) body.secret_files = files;

  const command = wordsOf("Command", form.command, errors);
  if (!sameWords(command, stored.command)) body.command = command;
  const args = wordsOf("Arguments", form.args, errors);
  if (!sameWords(args, stored.args)) body.args = args;

  const volume = volumeOf(form.volume, errors);
  const oldVolume = stored.volume;
  if (!volume && oldVolume) errors.push("A volume cannot be removed; its path and size can change.");
  if (volume && oldVolume && volume.size_mb && volume.size_mb < oldVolume.size_mb) {
    errors.push(`The volume cannot shrink below its ${oldVolume.size_mb} MB: its data would not fit.`);
  }
  if (volume && (!oldVolume || volume.path !== oldVolume.path || volume.size_mb !== oldVolume.size_mb)) body.volume = volume;

  const region = form.region.trim();
  if (region !== (stored.region || "")) body.region = region;
  if (redeploy) body.redeploy = true;
  return { body, errors };
}

/** Whether an update body changes anything (redeploy alone does not). */
export function changesAnything(body) {
  return Object.keys(body).some((k) => k !== "redeploy");
}
