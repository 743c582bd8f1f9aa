// A project's audit log, filtered by service (on the server) and action (here).

import { h } from "./dom.js";
import { api, projectPath } from "./api.js";
import { render, setCrumbs } from "./page.js";
import { field, when } from "./widgets.js";
import { auditDetails, auditActions } from "./format.js";
import { projectsHref, projectHref, auditHref } from "./routes.js";

/** `query`: the route's URLSearchParams (`service`, `action`). */
export async function audit(p, query) {
  setCrumbs([["Projects", projectsHref], [p, projectHref(p)], ["Audit log"]]);
  const svcFilter = query.get("service") || "";
  const actionFilter = query.get("action") || "";
  const q = svcFilter ? `?service=${encodeURIComponent(svcFilter)}&limit=200` : "?limit=200";
  const [events, services] = await Promise.all([api("GET", `${projectPath(p)}/audit-events${q}`), api("GET", `${projectPath(p)}/services`)]);
  const svcSel = h("select", { name: "service" }, h("option", { value: "" }, "All services"), services.map((s) => h("option", { value: s.name, selected: s.name === svcFilter }, s.name)));
  const actSel = h("select", { name: "action" }, h("option", { value: "" }, "All actions"), auditActions(events).map((a) => h("option", { value: a, selected: a === actionFilter }, a)));
  const apply = () => {
    location.hash = auditHref(p, { service: svcSel.value, action: actSel.value });
  };
  svcSel.addEventListener("change", apply);
  actSel.addEventListener("change", apply);
  const shown = events.filter((e) => !actionFilter || e.action === actionFilter);
  render("Audit log", h("form", { class: "filters", "aria-label": "Filters" }, field("Service", svcSel), field("Action", actSel)), shown.length ? eventsTable(shown) : h("p", { class: "muted" }, "No event matches."));
}

function eventsTable(events) {
  return h(
    "table",
    {},
    h("caption", { class: "visually-hidden" }, "Audit events, newest first"),
    h("thead", {}, h("tr", {}, ["When", "Actor", "Action", "Service", "Details"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      events.map((e) => h("tr", {}, h("td", {}, when(e.at)), h("td", {}, e.actor), h("td", { class: "mono nowrap" }, e.action), h("td", {}, e.service || ""), h("td", {}, details(e.metadata)))),
    ),
  );
}

function details(metadata) {
  const { preflight, rest } = auditDetails(metadata);
  return [preflight ? h("span", { class: `tag tag-${preflight}` }, `preflight: ${preflight}`) : null, rest.map((t) => h("span", { class: "muted" }, t))];
}
