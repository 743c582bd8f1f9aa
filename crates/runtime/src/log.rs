//! A deployment's log file: the timestamped infrastructure lines berth writes and
//! the container's output, appended to one file that only the server reads (0600).
//! The one place that opens it for writing.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens the log for appending, creating it (and its directory) if needed.
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

/// Appends one timestamped line; a log that cannot be written is not an error
/// to the deploy it describes.
pub fn append_line(path: &Path, line: &str) {
    if let Ok(mut f) = open_for_append(path) {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let _ = writeln!(f, "[{at}] {line}");
    }
}
