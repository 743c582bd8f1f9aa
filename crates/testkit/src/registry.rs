use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::token_server::TokenServer;
use crate::{free_port, require};

/// A running `docker-registry`, killed on drop.
pub struct LocalRegistry {
    child: Child,
    pub port: u16,
    dir: TempDir,
    /// `user:password` with push rights, for skopeo.
    pub admin: (String, String),
}

impl LocalRegistry {
    /// A registry with htpasswd auth for `users` (name, password); the first one is
    /// used to push.
    pub fn htpasswd(users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        write_htpasswd(dir.path(), users);
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            dir.path().join("htpasswd").display()
        );
        Self::start(dir, &auth, (users[0].0.into(), users[0].1.into()))
    }

    /// A registry with token auth through `tokens`.
    pub fn token(tokens: &TokenServer) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("root.pem"), tokens.cert_pem()).unwrap();
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            tokens.realm(),
            crate::token_server::SERVICE,
            crate::token_server::ISSUER,
            dir.path().join("root.pem").display()
        );
        let admin = tokens.admin();
        Self::start(dir, &auth, admin)
    }

    /// A registry with htpasswd auth served over HTTPS, its certificate (for
    /// 127.0.0.1) signed by a private CA; returns the CA's PEM too.
    pub fn htpasswd_tls(users: &[(&str, &str)]) -> (Self, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        write_htpasswd(dir.path(), users);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "berth test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf_params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();
        let auth = format!(
            "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            dir.path().join("cert.pem").display(),
            dir.path().join("key.pem").display(),
            dir.path().join("htpasswd").display()
        );
        let reg = Self::start(dir, &auth, (users[0].0.into(), users[0].1.into()));
        (reg, ca.pem())
    }

    /// A registry with no auth at all.
    pub fn anonymous() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start(dir, "", (String::new(), String::new()))
    }

    fn start(dir: TempDir, auth: &str, admin: (String, String)) -> Self {
        let bin = require("docker-registry");
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-secret\n{auth}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = LocalRegistry {
            child,
            port,
            dir,
            admin,
        };
        reg.wait_ready();
        reg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry did not start on port {}: {log}", self.port);
    }

    /// `127.0.0.1:PORT`
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Kills the registry process (SIGKILL: it dies mid-answer).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the registry again on the same port and storage.
    pub fn revive(&mut self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .unwrap();
        self.child = Command::new(require("docker-registry"))
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        self.wait_ready();
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The htpasswd file of `users` (bcrypt, as distribution requires) in `dir`.
fn write_htpasswd(dir: &std::path::Path, users: &[(&str, &str)]) {
    let mut htpasswd = String::new();
    for (u, p) in users {
        let h = bcrypt::hash_with_result(p, 4)
            .expect("bcrypt")
            .format_for_version(bcrypt::Version::TwoY);
        htpasswd.push_str(&format!("{u}:{h}\n"));
    }
    std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
}
