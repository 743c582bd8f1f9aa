//! `berth service create --aws-access-key-id`: ECR keys, the secret from stdin,
//! minted into a token by AWS (moto on loopback) before the save.

mod common;

use common::*;

#[test]
fn ecr_keys_from_the_cli() {
    // Points this process (and the server it starts) at moto.
    berth_testkit::Moto::shared();
    let reg = berth_testkit::LocalRegistry::htpasswd(&[("AWS", "123456789012-auth-token")]);
    berth_testkit::TestImage::build(&[("a", b"a")], &["/a"]).push(&reg, "team/app:v1");
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let server = start_server(&work.path().join("data"), &reg.authority());
    let out = berth(&server, &server.admin_token, &home)
        .args(["project", "create", "web"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    let out = berth(&server, &server.admin_token, &home)
        .args([
            "--project",
            "web",
            "service",
            "create",
            "api",
            "--image",
            "team/app:v1",
        ])
        .args([
            "--registry-url",
            &reg.authority(),
            "--aws-access-key-id",
            "AKIAIOSFODNN7EXAMPLE",
        ])
        .args([
            "--aws-region",
            "us-east-1",
            "--registry-password-stdin",
            "--json",
        ])
        .write_stdin(format!("{secret}\n"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v = json(&out);
    assert_eq!(v["registry"]["kind"], "ecr");
    assert_eq!(v["registry"]["verified"], true);
    for text in [
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    ] {
        assert!(!text.contains(secret), "{text}");
    }
}
