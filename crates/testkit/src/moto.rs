//! `moto` in server mode on loopback: AWS KMS and Secrets Manager for the tests,
//! never AWS itself. Installed from PyPI by `scripts/test.sh` into a virtualenv
//! whose `moto_server` it names in `BERTH_MOTO_SERVER`.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::free_port;

pub struct Moto {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

static SHARED: OnceLock<Moto> = OnceLock::new();

fn moto_server() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("BERTH_MOTO_SERVER") {
        return p.into();
    }
    crate::require("moto_server")
}

impl Moto {
    /// The moto server shared by this test process, started on first use. It also
    /// points this process's AWS SDK configuration at it (and only at it): static
    /// test credentials, a region, no instance metadata lookups, no profile files.
    pub fn shared() -> &'static Moto {
        SHARED.get_or_init(|| crate::on_lasting_thread(Moto::start))
    }

    fn start() -> Moto {
        let port = free_port();
        // Never waited on: it lives as long as the test process, which its
        // parent-death signal ends it with.
        #[allow(clippy::zombie_processes)]
        let recording = std::env::temp_dir().join(format!("berth-moto-{port}.recording"));
        let _child = unsafe {
            Command::new(moto_server())
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                // Where its recorder keeps requests (see `recorded`), not the cwd.
                .env("MOTO_RECORDER_FILEPATH", &recording)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                })
                .spawn()
                .expect("start moto_server")
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        for (k, v) in [
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent/berth-test"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/berth-test"),
        ] {
            std::env::set_var(k, v);
        }
        for k in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ] {
            std::env::remove_var(k);
        }
        Moto { endpoint }
    }

    async fn config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .load()
            .await
    }

    pub async fn kms(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.config().await)
    }

    pub async fn secrets_manager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.config().await)
    }

    /// Starts moto's request recorder (its `/moto-api/recorder`), afresh.
    pub async fn start_recording(&self) {
        let http = reqwest::Client::new();
        for step in ["reset-recording", "start-recording"] {
            http.post(format!("{}/moto-api/recorder/{step}", self.endpoint))
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap();
        }
    }

    /// Stops the recorder; the bodies of the requests it saw since
    /// `start_recording` (form-encoded for STS), in order.
    pub async fn recorded(&self) -> Vec<String> {
        use base64::Engine;
        let http = reqwest::Client::new();
        http.post(format!(
            "{}/moto-api/recorder/stop-recording",
            self.endpoint
        ))
        .send()
        .await
        .unwrap();
        let text = http
            .get(format!(
                "{}/moto-api/recorder/download-recording",
                self.endpoint
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|r| {
                let body = r["body"].as_str().unwrap_or_default();
                if r["body_encoded"].as_bool() == Some(true) {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(body)
                        .unwrap_or_default();
                    String::from_utf8_lossy(&bytes).into_owned()
                } else {
                    body.to_owned()
                }
            })
            .collect()
    }

    /// A new symmetric KMS key; its id.
    pub async fn create_kms_key(&self) -> String {
        let out = self.kms().await.create_key().send().await.unwrap();
        out.key_metadata.unwrap().key_id
    }

    /// Names of the Secrets Manager secrets whose name starts with `prefix`.
    pub async fn secret_names(&self, prefix: &str) -> Vec<String> {
        let out = self
            .secrets_manager()
            .await
            .list_secrets()
            .send()
            .await
            .unwrap();
        let mut names: Vec<String> = out
            .secret_list
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.name)
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        names
    }
}
