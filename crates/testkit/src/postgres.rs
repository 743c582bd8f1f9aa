//! A private PostgreSQL server from Debian's packages, one per test process, on
//! 127.0.0.1, with `fsync=off`. Each test gets a database of its own.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::free_port;

pub struct Postgres {
    port: u16,
}

static SHARED: OnceLock<Postgres> = OnceLock::new();

/// The server's process and data directory, for [`stop_at_exit`]: a static is never
/// dropped, so without it every test process would leave ~60 MB in the temp dir.
static RUNNING: OnceLock<(libc::pid_t, PathBuf)> = OnceLock::new();

/// Runs when the test process exits (the harness returns from `main` or calls
/// `exit`): an immediate shutdown (SIGQUIT), then the data directory goes.
extern "C" fn stop_at_exit() {
    if let Some((pid, dir)) = RUNNING.get() {
        unsafe {
            libc::kill(*pid, libc::SIGQUIT);
            libc::waitpid(*pid, std::ptr::null_mut(), 0);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap_or_else(|_| panic!("PostgreSQL is not installed; run `scripts/test.sh` (it installs Debian's postgresql)"))
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("no /usr/lib/postgresql/*/bin/postgres")
}

/// Runs as the `postgres` user when we are root (PostgreSQL refuses root), and dies
/// with the process that started it.
fn as_postgres(cmd: &mut Command) -> &mut Command {
    let root = unsafe { libc::geteuid() } == 0;
    let ids = if root {
        let name = std::ffi::CString::new("postgres").unwrap();
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        assert!(
            !pw.is_null(),
            "no postgres user: install Debian's postgresql"
        );
        Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
    } else {
        None
    };
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = ids {
                if libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // After setuid, which clears it: stop with the test process.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

impl Postgres {
    /// The server shared by this test process, started on first use.
    pub fn shared() -> &'static Postgres {
        SHARED.get_or_init(|| crate::on_lasting_thread(Postgres::start))
    }

    fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("berth-pg")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let name = std::ffi::CString::new("postgres").unwrap();
            let pw = unsafe { libc::getpwnam(name.as_ptr()) };
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
            std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
        }
        let out = as_postgres(
            Command::new(bin.join("initdb"))
                .args(["-U", "berth", "--auth=trust", "-E", "UTF8", "-D"])
                .arg(&data),
        )
        .output()
        .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        // Waited on by `stop_at_exit`; its parent-death signal ends it should the test
        // process die without exiting.
        #[allow(clippy::zombie_processes)]
        let child = as_postgres(
            Command::new(bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
                .arg(dir.path())
                .args([
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=300",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .spawn()
        .expect("start postgres");
        RUNNING
            .set((child.id() as libc::pid_t, dir.keep()))
            .expect("one PostgreSQL per test process");
        unsafe { libc::atexit(stop_at_exit) };
        let pg = Postgres { port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(bin.join("psql"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "berth",
                    "-d",
                    "postgres",
                    "-qAtc",
                    "SELECT 1",
                ])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "postgres did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    /// A new empty database; returns its URL.
    /// The server's data directory (its tables and WAL), for the tests that look
    /// for a secret in every byte a database keeps.
    pub fn data_dir(&self) -> PathBuf {
        RUNNING
            .get()
            .map(|(_, dir)| dir.join("data"))
            .expect("the shared server runs")
    }

    pub fn create_database(&self) -> String {
        let name = format!("berth_{:016x}", rand::random::<u64>());
        self.psql(&format!("CREATE DATABASE {name}"));
        format!("postgres://berth@127.0.0.1:{}/{name}", self.port)
    }

    /// What a PostgreSQL restart looks like to the clients of the database at
    /// `url` (created by [`Postgres::create_database`]), without disturbing the
    /// other tests' databases on this server: every connection to it is
    /// terminated, and new ones are refused for `down`.
    pub fn outage(&self, url: &str, down: Duration) {
        let name = url.rsplit('/').next().expect("a database URL");
        self.psql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"));
        self.psql(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}'"
        ));
        std::thread::sleep(down);
        self.psql(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"));
    }

    fn psql(&self, sql: &str) {
        let out = Command::new(bin_dir().join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "berth",
                "-d",
                "postgres",
                "-qAtc",
            ])
            .arg(sql)
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
