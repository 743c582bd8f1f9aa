//! The registry network policy from `BERTH_REGISTRY_*` env (the server adds its
//! TOML config on top).

use anyhow::Context;
use berth_registry::NetworkPolicy;

pub fn registry_policy_from_env() -> anyhow::Result<NetworkPolicy> {
    let allow = std::env::var("BERTH_REGISTRY_ALLOW_PRIVATE").unwrap_or_default();
    let insecure = std::env::var("BERTH_REGISTRY_INSECURE").unwrap_or_default();
    let mut policy =
        NetworkPolicy::from_lists(&allow, &insecure).context("registry network policy")?;
    if let Ok(path) = std::env::var("BERTH_REGISTRY_CA_FILE") {
        if !path.is_empty() {
            let pem = std::fs::read(&path)
                .with_context(|| format!("reading BERTH_REGISTRY_CA_FILE {path}"))?;
            policy.extra_roots_pem = Some(pem);
        }
    }
    Ok(policy)
}
