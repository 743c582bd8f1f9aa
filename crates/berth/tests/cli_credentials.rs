//! Credentials for pullers berth does not run, with a project token: skopeo pulls
//! through `docker-credential-berth` named in its auth file's `credHelpers`, the
//! kubelet's exec protocol gets the credentials for an image's repository, every
//! use is audited, and a revoked token is refused. Against the real server, the
//! token registry and skopeo.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

mod common;

use berth_testkit::fixtures::PASSWORD;
use common::*;

/// Runs `program` with `stdin`; (exit code, stdout, stderr).
fn run(mut cmd: Command, stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn project_tokens_serve_the_docker_helper_and_the_kubelet_provider() {
    let skopeo = berth_testkit::require("skopeo");
    let reg = berth_testkit::TeamRegistry::start();
    let host = reg.url();
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let server = start_server(&work.path().join("data"), &host);
    let admin = |args: &[&str]| {
        let out = berth(&server, &server.admin_token, &home)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    admin(&["project", "create", "web"]);
    let image = format!("{host}/team/app:v1");
    create_service_as_ci(&server, &home, &host, "api", &image);

    // A token, printed once on stdout, kept in a 0600 file.
    let token = admin(&["project", "token", "create", "web", "puller"])
        .trim()
        .to_owned();
    assert!(token.starts_with("berth_pt_"), "{token}");
    let token_file = work.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(admin(&["project", "token", "list", "web"]).contains("read-credentials"));
    // It is not a user's token.
    let out = berth(&server, &token, &home)
        .args(["project", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");

    // The helper, under the name Docker's protocol looks for.
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        assert_cmd::cargo::cargo_bin("berth"),
        bin.join("docker-credential-berth"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let helper = || {
        let mut c = Command::new(bin.join("docker-credential-berth"));
        c.arg("get")
            .env("BERTH_SERVER", &server.url)
            .env("BERTH_PROJECT_TOKEN_FILE", &token_file)
            .env("XDG_CONFIG_HOME", &home)
            .env_remove("BERTH_TOKEN");
        c
    };
    let (code, stdout, stderr) = run(helper(), &format!("{host}\n"));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (
            v["ServerURL"].as_str(),
            v["Username"].as_str(),
            v["Secret"].as_str()
        ),
        (Some(host.as_str()), Some("ci"), Some(PASSWORD))
    );
    // A registry the project holds nothing for: the protocol's "not found".
    let (code, stdout, _) = run(helper(), "127.0.0.1:9\n");
    assert_eq!(
        (code, stdout.trim()),
        (1, "credentials not found in native keychain")
    );

    // skopeo, told by its auth file to ask the helper: it pulls the private image.
    let skopeo_inspect = |authfile: &std::path::Path| {
        Command::new(&skopeo)
            .args(["inspect", "--tls-verify=false", "--authfile"])
            .arg(authfile)
            .arg(format!("docker://{image}"))
            .env("PATH", &path)
            .env("BERTH_SERVER", &server.url)
            .env("BERTH_PROJECT_TOKEN_FILE", &token_file)
            .env("XDG_CONFIG_HOME", &home)
            .env_remove("BERTH_TOKEN")
            .output()
            .unwrap()
    };
    let none = work.path().join("none.json");
    std::fs::write(&none, "{}").unwrap();
    let out = skopeo_inspect(&none);
    assert!(!out.status.success(), "anonymous is refused: {out:?}");
    let auth = work.path().join("auth.json");
    std::fs::write(
        &auth,
        format!(r#"{{"credHelpers": {{"{host}": "berth"}}}}"#),
    )
    .unwrap();
    let out = skopeo_inspect(&auth);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspected["Digest"], reg.digest.as_str());

    // The kubelet's exec protocol: the credentials for the image's repository.
    let provider = || {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("berth"));
        c.args([
            "credential-provider",
            "--server",
            &server.url,
            "--token-file",
        ])
        .arg(&token_file)
        .env("XDG_CONFIG_HOME", &home)
        .env_remove("BERTH_TOKEN");
        c
    };
    let request = |image: &str| {
        format!(
            r#"{{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"{image}"}}"#
        )
    };
    let (code, stdout, stderr) = run(provider(), &request(&format!("{host}/team/app:v2")));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["kind"], "CredentialProviderResponse");
    assert_eq!(v["apiVersion"], "credentialprovider.kubelet.k8s.io/v1");
    assert_eq!(v["cacheKeyType"], "Image");
    assert_eq!(v["cacheDuration"], "300s");
    let entry = &v["auth"][format!("{host}/team/app")];
    assert_eq!(
        (entry["username"].as_str(), entry["password"].as_str()),
        (Some("ci"), Some(PASSWORD)),
        "{v}"
    );
    // An image no service pulls, on a registry the project holds nothing for:
    // no credentials (the kubelet pulls anonymously).
    let (code, stdout, _) = run(provider(), &request("127.0.0.1:9/other/app:v1"));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["auth"], serde_json::json!({}));

    // Every use is in the audit log, by the token; never with the secret.
    let audit = admin(&["audit", "--json"]);
    let reads = audit.matches("credentials.read").count();
    assert!(reads >= 3, "{audit}");
    assert!(audit.contains("token:puller"), "{audit}");
    assert!(!audit.contains(PASSWORD));
    assert!(admin(&["project", "token", "list", "web"]).contains("puller"));

    // Revoked: refused, and said so (not "not found").
    admin(&["project", "token", "revoke", "web", "puller"]);
    let (code, stdout, stderr) = run(helper(), &format!("{host}\n"));
    assert_ne!(code, 0);
    assert!(stderr.contains("unauthorized"), "{stdout}{stderr}");
    assert!(!stdout.contains(PASSWORD));
}
