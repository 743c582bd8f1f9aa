//! The API's answers (`berth-api`'s views) built from the store's rows, which know
//! nothing of the wire, and from the runtime's pull progress. Secrets never reach a
//! view; usernames are masked here.

use berth_api::{
    AuditEventView, BlobState, BlobView, DeploymentView, ExitView, HealthView, RegistryView,
    ResourcesView, RestartPolicyName, ServiceView, TokenView,
};
use berth_runtime::pull::{self, BlobProgress};
use berth_store::{AuditEvent, Deployment, ProjectToken, RestartPolicy, Service};
use berth_types::mask_username;

pub fn restart_policy(p: RestartPolicyName) -> RestartPolicy {
    match p {
        RestartPolicyName::OnFailure => RestartPolicy::OnFailure,
        RestartPolicyName::Always => RestartPolicy::Always,
        RestartPolicyName::Never => RestartPolicy::Never,
    }
}

pub fn restart_policy_name(p: RestartPolicy) -> RestartPolicyName {
    match p {
        RestartPolicy::OnFailure => RestartPolicyName::OnFailure,
        RestartPolicy::Always => RestartPolicyName::Always,
        RestartPolicy::Never => RestartPolicyName::Never,
    }
}

/// `s` as read back; `urls` where it answers (see `Serving::urls`).
pub fn service(s: &Service, urls: Vec<String>) -> ServiceView {
    ServiceView {
        name: s.name.clone(),
        image: s.image.to_string(),
        status: s.status.to_string(),
        created_at: s.created_at,
        registry: s.credential.as_ref().map(|c| RegistryView {
            registry_url: c.registry_url.to_string(),
            kind: c.kind.as_str().into(),
            username: mask_username(&c.username),
            password_set: true,
            verified: c.verified,
            updated_at: c.updated_at,
            health: c.health.as_ref().map(|h| HealthView {
                status: if h.ok { "ok" } else { "failing" }.into(),
                code: h.code.clone(),
                checked_at: h.checked_at,
            }),
        }),
        resources: ResourcesView {
            memory_mb: s.resources.memory_mb,
            pids: s.resources.pids,
            cpus: s.resources.cpu_millis.map(|m| m as f64 / 1000.0),
        },
        restart_policy: restart_policy_name(s.restart_policy),
        restarts: s.restarts,
        last_exit: s.last_exit.as_ref().map(|e| ExitView {
            code: e.code,
            signal: e.signal,
            at: e.at,
        }),
        port: s.traffic.port,
        health_path: s.traffic.health_path.clone(),
        domains: s.traffic.domains.clone(),
        network: match s.traffic.network {
            berth_store::NetworkMode::Public => berth_api::NetworkName::Public,
            berth_store::NetworkMode::None => berth_api::NetworkName::None,
        },
        urls,
        env: s.settings.env.clone(),
        secrets: s
            .secrets
            .iter()
            .map(|n| berth_api::SecretView {
                name: n.name.clone(),
                given_as: if n.as_file { "file" } else { "env" }.into(),
                updated_at: n.updated_at,
            })
            .collect(),
        command: s.settings.command.clone(),
        args: s.settings.args.clone(),
        volume: s.settings.volume.as_ref().map(|v| berth_api::VolumeInput {
            path: v.path.clone(),
            size_mb: v.size_mb,
        }),
        region: s.settings.region.clone(),
    }
}

/// A deployment as the store has it (no `progress` or `pull`: those are the
/// replica's, added by the route that reads one deployment).
pub fn deployment(d: &Deployment) -> DeploymentView {
    DeploymentView {
        id: d.id.to_string(),
        status: d.status.to_string(),
        image: d.image.to_string(),
        digest: d.digest.as_ref().map(ToString::to_string),
        failure_code: d.failure_code.clone(),
        failure_message: d.failure_message.clone(),
        created_at: d.created_at,
        updated_at: d.updated_at,
        progress: None,
        pull: None,
        message: None,
    }
}

/// A pull's blobs, as the runtime tracks them.
pub fn blobs(blobs: Vec<BlobProgress>) -> Vec<BlobView> {
    blobs
        .into_iter()
        .map(|b| BlobView {
            digest: b.digest,
            size: b.size,
            received: b.received,
            state: match b.state {
                pull::BlobState::Waiting => BlobState::Waiting,
                pull::BlobState::Downloading => BlobState::Downloading,
                pull::BlobState::Cached => BlobState::Cached,
                pull::BlobState::Downloaded => BlobState::Downloaded,
                pull::BlobState::Applied => BlobState::Applied,
            },
            started_ms: b.started_ms,
            downloaded_ms: b.downloaded_ms,
            applied_ms: b.applied_ms,
            lazy: b.lazy.map(|l| berth_api::LazyView {
                mounted_ms: l.mounted_ms,
                prefetch_bytes: l.prefetch_bytes,
                on_demand_bytes: l.on_demand_bytes,
                on_demand_chunks: l.on_demand_chunks,
                local_ms: l.local_ms,
            }),
        })
        .collect()
}

pub fn audit_event(e: AuditEvent) -> AuditEventView {
    AuditEventView {
        id: e.id,
        at: e.at,
        actor: e.actor,
        action: e.action,
        project: e.project,
        service: e.service,
        metadata: e.metadata,
    }
}

/// A project token, without its value (which only its creation answers).
pub fn token(t: ProjectToken) -> TokenView {
    TokenView {
        name: t.name,
        scope: t.scope,
        created_by: t.created_by,
        created_at: t.created_at,
        last_used_at: t.last_used_at,
        expires_at: t.expires_at,
        token: None,
    }
}
