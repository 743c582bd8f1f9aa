//! `--from-docker-config`: the credentials `docker login` left, from `auths` and
//! from a credential helper on PATH, against the real server and token registry.

use std::os::unix::fs::PermissionsExt;

mod common;

use base64::Engine;
use berth_testkit::fixtures::PASSWORD;
use common::*;

#[test]
fn credentials_come_from_a_docker_config_and_its_helpers() {
    let reg = berth_testkit::TeamRegistry::start();
    let host = reg.url();
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let server = start_server(&work.path().join("data"), &host);
    let out = berth(&server, &server.admin_token, &home)
        .args(["project", "create", "web"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // `auths`, as `docker login` writes it without a helper.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("ci:{PASSWORD}"));
    let config = work.path().join("config.json");
    std::fs::write(
        &config,
        format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let image = format!("{host}/team/app:v1");
    let out = berth(&server, &server.admin_token, &home)
        .args([
            "--project",
            "web",
            "service",
            "create",
            "api",
            "--image",
            &image,
        ])
        .arg("--from-docker-config")
        .arg(&config)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("for {host} from")), "{stderr}");
    let v = json(&out);
    assert_eq!(v["registry"]["username"], "c***");
    assert_eq!(v["registry"]["verified"], true);

    // A credential helper named in `credHelpers`, on PATH: asked with the host.
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let asked = work.path().join("asked");
    let helper = bin.join("docker-credential-berthtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\ncat > {}\nprintf '%s' '{{\"ServerURL\":\"{host}\",\"Username\":\"admin\",\"Secret\":\"admin-pass-1\"}}'\n",
            asked.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker_dir = work.path().join("docker");
    std::fs::create_dir_all(&docker_dir).unwrap();
    std::fs::write(
        docker_dir.join("config.json"),
        format!(r#"{{"credHelpers": {{"{host}": "berthtest"}}, "auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // No PATH argument: $DOCKER_CONFIG's config.json.
    let out = berth(&server, &server.admin_token, &home)
        .env("PATH", &path)
        .env("DOCKER_CONFIG", &docker_dir)
        .args([
            "--project",
            "web",
            "service",
            "registry",
            "set",
            "api",
            "--json",
            "--from-docker-config",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stderr.contains("docker-credential-berthtest"),
        "the helper wins over auths: {stderr}"
    );
    assert_eq!(std::fs::read_to_string(&asked).unwrap(), host);
    assert_eq!(json(&out)["registry"]["username"], "ad***");

    // Neither output ever shows a password.
    for text in [String::from_utf8_lossy(&out.stdout), stderr] {
        assert!(
            !text.contains(PASSWORD) && !text.contains("admin-pass-1"),
            "{text}"
        );
    }

    // No entry for the registry: a usage error that says how to get one.
    std::fs::write(&config, r#"{"auths": {}}"#).unwrap();
    let out = berth(&server, &server.admin_token, &home)
        .args([
            "--project",
            "web",
            "service",
            "registry",
            "set",
            "api",
            "--from-docker-config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("docker login"),
        "{out:?}"
    );
}
