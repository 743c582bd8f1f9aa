//! The one way through the protocol: ping, authenticate, resolve. The preflight and
//! the deploy both walk it here, and each observes the steps its own way (the
//! preflight builds its `steps`, the deploy writes log lines).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::client::{Registry, Session, Target, TokenReuse};
use crate::credentials::Credentials;
use crate::error::RegistryError;
use crate::manifest::{self, host_platform, Resolved};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    Ping,
    Token,
    Manifest,
}

/// Told of each step as it starts and ends.
pub trait Observer: Send {
    fn started(&mut self, _step: StepName) {}
    /// The step passed: the HTTP status it ended with, a line saying what it did.
    fn passed(&mut self, _step: StepName, _status: Option<u16>, _detail: String, _took: Duration) {}
    fn failed(&mut self, _step: StepName, _error: &RegistryError, _took: Duration) {}
}

/// An observer that is told nothing (tests, tools).
pub struct Unobserved;

impl Observer for Unobserved {}

/// A session that pinged, authenticated and resolved the target's reference.
pub struct Opened<'r> {
    pub session: Session<'r>,
    pub resolved: Resolved,
}

impl Opened<'_> {
    /// The host platform's manifest (see [`manifest::platform`]).
    pub async fn platform_manifest(&mut self) -> Result<manifest::PlatformManifest, RegistryError> {
        manifest::platform(&mut self.session, &self.resolved).await
    }
}

/// Opens `target` with `creds` (or anonymously): `GET /v2/`, the challenge answered,
/// the reference resolved to a digest. An index without a build for the host
/// platform fails here, at the manifest step.
pub async fn open<'r>(
    registry: &'r Registry,
    target: &'r Target,
    creds: Option<Credentials>,
    reuse: TokenReuse,
    observer: &mut dyn Observer,
) -> Result<Opened<'r>, RegistryError> {
    let mut session = registry.session(target, creds, reuse);
    let mut step = Step { observer, at: None };

    step.start(StepName::Ping);
    let pinged = step.check(session.ping().await)?;
    let ping_detail = match pinged.challenges.first() {
        None => "registry API v2 answered; anonymous access".to_owned(),
        Some(c) => format!(
            "registry API v2 answered; asks for {:?} authentication",
            c.scheme
        ),
    };
    step.pass(Some(pinged.status), ping_detail);

    if !pinged.challenges.is_empty() {
        step.start(StepName::Token);
        if let Some(a) = step.check(session.authenticate(&pinged.challenges).await)? {
            step.pass(Some(a.status), a.detail);
        }
    }

    step.start(StepName::Manifest);
    let reference = target.image.manifest_reference();
    let resolved = step.check(manifest::resolve(&mut session, &reference).await)?;
    if resolved.is_index() && resolved.platform_manifest.is_none() {
        return Err(step.fail(RegistryError::NoPlatform {
            wanted: host_platform(),
            available: resolved.platforms.clone(),
        }));
    }
    step.pass(
        Some(resolved.status),
        format!(
            "{} {} ({} bytes){}",
            resolved.digest,
            resolved.media_type,
            resolved.size,
            resolved
                .rate_limit
                .as_ref()
                .map(|r| format!("; rate limit: {r}"))
                .unwrap_or_default()
        ),
    );
    Ok(Opened { session, resolved })
}

/// The step in progress, with its start time, for the observer.
struct Step<'o> {
    observer: &'o mut dyn Observer,
    at: Option<(StepName, Instant)>,
}

impl Step<'_> {
    fn start(&mut self, name: StepName) {
        self.at = Some((name, Instant::now()));
        self.observer.started(name);
    }

    fn pass(&mut self, status: Option<u16>, detail: String) {
        if let Some((name, at)) = self.at.take() {
            self.observer.passed(name, status, detail, at.elapsed());
        }
    }

    fn fail(&mut self, e: RegistryError) -> RegistryError {
        if let Some((name, at)) = self.at.take() {
            self.observer.failed(name, &e, at.elapsed());
        }
        e
    }

    fn check<T>(&mut self, r: Result<T, RegistryError>) -> Result<T, RegistryError> {
        r.map_err(|e| self.fail(e))
    }
}
