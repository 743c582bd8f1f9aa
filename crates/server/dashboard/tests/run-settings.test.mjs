// The run settings' rules: names, the command field split like a shell and written
// back, a new service's settings, and an update holding only what changed.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as r from "../run-settings.js";

function check(fn, cases) {
  for (const [input, want] of cases) assert.deepEqual(fn(...input), want, JSON.stringify(input));
}

/** A form as typed: empty but for `over`. */
const form = (over = {}) => ({ env: [], secrets: [], command: "", args: "", volume: { path: "", size_mb: "" }, region: "", ...over });

const STORED = {
  env: { LOG_LEVEL: "info", PORT: "8080" },
  secrets: [
    { name: "API_KEY", as: "env", updated_at: "2025-01-02T03:04:05Z" },
    { name: "TLS_KEY", as: "file", updated_at: "2025-01-02T03:04:05Z" },
  ],
  command: ["node"],
  args: ["server.js", "--port", "8080"],
  volume: { path: "/data", size_mb: 1024 },
  region: "eu-west-1",
};

test("names: letters, digits and _, not starting with a digit", () => {
  check(r.validName, [
    [["PORT"], true],
    [["_private"], true],
    [["a1_B2"], true],
    [["A".repeat(255)], true],
    [["A".repeat(256)], false],
    [[""], false],
    [["1ST"], false],
    [["MY-VAR"], false],
    [["MY VAR"], false],
    [["É"], false],
    [["A=B"], false],
  ]);
});

test("the command field splits like a shell, expanding nothing", () => {
  check(r.splitWords, [
    [[""], { words: [] }],
    [["   "], { words: [] }],
    [["node server.js"], { words: ["node", "server.js"] }],
    [["  a\t b \n c "], { words: ["a", "b", "c"] }],
    [["sh -c 'echo hello; exec sleep 600'"], { words: ["sh", "-c", "echo hello; exec sleep 600"] }],
    [['echo "a b" c'], { words: ["echo", "a b", "c"] }],
    [['echo "say \\"hi\\" \\\\ \\n"'], { words: ["echo", 'say "hi" \\ \\n'] }],
    [["echo 'it'\\''s'"], { words: ["echo", "it's"] }],
    [["a\\ b c"], { words: ["a b", "c"] }],
    [["''"], { words: [""] }],
    [['x "" y'], { words: ["x", "", "y"] }],
    [["echo $HOME *"], { words: ["echo", "$HOME", "*"] }],
    [["pre'mid'post"], { words: ["premidpost"] }],
    [["echo 'open"], { error: "a single quote is not closed" }],
    [['echo "open'], { error: "a double quote is not closed" }],
  ]);
});

test("words written back read back the same", () => {
  check(r.joinWords, [
    [[null], ""],
    [[[]], ""],
    [[["node", "server.js", "--port=8080"]], "node server.js --port=8080"],
    [[["sh", "-c", "echo hi; exit 1"]], "sh -c 'echo hi; exit 1'"],
    [[["it's"]], "'it'\\''s'"],
    [[[""]], "''"],
  ]);
  const samples = [["a b", "c'd", 'e"f', "g\\h", "", "$X", "tab\there", "new\nline", "ünï", "*", "-c"], ["sh", "-c", "echo 'x' \"y\" \\z"]];
  for (const words of samples) assert.deepEqual(r.splitWords(r.joinWords(words)), { words }, JSON.stringify(words));
});

test("the form starts from the stored settings, secrets by name only", () => {
  assert.deepEqual(r.initialState(null), form());
  assert.deepEqual(r.initialState(STORED), {
    env: [
      { name: "LOG_LEVEL", value: "info" },
      { name: "PORT", value: "8080" },
    ],
    secrets: [
      { name: "API_KEY", value: "", file: false, stored: true, removed: false },
      { name: "TLS_KEY", value: "", file: true, stored: true, removed: false },
    ],
    command: "node",
    args: "server.js --port 8080",
    volume: { path: "/data", size_mb: "1024" },
    region: "eu-west-1",
  });
});

test("a new service's settings: only what was typed", () => {
  check((f) => r.createBody(f), [
    [[form()], { body: {}, errors: [] }],
    // Blank rows are left out.
    [[form({ env: [{ name: "", value: "" }], secrets: [{ name: "", value: "", file: false, stored: false, removed: false }] })], { body: {}, errors: [] }],
    [
      [
        form({
          env: [{ name: " GREETING ", value: "hello world" }, { name: "EMPTY", value: "" }],
          secrets: [
            { name: "DB_PASSWORD", value: "s3cret", file: false, stored: false, removed: false },
            { name: "TLS_KEY", value: "-----BEGIN", file: true, stored: false, removed: false },
          ],
          command: "sh -c 'echo $GREETING'",
          args: "",
          volume: { path: "/data", size_mb: " 512 " },
          region: " eu-west-1 ",
        }),
      ],
      {
        body: {
          env: { GREETING: "hello world", EMPTY: "" },
          secrets: { DB_PASSWORD: "s3cret", TLS_KEY: "-----BEGIN" },
          secret_files: ["TLS_KEY"],
          command: ["sh", "-c", "echo $GREETING"],
          volume: { path: "/data", size_mb: 512 },
          region: "eu-west-1",
        },
        errors: [],
      },
    ],
  ]);
});

test("a new service's settings: what is wrong, in words", () => {
  const errors = (over) => r.createBody(form(over)).errors;
  const secret = (name, value, file = false) => ({ name, value, file, stored: false, removed: false });
  check(errors, [
    [[{ env: [{ name: "1X", value: "a" }] }], ["1X: a variable's name is letters, digits and _, not starting with a digit."]],
    [[{ env: [{ name: "", value: "a" }] }], ["Variable 1 has a value but no name."]],
    [[{ env: [{ name: "A", value: "1" }, { name: "A", value: "2" }] }], ["A is set twice."]],
    [[{ secrets: [secret("MY-KEY", "v")] }], ["MY-KEY: a secret's name is letters, digits and _, not starting with a digit."]],
    [[{ secrets: [secret("", "v")] }], ["Secret 1 has a value but no name."]],
    [[{ secrets: [secret("KEY", "")] }], ["The new secret KEY needs a value."]],
    [[{ secrets: [secret("KEY", "a"), secret("KEY", "b")] }], ["The secret KEY is set twice."]],
    [[{ env: [{ name: "KEY", value: "a" }], secrets: [secret("KEY", "b")] }], ["KEY is both a variable and a secret; remove one."]],
    [[{ command: "sh -c 'oops" }], ["Command: a single quote is not closed."]],
    [[{ args: '"oops' }], ["Arguments: a double quote is not closed."]],
    [[{ volume: { path: "data", size_mb: "10" } }], ["The volume's path is an absolute path, such as /data."]],
    [[{ volume: { path: "/data", size_mb: "" } }], ["The volume's size is a whole number of MB, at least 1."]],
    [[{ volume: { path: "/data", size_mb: "1.5" } }], ["The volume's size is a whole number of MB, at least 1."]],
    [[{ volume: { path: "/data", size_mb: "0" } }], ["The volume's size is a whole number of MB, at least 1."]],
  ]);
  // No secret's value in any message.
  const all = errors({ secrets: [secret("1BAD", "hunter2"), secret("", "hunter3")], env: [{ name: "1BAD", value: "x" }] });
  assert.ok(all.length && all.every((e) => !e.includes("hunter")), JSON.stringify(all));
});

test("an update holds only what changed", () => {
  const start = () => r.initialState(STORED);
  const update = (edit, opts) => {
    const f = start();
    edit(f);
    return r.updateBody(STORED, f, opts);
  };
  check(update, [
    // Untouched: nothing to send.
    [[() => {}], { body: {}, errors: [] }],
    [[() => {}, { redeploy: true }], { body: { redeploy: true }, errors: [] }],
    // A changed variable, a removed one, a new one.
    [
      [
        (f) => {
          f.env[0].value = "debug";
          f.env.splice(1, 1);
          f.env.push({ name: "NEW", value: "1" });
        },
      ],
      { body: { env: { LOG_LEVEL: "debug", PORT: null, NEW: "1" } }, errors: [] },
    ],
    // A renamed variable: the old name removed, the new one set.
    [[(f) => (f.env[1].name = "HTTP_PORT")], { body: { env: { PORT: null, HTTP_PORT: "8080" } }, errors: [] }],
    // A secret removed, one given a new value as a file, a new one.
    [
      [
        (f) => {
          f.secrets[0].removed = true;
          f.secrets[1].value = "new-pem";
          f.secrets.push({ name: "DB_PASSWORD", value: "pw", file: false, stored: false, removed: false });
        },
      ],
      { body: { secrets: { TLS_KEY: "new-pem", DB_PASSWORD: "pw", API_KEY: null }, secret_files: ["TLS_KEY"] }, errors: [] },
    ],
    // A stored secret turned into a file with its value retyped.
    [
      [
        (f) => {
          f.secrets[0].value = "k";
          f.secrets[0].file = true;
        },
      ],
      { body: { secrets: { API_KEY: "k" }, secret_files: ["API_KEY"] }, errors: [] },
    ],
    // Command back to the image's, args changed, same words written otherwise.
    [
      [
        (f) => {
          f.command = "";
          f.args = "'server.js'   --port 9090";
        },
      ],
      { body: { command: [], args: ["server.js", "--port", "9090"] }, errors: [] },
    ],
    [[(f) => (f.args = "server.js  --port '8080'")], { body: {}, errors: [] }],
    // The volume grown, the region removed, with redeploy.
    [
      [
        (f) => {
          f.volume.size_mb = "2048";
          f.region = " ";
        },
        { redeploy: true },
      ],
      { body: { volume: { path: "/data", size_mb: 2048 }, region: "", redeploy: true }, errors: [] },
    ],
  ]);
});

test("an update: what cannot be sent, in words", () => {
  const errors = (edit) => {
    const f = r.initialState(STORED);
    edit(f);
    return r.updateBody(STORED, f).errors;
  };
  check(errors, [
    [[(f) => (f.secrets[1].file = false)], ["Type the value of TLS_KEY again to change how it is given."]],
    [[(f) => (f.volume = { path: "", size_mb: "" })], ["A volume cannot be removed; its path and size can change."]],
    [[(f) => (f.volume.size_mb = "512")], ["The volume cannot shrink below its 1024 MB: its data would not fit."]],
    [[(f) => f.env.push({ name: "API_KEY", value: "x" })], ["API_KEY is both a variable and a secret; remove one."]],
    [[(f) => f.secrets.push({ name: "API_KEY", value: "x", file: false, stored: false, removed: false })], ["The secret API_KEY is set twice."]],
  ]);
  // A removed secret's name is free for a variable, and a removed secret keeps
  // no "as a file" complaint.
  const f = r.initialState(STORED);
  f.secrets[1].removed = true;
  f.secrets[1].file = false;
  f.env.push({ name: "TLS_KEY", value: "plain" });
  assert.deepEqual(r.updateBody(STORED, f), { body: { env: { TLS_KEY: "plain" }, secrets: { TLS_KEY: null } }, errors: [] });
});

test("with nothing stored, a first volume and region are changes", () => {
  const bare = { env: {}, secrets: [], command: null, args: null, volume: null, region: null };
  const f = r.initialState(bare);
  assert.deepEqual(r.updateBody(bare, f), { body: {}, errors: [] });
  f.volume = { path: "/var/lib/app", size_mb: "64" };
  f.region = "us-east-2";
  assert.deepEqual(r.updateBody(bare, f).body, { volume: { path: "/var/lib/app", size_mb: 64 }, region: "us-east-2" });
  assert.equal(r.changesAnything({ redeploy: true }), false);
  assert.equal(r.changesAnything({ region: "" }), true);
});
