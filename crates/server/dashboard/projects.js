// The projects list (and a new project), and a project's page: its services, and
// its members for an owner.

import { h, fill } from "./dom.js";
import { api, projectPath } from "./api.js";
import { render, setCrumbs } from "./page.js";
import { field, errorBox, badge, healthText } from "./widgets.js";
import { projectsHref, projectHref, newServiceHref, serviceHref, auditHref } from "./routes.js";

export async function projects() {
  setCrumbs([["Projects"]]);
  const list = await api("GET", "/v1/projects");
  const name = h("input", { type: "text", name: "name", required: true, pattern: "[a-z0-9][a-z0-9\\-]{0,62}", autocomplete: "off" });
  const status = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card", "aria-label": "Create project" },
    h("h2", {}, "New project"),
    field("Project name", name, "Lower-case letters, digits and dashes. Names are unique on this server."),
    status,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn" }, "Create project")),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", "/v1/projects", { name: name.value.trim() });
      location.hash = projectHref(name.value.trim());
    } catch (e) {
      fill(status, errorBox(e));
    }
  });
  render(
    "Projects",
    list.length
      ? h(
          "ul",
          { class: "cards" },
          list.map((p) => h("li", { class: "card" }, h("a", { href: projectHref(p.name), class: "title" }, p.name), h("span", { class: "muted" }, ` · ${p.role}`))),
        )
      : h("p", { class: "muted" }, "No project yet: create one below."),
    form,
  );
}

export async function project(p) {
  setCrumbs([["Projects", projectsHref], [p]]);
  const [services, mine] = await Promise.all([api("GET", `${projectPath(p)}/services`), api("GET", "/v1/projects")]);
  const role = (mine.find((m) => m.name === p) || {}).role;
  render(
    p,
    h("div", { class: "actions" }, h("a", { class: "btn btn-primary", href: newServiceHref(p) }, "Create service"), h("a", { class: "btn", href: auditHref(p) }, "Audit log")),
    servicesTable(p, services),
    role === "owner" ? [membersForm(p)] : [],
  );
}

function servicesTable(p, services) {
  if (!services.length) return h("p", { class: "muted" }, "No service yet.");
  return h(
    "table",
    {},
    h("caption", { class: "visually-hidden" }, "Services"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Service"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Image"), h("th", { scope: "col" }, "Registry"))),
    h(
      "tbody",
      {},
      services.map((s) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, h("a", { href: serviceHref(p, s.name) }, s.name)),
          h("td", {}, badge(s.status)),
          h("td", { class: "mono" }, s.image),
          h("td", {}, s.registry ? [`${s.registry.username} @ ${s.registry.registry_url} · `, healthText(s.registry.health)] : "anonymous"),
        ),
      ),
    ),
  );
}

/** An owner adds a member by user name. */
function membersForm(p) {
  const user = h("input", { type: "text", name: "user", required: true, autocomplete: "off" });
  const status = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card", "aria-label": "Add member" },
    h("h2", {}, "Members"),
    field("User name", user, "Members see and deploy every service of this project."),
    status,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn" }, "Add member")),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", `${projectPath(p)}/members`, { user: user.value.trim() });
      fill(status, h("p", { class: "alert alert-ok", role: "status" }, `${user.value.trim()} is now a member.`));
      user.value = "";
    } catch (e) {
      fill(status, errorBox(e));
    }
  });
  return form;
}
