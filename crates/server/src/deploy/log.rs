//! A deployment's log: the infrastructure lines berth appends (each step, the
//! registry's own error text), then the container's output. Read in chunks,
//! followed while the deployment runs, and forwarded from the replica that keeps it.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
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
    let Ok(mut f) = std::fs::File::open(path) else {
        return 0;
    };
    let Ok(len) = f.metadata().map(|m| m.len()) else {
        return 0;
    };
    // A trailing newline ends the last line; it does not start another.
    let mut end = len;
    let mut newlines = 0;
    let mut buf = vec![0u8; 64 << 10];
    let mut first = true;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        if f.seek(SeekFrom::Start(start)).is_err() || f.read_exact(chunk).is_err() {
            return 0;
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
                return start + i as u64 + 1;
            }
        }
        first = false;
        end = start;
    }
    0
}

/// The log from byte `from`, chunk by chunk, then (when `ended` is given) what is
/// appended until `ended` says the deployment is over.
pub fn stream<F, Fut>(
    path: PathBuf,
    from: u64,
    ended: Option<F>,
) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>>
where
    F: Fn() -> Fut + Clone,
    Fut: std::future::Future<Output = bool>,
{
    futures_util::stream::unfold((from, false), move |(offset, done)| {
        let path = path.clone();
        let ended = ended.clone();
        async move {
            if done {
                return None;
            }
            loop {
                let chunk = read_from(&path, offset);
                if !chunk.is_empty() {
                    let next = offset + chunk.len() as u64;
                    return Some((Ok(chunk), (next, false)));
                }
                let over = match &ended {
                    None => true,
                    Some(ended) => ended().await,
                };
                if over {
                    return Some((Ok(Vec::new()), (offset, true)));
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

#[cfg(test)]
mod tests {
    use super::*;

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
