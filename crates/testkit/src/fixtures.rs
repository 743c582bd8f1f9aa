//! The registry and images that the server tests and the CLI tests share.

use crate::{Grant, LocalRegistry, TestImage, TokenServer, TokenServerMode, User};

/// The password of `ci`, the user of [`TeamRegistry`] allowed to pull `team/app`.
pub const PASSWORD: &str = "Pu11-0nly-S3cret!";

/// A Google service account key (shaped like one; the key itself is no key) that
/// the team registry's token server takes as `_json_key`'s password.
pub const GCP_KEY: &str = r#"{"type":"service_account","project_id":"p","client_email":"ci@p.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nMIIEv-not-a-real-key-Gk3y\n-----END PRIVATE KEY-----\n"}"#;

/// A token-auth registry holding `team/app:v1` and `team/app:v2` (a file and `cat`,
/// not runnable), with `admin` allowed everything and `ci` allowed to pull
/// `team/app` (password [`PASSWORD`]).
pub struct TeamRegistry {
    pub tokens: TokenServer,
    pub reg: LocalRegistry,
    /// The digest of `team/app:v1` and `v2`.
    pub digest: String,
}

impl TeamRegistry {
    pub fn start() -> Self {
        let tokens = TokenServer::start(
            vec![
                User::new("admin", "admin-pass-1", Grant::All),
                User::new("ci", PASSWORD, Grant::Pull(vec!["team/app".into()])),
                User::new("_json_key", GCP_KEY, Grant::Pull(vec!["team/app".into()])),
            ],
            vec![],
            TokenServerMode::GetAndPost,
        );
        let reg = LocalRegistry::token(&tokens);
        let img = TestImage::build(&[("hello.txt", b"hello")], &["/bin/cat", "/hello.txt"]);
        img.push(&reg, "team/app:v1");
        img.push(&reg, "team/app:v2");
        TeamRegistry {
            tokens,
            reg,
            digest: img.digest.clone(),
        }
    }

    pub fn url(&self) -> String {
        self.reg.authority()
    }

    /// Pushes a runnable image as `team/app:{tag}`: see [`busybox`].
    pub fn push_busybox(&self, tag: &str, script: &str) {
        busybox(script).push(&self.reg, &format!("team/app:{tag}"));
    }
}

/// A runnable image: the host's static busybox running `sh -c script`.
pub fn busybox(script: &str) -> TestImage {
    crate::require("runc");
    let busybox =
        std::fs::read("/bin/busybox").expect("busybox-static is installed by scripts/test.sh");
    TestImage::build(
        &[("bin/busybox", &busybox)],
        &["/bin/busybox", "sh", "-c", script],
    )
}

/// The host's static busybox as eStargz entries: `bin/busybox` (a few chunks of
/// 256 KiB) and `bin/sh` linked to it, for images that start lazily.
pub fn estargz_busybox() -> Vec<crate::estargz::Entry> {
    crate::require("runc");
    let busybox =
        std::fs::read("/bin/busybox").expect("busybox-static is installed by scripts/test.sh");
    vec![
        crate::estargz::Entry::dir("bin"),
        crate::estargz::Entry::file("bin/busybox", &busybox, 0o755),
        crate::estargz::Entry::symlink("bin/sh", "busybox"),
    ]
}
