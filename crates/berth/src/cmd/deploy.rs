//! `berth deploy NAME [--detach] [--follow]` and `berth logs NAME [--deployment ID] [--follow]`

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressStyle};

use berth_api::{BlobState, BlobView, DeploymentView};
use futures_util::StreamExt;
use reqwest::Method;

use super::api::{Api, Connection};
use super::{CliError, Outcome};

#[derive(clap::Args)]
pub struct DeployArgs {
    name: String,
    /// Return at once with the deployment id
    #[arg(long)]
    detach: bool,
    /// Keep streaming the container's output once deployed
    #[arg(long)]
    follow: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct LogsArgs {
    name: String,
    /// A deployment id (default: the latest)
    #[arg(long)]
    deployment: Option<String>,
    /// Keep streaming while the deployment runs
    #[arg(long)]
    follow: bool,
    /// Only the last N lines
    #[arg(long)]
    tail: Option<usize>,
    /// Only lines since a time (RFC 3339) or for a duration back (90s, 10m, 2h, 1d)
    #[arg(long)]
    since: Option<String>,
}

/// The log lines already printed. The log is the infrastructure log, then the
/// container's output: both grow while a deploy is watched, so an offset into
/// their concatenation would point into the middle of earlier lines (printing them
/// again, cut). Lines are stamped to the millisecond, so a line is known by its
/// text; only complete lines are printed.
#[derive(Default)]
struct Printed {
    seen: std::collections::HashSet<String>,
    /// Bytes of the log at the last read (for `--follow` to start after).
    len: usize,
}

impl Printed {
    /// The lines of `text` not printed yet, in order.
    fn fresh(&mut self, text: &[u8]) -> Vec<String> {
        self.len = text.len();
        let text = String::from_utf8_lossy(text);
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => return Vec::new(),
        };
        complete
            .lines()
            .filter(|l| self.seen.insert((*l).to_owned()))
            .map(str::to_owned)
            .collect()
    }
}

/// Prints the log's new lines (above the bars, when there are some).
async fn print_log_since(
    api: &Api,
    path: &str,
    printed: &mut Printed,
    bars: Option<&Bars>,
) -> Result<(), CliError> {
    let text = api
        .send(Method::GET, &format!("{path}/logs"))
        .await?
        .bytes()
        .await?;
    for line in printed.fresh(&text) {
        match bars {
            Some(b) => b.multi.println(&line)?,
            None => eprintln!("{line}"),
        }
    }
    Ok(())
}

/// A spinner with the status, and a bar per blob while the image is pulled (from
/// the deployment's `progress`). Only on a terminal.
struct Bars {
    multi: MultiProgress,
    status: ProgressBar,
    blobs: HashMap<String, BlobBar>,
}

/// A blob's bar and how it is to be left when the watch ends (as last seen).
struct BlobBar {
    bar: ProgressBar,
    end: BarEnd,
}

/// How a blob's bar is left on screen when the watch ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BarEnd {
    /// Full: the watch ends when the container started, so its bytes are all here
    /// even if the last answer read was from before.
    Full,
    /// As last seen: a lazy layer the container started on goes on being pulled in
    /// the background after the watch.
    AsSeen,
}

impl BarEnd {
    fn of(b: &BlobView) -> Self {
        match &b.lazy {
            Some(l) if l.local_ms.is_none() => BarEnd::AsSeen,
            _ => BarEnd::Full,
        }
    }
}

/// A blob whose bar is over: applied or cached, or a lazy layer made local.
fn blob_done(b: &BlobView) -> bool {
    match &b.lazy {
        Some(l) => l.local_ms.is_some(),
        None => matches!(b.state, BlobState::Applied | BlobState::Cached),
    }
}

/// What a blob's bar says after its bytes: its state, or, for a lazy layer, what
/// the container's reads fetched and where its background pull is (the bar is
/// that pull's, which may not have begun while the container already runs).
fn blob_message(b: &BlobView) -> String {
    let Some(l) = &b.lazy else {
        return b.state.as_str().to_owned();
    };
    let background = match (l.local_ms, b.started_ms) {
        (Some(ms), _) => format!("local at {:.2} s", ms as f64 / 1000.0),
        (None, Some(_)) => format!(
            "background {}%",
            (b.received.saturating_mul(100) / b.size.max(1)).min(100)
        ),
        (None, None) => "background waiting".to_owned(),
    };
    let chunks = if l.on_demand_chunks == 1 {
        "chunk"
    } else {
        "chunks"
    };
    format!(
        "lazy: {} on demand ({} {chunks}), {background}",
        HumanBytes(l.on_demand_bytes),
        l.on_demand_chunks
    )
}

impl Bars {
    fn new() -> Self {
        let multi = MultiProgress::new();
        let status = multi.add(ProgressBar::new_spinner());
        status.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"),
        );
        status.enable_steady_tick(Duration::from_millis(100));
        Bars {
            multi,
            status,
            blobs: HashMap::new(),
        }
    }

    fn update(&mut self, status: &str, progress: &[BlobView]) {
        self.status.set_message(status.to_owned());
        for b in progress {
            let digest = b.digest.as_str();
            let short = digest.trim_start_matches("sha256:");
            let short = &short[..short.len().min(12)];
            let shown = self.blobs.entry(digest.to_owned()).or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(b.size));
                bar.set_style(
                    ProgressStyle::with_template(
                        "  {prefix} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {msg}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(short.to_owned());
                BlobBar {
                    bar,
                    end: BarEnd::Full,
                }
            });
            shown.end = BarEnd::of(b);
            let bar = &shown.bar;
            if bar.is_finished() {
                continue;
            }
            bar.set_position(b.received);
            bar.set_message(blob_message(b));
            if blob_done(b) {
                bar.finish();
            }
        }
    }

    /// Ends the display: the spinner goes, every blob's bar stays, finished (a lazy
    /// layer's as it was: its background pull goes on).
    fn clear(self) {
        self.status.finish_and_clear();
        for b in self.blobs.values() {
            match (b.bar.is_finished(), b.end) {
                (true, _) => {}
                (false, BarEnd::Full) => b.bar.finish(),
                (false, BarEnd::AsSeen) => b.bar.abandon(),
            }
        }
        drop(self.multi);
        // The last bar's line ends here: what follows starts a line of its own.
        eprintln!();
    }
}

async fn stream_logs(api: &Api, path: &str, skip: usize) -> Result<(), CliError> {
    let resp = api
        .send(Method::GET, &format!("{path}/logs?follow=true"))
        .await?;
    let mut body = resp.bytes_stream();
    let mut skipped = 0usize;
    let mut out = std::io::stdout();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        let start = skip.saturating_sub(skipped).min(chunk.len());
        skipped += chunk.len();
        out.write_all(&chunk[start..])?;
        out.flush()?;
    }
    Ok(())
}

/// The status and the reason for waiting last shown, to show each change once.
#[derive(Default)]
struct Shown {
    status: String,
    waiting: Option<String>,
}

impl Shown {
    /// The status (on the spinner, or a line when it changes, not with
    /// `--json`) and why a pending deployment waits, when the server says (even
    /// with `--json`, on stderr: waiting silently could be for ever).
    fn show(
        &mut self,
        d: &DeploymentView,
        bars: Option<&mut Bars>,
        json: bool,
    ) -> Result<(), CliError> {
        let why = d.message.as_ref().filter(|_| d.status == "PENDING_DEPLOY");
        let new_why = why.filter(|w| self.waiting.as_ref() != Some(*w));
        match bars {
            Some(b) => {
                b.update(&d.status, d.progress.as_deref().unwrap_or_default());
                if let Some(w) = new_why {
                    b.multi.println(format!("waiting: {w}"))?;
                }
            }
            None => {
                if d.status != self.status && !json {
                    eprintln!("==> {}", d.status);
                }
                if let Some(w) = new_why {
                    eprintln!("waiting: {w}");
                }
            }
        }
        self.status.clone_from(&d.status);
        self.waiting = why.cloned();
        Ok(())
    }
}

/// How a deployment is shown: `--detach`, `--follow`, `--json`.
pub struct Watch {
    pub detach: bool,
    pub follow: bool,
    pub json: bool,
}

pub async fn deploy(conn: &Connection, args: DeployArgs) -> Result<Outcome, CliError> {
    let api = Api::connect(conn)?;
    let name = &args.name;
    let args = Watch {
        detach: args.detach,
        follow: args.follow,
        json: args.json,
    };
    let project = Api::project(conn)?;
    let base = format!("/v1/projects/{project}/services/{name}/deployments");
    // The route takes no fields; `{}` is what it has always been sent.
    let queued = api
        .post::<DeploymentView>(&base, &serde_json::Map::new())
        .await?;
    if args.detach {
        if args.json {
            queued.print_json()?;
        } else {
            println!("{}", queued.view.id);
            if let Some(why) = &queued.view.message {
                eprintln!("waiting: {why}");
            }
        }
        return Ok(Outcome::Ok);
    }
    watch(&api, &base, &queued.view.id, &args).await
}

/// Shows deployment `id` (just queued under `base`) until it is `DEPLOYED` or
/// `FAILED`, as `berth deploy` does (`--detach` is the caller's).
pub async fn watch(api: &Api, base: &str, id: &str, args: &Watch) -> Result<Outcome, CliError> {
    let path = format!("{base}/{id}");
    let mut printed = Printed::default();
    let mut shown = Shown::default();
    let mut bars = (!args.json && std::io::stderr().is_terminal()).then(Bars::new);
    let answer = loop {
        let answer = api.get::<DeploymentView>(&path).await?;
        let now = answer.view.status.clone();
        shown.show(&answer.view, bars.as_mut(), args.json)?;
        if !args.json {
            print_log_since(api, &path, &mut printed, bars.as_ref()).await?;
        }
        if now == "DEPLOYED" || now == "FAILED" {
            break answer;
        }
        let poll = if bars.is_some() { 150 } else { 300 };
        tokio::time::sleep(Duration::from_millis(poll)).await;
    };
    // The bars are left finished on screen, and let go before anything else is
    // written: a live MultiProgress redraws over lines written past it.
    if let Some(b) = bars.take() {
        b.clear();
    }
    let d = &answer.view;
    if args.json {
        answer.print_json()?;
    } else if d.status == "FAILED" {
        eprintln!(
            "deployment {id} FAILED ({}): {}",
            d.failure_code.as_deref().unwrap_or_default(),
            d.failure_message.as_deref().unwrap_or_default()
        );
    } else {
        // The first output lines.
        tokio::time::sleep(Duration::from_millis(500)).await;
        print_log_since(api, &path, &mut printed, None).await?;
        eprintln!(
            "deployment {id} DEPLOYED ({})",
            d.digest.as_deref().unwrap_or_default()
        );
        // Where it answers, last.
        if let Some(service) = base.strip_suffix("/deployments") {
            let s = api.get::<berth_api::ServiceView>(service).await?;
            for url in &s.view.urls {
                eprintln!("url: {url}");
            }
        }
        if args.follow {
            stream_logs(api, &path, printed.len).await?;
        }
    }
    Ok(if d.status == "DEPLOYED" {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

pub async fn logs(conn: &Connection, args: LogsArgs) -> Result<Outcome, CliError> {
    let api = Api::connect(conn)?;
    let project = Api::project(conn)?;
    let base = format!("/v1/projects/{project}/services/{}/deployments", args.name);
    let id = match args.deployment {
        Some(id) => id,
        None => {
            let all = api.get::<Vec<DeploymentView>>(&base).await?;
            all.view.into_iter().next().map(|d| d.id).ok_or_else(|| {
                CliError::Other(anyhow::anyhow!("{} has no deployments yet", args.name))
            })?
        }
    };
    let path = format!("{base}/{id}");
    if args.follow && args.tail.is_none() && args.since.is_none() {
        stream_logs(&api, &path, 0).await?;
    } else {
        let mut params = Vec::new();
        if let Some(n) = args.tail {
            params.push(format!("tail={n}"));
        }
        if let Some(since) = &args.since {
            params.push(format!(
                "since={}",
                url::form_urlencoded::byte_serialize(since.as_bytes()).collect::<String>()
            ));
        }
        if args.follow {
            params.push("follow=true".into());
        }
        let query = format!("?{}", params.join("&"));
        let text = api
            .send(Method::GET, &format!("{path}/logs{query}"))
            .await?;
        if !text.status().is_success() {
            return Err(CliError::Other(anyhow::anyhow!(
                "no logs for deployment {id} (HTTP {})",
                text.status()
            )));
        }
        std::io::stdout().write_all(&text.bytes().await?)?;
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::LazyView;

    /// A layer of 30 MB, `received` of it pulled, started at 0.4 s unless waiting.
    fn layer(state: BlobState, received: u64, lazy: Option<LazyView>) -> BlobView {
        BlobView {
            digest: format!("sha256:{}", "ab".repeat(32)),
            size: 30_000_000,
            received,
            state,
            started_ms: (state != BlobState::Waiting).then_some(400),
            downloaded_ms: None,
            applied_ms: None,
            lazy,
        }
    }

    /// Mounted at 0.2 s, 37 chunks read on demand, local at `local_ms`.
    fn lazy(local_ms: Option<u64>) -> Option<LazyView> {
        Some(LazyView {
            mounted_ms: 200,
            prefetch_bytes: 2_100_000,
            on_demand_bytes: 11_900_000,
            on_demand_chunks: 37,
            local_ms,
        })
    }

    #[test]
    fn a_blobs_bar_says_its_state_or_what_a_lazy_layer_fetched() {
        let one_chunk = Some(LazyView {
            on_demand_bytes: 65_536,
            on_demand_chunks: 1,
            ..LazyView::default()
        });
        for (blob, message, done, end) in [
            (
                layer(BlobState::Downloading, 1_000, None),
                "downloading",
                false,
                BarEnd::Full,
            ),
            (
                layer(BlobState::Applied, 30_000_000, None),
                "applied",
                true,
                BarEnd::Full,
            ),
            (
                layer(BlobState::Cached, 0, None),
                "cached",
                true,
                BarEnd::Full,
            ),
            (
                layer(BlobState::Downloading, 12_900_000, lazy(None)),
                "lazy: 11.35 MiB on demand (37 chunks), background 43%",
                false,
                BarEnd::AsSeen,
            ),
            (
                layer(BlobState::Waiting, 0, one_chunk),
                "lazy: 64.00 KiB on demand (1 chunk), background waiting",
                false,
                BarEnd::AsSeen,
            ),
            // Applied, but not yet an ordinary layer: still the background's.
            (
                layer(BlobState::Applied, 30_000_000, lazy(None)),
                "lazy: 11.35 MiB on demand (37 chunks), background 100%",
                false,
                BarEnd::AsSeen,
            ),
            (
                layer(BlobState::Applied, 30_000_000, lazy(Some(4_200))),
                "lazy: 11.35 MiB on demand (37 chunks), local at 4.20 s",
                true,
                BarEnd::Full,
            ),
        ] {
            let what = format!("{:?} {:?}", blob.state, blob.lazy);
            assert_eq!(blob_message(&blob), message, "{what}");
            assert_eq!(blob_done(&blob), done, "{what}");
            assert_eq!(BarEnd::of(&blob), end, "{what}");
        }
    }
}
