//! A deployment's log: the infrastructure lines berth appends (each step, the
//! registry's own error text), then the container's output. Read in chunks,
//! followed while the deployment runs, and forwarded from the replica that keeps it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub use berth_runtime::log::same_file;
use berth_runtime::log::Logs;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::Stream;

/// A request that one replica forwarded to another carries this header (and is
/// never forwarded again).
pub const FORWARDED: &str = "x-berth-forwarded";

/// How much of a log one read returns: a follower reads only what was appended.
const CHUNK: u64 = 1 << 20;

/// Appends one timestamped line to an infrastructure log.
pub use berth_runtime::log::append_line as append;

/// What the log holds past `offset`, at most [`CHUNK`] bytes.
pub fn read_from(path: &Path, offset: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.take(CHUNK).read_to_end(&mut buf);
        }
    }
    buf
}

/// Where the last `n` lines of the log begin: read backwards a chunk at a time, so
/// that a huge log is never read whole.
pub fn offset_of_last_lines(path: &Path, n: usize) -> u64 {
    let Ok(mut f) = File::open(path) else {
        return 0;
    };
    let len = f.metadata().map_or(0, |m| m.len());
    last_lines_start(&mut f, len, n).0
}

/// Where the last `n` lines of the first `len` bytes of `f` begin, and how many
/// lines were found (fewer than `n` when it holds fewer: then from its start).
fn last_lines_start(f: &mut File, len: u64, n: usize) -> (u64, usize) {
    if n == 0 {
        return (len, 0);
    }
    // A trailing newline ends the last line; it does not start another.
    let mut end = len;
    let mut newlines = 0;
    let mut buf = vec![0u8; 64 << 10];
    let mut first = true;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        if f.seek(SeekFrom::Start(start)).is_err() || f.read_exact(chunk).is_err() {
            return (0, newlines);
        }
        for (i, b) in chunk.iter().enumerate().rev() {
            if *b != b'\n' {
                continue;
            }
            if first && start + i as u64 == len - 1 {
                first = false;
                continue;
            }
            newlines += 1;
            if newlines == n {
                return (start + i as u64 + 1, n);
            }
        }
        first = false;
        end = start;
    }
    // Every line of the file, the first one (with no newline before it) included.
    (0, if len > 0 { newlines + 1 } else { 0 })
}

/// What to read of a deployment's logs.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    /// Only the last N lines (of the infrastructure log and the output together).
    pub tail: Option<usize>,
    /// Only lines written at or after this time.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
}

/// `?since=`: an RFC 3339 time, or a duration back from now (`90s`, `10m`, `2h`,
/// `1d`), as `docker logs --since` takes them.
pub fn parse_since(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.to_utc());
    }
    let unit = text.chars().last()?;
    let n: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => n,
        'm' => n.checked_mul(60)?,
        'h' => n.checked_mul(3600)?,
        'd' => n.checked_mul(86400)?,
        _ => return None,
    };
    chrono::Utc::now().checked_sub_signed(chrono::TimeDelta::try_seconds(secs)?)
}

/// `len` cut back to the end of the last complete line: the pump writes a line's
/// stamp, text and newline one after another, so a file being written can end
/// mid-line, and what follows the last newline is read once it is complete (by
/// following). A line longer than the look-back is left whole.
fn whole_lines(f: &File, len: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    const LOOK_BACK: u64 = 64 << 10;
    let start = len.saturating_sub(LOOK_BACK);
    let mut buf = vec![0u8; (len - start) as usize];
    if f.read_exact_at(&mut buf, start).is_err() {
        return len;
    }
    match buf.iter().rposition(|b| *b == b'\n') {
        Some(nl) => start + nl as u64 + 1,
        None if start == 0 => 0,
        None => len,
    }
}

/// The state of one read: the files opened when it began (a rotation during the
/// read renames them, it does not change what is read), then, when following,
/// the infrastructure log and whichever file is the current output.
struct Reader {
    logs: Logs,
    /// The files to read, each up to its length when the read began (what is
    /// appended later is for following).
    queue: VecDeque<(File, u64)>,
    infra: Option<File>,
    output: Option<File>,
    filter: Since,
    ending: bool,
}

impl Reader {
    fn open(logs: Logs, reading: &Reading) -> Self {
        let mut opened: Vec<(PathBuf, File, u64)> = logs
            .files()
            .into_iter()
            .filter_map(|p| {
                let f = File::open(&p).ok()?;
                let len = whole_lines(&f, f.metadata().ok()?.len());
                Some((p, f, len))
            })
            .collect();
        if let Some(mut n) = reading.tail {
            let mut first = 0;
            for (i, (_, f, len)) in opened.iter_mut().enumerate().rev() {
                let (at, found) = last_lines_start(f, *len, n);
                let _ = f.seek(SeekFrom::Start(at));
                if found >= n {
                    first = i;
                    break;
                }
                n -= found;
            }
            opened.drain(..first);
        } else {
            for (_, f, _) in &mut opened {
                let _ = f.seek(SeekFrom::Start(0));
            }
        }
        // Clones share the file position: the follower goes on where the read ended.
        let clone = |path: &Path| {
            opened
                .iter()
                .find(|(p, _, _)| p == path)
                .and_then(|(_, f, _)| f.try_clone().ok())
        };
        let infra = clone(&logs.infra).or_else(|| {
            // Tailed past it: follow it from its end.
            let mut f = File::open(&logs.infra).ok()?;
            f.seek(SeekFrom::End(0)).ok()?;
            Some(f)
        });
        let output = clone(&logs.output);
        Reader {
            infra,
            output,
            queue: opened.into_iter().map(|(_, f, len)| (f, len)).collect(),
            filter: Since::new(reading.since),
            logs,
            ending: false,
        }
    }

    /// The next chunk of the files opened at the start; `None` once they are read.
    fn next_opened(&mut self) -> Option<Vec<u8>> {
        while let Some((f, len)) = self.queue.front_mut() {
            let at = f.stream_position().unwrap_or(*len);
            let mut buf = Vec::new();
            let _ = f
                .take(CHUNK.min(len.saturating_sub(at)))
                .read_to_end(&mut buf);
            if buf.is_empty() {
                self.queue.pop_front();
                continue;
            }
            if !buf.ends_with(b"\n") && buf.len() as u64 == CHUNK {
                // Cut at a line, so that a line never spans two chunks' filters
                // needlessly (the filter copes either way).
                if let Some(nl) = buf.iter().rposition(|b| *b == b'\n') {
                    let back = (buf.len() - nl - 1) as i64;
                    buf.truncate(nl + 1);
                    let _ = f.seek(SeekFrom::Current(-back));
                }
            }
            return Some(buf);
        }
        None
    }

    /// What was appended since the last look, whole lines only (a line being
    /// written is read once it is complete, so that the two files' lines never
    /// interleave mid-line).
    fn next_appended(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(f) = &mut self.infra {
            out.extend(read_lines(f));
        } else if let Ok(f) = File::open(&self.logs.infra) {
            self.infra = Some(f);
            return self.next_appended();
        }
        let rotated = match &self.output {
            Some(f) => !same_file(f, &self.logs.output),
            None => true,
        };
        if let Some(f) = &mut self.output {
            out.extend(read_lines(f));
        }
        if out.is_empty() && rotated {
            // The current output file is another one now (rotated, or created since
            // the read began): finish the old one, then follow the new from its start.
            if let Some(f) = &mut self.output {
                let mut rest = Vec::new();
                let _ = f.take(CHUNK).read_to_end(&mut rest);
                if !rest.is_empty() {
                    return rest;
                }
            }
            if let Ok(f) = File::open(&self.logs.output) {
                self.output = Some(f);
            }
        }
        out
    }
}

/// Up to [`CHUNK`] bytes of `f` from its position, ending at a newline (the rest
/// is left for the next read).
fn read_lines(f: &mut File) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = f.take(CHUNK).read_to_end(&mut buf);
    if let Some(nl) = buf.iter().rposition(|b| *b == b'\n') {
        let back = (buf.len() - nl - 1) as i64;
        if back > 0 {
            buf.truncate(nl + 1);
            let _ = f.seek(SeekFrom::Current(-back));
        }
    } else if (buf.len() as u64) < CHUNK {
        let _ = f.seek(SeekFrom::Current(-(buf.len() as i64)));
        buf.clear();
    }
    buf
}

/// `?since=`: keeps the lines stamped at or after a time; a line without a stamp
/// goes with the one before it. Lines may arrive split across chunks.
struct Since {
    since: Option<chrono::DateTime<chrono::Utc>>,
    partial: Vec<u8>,
    keeping: bool,
}

impl Since {
    fn new(since: Option<chrono::DateTime<chrono::Utc>>) -> Self {
        Since {
            since,
            partial: Vec::new(),
            keeping: false,
        }
    }

    fn filter(&mut self, chunk: Vec<u8>) -> Vec<u8> {
        let Some(since) = self.since else {
            return chunk;
        };
        self.partial.extend_from_slice(&chunk);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let whole = std::mem::replace(&mut self.partial, rest);
        let mut out = Vec::new();
        for line in whole.split_inclusive(|b| *b == b'\n') {
            if let Some(at) = berth_runtime::log::stamped_at(line) {
                self.keeping = at >= since;
            }
            if self.keeping {
                out.extend_from_slice(line);
            }
        }
        out
    }

    fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.partial);
        if rest.is_empty() || self.since.is_none() {
            return rest;
        }
        let mut chunk = rest;
        chunk.push(b'\n');
        let mut out = self.filter(chunk);
        out.pop();
        out
    }
}

/// A deployment's logs (the infrastructure log, then the container output from
/// its oldest rotated file), chunk by chunk, never whole in memory; then, when
/// `ended` is given, what is appended to either until `ended` says the deployment
/// is over.
pub fn stream<F, Fut>(
    logs: Logs,
    reading: Reading,
    ended: Option<F>,
) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>>
where
    F: Fn() -> Fut + Clone,
    Fut: std::future::Future<Output = bool>,
{
    let reader = Reader::open(logs, &reading);
    futures_util::stream::unfold(Some(reader), move |reader| {
        let ended = ended.clone();
        async move {
            let mut r = reader?;
            if let Some(chunk) = r.next_opened() {
                let out = r.filter.filter(chunk);
                return Some((Ok(out), Some(r)));
            }
            let Some(ended) = &ended else {
                let out = r.filter.finish();
                return Some((Ok(out), None));
            };
            loop {
                let chunk = r.next_appended();
                if !chunk.is_empty() {
                    let out = r.filter.filter(chunk);
                    return Some((Ok(out), Some(r)));
                }
                if r.ending {
                    let out = r.filter.finish();
                    return Some((Ok(out), None));
                }
                if ended().await {
                    // One more look: what was written just before the end.
                    r.ending = true;
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    })
}

/// Asks the replica at `replica` for `path_and_query` with the caller's own
/// `Authorization` (which that replica checks again), marked as forwarded.
pub async fn forward(
    replica: &str,
    path_and_query: &str,
    authorization: Option<&reqwest::header::HeaderValue>,
) -> Result<reqwest::Response, reqwest::Error> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client")
    });
    let mut req = client
        .get(format!("{replica}{path_and_query}"))
        .header(FORWARDED, "1");
    if let Some(auth) = authorization {
        let mut auth = auth.clone();
        auth.set_sensitive(true);
        req = req.header(reqwest::header::AUTHORIZATION, auth);
    }
    req.send().await
}

/// Followed streams one user may hold open at once on a replica: a terminal per
/// service of a busy project, with room to spare.
pub const FOLLOWS_PER_USER: usize = 8;
/// Followed streams a replica holds open at once, everyone's together.
pub const FOLLOWS_PER_REPLICA: usize = 256;

/// The followed log streams open on this replica. A follower is cheap to open and
/// costs for as long as its client keeps it: a connection, open files, and a
/// database read every 200 ms while nothing is appended; so they are counted,
/// per user and in all, and a stream's place is given back when it is dropped
/// (its end, or its client gone).
pub struct Followers {
    per_user: usize,
    per_replica: usize,
    open: std::sync::Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_user: std::collections::HashMap<berth_store::UserId, usize>,
}

/// Which cap a refused follower met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    User(usize),
    Replica(usize),
}

/// One admitted follower's place, given back on drop.
pub struct Following {
    followers: std::sync::Arc<Followers>,
    user: berth_store::UserId,
}

impl Default for Followers {
    fn default() -> Self {
        Followers::new(FOLLOWS_PER_USER, FOLLOWS_PER_REPLICA)
    }
}

impl Followers {
    pub fn new(per_user: usize, per_replica: usize) -> Self {
        Followers {
            per_user,
            per_replica,
            open: Default::default(),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        // The counts stay consistent whatever panicked while holding the lock
        // (every change is one statement), so a poisoned lock is still good.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for one more stream of `user`, or the cap it would pass.
    pub fn admit(
        self: &std::sync::Arc<Self>,
        user: &berth_store::UserId,
    ) -> Result<Following, Full> {
        let mut open = self.open();
        let mine = open.by_user.get(user).copied().unwrap_or(0);
        if mine >= self.per_user {
            return Err(Full::User(self.per_user));
        }
        if open.total >= self.per_replica {
            return Err(Full::Replica(self.per_replica));
        }
        open.total += 1;
        *open.by_user.entry(user.clone()).or_default() += 1;
        Ok(Following {
            followers: self.clone(),
            user: user.clone(),
        })
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut open = self.followers.open();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                // No entry stays for a user who follows nothing.
                open.by_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_are_capped_per_user_and_per_replica_and_give_back_their_place() {
        let f = std::sync::Arc::new(Followers::new(2, 3));
        let (a, b) = (
            berth_store::UserId::from("a".to_owned()),
            berth_store::UserId::from("b".to_owned()),
        );
        let a1 = f.admit(&a).unwrap();
        let _a2 = f.admit(&a).unwrap();
        assert_eq!(f.admit(&a).err(), Some(Full::User(2)));
        let _b1 = f.admit(&b).unwrap();
        assert_eq!(f.admit(&b).err(), Some(Full::Replica(3)));
        drop(a1);
        let _b2 = f.admit(&b).unwrap();
        assert_eq!(f.admit(&a).err(), Some(Full::Replica(3)));
    }

    #[test]
    fn a_read_stops_at_the_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("output");
        for (text, want) in [
            (&b"[t] a\n[t] b\n[2026-"[..], 12),
            (b"[t] a\n", 6),
            (b"[2026-", 0),
            (b"", 0),
        ] {
            std::fs::write(&p, text).unwrap();
            let f = File::open(&p).unwrap();
            assert_eq!(whole_lines(&f, text.len() as u64), want, "{text:?}");
        }
    }

    #[test]
    fn reads_from_an_offset_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d/log");
        append(&path, "one");
        append(&path, "two");
        let all = read_from(&path, 0);
        let text = String::from_utf8(all.clone()).unwrap();
        assert!(
            text.lines().count() == 2 && text.ends_with("] two\n"),
            "{text}"
        );
        let first_line = text.find('\n').unwrap() as u64 + 1;
        assert!(String::from_utf8(read_from(&path, first_line))
            .unwrap()
            .ends_with("] two\n"));
        assert!(read_from(&path, all.len() as u64).is_empty());
        assert!(read_from(&dir.path().join("none"), 0).is_empty());
    }

    /// Reads the whole stream (not following), and the largest chunk it gave.
    async fn read_all(logs: &Logs, reading: Reading) -> (String, usize) {
        use futures_util::StreamExt;
        let chunks: Vec<Vec<u8>> = stream(
            logs.clone(),
            reading,
            None::<fn() -> std::future::Ready<bool>>,
        )
        .map(|c| c.unwrap())
        .collect()
        .await;
        let largest = chunks.iter().map(Vec::len).max().unwrap_or(0);
        (String::from_utf8(chunks.concat()).unwrap(), largest)
    }

    #[tokio::test]
    async fn the_infrastructure_log_then_every_output_file_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::in_dir(
            dir.path(),
            berth_runtime::log::Rotation {
                max_bytes: 4 << 20,
                max_files: 3,
            },
        );
        std::fs::write(&logs.infra, "[2026-01-01T00:00:00.000Z] pulled\n").unwrap();
        let lines = |day: u32, n: usize| -> String {
            (0..n)
                .map(|i| format!("[2026-01-{day:02}T00:00:00.000Z] out {day} {i}\n"))
                .collect()
        };
        std::fs::write(logs.output_file(2), lines(2, 100_000)).unwrap(); // ~3.6 MB
        std::fs::write(logs.output_file(1), lines(3, 100_000)).unwrap();
        std::fs::write(&logs.output, lines(4, 10)).unwrap();
        let (all, largest) = read_all(&logs, Reading::default()).await;
        assert!(largest as u64 <= CHUNK, "a chunk of {largest} bytes");
        assert_eq!(all.lines().count(), 1 + 200_010);
        assert!(all.starts_with("[2026-01-01T00:00:00.000Z] pulled\n[2026-01-02"));
        assert!(all.ends_with("out 4 9\n"));
        // The last lines, across files.
        let (tail, _) = read_all(
            &logs,
            Reading {
                tail: Some(12),
                since: None,
            },
        )
        .await;
        let tail: Vec<&str> = tail.lines().collect();
        assert_eq!(tail.len(), 12);
        assert!(
            tail[0].ends_with("out 3 99998") && tail[11].ends_with("out 4 9"),
            "{tail:?}"
        );
        let (everything, _) = read_all(
            &logs,
            Reading {
                tail: Some(10_000_000),
                since: None,
            },
        )
        .await;
        assert_eq!(everything, all);
        // Since a time: only the lines stamped from then on.
        let since = parse_since("2026-01-03T00:00:00Z");
        let (newer, _) = read_all(&logs, Reading { tail: None, since }).await;
        assert_eq!(newer.lines().count(), 100_010);
        assert!(newer.starts_with("[2026-01-03T00:00:00.000Z] out 3 0\n"));
        assert!(parse_since("10m").unwrap() < chrono::Utc::now());
        assert!(parse_since("10x").is_none() && parse_since("").is_none());
    }

    #[test]
    fn the_last_lines_are_found_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let text: String = (0..100_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let tail = |n| String::from_utf8(read_from(&path, offset_of_last_lines(&path, n))).unwrap();
        assert_eq!(tail(2), "line 99998\nline 99999\n");
        assert_eq!(tail(1), "line 99999\n");
        assert!(tail(100_000).starts_with("line 0\n"));
        assert!(tail(500_000).starts_with("line 0\n"));
        std::fs::write(&path, "a\nb").unwrap();
        assert_eq!(tail(1), "b");
        assert_eq!(offset_of_last_lines(&dir.path().join("none"), 3), 0);
    }
}
