//! A stateful fake Kubernetes API server on loopback, for the Kubernetes runtime's
//! end-to-end tests: no API server can be installed on these machines. It keeps
//! the semantics berth relies on: namespaces that must exist (each labelled
//! `kubernetes.io/metadata.name`, as the API server labels them), `uid`s,
//! `resourceVersion`s and `generation`s, 409 `AlreadyExists` and 404 `NotFound`
//! as `Status` objects, 422 for what the API server's validation refuses
//! ([`validate`]: names by kind, label values, ports, probes, Services,
//! Ingresses, NetworkPolicies), JSON merge patches, label and field selectors
//! on lists, and the garbage collector when a Deployment is deleted (its pods,
//! and every object that names it as an owner: deleted when it was the last
//! one, else the reference dropped). A Service gets its cluster IP, which an
//! update may leave out (kept) but not change. NetworkPolicies are kept as given,
//! and [`FakeKube::allows`] says what they let through ([`policy`]); namespaces
//! keep their labels, and a test may make one first, as someone else would
//! have. Set to act as an API server before 1.33
//! ([`FakeKube::drop_host_users`]), it stores pods without `hostUsers`, as such
//! a server drops a field it does not know. Its "kubelet" turns a scaled-up
//! Deployment into a pod whose status is written exactly as a kubelet reports
//! one (the shapes of real clusters' JSON), as the test's [`Kubelet`] says:
//! running, a pull that succeeds only with the right pull Secret, a crash loop,
//! running but failing its readiness probe. Before any of that, what a
//! scheduler and a kubelet check of a pod's references: its claims must exist
//! and its node selector match the one node ([`NODE_LABELS`]), else it stays
//! `Unschedulable`; the Secret keys its variables name must exist, else
//! `CreateContainerConfigError`. PersistentVolumeClaims are defaulted
//! (`standard`, the default class, which allows expansion), bound at once
//! with their request as capacity, and grown when an update raises it.

mod policy;
mod validate;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

use crate::hostile::FakeServer;

pub use policy::Peer;

/// The labels of the fake cluster's one node.
pub const NODE_LABELS: [(&str, &str); 3] = [
    ("kubernetes.io/hostname", "node-1"),
    ("kubernetes.io/os", "linux"),
    ("topology.kubernetes.io/region", "eu-west-1"),
];
/// The class a claim that names none gets (the DefaultStorageClass admission).
pub const DEFAULT_STORAGE_CLASS: &str = "standard";

/// What the fake kubelet does with a Deployment's pod.
#[derive(Clone, Debug)]
pub enum Kubelet {
    /// Pulls (no credentials needed) and runs it.
    Run,
    /// Pulls only with a pull Secret holding this user and password for the
    /// registry host; otherwise reports containerd's 401.
    PullWith {
        registry: String,
        username: String,
        password: String,
    },
    /// The pull succeeds; the container exits 1 again and again.
    Crash,
    /// The pull succeeds and the container runs, but its readiness probe
    /// never passes (the app does not answer): never ready, so never
    /// available.
    Unready,
}

#[derive(Default)]
struct World {
    /// (resource, namespace, name) -> object; namespaces under ("namespaces", "", name).
    objects: BTreeMap<(String, String, String), Value>,
    /// Deleted objects with the resourceVersion of their deletion, for watches.
    deleted: Vec<((String, String, String), Value)>,
    version: u64,
    /// Every request: method, path and query, body.
    requests: Vec<(String, String, String)>,
}

struct Shared {
    world: Mutex<World>,
    kubelet: Mutex<Kubelet>,
    /// RBAC that does not let berth create objects: 403 on every create.
    forbidden: std::sync::atomic::AtomicBool,
    /// An API server that does not know `hostUsers` (before 1.33, or the
    /// UserNamespacesSupport feature off): it drops the field from what it stores.
    drops_host_users: std::sync::atomic::AtomicBool,
}

pub struct FakeKube {
    server: FakeServer,
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
}

impl FakeKube {
    pub fn start(kubelet: Kubelet) -> FakeKube {
        let shared = Arc::new(Shared {
            world: Mutex::new(World::default()),
            kubelet: Mutex::new(kubelet),
            forbidden: Default::default(),
            drops_host_users: Default::default(),
        });
        let state = shared.clone();
        let server = FakeServer::start(move |_| {
            Router::new()
                .route("/api/v1/namespaces", get(list_cluster).post(create_cluster))
                .route("/api/v1/namespaces/{name}", get(get_cluster))
                .route("/api/v1/namespaces/{ns}/{resource}", get(list).post(create))
                .route(
                    "/api/v1/namespaces/{ns}/{resource}/{name}",
                    get(read).put(replace).patch(patch).delete(delete),
                )
                .route(
                    "/apis/apps/v1/namespaces/{ns}/{resource}",
                    get(list).post(create),
                )
                .route(
                    "/apis/apps/v1/namespaces/{ns}/{resource}/{name}",
                    get(read).put(replace).patch(patch).delete(delete),
                )
                .route(
                    "/apis/networking.k8s.io/v1/namespaces/{ns}/{resource}",
                    get(list).post(create),
                )
                .route(
                    "/apis/networking.k8s.io/v1/namespaces/{ns}/{resource}/{name}",
                    get(read).put(replace).patch(patch).delete(delete),
                )
                .layer(axum::middleware::from_fn_with_state(state.clone(), record))
                .with_state(state)
        });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: berth\ncurrent-context: fake\nusers:\n- name: berth\n  user:\n    token: fake-cluster-token\n",
            server.authority()
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
        FakeKube {
            server,
            shared,
            dir,
        }
    }

    /// A kubeconfig naming this server.
    pub fn kubeconfig(&self) -> std::path::PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn authority(&self) -> String {
        self.server.authority()
    }

    /// Answers every create with RBAC's 403, as a cluster whose Role lacks a verb.
    pub fn forbid_creates(&self, forbid: bool) {
        self.shared
            .forbidden
            .store(forbid, std::sync::atomic::Ordering::SeqCst);
    }

    /// Acts as an API server that does not know `hostUsers`: Deployments (and
    /// so their pods) are stored without it.
    pub fn drop_host_users(&self, drop: bool) {
        self.shared
            .drops_host_users
            .store(drop, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes namespace `name` with these labels, as someone other than berth
    /// would (an operator, another tool).
    pub fn create_namespace(&self, name: &str, labels: Value) {
        let mut w = self.shared.world.lock().unwrap();
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": name, "labels": labels}, "status": {"phase": "Active"}});
        w.stamp(&mut ns, "");
        w.objects
            .insert(("namespaces".into(), String::new(), name.into()), ns);
    }

    pub fn set_kubelet(&self, k: Kubelet) {
        *self.shared.kubelet.lock().unwrap() = k;
    }

    /// The object of `resource` (`deployments`, `secrets`, `pods`, `namespaces`,
    /// `networkpolicies`).
    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let w = self.shared.world.lock().unwrap();
        w.objects
            .get(&(resource.into(), ns.into(), name.into()))
            .cloned()
    }

    /// The names of the objects of `resource` in `ns`.
    pub fn names(&self, resource: &str, ns: &str) -> Vec<String> {
        let w = self.shared.world.lock().unwrap();
        w.objects
            .keys()
            .filter(|(r, n, _)| r == resource && n == ns)
            .map(|(_, _, name)| name.clone())
            .collect()
    }

    /// Every request so far: (method, path?query, body).
    pub fn requests(&self) -> Vec<(String, String, String)> {
        self.shared.world.lock().unwrap().requests.clone()
    }

    /// Whether the NetworkPolicies stored now let `from` open a connection to
    /// `to` on `protocol` (`TCP`, `UDP`) `port`, as a network plugin that
    /// enforces them would.
    pub fn allows(&self, from: &Peer, to: &Peer, protocol: &str, port: u16) -> bool {
        let w = self.shared.world.lock().unwrap();
        policy::allows(&w.objects, from, to, protocol, port)
    }
}

async fn record(
    State(s): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    s.world.lock().unwrap().requests.push((
        parts.method.to_string(),
        parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        String::from_utf8_lossy(&bytes).into_owned(),
    ));
    next.run(axum::extract::Request::from_parts(parts, bytes.into()))
        .await
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    (
        code,
        Json(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": message, "reason": reason, "code": code.as_u16()}),
        ),
    )
        .into_response()
}

fn not_found(resource: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{resource} \"{name}\" not found"),
    )
}

fn kind_of(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "deployments" => ("apps/v1", "Deployment"),
        "secrets" => ("v1", "Secret"),
        "pods" => ("v1", "Pod"),
        "events" => ("v1", "Event"),
        "networkpolicies" => ("networking.k8s.io/v1", "NetworkPolicy"),
        "services" => ("v1", "Service"),
        "ingresses" => ("networking.k8s.io/v1", "Ingress"),
        "persistentvolumeclaims" => ("v1", "PersistentVolumeClaim"),
        _ => ("v1", "Namespace"),
    }
}

impl World {
    fn stamp(&mut self, obj: &mut Value, ns: &str) {
        self.version += 1;
        let meta = &mut obj["metadata"];
        if meta["uid"].is_null() {
            meta["uid"] = json!(format!("{:032x}", rand::random::<u128>()));
            meta["creationTimestamp"] = json!("2026-11-30T00:00:00Z");
        }
        if !ns.is_empty() {
            meta["namespace"] = json!(ns);
        }
        meta["resourceVersion"] = json!(self.version.to_string());
    }

    /// Removes an object, keeping a tombstone (at a new resourceVersion) that
    /// watches report as `DELETED`.
    fn remove(&mut self, key: &(String, String, String)) -> Option<Value> {
        let gone = self.objects.remove(key)?;
        self.version += 1;
        let mut tomb = gone.clone();
        tomb["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.deleted.push((key.clone(), tomb));
        Some(gone)
    }

    fn has_namespace(&self, ns: &str) -> bool {
        self.objects
            .contains_key(&("namespaces".into(), String::new(), ns.into()))
    }
}

async fn list_cluster(State(s): State<Arc<Shared>>) -> Response {
    let w = s.world.lock().unwrap();
    let items: Vec<Value> = w
        .objects
        .iter()
        .filter(|((r, _, _), _)| r == "namespaces")
        .map(|(_, v)| v.clone())
        .collect();
    Json(json!({"kind": "NamespaceList", "apiVersion": "v1", "metadata": {"resourceVersion": w.version.to_string()}, "items": items})).into_response()
}

async fn create_cluster(State(s): State<Arc<Shared>>, Json(mut obj): Json<Value>) -> Response {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Some(why) = validate::invalid("namespaces", "Namespace", &obj) {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", why);
    }
    // The API server's own label on every namespace.
    obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
    let mut w = s.world.lock().unwrap();
    let key = ("namespaces".to_owned(), String::new(), name.clone());
    if w.objects.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("namespaces \"{name}\" already exists"),
        );
    }
    w.stamp(&mut obj, "");
    obj["status"] = json!({"phase": "Active"});
    w.objects.insert(key, obj.clone());
    (StatusCode::CREATED, Json(obj)).into_response()
}

async fn get_cluster(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let w = s.world.lock().unwrap();
    match w
        .objects
        .get(&("namespaces".into(), String::new(), name.clone()))
    {
        Some(v) => Json(v.clone()).into_response(),
        None => not_found("namespaces", &name),
    }
}

/// `k=v` label selectors and `a.b=v` field selectors, as berth uses them.
fn matches(obj: &Value, q: &BTreeMap<String, String>) -> bool {
    if let Some(sel) = q.get("labelSelector") {
        for part in sel.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            if obj["metadata"]["labels"][k].as_str() != Some(v) {
                return false;
            }
        }
    }
    if let Some(sel) = q.get("fieldSelector") {
        for part in sel.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let mut at = obj;
            for seg in k.split('.') {
                at = &at[seg];
            }
            if at.as_str() != Some(v) {
                return false;
            }
        }
    }
    true
}

async fn list(
    State(s): State<Arc<Shared>>,
    Path((ns, resource)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if q.get("watch").map(String::as_str) == Some("true") {
        return watch(s, ns, resource, q);
    }
    let w = s.world.lock().unwrap();
    let items: Vec<Value> = w
        .objects
        .iter()
        .filter(|((r, n, _), v)| *r == resource && *n == ns && matches(v, &q))
        .map(|(_, v)| v.clone())
        .collect();
    let (api_version, kind) = kind_of(&resource);
    Json(
        json!({"kind": format!("{kind}List"), "apiVersion": api_version,
                "metadata": {"resourceVersion": w.version.to_string()}, "items": items}),
    )
    .into_response()
}

/// `?watch=true`: one JSON line per change of a matching object after the
/// given `resourceVersion` (`0` or none: every current object as `ADDED`
/// first), `ADDED`, `MODIFIED` or `DELETED`, as the API server streams them.
fn watch(s: Arc<Shared>, ns: String, resource: String, q: BTreeMap<String, String>) -> Response {
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let known = std::collections::BTreeSet::<String>::new();
    let stream =
        futures_util::stream::unfold((s, since, known), move |(s, mut since, mut known)| {
            let (ns, resource, q) = (ns.clone(), resource.clone(), q.clone());
            async move {
                loop {
                    let lines = {
                        let w = s.world.lock().unwrap();
                        let rv = |v: &Value| {
                            v["metadata"]["resourceVersion"]
                                .as_str()
                                .and_then(|r| r.parse::<u64>().ok())
                                .unwrap_or(0)
                        };
                        let mut out = String::new();
                        let mut newest = since;
                        for ((r, n, name), v) in &w.objects {
                            if *r == resource && *n == ns && matches(v, &q) && rv(v) > since {
                                let kind = if known.insert(name.clone()) {
                                    "ADDED"
                                } else {
                                    "MODIFIED"
                                };
                                out.push_str(&json!({"type": kind, "object": v}).to_string());
                                out.push('\n');
                                newest = newest.max(rv(v));
                            }
                        }
                        for ((r, n, name), v) in &w.deleted {
                            if *r == resource && *n == ns && matches(v, &q) && rv(v) > since {
                                known.remove(name);
                                out.push_str(&json!({"type": "DELETED", "object": v}).to_string());
                                out.push('\n');
                                newest = newest.max(rv(v));
                            }
                        }
                        since = newest;
                        out
                    };
                    if !lines.is_empty() {
                        let chunk: Result<Bytes, std::convert::Infallible> = Ok(Bytes::from(lines));
                        return Some((chunk, (s, since, known)));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        });
    Response::builder()
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(stream))
        .unwrap()
}

async fn create(
    State(s): State<Arc<Shared>>,
    Path((ns, resource)): Path<(String, String)>,
    Json(mut obj): Json<Value>,
) -> Response {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if s.forbidden.load(std::sync::atomic::Ordering::SeqCst) {
        let group = match resource.as_str() {
            "deployments" => ".apps",
            "networkpolicies" | "ingresses" => ".networking.k8s.io",
            _ => "",
        };
        let api_group = group.trim_start_matches('.');
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("{resource}{group} is forbidden: User \"system:serviceaccount:berth:berth\" cannot create resource \"{resource}\" in API group \"{api_group}\" in the namespace \"{ns}\""),
        );
    }
    if let Some(why) = validate::undecodable(&resource, kind_of(&resource).1, &obj) {
        return status(StatusCode::BAD_REQUEST, "BadRequest", why);
    }
    if let Some(why) = validate::invalid(&resource, kind_of(&resource).1, &obj) {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", why);
    }
    let created = {
        let mut w = s.world.lock().unwrap();
        if !w.has_namespace(&ns) {
            return not_found("namespaces", &ns);
        }
        let key = (resource.clone(), ns.clone(), name.clone());
        if w.objects.contains_key(&key) {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{resource} \"{name}\" already exists"),
            );
        }
        w.stamp(&mut obj, &ns);
        if resource == "deployments" {
            obj["metadata"]["generation"] = json!(1);
            obj["status"] = json!({});
            unknown_fields(&s, &mut obj);
        }
        if resource == "services" {
            service_defaults(&mut obj, w.version);
        }
        if resource == "persistentvolumeclaims" {
            claim_defaults(&mut obj);
        }
        w.objects.insert(key, obj.clone());
        obj
    };
    kubelet(&s, &ns);
    let stored = s
        .world
        .lock()
        .unwrap()
        .objects
        .get(&(resource, ns, name))
        .cloned()
        .unwrap_or(created);
    (StatusCode::CREATED, Json(stored)).into_response()
}

async fn read(
    State(s): State<Arc<Shared>>,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> Response {
    let w = s.world.lock().unwrap();
    match w.objects.get(&(resource.clone(), ns, name.clone())) {
        Some(v) => Json(v.clone()).into_response(),
        None => not_found(&resource, &name),
    }
}

async fn replace(
    State(s): State<Arc<Shared>>,
    Path((ns, resource, name)): Path<(String, String, String)>,
    Json(mut obj): Json<Value>,
) -> Response {
    let mut w = s.world.lock().unwrap();
    let key = (resource.clone(), ns.clone(), name.clone());
    let Some(old) = w.objects.get(&key).cloned() else {
        return not_found(&resource, &name);
    };
    if let Some(rv) = obj["metadata"]["resourceVersion"].as_str() {
        if Some(rv) != old["metadata"]["resourceVersion"].as_str() {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
            );
        }
    }
    if let Some(why) = validate::undecodable(&resource, kind_of(&resource).1, &obj) {
        return status(StatusCode::BAD_REQUEST, "BadRequest", why);
    }
    if let Some(why) = validate::invalid(&resource, kind_of(&resource).1, &obj)
        .or_else(|| validate::invalid_update(&resource, kind_of(&resource).1, &old, &obj))
    {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", why);
    }
    obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
    if resource == "persistentvolumeclaims" {
        // The status is the controllers': kept, the capacity grown to a
        // raised request (the resize controller and the kubelet, at once).
        obj["status"] = old["status"].clone();
        obj["metadata"]["finalizers"] = old["metadata"]["finalizers"].clone();
        obj["status"]["capacity"]["storage"] =
            obj["spec"]["resources"]["requests"]["storage"].clone();
    }
    obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
    if resource == "deployments" {
        unknown_fields(&s, &mut obj);
    }
    if resource == "services" {
        // An update may leave the address out (the API server keeps it), not
        // change it.
        let old_ip = old["spec"]["clusterIP"].clone();
        match obj["spec"]["clusterIP"].as_str() {
            None | Some("") => {
                obj["spec"]["clusterIP"] = old_ip;
                obj["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
            }
            Some(ip) if json!(ip) != old_ip => {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("Service \"{name}\" is invalid: spec.clusterIPs[0]: Invalid value: []string{{\"{ip}\"}}: may not change once set"),
                );
            }
            Some(_) => {}
        }
        service_defaults(&mut obj, 0);
    }
    w.stamp(&mut obj, &ns);
    w.objects.insert(key, obj.clone());
    Json(obj).into_response()
}

/// What the API server fills in on a Service: a cluster IP (from `n`, when it
/// has none), the port's protocol and target port, the defaults of its spec.
fn service_defaults(svc: &mut Value, n: u64) {
    let spec = &mut svc["spec"];
    if spec["type"].is_null() {
        spec["type"] = json!("ClusterIP");
    }
    if spec["clusterIP"].as_str().unwrap_or_default().is_empty() {
        let ip = format!("10.96.{}.{}", (n >> 8) & 0xff, (n & 0xff).max(1));
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    }
    for p in spec["ports"].as_array_mut().into_iter().flatten() {
        if p["protocol"].is_null() {
            p["protocol"] = json!("TCP");
        }
        if p["targetPort"].is_null() {
            p["targetPort"] = p["port"].clone();
        }
    }
    for (k, v) in [
        ("sessionAffinity", json!("None")),
        ("ipFamilies", json!(["IPv4"])),
        ("ipFamilyPolicy", json!("SingleStack")),
        ("internalTrafficPolicy", json!("Cluster")),
    ] {
        if spec[k].is_null() {
            spec[k] = v;
        }
    }
}

/// What the API server and the controllers make of a new claim: the default
/// class when it names none, a filesystem volume, the protection finalizer,
/// and (a provisioner that binds at once) a volume of its request.
fn claim_defaults(claim: &mut Value) {
    let uid = claim["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let spec = &mut claim["spec"];
    if spec["storageClassName"].is_null() {
        spec["storageClassName"] = json!(DEFAULT_STORAGE_CLASS);
    }
    spec["volumeMode"] = json!("Filesystem");
    spec["volumeName"] = json!(format!("pvc-{uid}"));
    claim["metadata"]["finalizers"] = json!(["kubernetes.io/pvc-protection"]);
    claim["status"] = json!({
        "phase": "Bound",
        "accessModes": claim["spec"]["accessModes"],
        "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
    });
}

/// Why the scheduler or the kubelet would not start a pod of this template
/// (a claim that does not exist, a node selector the node does not match, a
/// variable's Secret or key missing): its status and events, as they report
/// them.
fn unmet(w: &World, ns: &str, pod_name: &str, spec: &Value) -> Option<Reported> {
    let preemption =
        "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
    let unschedulable = |why: String| {
        Some((
            false,
            Value::Null,
            json!({}),
            vec![(
                "Warning",
                "FailedScheduling",
                format!("0/1 nodes are available: {why}. {preemption}"),
            )],
        ))
    };
    for v in spec["volumes"].as_array().into_iter().flatten() {
        if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            if !w
                .objects
                .contains_key(&("persistentvolumeclaims".into(), ns.into(), claim.into()))
            {
                return unschedulable(format!("persistentvolumeclaim \"{claim}\" not found"));
            }
        }
    }
    let on_node = |k: &str, v: &Value| NODE_LABELS.iter().any(|(nk, nv)| *nk == k && v == nv);
    if !spec["nodeSelector"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| on_node(k, v))
    {
        return unschedulable("1 node(s) didn't match Pod's node affinity/selector".into());
    }
    for e in spec["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let r = &e["valueFrom"]["secretKeyRef"];
        let (Some(name), Some(key)) = (r["name"].as_str(), r["key"].as_str()) else {
            continue;
        };
        let message = match w.objects.get(&("secrets".into(), ns.into(), name.into())) {
            None => format!("secret \"{name}\" not found"),
            Some(s) if s["data"][key].is_null() => {
                format!("couldn't find key {key} in Secret {ns}/{name}")
            }
            Some(_) => continue,
        };
        return Some((
            false,
            json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}}),
            json!({}),
            vec![
                (
                    "Normal",
                    "Scheduled",
                    format!("Successfully assigned {ns}/{pod_name} to node-1"),
                ),
                ("Warning", "Failed", format!("Error: {message}")),
            ],
        ));
    }
    None
}

/// What an API server that does not know a field does with it: drops it.
fn unknown_fields(s: &Shared, deployment: &mut Value) {
    if s.drops_host_users.load(std::sync::atomic::Ordering::SeqCst) {
        if let Some(pod) = deployment["spec"]["template"]["spec"].as_object_mut() {
            pod.remove("hostUsers");
        }
    }
}

/// RFC 7386: objects merge, `null` deletes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

async fn patch(
    State(s): State<Arc<Shared>>,
    method: Method,
    Path((ns, resource, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let _ = method;
    let Ok(p) = serde_json::from_slice::<Value>(&body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the patch is not JSON".into(),
        );
    };
    {
        let mut w = s.world.lock().unwrap();
        let key = (resource.clone(), ns.clone(), name.clone());
        let Some(mut obj) = w.objects.get(&key).cloned() else {
            return not_found(&resource, &name);
        };
        let spec_before = obj["spec"].clone();
        let old = obj.clone();
        merge(&mut obj, &p);
        if let Some(why) = validate::invalid(&resource, kind_of(&resource).1, &obj)
            .or_else(|| validate::invalid_update(&resource, kind_of(&resource).1, &old, &obj))
        {
            return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", why);
        }
        if resource == "deployments" {
            unknown_fields(&s, &mut obj);
        }
        if resource == "deployments" && obj["spec"] != spec_before {
            let g = obj["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            obj["metadata"]["generation"] = json!(g);
        }
        w.stamp(&mut obj, &ns);
        w.objects.insert(key, obj);
    }
    kubelet(&s, &ns);
    let w = s.world.lock().unwrap();
    Json(w.objects[&(resource, ns, name)].clone()).into_response()
}

async fn delete(
    State(s): State<Arc<Shared>>,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> Response {
    let mut w = s.world.lock().unwrap();
    let Some(gone) = w.remove(&(resource.clone(), ns.clone(), name.clone())) else {
        return not_found(&resource, &name);
    };
    if resource == "deployments" {
        // The garbage collector: the Deployment's pods (through its
        // ReplicaSet) go with it; of the objects that name it as an owner,
        // those it was the last owner of are deleted, the others lose the
        // reference (the collector's "solid owners" rule).
        let uid = gone["metadata"]["uid"].clone();
        let selector = gone["spec"]["selector"]["matchLabels"].clone();
        let pods: Vec<_> = w
            .objects
            .iter()
            .filter(|((r, n, _), v)| {
                *n == ns
                    && r == "pods"
                    && selector.as_object().is_some_and(|sel| {
                        sel.iter()
                            .all(|(k, val)| v["metadata"]["labels"][k] == *val)
                    })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in pods {
            w.remove(&k);
        }
        let dependents: Vec<_> = w
            .objects
            .iter()
            .filter(|((_, n, _), v)| {
                *n == ns
                    && v["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in dependents {
            let mut dependent = w.objects[&k].clone();
            let owners = dependent["metadata"]["ownerReferences"]
                .as_array_mut()
                .expect("filtered on it");
            owners.retain(|o| o["uid"] != uid);
            if owners.is_empty() {
                w.remove(&k);
            } else {
                w.stamp(&mut dependent, &ns);
                w.objects.insert(k, dependent);
            }
        }
    }
    Json(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "kind": resource, "uid": gone["metadata"]["uid"]}}),
    )
    .into_response()
}

/// The pull Secret's `.dockerconfigjson` entry for `registry`, if the pod names
/// one that exists.
fn pull_auth(w: &World, ns: &str, pod_spec: &Value, registry: &str) -> Option<(String, String)> {
    for r in pod_spec["imagePullSecrets"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = r["name"].as_str()?;
        let secret = w.objects.get(&("secrets".into(), ns.into(), name.into()))?;
        if secret["type"] != "kubernetes.io/dockerconfigjson" {
            continue;
        }
        let data = base64::engine::general_purpose::STANDARD
            .decode(secret["data"][".dockerconfigjson"].as_str()?)
            .ok()?;
        let config: Value = serde_json::from_slice(&data).ok()?;
        let entry = &config["auths"][registry];
        if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
            return Some((u.to_owned(), p.to_owned()));
        }
    }
    None
}

/// The fake kubelet (and the Deployment and ReplicaSet controllers): each
/// scaled-up Deployment without a pod gets one, its status as the kubelet
/// would report it, and the Deployment's status follows.
fn kubelet(s: &Shared, ns: &str) {
    let behaviour = s.kubelet.lock().unwrap().clone();
    let mut w = s.world.lock().unwrap();
    let deployments: Vec<Value> = w
        .objects
        .iter()
        .filter(|((r, n, _), _)| r == "deployments" && n == ns)
        .map(|(_, v)| v.clone())
        .collect();
    for d in deployments {
        let name = d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if d["spec"]["replicas"].as_i64().unwrap_or(1) < 1 {
            continue;
        }
        let pod_name = format!("{name}-7d9f8b6c5d-x2x9k");
        if w.objects
            .contains_key(&("pods".into(), ns.into(), pod_name.clone()))
        {
            continue;
        }
        let template = &d["spec"]["template"];
        let image = template["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let unmet = unmet(&w, ns, &pod_name, &template["spec"]);
        let held = unmet.is_some();
        let unscheduled = unmet
            .as_ref()
            .is_some_and(|(_, state, _, _)| state.is_null());
        let (ready, container_state, last_state, events) = if let Some(unmet) = unmet {
            unmet
        } else {
            match &behaviour {
            Kubelet::Run => running(&image),
            Kubelet::Unready => {
                let (_, state, last, mut events) = running(&image);
                let probe = &template["spec"]["containers"][0]["readinessProbe"];
                let port = template["spec"]["containers"][0]["ports"][0]["containerPort"]
                    .as_u64()
                    .unwrap_or(80);
                let why = if probe["httpGet"].is_object() {
                    "HTTP probe failed with statuscode: 503".to_owned()
                } else {
                    format!("dial tcp 10.42.0.17:{port}: connect: connection refused")
                };
                events.push((
                    "Warning",
                    "Unhealthy",
                    format!("Readiness probe failed: {why}"),
                ));
                (false, state, last, events)
            }
            Kubelet::PullWith {
                registry,
                username,
                password,
            } => {
                let auth = pull_auth(&w, ns, &template["spec"], registry);
                if auth == Some((username.clone(), password.clone())) {
                    running(&image)
                } else {
                    let detail = format!("failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": failed to authorize: failed to fetch oauth token: unexpected status from POST request to http://{registry}/token: 401 Unauthorized");
                    (
                        false,
                        json!({"waiting": {"reason": "ErrImagePull", "message": format!("rpc error: code = Unknown desc = {detail}")}}),
                        json!({}),
                        vec![
                            ("Normal", "Pulling", format!("Pulling image \"{image}\"")),
                            ("Warning", "Failed", format!("Failed to pull image \"{image}\": {detail}")),
                            ("Warning", "Failed", "Error: ErrImagePull".to_owned()),
                        ],
                    )
                }
            }
            Kubelet::Crash => (
                false,
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off 10s restarting failed container=app pod={pod_name}_{ns}(5f0c)")}}),
                json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": "2026-11-30T00:00:01Z", "finishedAt": "2026-11-30T00:00:01Z", "containerID": "containerd://8c1e"}}),
                vec![
                    ("Normal", "Pulled", format!("Successfully pulled image \"{image}\" in 412ms (412ms including waiting). Image size: 2189234 bytes.")),
                    ("Normal", "Created", "Created container: app".to_owned()),
                    ("Normal", "Started", "Started container app".to_owned()),
                    ("Warning", "BackOff", "Back-off restarting failed container app in pod".to_owned()),
                ],
            ),
        }
        };
        // Running, ready or not (a readiness probe that fails).
        let started = ready || (!held && matches!(behaviour, Kubelet::Unready));
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": ns, "labels": template["metadata"]["labels"],
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-7d9f8b6c5d"), "controller": true}]},
            "spec": template["spec"],
            "status": {
                "phase": if started { "Running" } else { "Pending" },
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-30T00:00:00Z"},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-30T00:00:00Z"},
                    {"type": "ContainersReady", "status": if ready { "True" } else { "False" }, "lastTransitionTime": "2026-11-30T00:00:01Z"},
                    {"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": "2026-11-30T00:00:01Z"},
                ],
                "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "startTime": "2026-11-30T00:00:00Z",
                "containerStatuses": [{
                    "name": "app", "image": image, "imageID": if started { image.clone() } else { String::new() },
                    "ready": ready, "restartCount": if last_state.as_object().is_some_and(|o| !o.is_empty()) { 3 } else { 0 },
                    "started": started,
                    "state": container_state, "lastState": last_state,
                }],
                "qosClass": "Burstable",
            },
        });
        if unscheduled {
            // The scheduler's word: no node, no container.
            let why = events[0].2.clone();
            pod["status"] = json!({
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why, "lastTransitionTime": "2026-11-30T00:00:00Z"}],
                "qosClass": "Burstable",
            });
        }
        w.stamp(&mut pod, ns);
        w.objects
            .insert(("pods".into(), ns.into(), pod_name.clone()), pod);
        for (i, (kind, reason, message)) in events.into_iter().enumerate() {
            let mut e = json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": format!("{pod_name}.{i:x}")},
                "involvedObject": {"kind": "Pod", "namespace": ns, "name": pod_name, "apiVersion": "v1", "fieldPath": "spec.containers{app}"},
                "reason": reason, "message": message, "type": kind, "count": 1,
                "source": if reason == "Scheduled" || reason == "FailedScheduling" { json!({"component": "default-scheduler"}) } else { json!({"component": "kubelet", "host": "node-1"}) },
                "firstTimestamp": format!("2026-11-30T00:00:0{i}Z"), "lastTimestamp": format!("2026-11-30T00:00:0{i}Z"),
            });
            w.stamp(&mut e, ns);
            let ename = e["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            w.objects.insert(("events".into(), ns.into(), ename), e);
        }
        let generation = d["metadata"]["generation"].clone();
        let key = ("deployments".to_owned(), ns.to_owned(), name.clone());
        if let Some(mut stored) = w.objects.get(&key).cloned() {
            stored["status"] = if ready {
                json!({"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                       "conditions": [
                           {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
                           {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": format!("ReplicaSet \"{name}-7d9f8b6c5d\" has successfully progressed.")}]})
            } else {
                json!({"observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "unavailableReplicas": 1,
                       "conditions": [
                           {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."},
                           {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": format!("ReplicaSet \"{name}-7d9f8b6c5d\" is progressing.")}]})
            };
            w.stamp(&mut stored, ns);
            w.objects.insert(key, stored);
        }
    }
}

type Reported = (
    bool,
    Value,
    Value,
    Vec<(&'static str, &'static str, String)>,
);

fn running(image: &str) -> Reported {
    (
        true,
        json!({"running": {"startedAt": "2026-11-30T00:00:01Z"}}),
        json!({}),
        vec![
            ("Normal", "Scheduled", "Successfully assigned to node-1".to_owned()),
            ("Normal", "Pulling", format!("Pulling image \"{image}\"")),
            ("Normal", "Pulled", format!("Successfully pulled image \"{image}\" in 388ms (388ms including waiting). Image size: 2189234 bytes.")),
            ("Normal", "Created", "Created container: app".to_owned()),
            ("Normal", "Started", "Started container app".to_owned()),
        ],
    )
}
