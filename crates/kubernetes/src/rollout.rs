//! A rollout read back: the Deployment, its pods and their events, judged as
//! berth's statuses and failure codes.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};

/// What the cluster says of one deployment's workload.
pub struct Rollout {
    pub deployment: Option<Deployment>,
    pub pods: Vec<Pod>,
    pub events: Vec<Event>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The new pods are available: `DEPLOYED`.
    Available,
    /// Still rolling out; what it waits for.
    Waiting(String),
    /// Failed: why, and what the cluster said.
    Failed { code: Cause, message: String },
}

/// Why a rollout failed, as berth's failure codes tell it (the server maps each
/// to its `Code`; this crate knows none of berth's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The registry refused the kubelet's credentials (`auth_failed`).
    AuthFailed,
    /// The image or its manifest is not there (`manifest_not_found`).
    ManifestNotFound,
    /// The pull failed otherwise (`network_error`).
    NetworkError,
    /// The pod did not run (`runtime_error`).
    RuntimeError,
}

/// A pull failure's code from the kubelet's message: containerd and CRI-O
/// word them as the registry answered (`401 Unauthorized`, `pull access
/// denied`, `403 Forbidden`; `not found`, `manifest unknown`).
pub fn classify_pull(message: &str) -> Cause {
    let m = message.to_ascii_lowercase();
    if [
        "401 unauthorized",
        "unauthorized",
        "pull access denied",
        "authorization failed",
        "403 forbidden",
        "denied:",
        "authentication required",
    ]
    .iter()
    .any(|s| m.contains(s))
    {
        Cause::AuthFailed
    } else if ["not found", "manifest unknown", "404"]
        .iter()
        .any(|s| m.contains(s))
    {
        Cause::ManifestNotFound
    } else {
        Cause::NetworkError
    }
}

impl Rollout {
    pub fn verdict(&self) -> Verdict {
        let Some(d) = &self.deployment else {
            return Verdict::Failed {
                code: Cause::RuntimeError,
                message: "the Deployment is gone (deleted outside berth?)".into(),
            };
        };
        let status = d.status.clone().unwrap_or_default();
        if let Some(failed) = deployment_failed(&status) {
            return failed;
        }
        for pod in &self.pods {
            let pod_name = pod.metadata.name.as_deref().unwrap_or("pod");
            let statuses = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.clone())
                .unwrap_or_default();
            for cs in statuses {
                if let Some(failed) = self.container_failed(pod_name, &cs) {
                    return failed;
                }
            }
        }
        let generation = d.metadata.generation.unwrap_or_default();
        let observed = status.observed_generation.unwrap_or_default();
        let available = status.available_replicas.unwrap_or_default();
        let updated = status.updated_replicas.unwrap_or_default();
        if observed >= generation && available >= 1 && updated >= 1 {
            return Verdict::Available;
        }
        Verdict::Waiting(self.waiting_for())
    }

    /// A container's waiting state that will not pass by itself.
    fn container_failed(
        &self,
        pod_name: &str,
        cs: &k8s_openapi::api::core::v1::ContainerStatus,
    ) -> Option<Verdict> {
        let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref())?;
        let reason = waiting.reason.as_deref().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        let failed = |code, message| Some(Verdict::Failed { code, message });
        match reason {
            "ErrImagePull" | "ImagePullBackOff" => {
                // The detail is in ErrImagePull's message and the kubelet's
                // "Failed" events (ImagePullBackOff's own says "Back-off").
                let mut detail = message.clone();
                for e in self.events_of(pod_name) {
                    if e.reason.as_deref() == Some("Failed") {
                        detail.push('\n');
                        detail.push_str(e.message.as_deref().unwrap_or_default());
                    }
                }
                failed(
                    classify_pull(&detail),
                    format!(
                        "the kubelet could not pull the image ({reason}): {}",
                        detail.trim()
                    ),
                )
            }
            "CrashLoopBackOff" => {
                let last = cs
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| {
                        format!(
                            "; it last exited with code {}{}",
                            t.exit_code,
                            t.reason
                                .as_deref()
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                failed(
                    Cause::RuntimeError,
                    format!("the container keeps crashing (CrashLoopBackOff){last}: {message}"),
                )
            }
            "CreateContainerConfigError"
            | "CreateContainerError"
            | "InvalidImageName"
            | "RunContainerError" => failed(
                Cause::RuntimeError,
                format!("the container could not be created ({reason}): {message}"),
            ),
            _ => None,
        }
    }

    /// What a rollout not available yet waits for, as a person would say it.
    fn waiting_for(&self) -> String {
        let Some(p) = self.pods.first() else {
            return "waiting for the pod to be scheduled".into();
        };
        let name = p.metadata.name.as_deref().unwrap_or("?");
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into());
        let started = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
            });
        if phase == "Running" && started && !ready(p) {
            // Ready means answering: its readiness probe has not passed (the
            // kubelet's "Unhealthy" events say why).
            format!("pod {name} is running; waiting for it to answer its readiness probe")
        } else {
            format!("pod {name} is {phase}")
        }
    }

    fn events_of<'a>(&'a self, object: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
        self.events
            .iter()
            .filter(move |e| e.involved_object.name.as_deref() == Some(object))
    }

    /// The events as log lines, each with a key that changes when the event
    /// repeats (its uid and count), oldest first.
    pub fn event_lines(&self) -> Vec<(String, String)> {
        let mut events: Vec<&Event> = self.events.iter().collect();
        events.sort_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default()
        });
        events
            .into_iter()
            .map(|e| {
                let key = format!(
                    "{}/{}",
                    e.metadata.uid.as_deref().unwrap_or_default(),
                    e.count.unwrap_or(1)
                );
                let from = e
                    .source
                    .as_ref()
                    .and_then(|s| s.component.clone())
                    .unwrap_or_else(|| "kubernetes".into());
                let line = format!(
                    "{from}: {} {}: {}",
                    e.type_.as_deref().unwrap_or("Normal"),
                    e.reason.as_deref().unwrap_or_default(),
                    e.message.as_deref().unwrap_or_default()
                );
                (key, line)
            })
            .collect()
    }
}

/// The pod's `Ready` condition is true.
fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A Deployment condition that ends the rollout: its progress deadline passed, or
/// the cluster would not create its pod.
fn deployment_failed(status: &k8s_openapi::api::apps::v1::DeploymentStatus) -> Option<Verdict> {
    for c in status.conditions.iter().flatten() {
        let reason = c.reason.as_deref().unwrap_or_default();
        let message = c.message.as_deref().unwrap_or_default();
        if c.type_ == "Progressing" && c.status == "False" && reason == "ProgressDeadlineExceeded" {
            return Some(Verdict::Failed {
                code: Cause::RuntimeError,
                message: format!("the rollout passed its progress deadline: {message}"),
            });
        }
        if c.type_ == "ReplicaFailure" && c.status == "True" {
            return Some(Verdict::Failed {
                code: Cause::RuntimeError,
                message: format!("the cluster did not create the pod ({reason}): {message}"),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_pod_that_does_not_answer_is_waited_for() {
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "berth-d1", "generation": 2},
            "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1}
        }))
        .unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "berth-d1-x"},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "False"}],
                       "containerStatuses": [{"name": "app", "image": "i", "imageID": "i", "ready": false,
                                              "restartCount": 0, "state": {"running": {}}}]}
        }))
        .unwrap();
        let r = Rollout {
            deployment: Some(deployment),
            pods: vec![pod],
            events: vec![],
        };
        assert_eq!(
            r.verdict(),
            Verdict::Waiting(
                "pod berth-d1-x is running; waiting for it to answer its readiness probe".into()
            )
        );
    }

    #[test]
    fn pull_failures_as_containerd_and_cri_o_word_them() {
        for (message, code) in [
            (
                r#"failed to pull and unpack image "ghcr.io/acme/api@sha256:ab": failed to resolve reference "ghcr.io/acme/api@sha256:ab": failed to authorize: failed to fetch anonymous token: unexpected status from GET request to https://ghcr.io/token?scope=repository%3Aacme%2Fapi%3Apull&service=ghcr.io: 401 Unauthorized"#,
                Cause::AuthFailed,
            ),
            (
                r#"failed to pull and unpack image "docker.io/acme/private:v1": failed to resolve reference "docker.io/acme/private:v1": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed"#,
                Cause::AuthFailed,
            ),
            (
                r#"rpc error: code = NotFound desc = failed to pull and unpack image "registry.example.com/team/app@sha256:00": failed to resolve reference "registry.example.com/team/app@sha256:00": registry.example.com/team/app@sha256:00: not found"#,
                Cause::ManifestNotFound,
            ),
            (
                r#"initializing source docker://quay.io/acme/app:v9: reading manifest v9 in quay.io/acme/app: manifest unknown"#,
                Cause::ManifestNotFound,
            ),
            (
                r#"failed to pull and unpack image "r.example/app:v1": failed to resolve reference "r.example/app:v1": failed to do request: Head "https://r.example/v2/app/manifests/v1": dial tcp: lookup r.example: no such host"#,
                Cause::NetworkError,
            ),
        ] {
            assert_eq!(classify_pull(message), code, "{message}");
        }
    }
}
