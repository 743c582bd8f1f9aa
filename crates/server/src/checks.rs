//! The background checks of stored credentials: every replica runs this loop, and
//! the database hands each credential to one of them once per period (a claim
//! held for a few minutes), so a team learns that a token expired or was revoked
//! before a deploy fails. A check is the preflight (ping, token, manifest) with the
//! stored credentials, at most `per_registry` per registry and round, one at a
//! time per registry, registries in parallel. A change of health is audited.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_registry::Registry;
use berth_store::{now, Health, NewAudit, ServiceStatus};

use crate::config::CredentialChecks;
use crate::vault::Vault;

/// How long a replica holds a credential it took for a check.
const HOLD: Duration = Duration::from_secs(300);
/// Credentials taken per round, all registries together.
const PER_ROUND: i64 = 64;

/// What the checks read and write: the credentials due (claimed, health
/// recorded), the service each belongs to, its project's name for the audit.
pub trait CheckStore:
    berth_store::CredentialChecks + berth_store::Services + berth_store::Accounts
{
}
impl<T: berth_store::CredentialChecks + berth_store::Services + berth_store::Accounts> CheckStore
    for T
{
}

pub struct Checker {
    pub store: Arc<dyn CheckStore>,
    pub vault: Arc<dyn Vault>,
    pub registry: Arc<Registry>,
    pub config: CredentialChecks,
}

impl Checker {
    /// Rounds until the process ends: one every tenth of the period (at most a
    /// minute, at least a second), jittered by up to a fifth so that replicas
    /// started together do not ask at once.
    pub async fn run(self) {
        if self.config.interval.is_zero() {
            return;
        }
        let tick =
            (self.config.interval / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let jitter = tick.mul_f64(rand::random::<f64>() * 0.2);
            tokio::time::sleep(tick + jitter).await;
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "credential checks");
            }
        }
    }

    /// Takes the credentials due for a check and checks them.
    pub async fn round(&self) -> Result<usize, berth_store::StoreError> {
        let at = chrono::Utc::now();
        let period = chrono::Duration::from_std(self.config.interval).unwrap_or_default();
        let hold = chrono::Duration::from_std(HOLD).unwrap_or_default();
        let due = self
            .store
            .claim_credential_checks(&(at - period), &at, &(at + hold), PER_ROUND)
            .await?;
        // By registry: one check at a time each, a few per round.
        let mut by_registry: BTreeMap<String, Vec<berth_store::Service>> = BTreeMap::new();
        for id in due {
            let Some(service) = self.store.service_by_id(&id).await? else {
                continue;
            };
            let Some(c) = &service.credential else {
                continue;
            };
            if service.status == ServiceStatus::Terminated {
                continue;
            }
            let queue = by_registry.entry(c.registry_url.authority()).or_default();
            if queue.len() < self.config.per_registry {
                queue.push(service);
            }
        }
        let checked: Vec<usize> =
            futures_util::future::join_all(by_registry.into_values().map(|services| async move {
                let mut n = 0;
                for s in services {
                    self.check(&s).await;
                    n += 1;
                }
                n
            }))
            .await;
        Ok(checked.into_iter().sum())
    }

    async fn check(&self, service: &berth_store::Service) {
        let Some(c) = &service.credential else { return };
        let password = match self
            .vault
            .get(&service.project_id, &service.id, &c.secret)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(service = %service.id, error = %e, "credential check: the secret cannot be read");
                return;
            }
        };
        let report = match crate::kinds::registry_credentials(
            c.kind,
            c.username.clone(),
            password,
            service.project_id.as_str(),
        )
        .await
        {
            Err(e) => {
                let report = crate::kinds::ecr_report(&e);
                crate::metrics::metrics().preflight(report.code.as_str());
                report
            }
            Ok(creds) => {
                preflight(&self.registry, &c.registry_url, &service.image, Some(creds)).await
            }
        };
        let health = Health {
            ok: report.ok,
            code: report.code.to_string(),
            checked_at: now(),
        };
        let Ok(Some(project)) = self.store.project_name(&service.project_id).await else {
            return;
        };
        let audit = NewAudit {
            actor: "berth".into(),
            action: "service.registry.health",
            project: Some(project),
            service: Some(service.name.clone()),
            metadata: serde_json::json!({
                "health": if health.ok { "ok" } else { "failing" },
                "code": health.code,
                "message": report.message,
            }),
        };
        match self
            .store
            .record_health(service, &c.updated_at, &health, audit)
            .await
        {
            Ok(true) => {
                tracing::info!(service = %service.id, code = %health.code, "credential health changed")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(service = %service.id, error = %e, "recording a credential check")
            }
        }
    }
}

/// Runs the preflight for parsed input (a registry that the image does not name
/// becomes an `invalid_url` report), counted in the metrics: Test Connection,
/// saves and the background checks alike.
pub async fn preflight(
    registry: &Registry,
    url: &berth_types::RegistryUrl,
    image: &berth_types::ImageRef,
    creds: Option<berth_registry::Credentials>,
) -> berth_registry::PreflightReport {
    let report = match berth_registry::preflight::bind(registry, url, image) {
        Ok(target) => berth_registry::preflight::run(registry, &target, creds).await,
        Err(report) => *report,
    };
    crate::metrics::metrics().preflight(report.code.as_str());
    report
}
