//! Noticing that configuration files changed, by their modification times,
//! sizes and inodes.
//!
//! The server's TLS files and revoked-serials file, its API tokens file and the
//! agent's client certificates are all re-read the same way: a watcher takes a
//! [`FileStamps`] of the files on every tick and reloads when it differs from
//! the one taken when they were last loaded. Taking the stamps *before* reading
//! means a change racing with the read is seen on the next tick.
//!
//! File times are coarse (a few milliseconds on Linux: two writes in a row can
//! carry the same modification time), so the size and, on Unix, the inode are
//! part of the stamp: a file replaced by a rename (how `hodei certs --force`
//! and most editors write) always gets a new stamp.
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

/// The modification time, size and inode of a list of optional files (`None`
/// for a file that is not configured or cannot be read). Equal stamps =
/// nothing changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStamps(Vec<Option<Stamp>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamps {
    /// Stamps of these files, in order.
    #[must_use]
    pub fn of<'a>(paths: impl IntoIterator<Item = Option<&'a Path>>) -> Self {
        Self(
            paths
                .into_iter()
                .map(|p| p.and_then(|p| std::fs::metadata(p).ok()).map(stamp))
                .collect(),
        )
    }
}

fn stamp(m: std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode,
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
        // Within the same clock tick: the size tells.
        std::fs::write(&f, "22").unwrap();
        let second = FileStamps::of([Some(f.as_path())]);
        assert_ne!(first, second);
        // Same size, same tick, replaced by a rename: the inode tells.
        let tmp = dir.path().join("a.tmp");
        std::fs::write(&tmp, "33").unwrap();
        std::fs::rename(&tmp, &f).unwrap();
        assert_ne!(second, FileStamps::of([Some(f.as_path())]));
    }
}
