// The client of the /v1 API. The API token lives in this tab's sessionStorage only
// (gone when the tab closes, removed by Sign out), is sent in the Authorization
// header and never appears in a URL.

const TOKEN_KEY = "berth.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function keepToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.retryAfter = retryAfter;
  }
}

/** Calls the API; JSON in, JSON out; throws ApiError on a non-2xx answer. */
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  const text = await resp.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text };
  }
  // A token that no longer works is forgotten; the next page asks for another.
  if (resp.status === 401) forgetToken();
  if (!resp.ok) throw new ApiError(resp.status, data, resp.headers.get("Retry-After"));
  return data;
}

/** A streamed answer (a followed log), as the fetch Response; `signal` ends it. */
export function stream(path, signal) {
  return fetch(path, { headers: { Authorization: `Bearer ${token()}` }, signal, cache: "no-store", credentials: "omit" });
}

const enc = encodeURIComponent;
export const projectPath = (p) => `/v1/projects/${enc(p)}`;
export const servicePath = (p, s) => `${projectPath(p)}/services/${enc(s)}`;
