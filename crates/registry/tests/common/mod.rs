//! Shared by the registry integration tests.
#![allow(dead_code)]

use berth_registry::preflight::{self, StepName};
use berth_registry::{Credentials, NetworkPolicy, PreflightReport, Registry};
use secrecy::SecretString;

/// The tests' policy: 127.0.0.1 allowed (the local registries live there), every
/// other loopback address blocked, plain HTTP for the given authorities.
pub fn policy<S: AsRef<str>>(insecure: &[S]) -> NetworkPolicy {
    let insecure: Vec<&str> = insecure.iter().map(AsRef::as_ref).collect();
    NetworkPolicy::from_lists("127.0.0.1/32", &insecure.join(",")).unwrap()
}

pub fn creds(user: &str, password: &str) -> Option<Credentials> {
    Some(Credentials::new(
        user,
        SecretString::from(password.to_owned()),
    ))
}

pub async fn run(
    policy: NetworkPolicy,
    registry_url: &str,
    image: &str,
    creds: Option<Credentials>,
) -> PreflightReport {
    let registry = Registry::new(policy).unwrap();
    match preflight::target(&registry, registry_url, image) {
        Ok(target) => preflight::run(&registry, &target, creds).await,
        Err(report) => *report,
    }
}

/// (step, ok, status) of each step, for compact assertions.
pub fn steps(r: &PreflightReport) -> Vec<(StepName, bool, Option<u16>)> {
    r.steps.iter().map(|s| (s.step, s.ok, s.status)).collect()
}
