//! What a service sets over its image, as the pod's own fields and the objects
//! it needs: variables in the container's `env` (the kubelet merges them over
//! the image's), `command`/`args` (Kubernetes' rule is berth's: `command`
//! replaces the Entrypoint, `args` the Cmd), the secrets in an `Opaque` Secret
//! of the deployment's (`berth-<id>-secrets`, owned by its Deployment like the
//! pull Secret), given by `secretKeyRef` or as files of a read-only `0400`
//! volume at `/run/secrets`, the volume as the service's PersistentVolumeClaim
//! (one per service, kept across deploys, owned by every Deployment that
//! mounted it: the last one's deletion, a terminate, takes it), and the region
//! as a `nodeSelector`.
//!
//! Values are literal, as on runc: the kubelet expands `$(NAME)` in `env`
//! values, `command` and `args`, so every `$` is written `$$`, which it reduces
//! back to one.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::{dns_label, from_json, owner_labels, Placed, Workload, SERVICE_LABEL};

/// Where secret files appear in the container (as on runc).
pub const SECRETS_PATH: &str = "/run/secrets";
/// The label a node's region is in (the well-known one, set by cloud providers).
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// The pod's volume names (DNS labels).
const SECRETS_VOLUME: &str = "secrets";
const DATA_VOLUME: &str = "data";

/// What a service sets over its image. Checked by the server before it gets
/// here (POSIX names, an absolute volume path outside `/proc`, `/sys`, `/dev`
/// and `/run/secrets`); secrets redacted in `Debug`.
#[derive(Clone, Default)]
pub struct RunSettings {
    /// Over the image's Env, in order.
    pub env: Vec<(String, String)>,
    /// Secrets given as variables (over `env`'s of the same name).
    pub secret_env: Vec<(String, SecretString)>,
    /// Secrets given as files `/run/secrets/NAME`, mode 0400.
    pub secret_files: Vec<(String, SecretString)>,
    /// Replaces the image's Entrypoint (and drops its Cmd unless `args` is set).
    pub command: Option<Vec<String>>,
    /// Replaces the image's Cmd.
    pub args: Option<Vec<String>>,
    pub volume: Option<Volume>,
    /// Only nodes labelled `topology.kubernetes.io/region=<region>` run the pod.
    pub region: Option<String>,
}

/// The service's one volume: its claim's size, and where it is mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub path: String,
    pub size_mb: u64,
}

impl fmt::Debug for RunSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |v: &[(String, SecretString)]| -> Vec<String> {
            v.iter().map(|(n, _)| format!("{n}=[REDACTED]")).collect()
        };
        f.debug_struct("RunSettings")
            .field("env", &self.env)
            .field("secret_env", &names(&self.secret_env))
            .field("secret_files", &names(&self.secret_files))
            .field("command", &self.command)
            .field("args", &self.args)
            .field("volume", &self.volume)
            .field("region", &self.region)
            .finish()
    }
}

impl RunSettings {
    fn has_secrets(&self) -> bool {
        !self.secret_env.is_empty() || !self.secret_files.is_empty()
    }
}

/// `berth-<deployment id>-secrets`: the deployment's Secret of its service's
/// secrets (the pull Secret is `berth-<deployment id>`).
pub fn secrets_name(placed: &Placed) -> String {
    format!("{}-secrets", placed.name)
}

/// The service's claim: named as its Service and Ingress are (the same from
/// one deploy to the next, one project's in a shared namespace).
pub fn claim_name(project: &str, service: &str) -> String {
    crate::traffic_name(project, service)
}

/// `s` as the kubelet reads it back literally (`$` doubled: no `$(NAME)`
/// expansion).
fn literal(s: &str) -> String {
    s.replace('$', "$$")
}

/// Sets the container's `env`, `command`, `args` and mounts.
pub(crate) fn container(c: &mut Value, s: &RunSettings, placed: &Placed) {
    let secret = secrets_name(placed);
    let mut env: Vec<Value> = s
        .env
        .iter()
        // A secret of the same name wins, as on runc.
        .filter(|(n, _)| !s.secret_env.iter().any(|(sn, _)| sn == n))
        .map(|(n, v)| json!({"name": n, "value": literal(v)}))
        .collect();
    env.extend(s.secret_env.iter().map(
        |(n, _)| json!({"name": n, "valueFrom": {"secretKeyRef": {"name": secret, "key": n}}}),
    ));
    if !env.is_empty() {
        c["env"] = json!(env);
    }
    let words = |w: &[String]| -> Vec<String> { w.iter().map(|w| literal(w)).collect() };
    if let Some(command) = &s.command {
        c["command"] = json!(words(command));
    }
    if let Some(args) = &s.args {
        c["args"] = json!(words(args));
    }
    let mut mounts = Vec::new();
    if !s.secret_files.is_empty() {
        mounts.push(json!({"name": SECRETS_VOLUME, "mountPath": SECRETS_PATH, "readOnly": true}));
    }
    if let Some(v) = &s.volume {
        mounts.push(json!({"name": DATA_VOLUME, "mountPath": v.path}));
    }
    if !mounts.is_empty() {
        c["volumeMounts"] = json!(mounts);
    }
}

/// Sets the pod's volumes, its region's `nodeSelector` and, with a volume, an
/// affinity to the node of the service's running pod: a `ReadWriteOnce` claim
/// is attached to one node at a time, and a redeploy's pod starts while the
/// old one still runs (the scheduler places a pod whose affinity matches only
/// itself anywhere, so a first deploy is not held).
pub(crate) fn pod(pod: &mut Value, w: &Workload<'_>, placed: &Placed) {
    let s = &w.settings;
    let mut volumes = Vec::new();
    if !s.secret_files.is_empty() {
        let items: Vec<Value> = s
            .secret_files
            .iter()
            .map(|(n, _)| json!({"key": n, "path": n}))
            .collect();
        volumes.push(json!({"name": SECRETS_VOLUME, "secret": {
            "secretName": secrets_name(placed), "items": items, "defaultMode": 0o400,
        }}));
    }
    if s.volume.is_some() {
        volumes.push(json!({"name": DATA_VOLUME, "persistentVolumeClaim": {
            "claimName": claim_name(w.project, w.service),
        }}));
        let mut selector = owner_labels(w.project);
        selector[SERVICE_LABEL] = json!(dns_label(w.service));
        pod["affinity"] = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": selector},
            "topologyKey": "kubernetes.io/hostname",
        }]}});
    }
    if !volumes.is_empty() {
        pod["volumes"] = json!(volumes);
    }
    if let Some(region) = &s.region {
        pod["nodeSelector"] = json!({REGION_LABEL: region});
    }
}

/// The deployment's Secret of its service's secrets, owned by its Deployment;
/// `None` when the service has none.
pub(crate) fn secret(w: &Workload<'_>, placed: &Placed, owner_uid: &str) -> Option<Secret> {
    let s = &w.settings;
    if !s.has_secrets() {
        return None;
    }
    let mut secret: Secret = from_json(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {
            "name": secrets_name(placed),
            "namespace": placed.namespace,
            "labels": crate::workload_labels(w),
        },
        "immutable": true,
    }));
    secret.metadata.owner_references = Some(vec![crate::sole_owner(placed, owner_uid)]);
    let data: BTreeMap<String, k8s_openapi::ByteString> = s
        .secret_env
        .iter()
        .chain(&s.secret_files)
        .map(|(n, v)| {
            (
                n.clone(),
                k8s_openapi::ByteString(v.expose_secret().as_bytes().to_vec()),
            )
        })
        .collect();
    secret.data = Some(data);
    Some(secret)
}

/// The service's claim as berth wants it: `ReadWriteOnce`, the volume's size,
/// the storage class when one is given (else the cluster's default).
pub(crate) fn claim(
    w: &Workload<'_>,
    namespace: &str,
    volume: &Volume,
    storage_class: Option<&str>,
) -> PersistentVolumeClaim {
    let mut labels = owner_labels(w.project);
    labels[SERVICE_LABEL] = json!(dns_label(w.service));
    let mut spec = json!({
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": format!("{}Mi", volume.size_mb)}},
    });
    if let Some(class) = storage_class {
        spec["storageClassName"] = json!(class);
    }
    from_json(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim_name(w.project, w.service), "namespace": namespace, "labels": labels},
        "spec": spec,
    }))
}

/// A quantity in bytes (`16Mi`, `1Gi`, `500M`, `1073741824`), as the API
/// server writes the storage requests berth reads back; `None` for a form
/// berth does not read (then nothing is changed).
pub(crate) fn quantity_bytes(q: &str) -> Option<u128> {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: u128 = n.parse().ok()?;
    let m: u128 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(m)
}

/// The storage a claim requests, in bytes.
pub(crate) fn requested(c: &PersistentVolumeClaim) -> Option<u128> {
    let q = c
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")?;
    quantity_bytes(&q.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Network;

    fn workload(settings: RunSettings) -> Workload<'static> {
        Workload {
            deployment: "d1",
            project: "web",
            service: "api",
            image: "ghcr.io/acme/api@sha256:aa".into(),
            pull: None,
            run_as_non_root: false,
            memory_mb: None,
            cpu_millis: None,
            serve: None,
            network: Network::Public,
            settings,
        }
    }

    fn placed() -> Placed {
        Placed {
            namespace: "berth-web".into(),
            name: "berth-d1".into(),
        }
    }

    #[test]
    fn values_are_literal_and_a_secret_wins_over_a_variable() {
        let s = RunSettings {
            env: vec![
                ("PRICE".into(), "$(HOME) costs $5".into()),
                ("TOKEN".into(), "plain".into()),
            ],
            secret_env: vec![("TOKEN".into(), SecretString::from("hidden"))],
            command: Some(vec!["/bin/sh".into(), "-c".into()]),
            args: Some(vec!["echo $(PRICE) $$".into()]),
            ..Default::default()
        };
        let mut c = json!({"name": "app"});
        container(&mut c, &s, &placed());
        assert_eq!(
            c["env"],
            json!([
                {"name": "PRICE", "value": "$$(HOME) costs $$5"},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "berth-d1-secrets", "key": "TOKEN"}}},
            ])
        );
        assert_eq!(c["command"], json!(["/bin/sh", "-c"]));
        assert_eq!(c["args"], json!(["echo $$(PRICE) $$$$"]));
        assert!(c["volumeMounts"].is_null());
        assert!(!c.to_string().contains("hidden"));
    }

    #[test]
    fn nothing_set_adds_nothing() {
        let w = workload(RunSettings::default());
        let mut c = json!({"name": "app"});
        container(&mut c, &w.settings, &placed());
        assert_eq!(c, json!({"name": "app"}));
        let mut p = json!({});
        pod(&mut p, &w, &placed());
        assert_eq!(p, json!({}));
        assert!(secret(&w, &placed(), "uid-1").is_none());
    }

    #[test]
    fn files_volume_and_region() {
        let w = workload(RunSettings {
            secret_files: vec![("TLS_KEY".into(), SecretString::from("k"))],
            volume: Some(Volume {
                path: "/data".into(),
                size_mb: 16,
            }),
            region: Some("eu-west-1".into()),
            ..Default::default()
        });
        let mut c = json!({});
        container(&mut c, &w.settings, &placed());
        assert_eq!(
            c["volumeMounts"],
            json!([
                {"name": "secrets", "mountPath": "/run/secrets", "readOnly": true},
                {"name": "data", "mountPath": "/data"},
            ])
        );
        let mut p = json!({});
        pod(&mut p, &w, &placed());
        let claim = claim_name("web", "api");
        assert_eq!(
            p["volumes"],
            json!([
                {"name": "secrets", "secret": {"secretName": "berth-d1-secrets", "items": [{"key": "TLS_KEY", "path": "TLS_KEY"}], "defaultMode": 256}},
                {"name": "data", "persistentVolumeClaim": {"claimName": claim}},
            ])
        );
        assert_eq!(p["nodeSelector"], json!({REGION_LABEL: "eu-west-1"}));
        assert_eq!(
            p["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
                ["labelSelector"]["matchLabels"]["berth.dev/service"],
            "api"
        );
        let secret = secret(&w, &placed(), "uid-1").unwrap();
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert_eq!(secret.data.unwrap().keys().collect::<Vec<_>>(), ["TLS_KEY"]);
        let owner = &secret.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            ("uid-1", Some(true))
        );
    }

    #[test]
    fn quantities() {
        for (q, bytes) in [
            ("16Mi", Some(16u128 << 20)),
            ("1Gi", Some(1 << 30)),
            ("500M", Some(500_000_000)),
            ("1073741824", Some(1 << 30)),
            ("1.5Gi", None),
            ("1e3", None),
            ("", None),
        ] {
            assert_eq!(quantity_bytes(q), bytes, "{q}");
        }
    }

    #[test]
    fn debug_is_redacted() {
        let s = RunSettings {
            secret_env: vec![("TOKEN".into(), SecretString::from("s3cr3t"))],
            secret_files: vec![("db".into(), SecretString::from("s3cr3t-file"))],
            ..Default::default()
        };
        let text = format!("{s:?}");
        assert!(text.contains("TOKEN") && text.contains("db"));
        assert!(!text.contains("s3cr3t"), "{text}");
    }
}
