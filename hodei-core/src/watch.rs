//! Noticing that configuration files changed, by their modification times.
//!
//! The server's TLS files and revoked-serials file, its API tokens file and the
//! agent's client certificates are all re-read the same way: a watcher takes a
//! [`FileStamps`] of the files on every tick and reloads when it differs from
//! the one taken when they were last loaded. Taking the stamps *before* reading
//! means a change racing with the read is seen on the next tick.
//!
//! ```
//! use hodei_core::watch::FileStamps;
//!
//! let dir = std::env::temp_dir();
//! let before = FileStamps::of([Some(dir.as_path()), None]);
//! assert_eq!(before, FileStamps::of([Some(dir.as_path()), None]));
//! ```

use std::path::Path;
use std::time::SystemTime;

/// The modification times of a list of optional files (`None` for a file that
/// is not configured or cannot be read). Equal stamps = nothing changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStamps(Vec<Option<SystemTime>>);

impl FileStamps {
    /// Stamps of these files, in order.
    #[must_use]
    pub fn of<'a>(paths: impl IntoIterator<Item = Option<&'a Path>>) -> Self {
        Self(
            paths
                .into_iter()
                .map(|p| p.and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()))
                .collect(),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_file_changes_the_stamps() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        let missing = FileStamps::of([Some(f.as_path())]);
        std::fs::write(&f, "1").unwrap();
        let first = FileStamps::of([Some(f.as_path())]);
        assert_ne!(missing, first);
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, "2").unwrap();
        assert_ne!(first, FileStamps::of([Some(f.as_path())]));
    }
}
