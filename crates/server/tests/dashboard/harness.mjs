// What a browser scenario needs: Debian's chromium under Playwright, the page's
// console watched for errors (a CSP refusal is one), numbered full-page
// screenshots into $OUT, axe-core run in the page, and the places a secret must
// never reach. Used by browser.mjs and settings.mjs.

import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const require = createRequire(import.meta.url);
const AXE = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

/** A browser, one page at 1280×900, and the helpers bound to it. */
export async function start() {
  const { OUT } = process.env;
  mkdirSync(OUT, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => {
    // The API's own 4xx answers are part of the flows; anything else is not.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource: the server responded with a status of 4")) problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.setDefaultTimeout(20000);

  let shot = 0;
  return {
    browser,
    context,
    page,
    problems,
    async screenshot(name) {
      shot += 1;
      const file = `${OUT}/${String(shot).padStart(2, "0")}-${name}.png`;
      await page.screenshot({ path: file, fullPage: true });
      console.log(`screenshot ${file}`);
    },
    /** axe-core in the page (through the DevTools protocol, which the page's CSP
     * does not govern); no serious or critical violation allowed. */
    async accessible(name) {
      await page.evaluate(AXE + ";0");
      const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ["violations"] }));
      const bad = result.violations.filter((v) => ["serious", "critical"].includes(v.impact));
      for (const v of result.violations) console.log(`axe ${name}: ${v.impact} ${v.id}: ${v.help} (${v.nodes.length})`);
      assert.equal(bad.length, 0, `${name}: ${bad.map((v) => `${v.id} ${v.nodes.map((n) => n.target).join(",")}`).join("; ")}`);
    },
    async heading(text) {
      await page.getByRole("heading", { level: 1, name: text }).waitFor();
    },
    /** None of `secrets` in the page's HTML (inputs' attributes included), the
     * tab's storage, its cookies or its URL. */
    async noSecretKept(where, secrets) {
      const html = await page.content();
      const storage = await page.evaluate(() => JSON.stringify({ ...sessionStorage }) + JSON.stringify({ ...localStorage }));
      const cookies = JSON.stringify(await context.cookies());
      for (const secret of secrets) {
        for (const [what, text] of [["HTML", html], ["storage", storage], ["cookies", cookies], ["URL", page.url()]]) {
          assert.ok(!text.includes(secret), `${where}: a secret is in the page's ${what}`);
        }
      }
    },
  };
}
