// A service's page: its head and tabs, the Overview (Deploy, Terminate) and the
// Deployments tab; the Settings tab is settings.js.

import { h, fill } from "./dom.js";
import { api, servicePath } from "./api.js";
import { render, setCrumbs, say, onLeave, reload } from "./page.js";
import { errorBox, badge, when, confirmDialog } from "./widgets.js";
import { inFlight, finished, seconds, shortDigest, restartText } from "./format.js";
import { projectsHref, projectHref, tabHref, deploymentHref } from "./routes.js";
import { settingsTab } from "./settings.js";

export function serviceTabs(p, s, current) {
  return h(
    "nav",
    { class: "tabs", "aria-label": "Service" },
    [
      ["Overview", "overview"],
      ["Deployments", "deployments"],
      ["Settings", "settings"],
    ].map(([text, key]) => h("a", { href: tabHref(p, s, key), "aria-current": key === current ? "page" : undefined }, text)),
  );
}

export async function service(p, s, tab) {
  setCrumbs([["Projects", projectsHref], [p, projectHref(p)], [s]]);
  const [svc, deployments] = await Promise.all([api("GET", servicePath(p, s)), api("GET", `${servicePath(p, s)}/deployments`)]);
  const head = h("div", { class: "service-head" }, badge(svc.status), h("span", { class: "mono" }, svc.image));
  let body;
  if (tab === "deployments") body = deploymentsTab(p, s, deployments);
  else if (tab === "settings") body = settingsTab(p, s, svc);
  else body = overviewTab(p, s, svc, deployments);
  render(s, head, serviceTabs(p, s, tab), body);
  if (inFlight(svc.status)) {
    const t = setTimeout(reload, 1500);
    onLeave(() => clearTimeout(t));
  }
}

function overviewTab(p, s, svc, deployments) {
  const deployed = deployments.find((d) => d.status === "DEPLOYED");
  const status = h("div", { "aria-live": "polite" });
  const terminated = svc.status === "TERMINATED";
  return h(
    "section",
    { class: "card" },
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Status"),
      h("dd", {}, badge(svc.status)),
      h("dt", {}, "Image"),
      h("dd", { class: "mono" }, svc.image),
      h("dt", {}, "URL"),
      h("dd", { class: "mono" }, urlsOf(svc, terminated)),
      h("dt", {}, "Digest deployed"),
      h("dd", { class: "mono" }, deployed ? h("a", { href: deploymentHref(p, s, deployed.id) }, deployed.digest || "—") : "—"),
      h("dt", {}, "Registry"),
      h("dd", {}, svc.registry ? svc.registry.registry_url : "anonymous pulls"),
      h("dt", {}, "Restart policy"),
      h("dd", {}, restartText(svc)),
      h("dt", {}, "Created"),
      h("dd", {}, when(svc.created_at)),
    ),
    status,
    h("div", { class: "actions" }, deployButton(p, s, terminated, status), terminateButton(p, s, terminated, status)),
  );
}

/** Where the service answers: links (the first its own name under the apps
 * domain, then its domains), or why there is none. */
function urlsOf(svc, terminated) {
  const urls = svc.urls || [];
  if (terminated || urls.length === 0) return "—";
  return h(
    "span",
    { class: "urls" },
    ...urls.map((u) => h("a", { href: u, target: "_blank", rel: "noopener noreferrer" }, u)),
  );
}

function deployButton(p, s, terminated, status) {
  const deploy = h("button", { type: "button", class: "btn btn-primary", disabled: terminated }, "Deploy");
  deploy.addEventListener("click", async () => {
    deploy.disabled = true;
    try {
      const d = await api("POST", `${servicePath(p, s)}/deployments`, {});
      location.hash = deploymentHref(p, s, d.id);
    } catch (e) {
      deploy.disabled = false;
      fill(status, errorBox(e));
    }
  });
  return deploy;
}

function terminateButton(p, s, terminated, status) {
  const terminate = h("button", { type: "button", class: "btn btn-danger", disabled: terminated }, "Terminate");
  terminate.addEventListener("click", async () => {
    const ok = await confirmDialog(
      `Terminate ${s}?`,
      "Its container is stopped and its stored registry secret is destroyed: it cannot be recovered. The service stays listed as Terminated.",
      "Terminate service",
    );
    if (!ok) return;
    try {
      await api("DELETE", servicePath(p, s));
      say(`${s} terminated`);
      reload();
    } catch (e) {
      fill(status, errorBox(e));
    }
  });
  return terminate;
}

function deploymentsTab(p, s, deployments) {
  if (!deployments.length) return h("p", { class: "muted" }, "No deployment yet: Deploy starts one.");
  return h(
    "table",
    {},
    h("caption", { class: "visually-hidden" }, "Deployments, newest first"),
    h("thead", {}, h("tr", {}, ["Deployment", "Status", "Digest", "Duration", "Started"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      deployments.map((d) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, h("a", { href: deploymentHref(p, s, d.id), class: "mono" }, d.id.slice(0, 8))),
          h("td", {}, badge(d.status), d.failure_code ? h("span", { class: "muted" }, ` ${d.failure_code}`) : "", d.message && d.status === "PENDING_DEPLOY" ? h("div", { class: "hint" }, d.message) : ""),
          h("td", { class: "mono", title: d.digest || "" }, shortDigest(d.digest)),
          h("td", {}, finished(d.status) ? seconds(d.created_at, d.updated_at) : "…"),
          h("td", {}, when(d.created_at)),
        ),
      ),
    ),
  );
}
