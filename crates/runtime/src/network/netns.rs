//! A network namespace kept alive by a bind mount of its nsfs file, as `ip netns`
//! does, but at a path of berth's own (one per container, beside runc's state).
//! Namespaces are entered on a thread of their own (`unshare`/`setns` change the
//! calling thread only), never on a runtime worker. Written with libc calls: no
//! well-kept crate creates namespaces or dials into one without also wanting to
//! own the process (rtnetlink and netns-rs need a runtime of their own for this).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::NetworkError;

/// A container's network namespace, at `path`.
#[derive(Clone, Debug)]
pub struct Netns {
    path: PathBuf,
}

fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Brings `lo` up in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain syscalls on a socket this function owns and a zeroed ifreq
    // naming "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(last_error("socket"));
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(last_error("SIOCGIFFLAGS lo"));
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(last_error("SIOCSIFFLAGS lo"));
        }
    }
    Ok(())
}

/// Runs `f` on a fresh thread that joined the namespace open at `fd`.
fn in_namespace<T: Send + 'static>(
    fd: OwnedFd,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a namespace fd we own.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(last_error("setns"));
        }
        f()
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

impl Netns {
    /// The namespace bound at `path` (created by [`Netns::create`] earlier, perhaps
    /// by an earlier server process).
    pub fn at(path: &Path) -> Netns {
        Netns {
            path: path.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new namespace bound at `path`, with `lo` up and, when given, the nftables
    /// `rules` loaded by `nft` (a child forked from the namespace's thread runs in
    /// it).
    pub(super) fn create(
        path: &Path,
        rules: Option<(PathBuf, String)>,
    ) -> Result<Netns, NetworkError> {
        let ns = Netns::at(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(NetworkError::Namespace)?;
        }
        // A namespace left by a crash under the same name is replaced.
        ns.remove();
        let target = path.to_owned();
        let made = std::thread::spawn(move || -> Result<(), NetworkError> {
            // SAFETY: unshare of the network namespace changes this thread only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(NetworkError::Namespace(last_error("unshare")));
            }
            loopback_up().map_err(NetworkError::Namespace)?;
            if let Some((nft, rules)) = rules {
                load_rules(&nft, &rules)?;
            }
            std::fs::File::create(&target).map_err(NetworkError::Namespace)?;
            rustix::mount::mount_bind("/proc/thread-self/ns/net", &target)
                .map_err(|e| NetworkError::Namespace(e.into()))?;
            Ok(())
        })
        .join()
        .map_err(|_| NetworkError::Namespace(io::Error::other("the namespace thread panicked")))?;
        if let Err(e) = made {
            ns.remove();
            return Err(e);
        }
        Ok(ns)
    }

    /// Unbinds and deletes the namespace (pasta, watching the file, quits; the
    /// namespace itself ends with its last user).
    pub fn remove(&self) {
        let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.path.with_extension("pasta.pid"));
    }

    /// Whether a namespace is bound at the path (the file is then on nsfs, not on
    /// its directory's filesystem).
    pub fn exists(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        match (std::fs::metadata(&self.path), std::fs::metadata(dir)) {
            (Ok(f), Ok(d)) => f.dev() != d.dev(),
            _ => false,
        }
    }

    fn open(&self) -> io::Result<OwnedFd> {
        Ok(std::fs::File::open(&self.path)?.into())
    }

    /// A TCP connection to `port` on the namespace's loopback. The socket is
    /// created inside the namespace (which is all that binds it there), then
    /// connected from the caller's task.
    pub async fn dial(&self, port: u16) -> io::Result<tokio::net::TcpStream> {
        let fd = self.open()?;
        let socket = tokio::task::spawn_blocking(move || {
            in_namespace(fd, || {
                let s = std::net::TcpStream::from(socket_in_namespace()?);
                Ok(s)
            })
        })
        .await
        .map_err(io::Error::other)??;
        socket.set_nonblocking(true)?;
        let socket = tokio::net::TcpSocket::from_std_stream(socket);
        socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
    }
}

/// An unconnected IPv4 TCP socket in the calling thread's namespace.
fn socket_in_namespace() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) returns a fresh fd or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(last_error("socket"));
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `nft -f -` with `rules`, from the namespace's thread.
fn load_rules(nft: &Path, rules: &str) -> Result<(), NetworkError> {
    use std::io::Write;
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetworkError::Rules(e.to_string()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(rules.as_bytes())
        .map_err(|e| NetworkError::Rules(e.to_string()))?;
    let out = child
        .wait_with_output()
        .map_err(|e| NetworkError::Rules(e.to_string()))?;
    if !out.status.success() {
        return Err(NetworkError::Rules(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

/// Runs `command` inside the namespace at `path` (tests and diagnostics: `nft list
/// ruleset`), returning its stdout.
pub fn run_inside(path: &Path, command: &[&str]) -> io::Result<std::process::Output> {
    let fd: OwnedFd = std::fs::File::open(path)?.into();
    let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
    in_namespace(fd, move || {
        Command::new(&command[0])
            .args(&command[1..])
            .stdin(Stdio::null())
            .output()
    })
}
