//! A deployment's logs, the one place that writes them:
//! - the **infrastructure log** (`log`): the timestamped lines berth writes (each
//!   step of the deploy, an OOM kill, an exit, a restart); small, bounded by what
//!   berth says;
//! - the **container output** (`output`, `output.1`, ...): what the container
//!   writes to stdout and stderr, timestamped a line at a time like the
//!   infrastructure lines, and **rotated** as Docker's `json-file` driver rotates
//!   (`max-size`, `max-file`): past [`Rotation::max_bytes`] the file becomes
//!   `output.1` (the older ones shift up, the oldest is dropped), so a container
//!   that writes as fast as it can keeps at most `max_bytes * max_files` on disk.
//!
//! The container does not write the file itself: its stdout and stderr are a FIFO
//! (`output.fifo`) that a [`pump`] drains into the rotating files. The FIFO outlives
//! the server process, as containerd-shim's FIFOs do for dockerd's live restore: a
//! container keeps running while the server restarts (what it writes meanwhile
//! waits in the pipe, up to the kernel's 64 KiB, and then its writes block), and the
//! next server process pumps the same FIFO again when it adopts the container.
//!
//! Every file is 0600: only the server reads them.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Opens a log for appending, creating it (and its directory) if needed.
pub fn open_for_append(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The prefix of every stored line: `[2026-11-24T02:30:00.123Z] `.
pub fn stamp() -> String {
    format!(
        "[{}] ",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

/// When a stored line was written (its [`stamp`]), if it has one.
pub fn stamped_at(line: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let rest = line.strip_prefix(b"[")?;
    let end = rest.iter().position(|b| *b == b']')?;
    let text = std::str::from_utf8(&rest[..end]).ok()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.to_utc())
}

/// Appends one timestamped line; a log that cannot be written is not an error
/// to the deploy it describes.
pub fn append_line(path: &Path, line: &str) {
    if let Ok(mut f) = open_for_append(path) {
        let _ = writeln!(f, "{}{line}", stamp());
    }
}

/// How much container output is kept per deployment (Docker's `max-size` and
/// `max-file`). The defaults are those of Docker's `local` log driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// One file's size before it is rotated.
    pub max_bytes: u64,
    /// How many files are kept, the current one included (at least 1).
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: 20 << 20,
            max_files: 5,
        }
    }
}

/// Where one deployment's logs live.
#[derive(Clone, Debug)]
pub struct Logs {
    /// The infrastructure log.
    pub infra: PathBuf,
    /// The current container output file; rotated ones are `output.1`, `output.2`...
    pub output: PathBuf,
    pub rotation: Rotation,
}

impl Logs {
    /// The logs of the deployment whose directory is `dir`.
    pub fn in_dir(dir: &Path, rotation: Rotation) -> Self {
        Logs {
            infra: dir.join("log"),
            output: dir.join("output"),
            rotation,
        }
    }

    /// The FIFO the container writes into.
    pub fn fifo(&self) -> PathBuf {
        self.output.with_extension("fifo")
    }

    /// Rotated output file `n` (`0` is the current one).
    pub fn output_file(&self, n: u32) -> PathBuf {
        if n == 0 {
            self.output.clone()
        } else {
            let mut p = self.output.clone().into_os_string();
            p.push(format!(".{n}"));
            p.into()
        }
    }

    /// Every file of the log in reading order: the infrastructure log, then the
    /// container output from the oldest rotated file to the current one. Files that
    /// do not exist are left out.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.infra.clone()];
        files.extend(
            (0..self.rotation.max_files.max(1))
                .rev()
                .map(|n| self.output_file(n)),
        );
        files.retain(|f| f.exists());
        files
    }

    /// Creates the FIFO (if it is not there) and opens it for the container: read
    /// and write, so that opening never blocks and the container's writes never
    /// fail for want of a reader (they wait for one instead).
    pub fn open_fifo_for_container(&self) -> std::io::Result<std::fs::File> {
        let fifo = self.fifo();
        if let Some(dir) = fifo.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        ) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
    }
}

/// The longest line stored as one: a longer one is split (as Docker splits at
/// 16 KiB), so that a container that never writes a newline is still capped.
const MAX_LINE: usize = 16 << 10;

/// How long a partial line (a prompt, a progress dot) waits for its newline.
const PARTIAL_WAIT: Duration = Duration::from_secs(1);

/// The rotating output files, written a line at a time.
struct Rotating {
    logs: Logs,
    file: std::io::BufWriter<std::fs::File>,
    size: u64,
}

impl Rotating {
    fn open(logs: Logs) -> std::io::Result<Self> {
        let file = open_for_append(&logs.output)?;
        let size = file.metadata()?.len();
        Ok(Rotating {
            file: std::io::BufWriter::with_capacity(64 << 10, file),
            size,
            logs,
        })
    }

    /// Writes `stamp` + `line` + newline, rotating first when it would not fit.
    fn line(&mut self, stamp: &str, line: &[u8]) -> std::io::Result<()> {
        let len = (stamp.len() + line.len() + 1) as u64;
        if self.size > 0 && self.size + len > self.logs.rotation.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(stamp.as_bytes())?;
        self.file.write_all(line)?;
        self.file.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let keep = self.logs.rotation.max_files.max(1);
        if keep == 1 {
            std::fs::remove_file(&self.logs.output)?;
        } else {
            for n in (1..keep).rev() {
                let from = self.logs.output_file(n - 1);
                if from.exists() {
                    std::fs::rename(&from, self.logs.output_file(n))?;
                }
            }
        }
        self.file =
            std::io::BufWriter::with_capacity(64 << 10, open_for_append(&self.logs.output)?);
        self.size = 0;
        Ok(())
    }
}

/// A pump running for a container: `done` is set once its FIFO has no writer left
/// (the container ended) and everything it wrote is in the files.
#[derive(Clone, Debug, Default)]
pub struct Pump {
    done: Arc<AtomicBool>,
}

impl Pump {
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// Drains the FIFO of `logs` into its rotating output files, on a thread of its own
/// (one per running container: blocking reads of a pipe are what threads are for),
/// until no writer is left. The reader is opened without blocking: with no
/// container holding the FIFO, the pump ends at once.
pub fn pump(logs: &Logs) -> std::io::Result<Pump> {
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(logs.fifo())?;
    let mut out = Rotating::open(logs.clone())?;
    let state = Pump::default();
    let done = state.done.clone();
    std::thread::Builder::new()
        .name("berth-log-pump".into())
        .spawn(move || {
            if let Err(e) = drain(fifo, &mut out) {
                tracing::warn!(log = %out.logs.output.display(), error = %e, "container output");
            }
            let _ = out.file.flush();
            done.store(true, Ordering::Release);
        })?;
    Ok(state)
}

fn drain(mut fifo: std::fs::File, out: &mut Rotating) -> std::io::Result<()> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut buf = vec![0u8; 64 << 10];
    let mut partial: Vec<u8> = Vec::new();
    let wait = Timespec {
        tv_sec: PARTIAL_WAIT.as_secs() as i64,
        tv_nsec: 0,
    };
    loop {
        let ready = {
            let mut fds = [PollFd::new(&fifo, PollFlags::IN)];
            match poll(&mut fds, Some(&wait)) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        // A read even when poll saw nothing: with no writer left it is the end
        // (poll says so only for writers that came after the reader opened).
        let n = match fifo.read(&mut buf) {
            Ok(0) => break, // no writer left
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if ready == 0 && !partial.is_empty() {
                    // Quiet for a while: a partial line is written as it is.
                    out.line(&stamp(), &partial)?;
                    partial.clear();
                    out.file.flush()?;
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // One stamp per read: a burst of lines shares its time.
        let stamp = stamp();
        let mut rest = &buf[..n];
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            if partial.is_empty() {
                write_split(out, &stamp, &rest[..nl])?;
            } else {
                partial.extend_from_slice(&rest[..nl]);
                write_split(out, &stamp, &partial)?;
                partial.clear();
            }
            rest = &rest[nl + 1..];
        }
        partial.extend_from_slice(rest);
        while partial.len() >= MAX_LINE {
            out.line(&stamp, &partial[..MAX_LINE])?;
            partial.drain(..MAX_LINE);
        }
        out.file.flush()?;
    }
    if !partial.is_empty() {
        out.line(&stamp(), &partial)?;
    }
    Ok(())
}

/// One line, in pieces of at most [`MAX_LINE`].
fn write_split(out: &mut Rotating, stamp: &str, line: &[u8]) -> std::io::Result<()> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return out.line(stamp, line);
    }
    for piece in line.chunks(MAX_LINE) {
        out.line(stamp, piece)?;
    }
    Ok(())
}

/// The file at `path` is still the one `f` has open (it was not rotated away).
pub fn same_file(f: &std::fs::File, path: &Path) -> bool {
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logs(dir: &Path, max_bytes: u64, max_files: u32) -> Logs {
        Logs::in_dir(
            dir,
            Rotation {
                max_bytes,
                max_files,
            },
        )
    }

    fn wait_done(p: &Pump) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !p.is_done() {
            assert!(std::time::Instant::now() < until, "the pump did not end");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn output_is_stamped_a_line_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let logs = logs(dir.path(), 1 << 20, 2);
        let mut w = logs.open_fifo_for_container().unwrap();
        let p = pump(&logs).unwrap();
        w.write_all(b"one\ntw").unwrap();
        w.write_all(b"o\r\n\nthree").unwrap();
        drop(w);
        wait_done(&p);
        let text = std::fs::read_to_string(&logs.output).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        for (line, want) in lines.iter().zip(["one", "two", "", "three"]) {
            assert!(stamped_at(line.as_bytes()).is_some(), "{line}");
            assert_eq!(line.split_once("] ").unwrap().1, want);
        }
        // A pump on a FIFO nobody holds ends at once.
        wait_done(&pump(&logs).unwrap());
        use std::os::unix::fs::PermissionsExt;
        for f in [logs.output.clone(), logs.fifo()] {
            assert_eq!(
                std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn output_rotates_under_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let logs = logs(dir.path(), 64 << 10, 3);
        let mut w = logs.open_fifo_for_container().unwrap();
        let p = pump(&logs).unwrap();
        let writer = std::thread::spawn(move || {
            let line = b"y\n".repeat(4096);
            for _ in 0..200 {
                w.write_all(&line).unwrap(); // 1.6 MB in all
            }
        });
        writer.join().unwrap();
        wait_done(&p);
        let files = logs.files();
        assert_eq!(files.len(), 3, "{files:?}"); // log (none), output.2, output.1, output
        let total: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        assert!(total <= 3 * (64 << 10), "{total} bytes kept");
        for f in &files {
            assert!(std::fs::metadata(f).unwrap().len() <= 64 << 10);
        }
        assert!(!logs.output_file(3).exists());
        // A line longer than the longest stored is split, not kept whole.
        let dir = tempfile::tempdir().unwrap();
        let logs = logs_of(dir.path());
        let mut w = logs.open_fifo_for_container().unwrap();
        let p = pump(&logs).unwrap();
        w.write_all(&vec![b'x'; 40 << 10]).unwrap();
        drop(w);
        wait_done(&p);
        let text = std::fs::read_to_string(&logs.output).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().all(|l| l.len() <= MAX_LINE + 40));
    }

    fn logs_of(dir: &Path) -> Logs {
        Logs::in_dir(dir, Rotation::default())
    }

    #[test]
    fn stamps_are_read_back() {
        let t = stamped_at(b"[2026-11-24T02:30:00.123Z] hello").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-24T02:30:00.123+00:00");
        assert!(stamped_at(b"hello").is_none());
        assert!(stamped_at(b"[not a time] x").is_none());
    }
}
