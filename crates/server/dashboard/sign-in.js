// The sign-in page: an API token, checked against the API before it is kept.

import { h, fill } from "./dom.js";
import { api, ApiError, keepToken, forgetToken } from "./api.js";
import { render, setCrumbs, showSignOut, reload } from "./page.js";
import { field, errorBox } from "./widgets.js";
import { projectsHref } from "./routes.js";

export function signIn() {
  setCrumbs([]);
  showSignOut(false);
  const input = h("input", { type: "password", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const status = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    { class: "card narrow", "aria-label": "Sign in" },
    field("API token", input, ["An admin makes one with ", h("code", {}, "berth user create NAME"), "; the server's first one is in ", h("code", {}, "DATA_DIR/admin-token"), "."]),
    status,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "btn btn-primary" }, "Sign in")),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    keepToken(input.value.trim());
    input.value = "";
    try {
      await api("GET", "/v1/projects");
      location.hash = projectsHref;
      reload();
    } catch (e) {
      forgetToken();
      fill(status, errorBox(e.status === 401 ? new ApiError(401, { code: "unauthorized", message: "That token is not valid." }) : e));
    }
  });
  render("Sign in to berth", form);
}
