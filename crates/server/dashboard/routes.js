// The hash routes: what a location hash names, and the links to each page. Pure
// (no `document`, no `location`): app.js reads the hash and dispatches.

const enc = encodeURIComponent;

/**
 * The page a hash names and its arguments: `{ page: "projects" }`,
 * `{ page: "project", project }`, `{ page: "new", project }`,
 * `{ page: "audit", project, query }`, `{ page: "service", project, service, tab }`,
 * `{ page: "deployment", project, service, deployment }`. `query` is the part after
 * `?` as URLSearchParams. Unknown paths fall back to the nearest page they name.
 */
export function parseRoute(hash) {
  const [path, query] = hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  if (parts[0] !== "p" || !parts[1]) return { page: "projects" };
  const project = parts[1];
  if (parts[2] === "new") return { page: "new", project };
  if (parts[2] === "audit") return { page: "audit", project, query: params };
  if (parts[2] === "s" && parts[3]) {
    if (parts[4] === "d" && parts[5]) return { page: "deployment", project, service: parts[3], deployment: parts[5] };
    return { page: "service", project, service: parts[3], tab: parts[4] || "overview" };
  }
  return { page: "project", project };
}

export const projectsHref = "#/projects";
export const projectHref = (p) => `#/p/${enc(p)}`;
export const newServiceHref = (p) => `${projectHref(p)}/new`;
export const serviceHref = (p, s) => `${projectHref(p)}/s/${enc(s)}`;
export const tabHref = (p, s, tab) => (tab === "overview" ? serviceHref(p, s) : `${serviceHref(p, s)}/${tab}`);
export const deploymentHref = (p, s, id) => `${serviceHref(p, s)}/d/${enc(id)}`;

/** The audit log, filtered by the non-empty ones of `{ service, action }`. */
export function auditHref(p, filters = {}) {
  const q = new URLSearchParams();
  if (filters.service) q.set("service", filters.service);
  if (filters.action) q.set("action", filters.action);
  return `${projectHref(p)}/audit${q.toString() ? `?${q}` : ""}`;
}
