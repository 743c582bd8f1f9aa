//! Outbound traffic of a `public` container through pasta (Debian's `passt`): a
//! userspace TCP/IP stack that turns each of the container's flows into a socket
//! of its own on the host. It attaches to the namespace at its path, configures
//! the link there, and quits when that file is removed.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{Netns, NetworkError, CONTAINER_ADDRESS, GATEWAY_ADDRESS};

/// Starts pasta for `ns`; returns once the link is configured (pasta then runs
/// in the background, outliving this server process as the container does).
pub(super) fn start(bin: &Path, ns: &Netns, dns_port: u16) -> Result<(), NetworkError> {
    let pid_file = ns.path().with_extension("pasta.pid");
    let dns = format!("53:{dns_port}");
    let out = Command::new(bin)
        .arg("--config-net")
        .arg("--netns")
        .arg(ns.path())
        // Root only to enter the namespace, which the host's user namespace owns;
        // pasta then confines itself (seccomp, its own namespaces, no capabilities).
        .args(["--runas", "0:0"])
        .args(["-a", CONTAINER_ADDRESS, "-n", "24", "-g", GATEWAY_ADDRESS])
        // No port of the host forwarded in; only the resolver's port out, to
        // berth's DNS forwarder on the host's loopback.
        .args(["-t", "none", "-u", "none", "-T", &dns, "-U", &dns])
        .arg("--pid")
        .arg(&pid_file)
        .arg("--quiet")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| NetworkError::Pasta(e.to_string()))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        // Debian's pasta also tries syslog, which a service may not have.
        let text: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("Failed to send"))
            .collect();
        return Err(NetworkError::Pasta(format!(
            "{} ({})",
            text.join("; ").trim(),
            out.status
        )));
    }
    Ok(())
}
