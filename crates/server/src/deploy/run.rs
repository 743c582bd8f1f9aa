//! One deploy, as small steps: the credentials (decrypted for this pull only), the
//! registry opened (ping, authenticate, resolve: the same walk as the preflight,
//! observed as log lines), the pull through the shared cache, the deployment's
//! root filesystem, the container started.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_registry::open::{Observer, StepName};
use berth_registry::{preflight, Credentials, Opened, RegistryError, Target, TokenReuse};
use berth_runtime::lazy::LazyError;
use berth_runtime::network::{Network, Probe};
use berth_runtime::proofs::Access;
use berth_runtime::pull::{self, PullError, Pulled};
use berth_runtime::rootfs::{self, Layout};
use berth_runtime::runc::{Launch, Runtime};
use berth_runtime::sandbox::Limits;
use berth_runtime::unpack::IdShift;
use berth_store::{Deployment, NetworkMode, Service, ServiceStatus};
use berth_types::{mask_username, Digest};

use super::failure::Failure;
use super::Worker;
use super::{container_id, locked, log};

/// The deploy's observer of the registry steps: one log line each.
struct LogSteps<'a> {
    log: &'a Path,
    target: &'a Target,
}

impl Observer for LogSteps<'_> {
    fn passed(&mut self, step: StepName, status: Option<u16>, detail: String, took: Duration) {
        let ms = took.as_millis();
        let line = match step {
            StepName::Ping => format!(
                "ping {}: HTTP {} ({ms} ms)",
                self.target.base,
                status.unwrap_or_default()
            ),
            StepName::Token => format!("token: {detail} ({ms} ms)"),
            StepName::Manifest => format!(
                "manifest: {} resolves to {detail} ({ms} ms)",
                self.target.image
            ),
        };
        log::append(self.log, &line);
    }

    fn failed(&mut self, step: StepName, e: &RegistryError, took: Duration) {
        let step = match step {
            StepName::Ping => "ping",
            StepName::Token => "token",
            StepName::Manifest => "manifest",
        };
        log::append(
            self.log,
            &format!("{step} failed: {e} ({} ms)", took.as_millis()),
        );
    }
}

#[tracing::instrument(skip_all, fields(deployment = %d.id))]
pub(super) async fn run(w: &Worker, d: &Deployment, log: &Path) -> Result<Digest, Failure> {
    let started = Instant::now();
    log::append(log, &format!("deployment {} of {}", d.id, d.image));
    let service = w
        .store
        .service_by_id(&d.service_id)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?
        .ok_or_else(|| Failure::runtime("the service is gone"))?;
    let secrets = super::settings::sealed(w, &service).await?;

    let (target, creds) = credentials(w, d, &service, log).await?;
    let has_creds = creds.is_some();
    // What a cluster's kubelet is given to pull with (the same credentials).
    let pull_creds = creds
        .as_ref()
        .map(|c| Credentials::new(c.username.clone(), c.password.clone()));
    let explain =
        |e: &RegistryError| Failure::from_registry(e, preflight::explain(e, &target, has_creds));
    let mut observer = LogSteps {
        log,
        target: &target,
    };
    let mut opened = berth_registry::open(
        &w.registry,
        &target,
        creds,
        TokenReuse::Cached,
        &mut observer,
    )
    .await
    .map_err(|e| explain(&e))?;
    let resolved = opened.resolved.digest.clone();
    if w.deployer.cluster.is_some() {
        // The cluster pulls the layers: berth resolved the digest with the stored
        // credentials (a bad one or a missing tag already failed, in seconds) and
        // reads the config for the user the image runs as and its exposed port.
        let (user, exposed_port) =
            user_and_port(w, d, &service, &mut opened)
                .await
                .map_err(|e| match &e {
                    PullError::Registry(r) => explain(r),
                    PullError::Rejected(_) => Failure::image_rejected(e.to_string()),
                    _ => Failure::runtime(e.to_string()),
                })?;
        drop(opened);
        let image = super::kubernetes::Resolved {
            target: &target,
            digest: &resolved,
            creds: pull_creds,
            user,
            exposed_port,
        };
        // Secrets are opened only now, just before the cluster is given them.
        let settings = super::settings::of(w, &service, secrets, log).await?;
        super::kubernetes::run(w, d, &service, image, settings, log).await?;
        return Ok(resolved);
    }

    let pulled = pull(w, d, &service, &mut opened, (&target, pull_creds), log)
        .await
        .map_err(|e| pull_failure(&e, &explain).at(&resolved))?;

    let bundle = w.deployer.bundle(&d.id);
    root_filesystem(&pulled, &bundle, w.deployer.images.ids(), log)?;
    // Secrets are opened only now, just before the start, not for the pull's length.
    let settings = super::settings::of(w, &service, secrets, log).await?;
    start(w, d, &service, &pulled, &bundle, settings).await?;
    w.deployer.started_lazily(&d.id);
    log::append(
        log,
        &format!(
            "started in {} ms total; container output follows",
            started.elapsed().as_millis()
        ),
    );
    Ok(resolved)
}

/// How a failed pull fails its deployment: the registry's own words for what it
/// answered, a stall as a timeout, a refused image as rejected.
fn pull_failure(e: &PullError, explain: &dyn Fn(&RegistryError) -> Failure) -> Failure {
    match e {
        PullError::Registry(r) => explain(r),
        PullError::Stalled(_) => Failure::registry(berth_registry::Code::Timeout, e.to_string()),
        PullError::Rejected(_) => Failure::image_rejected(e.to_string()),
        PullError::Cache(_) => Failure::registry(berth_registry::Code::NetworkError, e.to_string()),
        PullError::Unpack(_) | PullError::Invalid(_) => Failure::runtime(e.to_string()),
    }
}

/// The registry to pull from, and the stored credentials for it (decrypted here,
/// for this pull only), or none: then anonymously from the image's own registry.
async fn credentials(
    w: &Worker,
    d: &Deployment,
    service: &Service,
    log: &Path,
) -> Result<(Target, Option<Credentials>), Failure> {
    let bind = |r: Result<Target, RegistryError>| {
        r.map_err(|e| Failure::registry(e.code(), e.to_string()))
    };
    match &service.credential {
        Some(c) => {
            let password = w
                .vault
                .get(&service.project_id, &service.id, &c.secret)
                .await
                .map_err(|e| Failure::runtime(e.to_string()))?;
            log::append(
                log,
                &format!(
                    "credentials for {} (user {})",
                    c.registry_url,
                    mask_username(&c.username)
                ),
            );
            let target = bind(w.registry.target(&c.registry_url, &d.image))?;
            // ECR keys are minted into a fresh token here, at each deploy.
            let creds = crate::kinds::registry_credentials(
                c.kind,
                c.username.clone(),
                password,
                d.project_id.as_str(),
            )
            .await
            .map_err(|e| {
                let report = crate::kinds::ecr_report(&e);
                Failure::registry(report.code, report.message)
            })?;
            Ok((target, Some(creds)))
        }
        None => {
            log::append(log, "no registry credentials: pulling anonymously");
            Ok((bind(w.registry.target_of(&d.image))?, None))
        }
    }
}

/// What a pull of deployment `d` works with: the progress watchers read (kept
/// for the waterfall), the project's proofs of access, the deploy's terms.
fn pull_setup<'a>(
    w: &'a Worker,
    d: &Deployment,
    service: &'a Service,
) -> (Arc<pull::Progress>, Access<'a>, pull::Terms) {
    let progress = Arc::new(pull::Progress::default());
    locked(&w.deployer.pulls).insert(d.id.clone(), progress.clone());
    let access = Access {
        proofs: &w.deployer.proofs,
        project: service.project_id.as_str(),
    };
    let terms = pull::Terms {
        stall: w.limits.stall,
        caps: w.limits.caps,
    };
    (progress, access, terms)
}

/// The host platform's manifest, then its layers mounted lazily (eStargz, see
/// `lazy`) or its blobs into the cache and unpacked (or the unpacked image
/// reused), with progress for watchers.
async fn pull(
    w: &Worker,
    d: &Deployment,
    service: &Service,
    opened: &mut Opened<'_>,
    (target, creds): (&Target, Option<Credentials>),
    log: &Path,
) -> Result<Pulled, PullError> {
    let platform = opened.platform_manifest().await?;
    let (progress, access, terms) = pull_setup(w, d, service);
    match super::lazy::layers(w, &platform) {
        Ok(layers) => {
            let start = super::lazy::Start {
                d,
                project: &service.project_id,
                target,
                creds,
                progress: progress.clone(),
                log,
            };
            match super::lazy::start(w, opened, &platform, layers, start).await {
                Ok(pulled) => return Ok(pulled),
                Err(LazyError::Pull(e)) => return Err(e),
                // The full pull checks every byte by the blob's digest, and
                // says what is wrong with the registry if anything is.
                Err(e) => log::append(log, &format!("lazy start failed ({e}): pulling in full")),
            }
        }
        Err(Some(why)) => log::append(log, &why),
        Err(None) => {}
    }
    let pulled = pull::pull(
        opened,
        &platform,
        terms,
        access,
        &w.deployer.cache,
        &w.deployer.images,
        &progress,
    )
    .await?;
    log_pull(log, &pulled);
    crate::metrics::metrics().pulled(pulled.fetched_bytes());
    Ok(pulled)
}

/// The user the image runs as (its config's `User`) and its single exposed TCP
/// port, from the host platform's config alone, fetched through the shared cache.
async fn user_and_port(
    w: &Worker,
    d: &Deployment,
    service: &Service,
    opened: &mut Opened<'_>,
) -> Result<(String, Option<u16>), PullError> {
    let platform = opened.platform_manifest().await?;
    let (progress, access, terms) = pull_setup(w, d, service);
    let config = pull::config(
        opened,
        &platform,
        terms,
        access,
        &w.deployer.cache,
        &progress,
    )
    .await?;
    let user = config
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .unwrap_or_default();
    Ok((user, berth_runtime::network::exposed_port(&config)))
}

fn log_pull(log: &Path, pulled: &Pulled) {
    for b in &pulled.blobs {
        match b.took {
            Some(took) => log::append(
                log,
                &format!(
                    "blob {}: {} bytes in {} ms ({:.1} MB/s)",
                    b.digest,
                    b.size,
                    took.as_millis(),
                    b.size as f64 / 1e6 / took.as_secs_f64().max(1e-6)
                ),
            ),
            None => log::append(log, &format!("blob {}: {} bytes, cached", b.digest, b.size)),
        }
    }
    if pulled.reused {
        log::append(log, &format!("image {} already unpacked", pulled.manifest));
    } else {
        log::append(
            log,
            &format!("unpacked in {} ms", pulled.unpack_took.as_millis()),
        );
    }
}

/// The deployment's own root filesystem over the shared unpacked image.
fn root_filesystem(
    pulled: &Pulled,
    bundle: &Path,
    ids: IdShift,
    log: &Path,
) -> Result<(), Failure> {
    let t = Instant::now();
    let layout = rootfs::prepare(&pulled.layers, bundle, ids).map_err(|e| {
        rootfs::remove(bundle);
        Failure::runtime(format!("preparing the root filesystem: {e}"))
    })?;
    let how = match layout {
        Layout::Overlay => "overlay on the shared image",
        Layout::Copy => "private copy",
    };
    log::append(
        log,
        &format!(
            "root filesystem ready ({how}, {} ms)",
            t.elapsed().as_millis()
        ),
    );
    Ok(())
}

async fn start(
    w: &Worker,
    d: &Deployment,
    service: &Service,
    pulled: &Pulled,
    bundle: &Path,
    settings: berth_runtime::settings::RunSettings,
) -> Result<(), Failure> {
    let Some(runtime) = &w.deployer.runtime else {
        return Err(Failure::runtime("no container runtime: runc was not found on PATH; install it (Debian: apt-get install runc)"));
    };
    // Terminated while pulling: do not start it.
    if let Ok(Some(svc)) = w.store.service_by_id(&d.service_id).await {
        if svc.status == ServiceStatus::Terminated {
            rootfs::remove(bundle);
            return Err(Failure::runtime(
                "the service was terminated during the deploy",
            ));
        }
    }
    let cid = container_id(&d.id);
    let logs = w.deployer.logs(&d.id);
    let launch = Launch {
        limits: limits_of(service),
        network: match service.traffic.network {
            NetworkMode::Public => Network::Public,
            NetworkMode::None => Network::None,
        },
        settings,
    };
    runtime
        .start(&cid, bundle, &pulled.config, launch, &logs)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let exited_early = until_started(runtime.as_ref(), &cid).await?;
    let exited = match (exited_early, probe_of(service, pulled)) {
        (None, Some(probe)) => {
            let exited = wait_ready(w, runtime.as_ref(), &cid, &probe, &logs.infra).await?;
            if exited.is_none() {
                publish(w, d, service, runtime.as_ref(), &cid, probe.port).await?;
            }
            exited
        }
        // A worker: the start window, and a container that fails this soon fails
        // its deploy.
        (exited, _) => {
            let window_end = tokio::time::Instant::now() + w.limits.start_window;
            let mut exited = exited;
            while exited.is_none() && tokio::time::Instant::now() < window_end {
                tokio::time::sleep(Duration::from_millis(20)).await;
                exited = runtime.exited(&cid);
            }
            exited
        }
    };
    if let Some(status) = exited.filter(|s| !s.success()) {
        let code = status
            .code()
            .map(|c| format!("exit code {c}"))
            .unwrap_or_else(|| status.to_string());
        // Its last words reach the output file a moment after it exits.
        let drained = tokio::time::Instant::now() + Duration::from_secs(2);
        while !runtime.output_drained(&cid) && tokio::time::Instant::now() < drained {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        return Err(Failure::runtime(format!(
            "the container exited at once with {code}; its last lines:\n{}",
            last_lines(&logs.output, 5)
        ))
        .at(&pulled.manifest));
    }
    Ok(())
}

/// The service's own cgroup limits (the sandbox's defaults where it sets none).
fn limits_of(service: &Service) -> Limits {
    let r = service.resources;
    Limits {
        memory_bytes: r.memory_mb.map(|m| m << 20),
        pids: r.pids,
        cpus: r.cpu_millis.map(|c| c as f64 / 1000.0),
    }
}

/// Waits until the runtime reports the process running (no fixed sleep), or
/// its exit status if it already ended.
async fn until_started(
    runtime: &dyn Runtime,
    cid: &str,
) -> Result<Option<std::process::ExitStatus>, Failure> {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = runtime.exited(cid) {
            return Ok(Some(status));
        }
        if runtime.started(cid).await {
            return Ok(None);
        }
        if tokio::time::Instant::now() > give_up {
            return Err(Failure::runtime("the container did not start within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What ready means for `service`: its port (set, or the image's single exposed
/// TCP port) answering, at its health path when it has one; `None`: a worker.
pub(super) fn probe_of(service: &Service, pulled: &Pulled) -> Option<Probe> {
    let port = service
        .traffic
        .port
        .or_else(|| berth_runtime::network::exposed_port(&pulled.config))?;
    Some(Probe {
        port,
        health_path: service.traffic.health_path.clone(),
    })
}

/// Sends the service's traffic to this deployment, now that it answers.
async fn publish(
    w: &Worker,
    d: &Deployment,
    service: &Service,
    runtime: &dyn berth_runtime::runc::Runtime,
    cid: &str,
    port: u16,
) -> Result<(), Failure> {
    let project = w
        .store
        .project_name(&service.project_id)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?
        .unwrap_or_default();
    let serving = &w.deployer.serving;
    let hosts = serving.host_names(service, &project);
    let ns = runtime
        .netns(cid)
        .ok_or_else(|| Failure::runtime("the container has no network namespace"))?;
    let dir = w.deployer.root.join(d.id.as_str());
    serving
        .publish(&dir, service.id.as_str(), hosts.clone(), &d.id, ns, port)
        .map_err(|e| Failure::runtime(format!("routing to the deployment: {e}")))?;
    log::append(
        &w.deployer.log_path(&d.id),
        &format!("serving {}", hosts.join(", ")),
    );
    Ok(())
}

/// Probes until the app answers, the container exits (its status returned), or
/// the ready deadline passes (`FAILED timeout`, with the last probe's answer).
async fn wait_ready(
    w: &Worker,
    runtime: &dyn berth_runtime::runc::Runtime,
    cid: &str,
    probe: &Probe,
    log: &Path,
) -> Result<Option<std::process::ExitStatus>, Failure> {
    let what = match &probe.health_path {
        Some(path) => format!("port {} (GET {path})", probe.port),
        None => format!("port {}", probe.port),
    };
    log::append(log, &format!("waiting for {what} to answer"));
    let t = Instant::now();
    let deadline = tokio::time::Instant::now() + w.limits.ready_deadline;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(status) = runtime.exited(cid) {
            return Ok(Some(status));
        }
        let Some(ns) = runtime.netns(cid) else {
            return Err(Failure::runtime("the container has no network namespace"));
        };
        match berth_runtime::network::probe(&ns, probe, Duration::from_secs(2)).await {
            Ok(()) => {
                log::append(
                    log,
                    &format!(
                        "ready: {what} answered after {} ms",
                        t.elapsed().as_millis()
                    ),
                );
                return Ok(None);
            }
            Err(e) if tokio::time::Instant::now() + pause > deadline => {
                let last = e.to_string();
                return Err(Failure::registry(
                    berth_registry::Code::Timeout,
                    format!(
                        "the app was not ready within {} s: {last}",
                        w.limits.ready_deadline.as_secs()
                    ),
                ));
            }
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// The last `n` lines of a container's output, without their timestamps.
fn last_lines(output: &Path, n: usize) -> String {
    let text = log::read_from(output, log::offset_of_last_lines(output, n));
    String::from_utf8_lossy(&text)
        .lines()
        .map(|l| l.split_once("] ").map_or(l, |(_, text)| text))
        .collect::<Vec<_>>()
        .join("\n")
}
