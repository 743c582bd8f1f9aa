// The hash router: what each hash names, and the links round-trip through it.
// Run: node --test crates/server/dashboard/tests/

import { test } from "node:test";
import assert from "node:assert/strict";
import { parseRoute, projectHref, newServiceHref, serviceHref, tabHref, deploymentHref, auditHref, projectsHref } from "../routes.js";

/** The route without its query (checked apart). */
const page = (hash) => {
  const { query, ...rest } = parseRoute(hash);
  return rest;
};

test("each hash names its page", () => {
  const cases = [
    ["", { page: "projects" }],
    ["#/", { page: "projects" }],
    ["#/projects", { page: "projects" }],
    ["#/nonsense/x", { page: "projects" }],
    ["#/p", { page: "projects" }],
    ["#/p/acme", { page: "project", project: "acme" }],
    ["#/p/acme/", { page: "project", project: "acme" }],
    ["#/p/acme/unknown", { page: "project", project: "acme" }],
    ["#/p/acme/s", { page: "project", project: "acme" }],
    ["#/p/acme/new", { page: "new", project: "acme" }],
    ["#/p/acme/audit", { page: "audit", project: "acme" }],
    ["#/p/acme/audit?service=web", { page: "audit", project: "acme" }],
    ["#/p/acme/s/web", { page: "service", project: "acme", service: "web", tab: "overview" }],
    ["#/p/acme/s/web/deployments", { page: "service", project: "acme", service: "web", tab: "deployments" }],
    ["#/p/acme/s/web/settings", { page: "service", project: "acme", service: "web", tab: "settings" }],
    ["#/p/acme/s/web/d", { page: "service", project: "acme", service: "web", tab: "d" }],
    ["#/p/acme/s/web/d/0190abcd", { page: "deployment", project: "acme", service: "web", deployment: "0190abcd" }],
    ["#/p/a%20b/s/c%2Fd", { page: "service", project: "a b", service: "c/d", tab: "overview" }],
    ["#//p//acme", { page: "project", project: "acme" }],
  ];
  for (const [hash, want] of cases) assert.deepEqual(page(hash), want, hash);
});

test("the audit page reads its filters from the query", () => {
  const cases = [
    ["#/p/acme/audit", {}],
    ["#/p/acme/audit?service=web", { service: "web" }],
    ["#/p/acme/audit?service=web&action=service.create", { service: "web", action: "service.create" }],
    ["#/p/acme/audit?action=a%20b", { action: "a b" }],
  ];
  for (const [hash, want] of cases) assert.deepEqual(Object.fromEntries(parseRoute(hash).query), want, hash);
});

test("a malformed escape is an error, not a page", () => {
  assert.throws(() => parseRoute("#/p/%E0%A4%A"), URIError);
});

test("links are the hashes that name their page", () => {
  const names = ["acme", "a b", "c/d", "ü?#&"];
  for (const p of names) {
    for (const s of names) {
      assert.deepEqual(page(projectHref(p)), { page: "project", project: p });
      assert.deepEqual(page(newServiceHref(p)), { page: "new", project: p });
      assert.deepEqual(page(serviceHref(p, s)), { page: "service", project: p, service: s, tab: "overview" });
      for (const tab of ["overview", "deployments", "settings"]) {
        assert.deepEqual(page(tabHref(p, s, tab)), { page: "service", project: p, service: s, tab });
      }
      assert.deepEqual(page(deploymentHref(p, s, "id/1")), { page: "deployment", project: p, service: s, deployment: "id/1" });
      const audit = parseRoute(auditHref(p, { service: s, action: "x&y" }));
      assert.equal(audit.project, p);
      assert.deepEqual(Object.fromEntries(audit.query), { service: s, action: "x&y" });
    }
  }
  assert.equal(page(projectsHref).page, "projects");
});

test("link texts stay the ones the pages have always used", () => {
  const cases = [
    [projectHref("acme"), "#/p/acme"],
    [newServiceHref("acme"), "#/p/acme/new"],
    [serviceHref("acme", "web"), "#/p/acme/s/web"],
    [tabHref("acme", "web", "overview"), "#/p/acme/s/web"],
    [tabHref("acme", "web", "settings"), "#/p/acme/s/web/settings"],
    [deploymentHref("acme", "web", "d1"), "#/p/acme/s/web/d/d1"],
    [auditHref("acme"), "#/p/acme/audit"],
    [auditHref("acme", { service: "", action: "" }), "#/p/acme/audit"],
    [auditHref("acme", { service: "web" }), "#/p/acme/audit?service=web"],
    [auditHref("acme", { action: "service.create" }), "#/p/acme/audit?action=service.create"],
    [auditHref("acme", { service: "w", action: "a" }), "#/p/acme/audit?service=w&action=a"],
  ];
  for (const [got, want] of cases) assert.equal(got, want);
});
