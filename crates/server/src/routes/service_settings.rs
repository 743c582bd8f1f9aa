//! A service's settings beyond its image and credentials: how it is reached (port,
//! health path, domains) and what it reaches (network), parsed at the edge for
//! a new service and for `PUT /v1/projects/{p}/services/{s}` (in `services`).

use axum::http::StatusCode;
use berth_api::{ErrorCode, NetworkName, UpdateService};
use berth_store::{NetworkMode, StoreError, Traffic};

use crate::api::ApiError;

/// A service holds at most this many extra host names.
const MAX_DOMAINS: usize = 20;

fn bad(message: String) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidSettings, message)
}

pub(super) fn network(n: NetworkName) -> NetworkMode {
    match n {
        NetworkName::Public => NetworkMode::Public,
        NetworkName::None => NetworkMode::None,
    }
}

/// `0` is no port of its own (the image's exposed one).
fn port(p: u16) -> Option<u16> {
    (p != 0).then_some(p)
}

/// An absolute path of printable ASCII, no query or fragment, at most 1 KiB;
/// `""` is none.
fn health_path(p: &str) -> Result<Option<String>, ApiError> {
    if p.is_empty() {
        return Ok(None);
    }
    let printable = p.bytes().all(|b| b.is_ascii_graphic());
    if !p.starts_with('/') || p.len() > 1024 || !printable || p.contains(['?', '#']) {
        return Err(bad(format!(
            "health_path {p:?} is not a path such as /healthz (absolute, printable, no query)"
        )));
    }
    Ok(Some(p.to_owned()))
}

/// Host names: lowercase DNS names of two labels or more; none under the apps
/// domain (those are the services' own names) and no repeats.
fn domains(given: &[String], apps_domain: &str) -> Result<Vec<String>, ApiError> {
    if given.len() > MAX_DOMAINS {
        return Err(bad(format!("at most {MAX_DOMAINS} domains")));
    }
    let mut out: Vec<String> = Vec::new();
    for d in given {
        let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let labels: Vec<&str> = d.split('.').collect();
        if d.len() > 253 || labels.len() < 2 || !labels.iter().all(|l| label_ok(l)) {
            return Err(bad(format!(
                "{d:?} is not a domain name (e.g. shop.example.com)"
            )));
        }
        if d == apps_domain || d.ends_with(&format!(".{apps_domain}")) {
            return Err(bad(format!(
                "{d:?} is under the apps domain {apps_domain:?}, where every service already has its name"
            )));
        }
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// The settings of a new service.
pub(super) fn parse_new(
    body: &berth_api::CreateService,
    apps_domain: &str,
) -> Result<Traffic, ApiError> {
    Ok(Traffic {
        port: body.port.and_then(port),
        health_path: match &body.health_path {
            Some(p) => health_path(p)?,
            None => None,
        },
        domains: domains(&body.domains, apps_domain)?,
        network: network(body.network.unwrap_or_default()),
    })
}

/// `stored` with what `body` changes.
pub(super) fn merged(
    stored: &Traffic,
    body: &UpdateService,
    apps_domain: &str,
) -> Result<Traffic, ApiError> {
    let mut t = stored.clone();
    if let Some(p) = body.port {
        t.port = port(p);
    }
    if let Some(p) = &body.health_path {
        t.health_path = health_path(p)?;
    }
    if let Some(d) = &body.domains {
        t.domains = domains(d, apps_domain)?;
    }
    if let Some(n) = body.network {
        t.network = network(n);
    }
    Ok(t)
}

/// A store conflict on a domain is its own code.
pub(super) fn domain_taken(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(what) if what.contains("domain") => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::DomainTaken,
            "another service already answers to one of these domains",
        ),
        e => ApiError::terminated_or(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_at_the_edge() {
        assert_eq!(health_path("").unwrap(), None);
        assert_eq!(
            health_path("/healthz").unwrap().as_deref(),
            Some("/healthz")
        );
        for bad in ["healthz", "/a b", "/x?token=1", "/\u{e9}"] {
            assert!(health_path(bad).is_err(), "{bad:?}");
        }
        let ok = domains(
            &["Shop.Example.com.".into(), "shop.example.com".into()],
            "localhost",
        )
        .unwrap();
        assert_eq!(ok, ["shop.example.com"]);
        for bad in [
            "localhost",
            "api.web.localhost",
            "-a.example.com",
            "example",
            "a..b.com",
            "x_y.com",
        ] {
            assert!(domains(&[bad.into()], "localhost").is_err(), "{bad:?}");
        }
        assert!(domains(&vec!["a.example.com".to_owned(); 21], "localhost").is_err());
        assert_eq!(port(0), None);
        assert_eq!(port(8080), Some(8080));
    }
}
