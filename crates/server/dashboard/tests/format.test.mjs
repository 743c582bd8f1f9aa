// Values in words: statuses, durations, sizes, digests, exits, health, a pull's
// waterfall (lazy layers too) and when the page reads it again, audit details.

import { test } from "node:test";
import assert from "node:assert/strict";
import * as f from "../format.js";

/** Runs `fn` on each case's input and compares with its expected output. */
function check(fn, cases) {
  for (const [input, want] of cases) assert.deepEqual(fn(...input), want, JSON.stringify(input));
}

test("statuses: a word and a mark, an unknown one as it is", () => {
  check((s) => [f.statusWord(s), f.statusMark(s)], [
    [["DEPLOYED"], ["Deployed", "●"]],
    [["PENDING_DEPLOY"], ["Pending deploy", "○"]],
    [["FAILED"], ["Failed", "✕"]],
    [["CREATED"], ["Created", "·"]],
    [["SOMETHING_NEW"], ["SOMETHING_NEW", "·"]],
  ]);
  check((s) => [f.inFlight(s), f.finished(s)], [
    [["PENDING_DEPLOY"], [true, false]],
    [["DEPLOYING"], [true, false]],
    [["DEPLOYED"], [false, true]],
    [["FAILED"], [false, true]],
    [["REMOVED"], [false, true]],
    [["TERMINATED"], [false, false]],
    [[undefined], [false, false]],
  ]);
});

test("durations in seconds with one decimal", () => {
  check(f.seconds, [
    [["2024-05-01T10:00:00Z", "2024-05-01T10:00:03.25Z"], "3.3 s"],
    [["2024-05-01T10:00:00Z", "2024-05-01T10:00:00Z"], "0.0 s"],
    [["2024-05-01T10:00:00Z", "2024-05-01T10:02:00Z"], "120.0 s"],
    [["not a time", "2024-05-01T10:00:00Z"], ""],
    [[undefined, undefined], ""],
  ]);
});

test("sizes in B, kB and MB", () => {
  check(f.size, [
    [[0], "0 B"],
    [[999], "999 B"],
    [[1000], "1.0 kB"],
    [[1536], "1.5 kB"],
    [[999_949], "999.9 kB"],
    [[1_000_000], "1.00 MB"],
    [[2_345_678], "2.35 MB"],
    [[9_999_999], "10.00 MB"],
    [[10_000_000], "10 MB"],
    [[734_003_200], "734 MB"],
  ]);
});

test("digests shortened to the algorithm and 12 hex digits", () => {
  check(f.shortDigest, [
    [["sha256:0123456789abcdef0123456789abcdef"], "sha256:0123456789ab…"],
    [[""], "—"],
    [[null], "—"],
    [[undefined], "—"],
  ]);
});

test("a service's restarts and last exit", () => {
  check(f.exitText, [
    [[null], null],
    [[{ signal: 9, code: null }], "signal 9"],
    [[{ signal: null, code: 0 }], "code 0"],
    [[{ signal: null, code: 137 }], "code 137"],
    [[{ signal: null, code: null }], "unknown"],
  ]);
  check(f.restartText, [
    [[{ restart_policy: "always", restarts: 0, last_exit: null }], "always"],
    [[{ restart_policy: "on-failure", restarts: 3, last_exit: { signal: null, code: 1 } }], "on-failure · 3 restarts · last exit code 1"],
    [[{ restart_policy: "never", restarts: 0, last_exit: { signal: 15, code: null } }], "never · last exit signal 15"],
  ]);
});

test("a credential's health", () => {
  check(f.healthSummary, [
    [[null], { tag: null, text: "not checked yet", checkedAt: null }],
    [[{ status: "ok", checked_at: "t1" }], { tag: "passed", text: "✓ ok", checkedAt: "t1" }],
    [[{ status: "failing", code: "unauthorized", checked_at: "t2" }], { tag: "failing", text: "✕ failing: unauthorized", checkedAt: "t2" }],
  ]);
});

const D = (n) => `sha256:${String(n).repeat(64).slice(0, 64)}`;

test("a blob in progress: its name, state and bar", () => {
  check(f.blobProgress, [
    [[{ digest: D(1), state: "downloading", received: 500, size: 2000 }, 0], { text: "config 111111111111 · downloading · 500 B of 2.0 kB", max: "2000", value: "500" }],
    [[{ digest: D(2), state: "cached", received: 0, size: 3_000_000 }, 2], { text: "layer 2 222222222222 · cached · 0 B of 3.00 MB", max: "3000000", value: "3000000" }],
    [[{ digest: D(3), state: "waiting", received: 0, size: 0 }, 1], { text: "layer 1 333333333333 · waiting · 0 B of 0 B", max: "1", value: "0" }],
  ]);
});

test("a pull's waterfall: bars on one axis, none for a cached blob", () => {
  const { title, rows } = f.waterfall({
    blobs: [
      { digest: D(1), size: 500, started_ms: 0, downloaded_ms: 100, applied_ms: null },
      { digest: D(2), size: 2_000_000, started_ms: 100, downloaded_ms: 1500, applied_ms: 2000 },
      { digest: D(3), size: 10, started_ms: null, downloaded_ms: null, applied_ms: null },
      { digest: D(4), size: 10, started_ms: 200, downloaded_ms: 200, applied_ms: 150 },
    ],
  });
  assert.equal(title, "Pull waterfall · 2.00 s");
  assert.deepEqual(rows, [
    { text: "config 111111111111: 500 B, downloaded 0.00–0.10 s", download: { left: "0.00%", width: "5.00%" }, unpack: null, lazy: null },
    {
      text: "layer 1 222222222222: 2.00 MB, downloaded 0.10–1.50 s, unpacked by 2.00 s",
      download: { left: "5.00%", width: "70.00%" },
      unpack: { left: "75.00%", width: "25.00%" },
      lazy: null,
    },
    { text: "layer 2 333333333333: cached", download: null, unpack: null, lazy: null },
    // An instant download still shows (1/400 of the axis); an unpack done by then has no bar.
    { text: "layer 3 444444444444: 10 B, downloaded 0.20–0.20 s, unpacked by 0.15 s", download: { left: "10.00%", width: "0.25%" }, unpack: null, lazy: null },
  ]);
});

test("an empty or all-cached pull has an axis of 1 ms", () => {
  assert.deepEqual(f.waterfall({ blobs: [] }), { title: "Pull waterfall · 0.00 s", lazy: false, rows: [] });
});

const config = { digest: D(1), size: 500, received: 500, state: "downloaded", started_ms: 0, downloaded_ms: 100 };
/** A lazy layer of 30 MB mounted at 0.2 s, 37 chunks read on demand; `over` sets
 * its background pull's fields. */
const lazyLayer = (over, lazy) => ({
  digest: D(2),
  size: 30_000_000,
  received: 0,
  state: "waiting",
  ...over,
  lazy: { mounted_ms: 200, prefetch_bytes: 2_100_000, on_demand_bytes: 11_900_000, on_demand_chunks: 37, ...lazy },
});
const local = lazyLayer({ received: 30_000_000, state: "applied", started_ms: 400, downloaded_ms: 3800, applied_ms: 4000 }, { local_ms: 4000 });
const running = lazyLayer({ received: 12_900_000, state: "downloading", started_ms: 400 });

test("a lazy layer in words: mounted, on demand, prefetched, its background pull", () => {
  check(f.lazyNote, [
    [[local], "mounted at 0.20 s · 12 MB on demand (37 chunks) · 2.10 MB prefetched · local at 4.00 s"],
    [[running], "mounted at 0.20 s · 12 MB on demand (37 chunks) · 2.10 MB prefetched · background 43%"],
    [[lazyLayer({}, { prefetch_bytes: 0, on_demand_bytes: 65_536, on_demand_chunks: 1 })], "mounted at 0.20 s · 65.5 kB on demand (1 chunk) · background waiting"],
  ]);
  check(f.blobProgress, [
    [[running, 1], { text: "layer 1 222222222222 · lazy · mounted at 0.20 s · 12 MB on demand (37 chunks) · 2.10 MB prefetched · background 43% · 13 MB of 30 MB", max: "30000000", value: "12900000" }],
  ]);
});

test("a lazy layer's row: a mark where it was mounted, its background pull's bar", () => {
  const { title, lazy, rows } = f.waterfall({ blobs: [config, local] });
  assert.equal(title, "Pull waterfall · ready to start at 0.20 s · 4.00 s in all");
  assert.equal(lazy, true);
  assert.deepEqual(rows[1], {
    text: "layer 1 222222222222: 30 MB",
    download: null,
    unpack: null,
    lazy: {
      note: "mounted at 0.20 s · 12 MB on demand (37 chunks) · 2.10 MB prefetched · local at 4.00 s",
      mount: "5.00%",
      background: { left: "10.00%", width: "90.00%" },
      running: false,
    },
  });
});

test("a background pull still running: the axis goes a tenth further, its bar to the end", () => {
  const waiting = { ...lazyLayer({}), digest: D(3) };
  const { title, rows } = f.waterfall({ blobs: [config, running, waiting] });
  // The last instant known is the background pull's start, 0.4 s; the axis 0.44 s.
  assert.equal(title, "Pull waterfall · ready to start at 0.20 s · background pull running");
  assert.deepEqual(rows[0].download, { left: "0.00%", width: "22.73%" });
  assert.deepEqual(
    rows.slice(1).map((r) => r.lazy),
    [
      { note: "mounted at 0.20 s · 12 MB on demand (37 chunks) · 2.10 MB prefetched · background 43%", mount: "45.45%", background: { left: "90.91%", width: "9.09%" }, running: true },
      { note: "mounted at 0.20 s · 12 MB on demand (37 chunks) · 2.10 MB prefetched · background waiting", mount: "45.45%", background: null, running: true },
    ],
  );
});

test("what the page shows of a pull: bars on the way, the waterfall after or in the background", () => {
  const blobs = [config, running];
  check(f.pullShown, [
    [[{ status: "DEPLOYED", pull: { blobs } }], { progress: null, waterfall: { blobs } }],
    [[{ status: "DEPLOYING", progress: blobs }], { progress: blobs, waterfall: null }],
    [[{ status: "DEPLOYED", progress: blobs }], { progress: null, waterfall: { blobs } }],
    [[{ status: "DEPLOYED", progress: [config] }], { progress: [config], waterfall: null }],
    [[{ status: "FAILED" }], { progress: null, waterfall: null }],
  ]);
});

test("the page reads a deployment again while it deploys, and while a layer is pulled in the background, for two minutes", () => {
  check(f.pollDelay, [
    [[{ status: "PENDING_DEPLOY" }, 0], 400],
    [[{ status: "DEPLOYING", progress: [config, running] }, 0], 400],
    [[{ status: "DEPLOYED", progress: [config, running] }, 0], 1000],
    [[{ status: "DEPLOYED", pull: { blobs: [config, running] } }, 119_999], 1000],
    [[{ status: "DEPLOYED", pull: { blobs: [config, running] } }, 120_000], null],
    [[{ status: "DEPLOYED", pull: { blobs: [config, local] } }, 0], null],
    [[{ status: "DEPLOYED", pull: { blobs: [config] } }, 0], null],
    [[{ status: "FAILED", pull: { blobs: [config, running] } }, 0], null],
    [[{}, 0], null],
  ]);
});

test("audit details: the preflight apart, the rest as key: value", () => {
  check(f.auditDetails, [
    [[null], { preflight: null, rest: [] }],
    [["text"], { preflight: null, rest: [] }],
    [[{}], { preflight: null, rest: [] }],
    [[{ preflight: "passed", registry: "ghcr.io" }], { preflight: "passed", rest: [" registry: ghcr.io"] }],
    [[{ deployment: "d1", restarts: 2, changed: ["url", "password"] }], { preflight: null, rest: [" deployment: d1", " restarts: 2", ' changed: ["url","password"]'] }],
  ]);
  assert.deepEqual(f.auditActions([{ action: "b" }, { action: "a" }, { action: "b" }]), ["a", "b"]);
});
