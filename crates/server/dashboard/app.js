// berth's dashboard: a hash-routed page over the /v1 API, in native ES modules
// served by the binary (no build step). Every value from the server is put into
// the page as text (dom.js), never as HTML, and the Content-Security-Policy allows
// no inline script. The API token lives in this tab's sessionStorage only (api.js).
//
// This module is the entry: it reads the hash (routes.js says what it names) and
// draws that page.

import { h } from "./dom.js";
import { token, forgetToken } from "./api.js";
import { render, showSignOut, leavePage, setRouter } from "./page.js";
import { errorBox } from "./widgets.js";
import { parseRoute, projectsHref } from "./routes.js";
import { signIn } from "./sign-in.js";
import { projects, project } from "./projects.js";
import { createService } from "./create-service.js";
import { service } from "./service.js";
import { deployment } from "./deployment.js";
import { audit } from "./audit.js";

async function route() {
  leavePage();
  if (!token()) return signIn();
  showSignOut(true);
  const r = parseRoute(location.hash);
  try {
    switch (r.page) {
      case "new":
        return createService(r.project);
      case "audit":
        return await audit(r.project, r.query);
      case "deployment":
        return await deployment(r.project, r.service, r.deployment);
      case "service":
        return await service(r.project, r.service, r.tab);
      case "project":
        return await project(r.project);
      default:
        return await projects();
    }
  } catch (e) {
    if (e.status === 401) return signIn();
    render(e.status === 404 ? "Not found" : "Something went wrong", errorBox(e), h("p", {}, h("a", { href: projectsHref }, "Back to projects")));
  }
}

setRouter(route);
document.getElementById("signout").addEventListener("click", () => {
  forgetToken();
  location.hash = "#/";
  route();
});
window.addEventListener("hashchange", route);
route();
