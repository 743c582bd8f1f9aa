//! The web dashboard at `/`: one HTML page, a few native ES modules and one
//! stylesheet, embedded in the binary and served by this process. The page talks
//! to the same `/v1` API as the CLI (the token in the `Authorization` header, kept
//! in the tab's session storage), so it adds no second path to the data; see
//! ARCHITECTURE.md for why it is a small hand-written script and not a framework's
//! bundle.

use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../dashboard/index.html");
const JS: &str = "text/javascript; charset=utf-8";

/// An asset of `dashboard/`: its name, its content (embedded), its type.
macro_rules! embedded {
    ($name:literal, $content_type:expr) => {
        (
            $name,
            include_str!(concat!("../dashboard/", $name)),
            $content_type,
        )
    };
}

/// Everything under `/assets/`. The modules import each other by relative
/// specifiers (`./dom.js`), so each one is served beside `app.js`, the entry the
/// page loads.
const ASSETS: &[(&str, &str, &str)] = &[
    embedded!("app.js", JS),
    embedded!("dom.js", JS),
    embedded!("api.js", JS),
    embedded!("routes.js", JS),
    embedded!("page.js", JS),
    embedded!("format.js", JS),
    embedded!("widgets.js", JS),
    embedded!("credentials.js", JS),
    embedded!("credentials-form.js", JS),
    embedded!("sign-in.js", JS),
    embedded!("projects.js", JS),
    embedded!("create-service.js", JS),
    embedded!("service.js", JS),
    embedded!("settings.js", JS),
    embedded!("run-settings.js", JS),
    embedded!("run-settings-form.js", JS),
    embedded!("deployment.js", JS),
    embedded!("audit.js", JS),
    embedded!("app.css", "text/css; charset=utf-8"),
    embedded!("icon.svg", "image/svg+xml"),
];

/// No inline script or style, nothing from another origin, no framing: a
/// rendered value can never run, and the page cannot be overlaid for clickjacking.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// `registry-rules.js`, made from the types crate's rules (so that the page and
/// the server name Docker Hub the same way): a module of constants.
pub fn registry_rules_js() -> String {
    let names: Vec<String> = berth_types::DOCKER_HUB_NAMES
        .iter()
        .map(|n| format!("{n:?}"))
        .collect();
    format!(
        "// Made by the server from berth-types (one rule for Docker Hub's names).\n\
         export const DOCKER_HUB = {:?};\n\
         export const DOCKER_HUB_NAMES = [{}];\n",
        berth_types::DOCKER_HUB,
        names.join(", ")
    )
}

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let index = Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/assets/registry-rules.js",
            get(|| async {
                static RULES: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                asset(RULES.get_or_init(registry_rules_js), JS)
            }),
        );
    ASSETS
        .iter()
        .fold(index, |router, &(name, body, content_type)| {
            router.route(
                &format!("/assets/{name}"),
                get(move || async move { asset(body, content_type) }),
            )
        })
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        // Served from the binary: a new version of berth is a new page at once.
        (header::CACHE_CONTROL, "no-cache"),
    ];
    let mut resp = (headers, body).into_response();
    resp.headers_mut().insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::{registry_rules_js, ASSETS};

    #[test]
    fn the_registry_rules_module_names_every_docker_hub_name() {
        let js = registry_rules_js();
        assert!(
            js.contains("export const DOCKER_HUB = \"docker.io\";"),
            "{js}"
        );
        for n in berth_types::DOCKER_HUB_NAMES {
            assert!(js.contains(&format!("\"{n}\"")), "{js}");
        }
    }

    /// Every module a served module imports is served too, under a relative
    /// specifier (a bare or absolute one would not resolve, or would leave
    /// `/assets/`), and every served module is imported by one (none forgotten).
    #[test]
    fn every_import_is_a_served_module() {
        // `registry-rules.js` is made by the server (see `registry_rules_js`).
        let served =
            |name: &str| name == "registry-rules.js" || ASSETS.iter().any(|&(n, _, _)| n == name);
        let mut imported = vec!["app.js"];
        for &(name, body, _) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            // Each `import ... from "spec"` (one line or several).
            for rest in body.split(" from \"").skip(1) {
                let spec = rest.split('"').next().unwrap_or_default();
                let target = spec
                    .strip_prefix("./")
                    .unwrap_or_else(|| panic!("{name} imports {spec}: not relative"));
                assert!(served(target), "{name} imports {spec}, which is not served");
                imported.push(target);
            }
            assert!(
                !body.contains("import(") && !body.contains("\nimport \""),
                "{name}: an import this test cannot read"
            );
        }
        for &(name, _, _) in ASSETS {
            assert!(
                !name.ends_with(".js") || imported.contains(&name),
                "{name} is served but no module imports it"
            );
        }
    }
}
