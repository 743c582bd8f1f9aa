// Values from the API in words: statuses, durations, sizes, digests, a pull's
// waterfall geometry, audit details. Pure: strings and numbers in, strings and
// plain objects out; the pages put them into elements.

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

/** A status in words (the API's word when it is a new one). */
export const statusWord = (status) => STATUS_WORDS[status] || status;
/** The mark beside a status's word, so colour is not the only cue. */
export const statusMark = (status) => STATUS_MARKS[status] || "·";
/** A deployment (or service) that is still on its way: the page polls it. */
export const inFlight = (status) => ["PENDING_DEPLOY", "DEPLOYING"].includes(status);
/** A deployment that has ended, so its duration is known. */
export const finished = (status) => ["DEPLOYED", "FAILED", "REMOVED"].includes(status);

/** The time between two instants, in seconds with one decimal ("" if unknown). */
export function seconds(from, to) {
  const ms = new Date(to) - new Date(from);
  return Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : "";
}

export function shortDigest(d) {
  return d ? `${d.slice(0, 19)}…` : "—";
}

/** A byte count in B, kB or MB (decimal units, as registries report sizes). */
export function size(n) {
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  return `${(n / 1e6).toFixed(n < 1e7 ? 2 : 0)} MB`;
}

/** How a container last exited, or null when it has not. */
export function exitText(lastExit) {
  if (!lastExit) return null;
  if (lastExit.signal) return `signal ${lastExit.signal}`;
  return lastExit.code !== null ? `code ${lastExit.code}` : "unknown";
}

/** A service's restart policy, its restart count and last exit, in one line. */
export function restartText(svc) {
  const exit = exitText(svc.last_exit);
  return `${svc.restart_policy}${svc.restarts ? ` · ${svc.restarts} restarts` : ""}${exit ? ` · last exit ${exit}` : ""}`;
}

/** A credential's last background check: `{ tag, text, checkedAt }`, tag null when
 * it has not been checked yet, "passed" or "failing" otherwise. */
export function healthSummary(health) {
  if (!health) return { tag: null, text: "not checked yet", checkedAt: null };
  if (health.status === "ok") return { tag: "passed", text: "✓ ok", checkedAt: health.checked_at };
  return { tag: "failing", text: `✕ failing: ${health.code}`, checkedAt: health.checked_at };
}

/** The first blob of a pull is the config, the others its layers. */
export function blobName(b, i) {
  return `${i === 0 ? "config" : `layer ${i}`} ${b.digest.slice(7, 19)}`;
}

/** One blob of a pull in progress: its label and how full its bar is (for a lazy
 * layer, its background pull's). */
export function blobProgress(b, i) {
  const text = b.lazy
    ? `${blobName(b, i)} · lazy · ${lazyNote(b)} · ${size(b.received)} of ${size(b.size)}`
    : `${blobName(b, i)} · ${b.state} · ${size(b.received)} of ${size(b.size)}`;
  return {
    text,
    max: String(b.size || 1),
    value: String(b.state === "cached" ? b.size : b.received),
  };
}

const known = (v) => v !== null && v !== undefined;
const secs = (ms) => (ms / 1000).toFixed(2);
const chunks = (n) => `${n} ${n === 1 ? "chunk" : "chunks"}`;

/** A lazy layer in words: when it was mounted, what the container's reads fetched,
 * what was prefetched (when anything was), and where its background pull is. */
export function lazyNote(b) {
  const l = b.lazy;
  const background = known(l.local_ms)
    ? `local at ${secs(l.local_ms)} s`
    : known(b.started_ms)
      ? `background ${Math.floor((100 * b.received) / (b.size || 1))}%`
      : "background waiting";
  return [
    `mounted at ${secs(l.mounted_ms)} s`,
    `${size(l.on_demand_bytes)} on demand (${chunks(l.on_demand_chunks)})`,
    l.prefetch_bytes ? `${size(l.prefetch_bytes)} prefetched` : null,
    background,
  ]
    .filter(Boolean)
    .join(" · ");
}

/** A lazy layer whose background pull has not made it an ordinary layer yet. */
const pulling = (b) => Boolean(b.lazy) && !known(b.lazy.local_ms);
/** When a lazy layer's background pull ended (unpacked, or local), or undefined. */
const pulled = (b) => [b.applied_ms, b.lazy.local_ms].find(known);

/**
 * A pull on one time axis: `{ title, lazy, rows }`, each row a blob's text and its
 * download and unpack bars (`{ left, width }` in percent of the pull, or null: a
 * cached blob has no bar; a download gets at least 1/400 of the axis). A lazy
 * layer's row has instead `lazy`: its note, the mark where it was mounted (a left
 * in percent), its background pull's bar; `lazy` at the top says whether any row
 * has one (for the legend). While a background pull runs, the axis goes a tenth
 * past the last instant known, and a running bar reaches its end: it goes on.
 */
export function waterfall(pull) {
  const times = (b) => [b.started_ms, b.downloaded_ms, b.applied_ms, b.lazy && b.lazy.mounted_ms, b.lazy && b.lazy.local_ms].filter(known);
  const last = Math.max(1, ...pull.blobs.flatMap(times));
  const end = pull.blobs.some((b) => b.lazy && !known(pulled(b))) ? last * 1.1 : last;
  const pct = (ms) => `${((100 * ms) / end).toFixed(2)}%`;
  const span = (from, to) => ({ left: pct(from), width: pct(Math.max(end / 400, to - from)) });
  const rows = pull.blobs.map((b, i) => {
    const name = blobName(b, i);
    if (b.lazy) {
      const running = !known(pulled(b));
      const background = known(b.started_ms) ? span(b.started_ms, running ? end : pulled(b)) : null;
      return {
        text: `${name}: ${size(b.size)}`,
        download: null,
        unpack: null,
        lazy: { note: lazyNote(b), mount: pct(b.lazy.mounted_ms), background, running },
      };
    }
    const dl = known(b.downloaded_ms);
    const cached = !dl && !known(b.started_ms);
    const text = cached
      ? `${name}: cached`
      : `${name}: ${size(b.size)}, downloaded ${secs(b.started_ms || 0)}–${secs(b.downloaded_ms || 0)} s${b.applied_ms ? `, unpacked by ${secs(b.applied_ms)} s` : ""}`;
    const download = dl ? span(b.started_ms || 0, b.downloaded_ms) : null;
    const unpack =
      !cached && b.applied_ms && b.applied_ms > (b.downloaded_ms || 0)
        ? { left: pct(b.downloaded_ms || 0), width: pct(b.applied_ms - (b.downloaded_ms || 0)) }
        : null;
    return { text, download, unpack, lazy: null };
  });
  const lazy = pull.blobs.some((b) => b.lazy);
  if (!lazy) return { title: `Pull waterfall · ${secs(last)} s`, lazy, rows };
  // The container could start once every layer was there: a lazy one once mounted.
  const ready = Math.max(0, ...pull.blobs.map((b) => (b.lazy ? b.lazy.mounted_ms : Math.max(b.downloaded_ms || 0, b.applied_ms || 0))));
  const rest = pull.blobs.some(pulling) ? "background pull running" : `${secs(last)} s in all`;
  return { title: `Pull waterfall · ready to start at ${secs(ready)} s · ${rest}`, lazy, rows };
}

/**
 * What a deployment's page shows of its pull: the bars of a pull on its way
 * (`progress`), the waterfall of one that is over or that goes on in the background
 * after the container started (lazy layers), each null when not shown.
 */
export function pullShown(d) {
  if (d.pull) return { progress: null, waterfall: d.pull };
  if (!d.progress) return { progress: null, waterfall: null };
  if (d.status === "DEPLOYED" && d.progress.some((b) => b.lazy)) return { progress: null, waterfall: { blobs: d.progress } };
  return { progress: d.progress, waterfall: null };
}

/** How long to wait before reading a deployment again, or null to stop: often while
 * it is on its way, less often while, deployed, a lazy layer is still pulled in the
 * background, for at most `BACKGROUND_POLL_MS` from when that was first seen. */
export function pollDelay(d, backgroundForMs) {
  if (inFlight(d.status)) return 400;
  const blobs = (d.pull && d.pull.blobs) || d.progress || [];
  if (d.status === "DEPLOYED" && blobs.some(pulling) && backgroundForMs < BACKGROUND_POLL_MS) return 1000;
  return null;
}
export const BACKGROUND_POLL_MS = 120_000;

/** An audit event's metadata: its preflight outcome apart (a tag), the other
 * entries as " key: value" texts (objects as JSON). */
export function auditDetails(m) {
  if (!m || typeof m !== "object") return { preflight: null, rest: [] };
  const rest = Object.entries(m)
    .filter(([k]) => k !== "preflight")
    .map(([k, v]) => ` ${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
  return { preflight: m.preflight || null, rest };
}

/** The distinct actions of some audit events, sorted (the filter's choices). */
export function auditActions(events) {
  return [...new Set(events.map((e) => e.action))].sort();
}
