//! The API server's validation of the kinds berth writes, as far as berth's
//! objects can get it wrong: names by kind (a Service's is an RFC 1035 label,
//! most others RFC 1123 subdomains), label values, ports and port names, probe
//! and lifecycle handlers, label selectors, Service ports, Ingress hosts, paths
//! and backends, NetworkPolicy peers and ports; a pod's variables (and the
//! Secret keys they name), volumes and their mounts, node selector; Secrets
//! (keys, size, base64 data, immutability) and PersistentVolumeClaims (access
//! modes, a storage request, what an update may change: the request, up). Each refusal is the first error
//! the API server would list, worded as it words it (`<Kind> "<name>" is
//! invalid: <field>: Invalid value: ...`), for a 422.

use serde_json::Value;

const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
const CONFIG_KEY: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
/// The most a Secret may hold, its keys and values together.
const MAX_SECRET_BYTES: usize = 1024 * 1024;

fn is_config_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k != "."
        && k != ".."
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// An environment variable's name (Kubernetes 1.34 relaxed the C identifier
/// rule to any printable ASCII but `=`).
fn is_env_name(n: &str) -> bool {
    !n.is_empty() && n.chars().all(|c| (' '..='~').contains(&c) && c != '=')
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of at
/// most 63 alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(|p| !p.is_empty() && is_dns1123_subdomain(p))
        && !name.is_empty()
        && is_label_value(name)
}

/// A storage quantity in bytes (`16Mi`, `1Gi`, `500M`, plain bytes).
pub(super) fn quantity_bytes(q: &str) -> Option<u128> {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: u128 = n.parse().ok()?;
    let m: u128 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(m)
}

pub(super) fn is_dns1123_label(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (1..=63).contains(&s.len())
        && alnum(s.chars().next())
        && alnum(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// IANA_SVC_NAME: what a port's name may be (and a port given by name).
fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn is_label_value(v: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    v.is_empty()
        || (v.len() <= 63
            && alnum(v.chars().next())
            && alnum(v.chars().last())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
}

/// What one object's validation found first.
struct Check<'a> {
    kind: &'a str,
    name: &'a str,
    first: Option<String>,
}

impl Check<'_> {
    fn fail(&mut self, field: &str, value: &Value, why: &str) {
        if self.first.is_none() {
            self.first = Some(format!(
                "{} \"{}\" is invalid: {field}: Invalid value: {value}: {why}",
                self.kind, self.name
            ));
        }
    }

    fn forbidden(&mut self, field: &str, why: &str) {
        if self.first.is_none() {
            self.first = Some(format!(
                "{} \"{}\" is invalid: {field}: Forbidden: {why}",
                self.kind, self.name
            ));
        }
    }

    fn too_long(&mut self, field: &str, max: usize) {
        if self.first.is_none() {
            self.first = Some(format!(
                "{} \"{}\" is invalid: {field}: Too long: must have at most {max} bytes",
                self.kind, self.name
            ));
        }
    }

    fn not_found(&mut self, field: &str, value: &Value) {
        if self.first.is_none() {
            self.first = Some(format!(
                "{} \"{}\" is invalid: {field}: Not found: {value}",
                self.kind, self.name
            ));
        }
    }

    fn required(&mut self, field: &str, why: &str) {
        if self.first.is_none() {
            self.first = Some(format!(
                "{} \"{}\" is invalid: {field}: Required value: {why}",
                self.kind, self.name
            ));
        }
    }

    fn unsupported(&mut self, field: &str, value: &Value, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        self.fail(
            field,
            value,
            &format!("Unsupported value: supported values: {}", list.join(", ")),
        );
    }

    /// A port by number (1-65535).
    fn port_number(&mut self, field: &str, v: &Value) {
        if !v.as_u64().is_some_and(|p| (1..=65535).contains(&p)) {
            self.fail(field, v, PORT_RANGE);
        }
    }

    /// A port's name (IANA_SVC_NAME).
    fn port_name(&mut self, field: &str, v: &Value) {
        if !v.as_str().is_some_and(is_port_name) {
            self.fail(field, v, "must contain only lowercase alphanumeric characters and '-', at least one letter, no '--', at most 15 characters (IANA_SVC_NAME)");
        }
    }

    /// A port by number or by name.
    fn port_or_name(&mut self, field: &str, v: &Value) {
        match v {
            Value::String(_) => self.port_name(field, v),
            _ => self.port_number(field, v),
        }
    }

    fn protocol(&mut self, field: &str, v: &Value) {
        if !v.is_null() && !["TCP", "UDP", "SCTP"].contains(&v.as_str().unwrap_or_default()) {
            self.unsupported(field, v, &["SCTP", "TCP", "UDP"]);
        }
    }

    fn selector(&mut self, field: &str, sel: &Value) {
        for (k, v) in sel["matchLabels"].as_object().into_iter().flatten() {
            if !is_label_value(v.as_str().unwrap_or("-")) {
                self.fail(&format!("{field}.matchLabels"), v, &format!("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (label {k})"));
            }
        }
        for (i, e) in sel["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let f = format!("{field}.matchExpressions[{i}]");
            let values = e["values"].as_array().map_or(0, Vec::len);
            match e["operator"].as_str().unwrap_or_default() {
                "In" | "NotIn" if values == 0 => self.required(
                    &format!("{f}.values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                ),
                "Exists" | "DoesNotExist" if values > 0 => self.fail(
                    &format!("{f}.values"),
                    &e["values"],
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                _ => self.unsupported(
                    &format!("{f}.operator"),
                    &e["operator"],
                    &["DoesNotExist", "Exists", "In", "NotIn"],
                ),
            }
        }
    }

    /// A probe's or a lifecycle hook's handler: exactly one of `handlers`.
    fn one_handler(&mut self, field: &str, h: &Value, handlers: &[&str]) -> Option<String> {
        let given: Vec<&str> = handlers
            .iter()
            .copied()
            .filter(|k| !h[*k].is_null())
            .collect();
        match given[..] {
            [one] => Some(one.to_owned()),
            [] => {
                self.required(field, "must specify a handler type");
                None
            }
            _ => {
                self.fail(field, h, "may not specify more than 1 handler type");
                None
            }
        }
    }
}

/// The first error of `obj`, a `kind` stored under `resource`, or none.
pub(super) fn invalid(resource: &str, kind: &str, obj: &Value) -> Option<String> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let mut c = Check {
        kind,
        name,
        first: None,
    };
    let name_value = Value::String(name.to_owned());
    match resource {
        "namespaces" if name.len() > 63 => c.fail(
            "metadata.name",
            &name_value,
            "must be no more than 63 characters",
        ),
        "namespaces" if !is_dns1123_label(name) => {
            c.fail("metadata.name", &name_value, DNS1123_LABEL)
        }
        "services" if !is_dns1035_label(name) => {
            c.fail("metadata.name", &name_value, DNS1035_LABEL)
        }
        "namespaces" | "services" => {}
        _ if !is_dns1123_subdomain(name) => c.fail("metadata.name", &name_value, DNS1123_SUBDOMAIN),
        _ => {}
    }
    for (k, v) in obj["metadata"]["labels"].as_object().into_iter().flatten() {
        if !is_label_value(v.as_str().unwrap_or("-")) {
            c.fail("metadata.labels", v, &format!("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (label {k})"));
        }
    }
    match resource {
        "deployments" => deployment(&mut c, obj),
        "services" => service(&mut c, &obj["spec"]),
        "ingresses" => ingress(&mut c, &obj["spec"]),
        "networkpolicies" => network_policy(&mut c, &obj["spec"]),
        "secrets" => secret(&mut c, obj),
        "persistentvolumeclaims" => claim(&mut c, &obj["spec"]),
        _ => {}
    }
    c.first
}

/// What the API server cannot even decode (a 400, before validation): a
/// Secret's `data` values are base64.
pub(super) fn undecodable(resource: &str, kind: &str, obj: &Value) -> Option<String> {
    use base64::Engine;
    if resource != "secrets" {
        return None;
    }
    for v in obj["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, v)| v)
    {
        let text = v.as_str().unwrap_or_default();
        if let Err(e) = base64::engine::general_purpose::STANDARD.decode(text) {
            return Some(format!(
                "{kind} in version \"v1\" cannot be handled as a {kind}: illegal base64 data: {e}"
            ));
        }
    }
    None
}

/// What an update may not change: an immutable Secret's data; a claim's spec
/// but its storage request, and that only upwards.
pub(super) fn invalid_update(
    resource: &str,
    kind: &str,
    old: &Value,
    new: &Value,
) -> Option<String> {
    let name = new["metadata"]["name"].as_str().unwrap_or_default();
    let mut c = Check {
        kind,
        name,
        first: None,
    };
    match resource {
        "secrets" if old["immutable"] == true => {
            if new["data"] != old["data"] {
                c.forbidden("data", "field is immutable when `immutable` is set");
            }
            if new["immutable"] != true {
                c.forbidden("immutable", "field is immutable when `immutable` is set");
            }
        }
        "persistentvolumeclaims" => {
            let size = |v: &Value| {
                v["spec"]["resources"]["requests"]["storage"]
                    .as_str()
                    .and_then(quantity_bytes)
            };
            let mut rest_old = old["spec"].clone();
            let mut rest_new = new["spec"].clone();
            rest_old["resources"]["requests"]["storage"] = Value::Null;
            rest_new["resources"]["requests"]["storage"] = Value::Null;
            if rest_old != rest_new {
                c.forbidden("spec", "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims");
            } else if size(new) < size(old) {
                c.forbidden(
                    "spec.resources.requests.storage",
                    "field can not be less than previous value",
                );
            }
        }
        _ => {}
    }
    c.first
}

fn secret(c: &mut Check<'_>, obj: &Value) {
    let data = obj["data"].as_object().cloned().unwrap_or_default();
    let mut size = 0;
    for (k, v) in &data {
        if !is_config_key(k) {
            c.fail("data", &Value::String(k.clone()), CONFIG_KEY);
        }
        // Decodable: `undecodable` refused it first otherwise.
        size += k.len() + v.as_str().unwrap_or_default().len() * 3 / 4;
    }
    if size > MAX_SECRET_BYTES {
        c.too_long("data", MAX_SECRET_BYTES);
    }
    match obj["type"].as_str().unwrap_or("Opaque") {
        "Opaque" => {}
        "kubernetes.io/dockerconfigjson" if !data.contains_key(".dockerconfigjson") => {
            c.required("data[.dockerconfigjson]", "");
        }
        _ => {}
    }
}

fn claim(c: &mut Check<'_>, spec: &Value) {
    let modes = spec["accessModes"].as_array().cloned().unwrap_or_default();
    if modes.is_empty() {
        c.required("spec.accessModes", "at least 1 access mode is required");
    }
    for m in &modes {
        let supported = [
            "ReadOnlyMany",
            "ReadWriteMany",
            "ReadWriteOnce",
            "ReadWriteOncePod",
        ];
        if !supported.contains(&m.as_str().unwrap_or_default()) {
            c.unsupported("spec.accessModes", m, &supported);
        }
    }
    let storage = &spec["resources"]["requests"]["storage"];
    match storage.as_str() {
        None => c.required("spec.resources[storage]", ""),
        Some(q) => match quantity_bytes(q) {
            Some(0) => c.fail(
                "spec.resources[storage]",
                storage,
                "must be greater than zero",
            ),
            Some(_) => {}
            None => c.fail(
                "spec.resources[storage]",
                storage,
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ),
        },
    }
    if let Some(class) = spec["storageClassName"].as_str() {
        if !is_dns1123_subdomain(class) {
            c.fail(
                "spec.storageClassName",
                &spec["storageClassName"],
                DNS1123_SUBDOMAIN,
            );
        }
    }
}

fn deployment(c: &mut Check<'_>, d: &Value) {
    let selector = &d["spec"]["selector"];
    c.selector("spec.selector", selector);
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    let matches = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels[k] == *v);
    if !matches {
        c.fail(
            "spec.template.metadata.labels",
            labels,
            "`selector` does not match template `labels`",
        );
    }
    let pod = &d["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap_or(30);
    let volumes = pod_volumes(c, pod);
    for (k, v) in pod["nodeSelector"].as_object().into_iter().flatten() {
        if !is_label_key(k) {
            c.fail("spec.template.spec.nodeSelector", &Value::String(k.clone()), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character");
        } else if !is_label_value(v.as_str().unwrap_or("-")) {
            c.fail("spec.template.spec.nodeSelector", v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character");
        }
    }
    for (i, ct) in pod["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = format!("spec.template.spec.containers[{i}]");
        container_env(c, &f, ct);
        let mut paths = Vec::new();
        for (j, m) in ct["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let mf = format!("{f}.volumeMounts[{j}]");
            let name = m["name"].as_str().unwrap_or_default();
            if !volumes.iter().any(|v| v == name) {
                c.not_found(&format!("{mf}.name"), &m["name"]);
            }
            match m["mountPath"].as_str() {
                None | Some("") => c.required(&format!("{mf}.mountPath"), ""),
                Some(p) if paths.contains(&p) => c.fail(
                    &format!("{mf}.mountPath"),
                    &m["mountPath"],
                    "must be unique",
                ),
                Some(p) => paths.push(p),
            }
        }
        let mut names = Vec::new();
        for (j, p) in ct["ports"].as_array().into_iter().flatten().enumerate() {
            c.port_number(
                &format!("{f}.ports[{j}].containerPort"),
                &p["containerPort"],
            );
            c.protocol(&format!("{f}.ports[{j}].protocol"), &p["protocol"]);
            if let Some(n) = p["name"].as_str() {
                c.port_name(&format!("{f}.ports[{j}].name"), &p["name"]);
                if names.contains(&n) {
                    c.fail(
                        &format!("{f}.ports[{j}].name"),
                        &p["name"],
                        "Duplicate value",
                    );
                }
                names.push(n);
            }
        }
        for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let p = &ct[probe];
            if p.is_null() {
                continue;
            }
            let pf = format!("{f}.{probe}");
            match c
                .one_handler(&pf, p, &["exec", "httpGet", "tcpSocket", "grpc"])
                .as_deref()
            {
                Some("httpGet") => {
                    c.port_or_name(&format!("{pf}.httpGet.port"), &p["httpGet"]["port"]);
                    let path = p["httpGet"]["path"].as_str().unwrap_or("/");
                    if !path.starts_with('/') {
                        c.fail(
                            &format!("{pf}.httpGet.path"),
                            &p["httpGet"]["path"],
                            "must be an absolute path",
                        );
                    }
                }
                Some("tcpSocket") => {
                    c.port_or_name(&format!("{pf}.tcpSocket.port"), &p["tcpSocket"]["port"])
                }
                _ => {}
            }
            for k in [
                "periodSeconds",
                "timeoutSeconds",
                "successThreshold",
                "failureThreshold",
            ] {
                if p[k].as_i64().is_some_and(|n| n < 0) {
                    c.fail(
                        &format!("{pf}.{k}"),
                        &p[k],
                        "must be greater than or equal to 0",
                    );
                }
            }
        }
        for hook in ["preStop", "postStart"] {
            let h = &ct["lifecycle"][hook];
            if h.is_null() {
                continue;
            }
            let hf = format!("{f}.lifecycle.{hook}");
            if c.one_handler(&hf, h, &["exec", "httpGet", "tcpSocket", "sleep"])
                .as_deref()
                == Some("sleep")
            {
                let s = &h["sleep"]["seconds"];
                if !s.as_i64().is_some_and(|s| (0..=grace).contains(&s)) {
                    c.fail(
                        &format!("{hf}.sleep.seconds"),
                        s,
                        &format!("must be non-negative and less than terminationGracePeriodSeconds ({grace})"),
                    );
                }
            }
        }
    }
}

/// A pod's volumes: names (DNS labels, unique), secret volumes' modes and
/// items; the names.
fn pod_volumes(c: &mut Check<'_>, pod: &Value) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (i, v) in pod["volumes"].as_array().into_iter().flatten().enumerate() {
        let f = format!("spec.template.spec.volumes[{i}]");
        let name = v["name"].as_str().unwrap_or_default();
        if !is_dns1123_label(name) {
            c.fail(&format!("{f}.name"), &v["name"], DNS1123_LABEL);
        } else if names.iter().any(|n| n == name) {
            c.fail(&format!("{f}.name"), &v["name"], "Duplicate value");
        }
        names.push(name.to_owned());
        let secret = &v["secret"];
        if secret.is_object() {
            if !secret["secretName"]
                .as_str()
                .is_some_and(is_dns1123_subdomain)
            {
                c.required(&format!("{f}.secret.secretName"), "");
            }
            let mode = &secret["defaultMode"];
            if !mode.is_null() && mode.as_u64().is_none_or(|m| m > 0o777) {
                c.fail(
                    &format!("{f}.secret.defaultMode"),
                    mode,
                    "must be a number between 0 and 0777 (octal), both inclusive",
                );
            }
            for (j, item) in secret["items"].as_array().into_iter().flatten().enumerate() {
                if item["key"].as_str().is_none_or(str::is_empty) {
                    c.required(&format!("{f}.secret.items[{j}].key"), "");
                }
                let path = item["path"].as_str().unwrap_or_default();
                if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == "..") {
                    c.fail(
                        &format!("{f}.secret.items[{j}].path"),
                        &item["path"],
                        "must be a relative path without '..'",
                    );
                }
            }
        }
        let claim = &v["persistentVolumeClaim"];
        if claim.is_object() && claim["claimName"].as_str().is_none_or(str::is_empty) {
            c.required(&format!("{f}.persistentVolumeClaim.claimName"), "");
        }
    }
    names
}

/// A container's variables: names, and one value source (a Secret's key by
/// a valid name and key).
fn container_env(c: &mut Check<'_>, f: &str, ct: &Value) {
    for (j, e) in ct["env"].as_array().into_iter().flatten().enumerate() {
        let ef = format!("{f}.env[{j}]");
        if !e["name"].as_str().is_some_and(is_env_name) {
            c.fail(&format!("{ef}.name"), &e["name"], "a valid environment variable name must consist only of printable ASCII characters other than '='");
        }
        let from = &e["valueFrom"];
        if from.is_null() {
            continue;
        }
        if !e["value"].is_null() {
            c.fail(
                &format!("{ef}.valueFrom"),
                from,
                "may not be specified when `value` is not empty",
            );
        }
        let r = &from["secretKeyRef"];
        if r.is_object() {
            if !r["name"].as_str().is_some_and(is_dns1123_subdomain) {
                c.required(&format!("{ef}.valueFrom.secretKeyRef.name"), "");
            }
            if !r["key"].as_str().is_some_and(is_config_key) {
                c.fail(
                    &format!("{ef}.valueFrom.secretKeyRef.key"),
                    &r["key"],
                    CONFIG_KEY,
                );
            }
        }
    }
}

fn service(c: &mut Check<'_>, spec: &Value) {
    let kind = spec["type"].as_str().unwrap_or("ClusterIP");
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&kind) {
        c.unsupported(
            "spec.type",
            &spec["type"],
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        );
    }
    c.selector(
        "spec.selector",
        &serde_json::json!({"matchLabels": spec["selector"]}),
    );
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && kind != "ExternalName" {
        c.required("spec.ports", "");
    }
    for (i, p) in ports.iter().enumerate() {
        let f = format!("spec.ports[{i}]");
        if ports.len() > 1 && p["name"].as_str().unwrap_or_default().is_empty() {
            c.required(&format!("{f}.name"), "");
        }
        if p["name"].as_str().is_some_and(|n| !n.is_empty()) {
            c.port_name(&format!("{f}.name"), &p["name"]);
        }
        c.port_number(&format!("{f}.port"), &p["port"]);
        c.protocol(&format!("{f}.protocol"), &p["protocol"]);
        if !p["targetPort"].is_null() {
            c.port_or_name(&format!("{f}.targetPort"), &p["targetPort"]);
        }
    }
}

fn ingress(c: &mut Check<'_>, spec: &Value) {
    if let Some(class) = spec["ingressClassName"].as_str() {
        if !is_dns1123_subdomain(class) {
            c.fail(
                "spec.ingressClassName",
                &spec["ingressClassName"],
                DNS1123_SUBDOMAIN,
            );
        }
    }
    let rules = spec["rules"].as_array().cloned().unwrap_or_default();
    if rules.is_empty() && spec["defaultBackend"].is_null() {
        c.required(
            "spec.rules",
            "either `defaultBackend` or `rules` must be specified",
        );
    }
    for (i, r) in rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        if let Some(host) = r["host"].as_str() {
            if host.parse::<std::net::IpAddr>().is_ok() {
                c.fail(
                    &format!("{f}.host"),
                    &r["host"],
                    "must be a DNS name, not an IP address",
                );
            } else if !is_dns1123_subdomain(host.strip_prefix("*.").unwrap_or(host)) {
                c.fail(&format!("{f}.host"), &r["host"], DNS1123_SUBDOMAIN);
            }
        }
        let paths = r["http"]["paths"].as_array().cloned().unwrap_or_default();
        if paths.is_empty() {
            c.required(&format!("{f}.http.paths"), "");
        }
        for (j, p) in paths.iter().enumerate() {
            let pf = format!("{f}.http.paths[{j}]");
            match p["pathType"].as_str() {
                None => c.required(&format!("{pf}.pathType"), "pathType must be specified"),
                Some("Exact" | "Prefix" | "ImplementationSpecific") => {}
                Some(_) => c.unsupported(
                    &format!("{pf}.pathType"),
                    &p["pathType"],
                    &["Exact", "ImplementationSpecific", "Prefix"],
                ),
            }
            if !p["path"].as_str().unwrap_or_default().starts_with('/') {
                c.fail(
                    &format!("{pf}.path"),
                    &p["path"],
                    "must be an absolute path",
                );
            }
            let svc = &p["backend"]["service"];
            if !is_dns1035_label(svc["name"].as_str().unwrap_or_default()) {
                c.fail(
                    &format!("{pf}.backend.service.name"),
                    &svc["name"],
                    DNS1035_LABEL,
                );
            }
            match (&svc["port"]["number"], &svc["port"]["name"]) {
                (n, Value::Null) if !n.is_null() => {
                    c.port_number(&format!("{pf}.backend.service.port.number"), n)
                }
                (Value::Null, n) if !n.is_null() => {
                    c.port_name(&format!("{pf}.backend.service.port.name"), n)
                }
                _ => c.fail(
                    &format!("{pf}.backend.service.port"),
                    &svc["port"],
                    "must specify one of `name` or `number`",
                ),
            }
        }
    }
}

fn network_policy(c: &mut Check<'_>, spec: &Value) {
    if !spec["podSelector"].is_object() {
        c.required("spec.podSelector", "");
    }
    c.selector("spec.podSelector", &spec["podSelector"]);
    for (i, t) in spec["policyTypes"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !["Ingress", "Egress"].contains(&t.as_str().unwrap_or_default()) {
            c.unsupported(&format!("spec.policyTypes[{i}]"), t, &["Egress", "Ingress"]);
        }
    }
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in spec[direction].as_array().into_iter().flatten().enumerate() {
            let f = format!("spec.{direction}[{i}]");
            for (j, p) in rule["ports"].as_array().into_iter().flatten().enumerate() {
                c.protocol(&format!("{f}.ports[{j}].protocol"), &p["protocol"]);
                if !p["port"].is_null() {
                    c.port_or_name(&format!("{f}.ports[{j}].port"), &p["port"]);
                }
            }
            for (j, peer) in rule[peers].as_array().into_iter().flatten().enumerate() {
                let pf = format!("{f}.{peers}[{j}]");
                let selectors =
                    !peer["podSelector"].is_null() || !peer["namespaceSelector"].is_null();
                match (&peer["ipBlock"], selectors) {
                    (Value::Null, false) => c.required(&pf, "must specify a peer"),
                    (Value::Null, true) => {
                        c.selector(&format!("{pf}.podSelector"), &peer["podSelector"]);
                        c.selector(
                            &format!("{pf}.namespaceSelector"),
                            &peer["namespaceSelector"],
                        );
                    }
                    (block, false) => {
                        let cidr = block["cidr"].as_str().unwrap_or_default();
                        match cidr.parse::<ipnet::IpNet>() {
                            Ok(net) => {
                                for (k, e) in
                                    block["except"].as_array().into_iter().flatten().enumerate()
                                {
                                    let inside = e
                                        .as_str()
                                        .and_then(|e| e.parse::<ipnet::IpNet>().ok())
                                        .is_some_and(|e| net.contains(&e));
                                    if !inside {
                                        c.fail(
                                            &format!("{pf}.ipBlock.except[{k}]"),
                                            e,
                                            "must be a strict subset of `cidr`",
                                        );
                                    }
                                }
                            }
                            Err(_) => c.fail(
                                &format!("{pf}.ipBlock.cidr"),
                                &block["cidr"],
                                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                            ),
                        }
                    }
                    (_, true) => c.fail(&pf, peer, "may not specify more than 1 peer type"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(resource: &str, obj: Value, want: Option<&str>) {
        let kind = super::super::kind_of(resource).1;
        let got = invalid(resource, kind, &obj);
        match (want, &got) {
            (None, None) => {}
            (Some(w), Some(g)) if g.contains(w) => {}
            _ => panic!("{resource} {obj}: want {want:?}, got {got:?}"),
        }
    }

    fn service(name: &str, ports: Value) -> Value {
        json!({"metadata": {"name": name}, "spec": {"selector": {"app": "a"}, "ports": ports}})
    }

    fn ingress(host: &str, backend: Value) -> Value {
        json!({"metadata": {"name": "berth-api-1"}, "spec": {"rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": backend}]}}]}})
    }

    #[test]
    fn services() {
        let http = json!([{"name": "http", "port": 80, "targetPort": "http"}]);
        check("services", service("berth-api-1", http.clone()), None);
        check("services", service("1-api", http.clone()), Some("DNS-1035"));
        check(
            "services",
            service("berth-api-1", json!([{"port": 0}])),
            Some(PORT_RANGE),
        );
        check(
            "services",
            service("berth-api-1", json!([{"port": 80, "targetPort": "http_1"}])),
            Some("IANA_SVC_NAME"),
        );
        check(
            "services",
            service("berth-api-1", json!([{"port": 80}, {"port": 81}])),
            Some("spec.ports[0].name: Required value"),
        );
        check(
            "services",
            service("berth-api-1", json!([])),
            Some("spec.ports: Required"),
        );
    }

    #[test]
    fn ingresses() {
        let to = json!({"service": {"name": "berth-api-1", "port": {"number": 80}}});
        check("ingresses", ingress("api.web.localhost", to.clone()), None);
        check("ingresses", ingress("*.example.com", to.clone()), None);
        check(
            "ingresses",
            ingress("web-.localhost", to.clone()),
            Some("RFC 1123 subdomain"),
        );
        check(
            "ingresses",
            ingress("10.0.0.1", to.clone()),
            Some("not an IP address"),
        );
        check(
            "ingresses",
            ingress("a.b", json!({"service": {"name": "s", "port": {}}})),
            Some("one of `name` or `number`"),
        );
        check(
            "ingresses",
            json!({"metadata": {"name": "x"}, "spec": {"rules": []}}),
            Some("either `defaultBackend` or `rules`"),
        );
        check(
            "ingresses",
            json!({"metadata": {"name": "x"}, "spec": {"ingressClassName": "Nginx", "rules": [{"host": "a.b", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": to}]}}]}}),
            Some("spec.ingressClassName"),
        );
    }

    #[test]
    fn network_policies() {
        let policy = |spec: Value| json!({"metadata": {"name": "berth-d1"}, "spec": spec});
        check(
            "networkpolicies",
            policy(
                json!({"podSelector": {"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["none"]}]},
                          "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}], "ports": [{"port": "http"}]}],
                          "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]}),
            ),
            None,
        );
        check(
            "networkpolicies",
            policy(
                json!({"podSelector": {"matchExpressions": [{"key": "k", "operator": "NotIn"}]}}),
            ),
            Some("must be specified when `operator` is 'In' or 'NotIn'"),
        );
        check(
            "networkpolicies",
            policy(
                json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]}),
            ),
            Some("strict subset"),
        );
        check(
            "networkpolicies",
            policy(json!({"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]})),
            Some(PORT_RANGE),
        );
    }

    #[test]
    fn secrets() {
        let secret = |data: Value| json!({"metadata": {"name": "berth-d1-secrets"}, "type": "Opaque", "data": data});
        check(
            "secrets",
            secret(json!({"API_KEY": "aGk=", "tls.key": ""})),
            None,
        );
        check(
            "secrets",
            secret(json!({"A B": "aGk="})),
            Some("valid config key"),
        );
        let big = "A".repeat(1024 * 1024 * 4 / 3 + 8);
        check("secrets", secret(json!({"K": big})), Some("Too long"));
        check(
            "secrets",
            json!({"metadata": {"name": "p"}, "type": "kubernetes.io/dockerconfigjson", "data": {}}),
            Some("data[.dockerconfigjson]: Required"),
        );
        assert!(undecodable("secrets", "Secret", &secret(json!({"K": "not base64!"}))).is_some());
        assert!(undecodable("secrets", "Secret", &secret(json!({"K": "aGk="}))).is_none());
        let mut old = secret(json!({"K": "aGk="}));
        old["immutable"] = json!(true);
        let mut new = old.clone();
        new["data"]["K"] = json!("aG8=");
        assert!(invalid_update("secrets", "Secret", &old, &new)
            .is_some_and(|e| e.contains("immutable")));
    }

    #[test]
    fn claims() {
        let claim =
            |spec: Value| json!({"metadata": {"name": "berth-db-0123456789"}, "spec": spec});
        let good = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}});
        check("persistentvolumeclaims", claim(good.clone()), None);
        check(
            "persistentvolumeclaims",
            claim(json!({"resources": {"requests": {"storage": "16Mi"}}})),
            Some("at least 1 access mode"),
        );
        check(
            "persistentvolumeclaims",
            claim(json!({"accessModes": ["ReadWriteOnce"]})),
            Some("spec.resources[storage]: Required"),
        );
        check(
            "persistentvolumeclaims",
            claim(
                json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "0Mi"}}}),
            ),
            Some("greater than zero"),
        );
        let old = claim(good);
        let mut grown = old.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("32Mi");
        let pvc = "persistentvolumeclaims";
        assert!(invalid_update(pvc, "PersistentVolumeClaim", &old, &grown).is_none());
        assert!(invalid_update(pvc, "PersistentVolumeClaim", &grown, &old)
            .is_some_and(|e| e.contains("can not be less than previous value")));
        let mut moved = old.clone();
        moved["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        assert!(invalid_update(pvc, "PersistentVolumeClaim", &old, &moved)
            .is_some_and(|e| e.contains("spec is immutable")));
    }

    #[test]
    fn pod_templates() {
        let deployment = |container: Value| {
            json!({"metadata": {"name": "berth-d1"}, "spec": {
                "selector": {"matchLabels": {"d": "1"}},
                "template": {"metadata": {"labels": {"d": "1"}}, "spec": {"containers": [container]}}}})
        };
        check(
            "deployments",
            deployment(
                json!({"name": "app", "ports": [{"name": "http", "containerPort": 8080}],
                              "readinessProbe": {"tcpSocket": {"port": "http"}},
                              "lifecycle": {"preStop": {"sleep": {"seconds": 5}}}}),
            ),
            None,
        );
        check(
            "deployments",
            deployment(json!({"name": "app", "readinessProbe": {"periodSeconds": 2}})),
            Some("must specify a handler type"),
        );
        check(
            "deployments",
            deployment(
                json!({"name": "app", "readinessProbe": {"tcpSocket": {"port": 1}, "httpGet": {"port": 1}}}),
            ),
            Some("more than 1 handler type"),
        );
        check(
            "deployments",
            deployment(
                json!({"name": "app", "lifecycle": {"preStop": {"sleep": {"seconds": 31}}}}),
            ),
            Some("less than terminationGracePeriodSeconds (30)"),
        );
        check(
            "deployments",
            deployment(json!({"name": "app", "ports": [{"containerPort": 0}]})),
            Some(PORT_RANGE),
        );
        check(
            "deployments",
            deployment(
                json!({"name": "app", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}),
            ),
            Some("volumeMounts[0].name: Not found"),
        );
        check(
            "deployments",
            deployment(
                json!({"name": "app", "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "a b"}}}]}),
            ),
            Some("secretKeyRef.key"),
        );
        let mut d = deployment(
            json!({"name": "app", "volumeMounts": [{"name": "secrets", "mountPath": "/run/secrets", "readOnly": true}]}),
        );
        d["spec"]["template"]["spec"]["volumes"] = json!([{"name": "secrets", "secret": {"secretName": "s", "defaultMode": 0o400, "items": [{"key": "K", "path": "K"}]}}]);
        d["spec"]["template"]["spec"]["nodeSelector"] =
            json!({"topology.kubernetes.io/region": "eu-west-1"});
        check("deployments", d.clone(), None);
        d["spec"]["template"]["spec"]["volumes"][0]["secret"]["defaultMode"] = json!(0o1000);
        check("deployments", d.clone(), Some("between 0 and 0777"));
        d["spec"]["template"]["spec"]["volumes"][0]["secret"]["defaultMode"] = json!(0o400);
        d["spec"]["template"]["spec"]["volumes"][0]["secret"]["items"][0]["path"] = json!("../K");
        check("deployments", d, Some("without '..'"));
        let mut d = deployment(json!({"name": "app"}));
        d["spec"]["selector"]["matchLabels"]["d"] = json!("2");
        check(
            "deployments",
            d,
            Some("`selector` does not match template `labels`"),
        );
    }
}
