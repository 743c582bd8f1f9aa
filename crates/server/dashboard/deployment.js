// A deployment's page: its summary, the pull's progress and waterfall (polled
// while it is on its way, and while lazy layers are still pulled in the background
// after it started) and the infrastructure log followed live.

import { h, fill } from "./dom.js";
import { api, stream, servicePath } from "./api.js";
import { render, setCrumbs, onLeave } from "./page.js";
import { errorBox, badge, when } from "./widgets.js";
import { finished, seconds, blobProgress, waterfall, pullShown, pollDelay } from "./format.js";
import { projectsHref, projectHref, tabHref } from "./routes.js";
import { serviceTabs } from "./service.js";

export async function deployment(p, s, id) {
  setCrumbs([["Projects", projectsHref], [p, projectHref(p)], [s, tabHref(p, s, "deployments")], [id.slice(0, 8)]]);
  const path = `${servicePath(p, s)}/deployments/${encodeURIComponent(id)}`;
  const summary = h("div", { class: "card" });
  const progress = h("div", { class: "progress-list" });
  const pull = h("div", { class: "waterfall" });
  // A region: the scrollable log is focusable and named (a bare pre may not be).
  const log = h("pre", { class: "log", tabindex: "0", role: "region", "aria-label": "Infrastructure log and container output" });
  render(
    `Deployment ${id.slice(0, 8)}`,
    serviceTabs(p, s, "deployments"),
    summary,
    progress,
    pull,
    h("section", { "aria-labelledby": "log-title" }, h("h2", { id: "log-title" }, "Infrastructure log"), h("p", { class: "hint" }, "Each step berth took, the registry's own answers, then the container's output, followed live."), log),
  );
  let stopped = false;
  let timer;
  onLeave(() => {
    stopped = true;
    clearTimeout(timer);
  });
  let last = {};
  // When the page first saw it DEPLOYED: background pulls are followed from then on
  // for a bounded time.
  let backgroundSince;
  // One read at a time: the log's end asks for one too, and must not start a
  // second chain of reads beside the timer's.
  let reading = false;
  const poll = async () => {
    if (stopped || reading) return;
    clearTimeout(timer);
    reading = true;
    try {
      const d = await api("GET", path);
      showSummary(summary, d);
      const shown = pullShown(d);
      if (shown.progress) showProgress(progress, shown.progress);
      else progress.replaceChildren();
      if (shown.waterfall) showWaterfall(pull, shown.waterfall);
      last = d;
    } catch (e) {
      fill(summary, errorBox(e));
    }
    reading = false;
    if (last.status === "DEPLOYED" && backgroundSince === undefined) backgroundSince = Date.now();
    const delay = pollDelay(last, Date.now() - (backgroundSince ?? Date.now()));
    if (!stopped && delay !== null) timer = setTimeout(poll, delay);
  };
  await poll();
  followLog(`${path}/logs?follow=true`, log, () => stopped).then(() => poll());
}

function showSummary(el, d) {
  fill(
    el,
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Status"),
      h("dd", {}, badge(d.status)),
      h("dt", {}, "Image"),
      h("dd", { class: "mono" }, d.image),
      h("dt", {}, "Digest"),
      h("dd", { class: "mono" }, d.digest || "—"),
      h("dt", {}, "Started"),
      h("dd", {}, when(d.created_at)),
      finished(d.status) ? [h("dt", {}, "Took"), h("dd", {}, seconds(d.created_at, d.updated_at))] : null,
    ),
    // Why a pending one waits (a region no replica serves): it may wait forever.
    d.message && d.status === "PENDING_DEPLOY" ? h("p", { class: "alert alert-soft", role: "status" }, h("strong", {}, "Waiting: "), d.message) : null,
    d.failure_code ? h("p", { class: "alert alert-error", role: "alert" }, h("strong", {}, `${d.failure_code}: `), d.failure_message || "") : null,
  );
}

function showProgress(el, blobs) {
  fill(
    el,
    h("h2", {}, "Pulling"),
    blobs.map((b, i) => {
      const { text, max, value } = blobProgress(b, i);
      return h("div", { class: "blob" }, h("label", { for: `blob-${i}`, class: "mono" }, text), h("progress", { id: `blob-${i}`, max, value }));
    }),
  );
}

/** A pull as a browser's network panel shows requests: each blob's download and
 * unpack on one time axis. */
function showWaterfall(el, pull) {
  const { title, lazy, rows } = waterfall(pull);
  const bar = (cls, at) => {
    const span = h("span", { class: cls });
    // Set through the CSSOM: the CSP forbids style attributes, not this.
    span.style.left = at.left;
    if (at.width) span.style.width = at.width;
    return span;
  };
  const lazyTag = () => h("span", { class: "wf-lazy" }, "lazy");
  fill(
    el,
    h("h2", {}, title),
    h("p", { class: "hint" }, "Each blob on one time axis: ", h("span", { class: "key key-dl" }, "download"), " (a layer unpacks while it downloads), then ", h("span", { class: "key key-un" }, "the rest of its unpack"), "; a cached blob has no bar."),
    lazy
      ? h(
          "p",
          { class: "hint" },
          "A ",
          lazyTag(),
          " layer is ",
          h("span", { class: "key key-mount" }, "mounted"),
          " before it is downloaded: the container can start from there, its reads fetch the chunks they need, and the whole layer is then ",
          h("span", { class: "key key-bg" }, "pulled in the background"),
          " until it is local.",
        )
      : null,
    h(
      "ol",
      { class: "wf", "aria-label": "Pull waterfall" },
      rows.map((r) => {
        if (r.lazy) {
          const l = r.lazy;
          const track = h(
            "div",
            { class: "wf-track", "aria-hidden": "true" },
            l.background ? bar(l.running ? "wf-bg wf-running" : "wf-bg", l.background) : null,
            bar("wf-mount", { left: l.mount }),
          );
          return h("li", {}, h("span", { class: "wf-name mono" }, `${r.text} `, lazyTag(), ` · ${l.note}`), track);
        }
        const track = h("div", { class: "wf-track", "aria-hidden": "true" }, r.download ? bar("wf-dl", r.download) : null, r.unpack ? bar("wf-un", r.unpack) : null);
        return h("li", {}, h("span", { class: "wf-name mono" }, r.text), track);
      }),
    ),
  );
}

/** Streams the log into `pre`, following, until the server ends the answer. */
async function followLog(url, pre, stopped) {
  const ctl = new AbortController();
  onLeave(() => ctl.abort());
  try {
    const resp = await stream(url, ctl.signal);
    if (!resp.ok) {
      pre.textContent = `The log could not be read (HTTP ${resp.status}).`;
      return;
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    while (!stopped()) {
      const { value, done } = await reader.read();
      if (done) break;
      const atEnd = pre.scrollHeight - pre.scrollTop - pre.clientHeight < 40;
      pre.append(value);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
  } catch (e) {
    if (e.name !== "AbortError") pre.append(`\n(the log stream stopped: ${e.message})`);
  }
}
