//! What the server's benches share that the testkit cannot hold (it depends on
//! no berth crate): the server's config.

use std::path::Path;

/// A server on loopback with its data under `dir`, allowed to reach the
/// registry at `registry` (`host:port`) only, deploying under `deploys`.
pub fn server_config(
    registry: &str,
    dir: &Path,
    deploys: berth_server::DeployLimits,
) -> berth_server::Config {
    berth_server::Config {
        data_dir: dir.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}?mode=rwc", dir.join("berth.db").display()),
        master_key: None,
        registry: berth_registry::NetworkPolicy::from_lists("127.0.0.1/32", registry).unwrap(),
        vault: Default::default(),
        advertise_url: None,
        sandbox: Default::default(),
        deploys,
        checks: Default::default(),
        runtime: Default::default(),
        traffic: berth_server::TrafficConfig {
            ingress_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
        region: None,
    }
}
