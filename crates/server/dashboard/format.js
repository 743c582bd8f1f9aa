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

/** One blob of a pull in progress: its label and how full its bar is. */
export function blobProgress(b, i) {
  return {
    text: `${blobName(b, i)} · ${b.state} · ${size(b.received)} of ${size(b.size)}`,
    max: String(b.size || 1),
    value: String(b.state === "cached" ? b.size : b.received),
  };
}

const known = (v) => v !== null && v !== undefined;
const secs = (ms) => (ms / 1000).toFixed(2);

/**
 * A finished pull on one time axis: `{ title, rows }`, each row a blob's text and
 * its download and unpack bars (`{ left, width }` in percent of the pull, or null:
 * a cached blob has no bar; a download gets at least 1/400 of the axis).
 */
export function waterfall(pull) {
  const end = Math.max(1, ...pull.blobs.map((b) => Math.max(b.downloaded_ms || 0, b.applied_ms || 0)));
  const pct = (ms) => `${((100 * ms) / end).toFixed(2)}%`;
  const rows = pull.blobs.map((b, i) => {
    const name = blobName(b, i);
    const dl = known(b.downloaded_ms);
    const cached = !dl && !known(b.started_ms);
    const text = cached
      ? `${name}: cached`
      : `${name}: ${size(b.size)}, downloaded ${secs(b.started_ms || 0)}–${secs(b.downloaded_ms || 0)} s${b.applied_ms ? `, unpacked by ${secs(b.applied_ms)} s` : ""}`;
    const download = dl ? { left: pct(b.started_ms || 0), width: pct(Math.max(end / 400, b.downloaded_ms - (b.started_ms || 0))) } : null;
    const unpack =
      !cached && b.applied_ms && b.applied_ms > (b.downloaded_ms || 0)
        ? { left: pct(b.downloaded_ms || 0), width: pct(b.applied_ms - (b.downloaded_ms || 0)) }
        : null;
    return { text, download, unpack };
  });
  return { title: `Pull waterfall · ${secs(end)} s`, rows };
}

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
