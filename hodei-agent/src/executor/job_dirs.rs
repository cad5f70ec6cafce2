//! Each attempt's own directory: created empty and private (mode 0700) under the
//! work root, gone or emptied once the attempt ends.
//!
//! A `mkdir` and an `rmdir` per job were a fifth of a busy agent's CPU here: ext4
//! without a journal scans past every inode freed in the last seconds on each
//! allocation (`recently_deleted`), so the cost grows with the job rate. A directory
//! an attempt leaves empty is therefore kept as a spare (renamed aside, a few at
//! most) and renamed into place for a later attempt, which costs no inode. Before a
//! spare is handed out it must still be a directory of its own, empty, with no
//! extended attributes (a default ACL would apply to the next job's files); its mode
//! is set back to 0700. Anything else is removed, as a non-empty directory always is.
//! The spares go with the executor; those of an agent that was killed are swept by
//! the next agent to start on the same work root.
//! The attempt's processes are all killed before its directory is released, so
//! nothing of one job is left to write into the next one's directory.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::prepare;

/// Spares kept at most: enough for the jobs a worker runs at once.
const MAX_SPARES: usize = 4;

/// Prefix of a spare's name in the work root (never a job directory's name, which
/// starts with the job id).
const SPARE_PREFIX: &str = ".spare-";

/// The attempts' directories under one work root, with the spares kept for reuse.
#[derive(Debug)]
pub(crate) struct JobDirs {
    root: PathBuf,
    spares: Mutex<Vec<PathBuf>>,
}

impl JobDirs {
    /// Directories under `root` (created with the first one). Spares an agent
    /// left when it was killed (it removes its own when it stops) are removed
    /// here, if still empty: the work root is shared by the agents of a host.
    /// Another running agent may lose a spare of its own this way; it then
    /// makes a new directory for its next attempt.
    pub(crate) fn new(root: PathBuf) -> Self {
        sweep_spares(&root);
        Self {
            root,
            spares: Mutex::new(Vec::new()),
        }
    }

    fn spares(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        // Every mutation is a single push or pop: a poisoned lock is still consistent.
        self.spares
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `dir` (under the root) an empty directory of mode 0700: a spare renamed
    /// into place when one passes the checks, else a new one. Fails if `dir` exists.
    pub(crate) fn create(&self, dir: &Path) -> std::io::Result<()> {
        loop {
            let Some(spare) = self.spares().pop() else {
                return prepare::create_job_dir(&self.root, dir);
            };
            if !is_fresh(&spare) {
                remove(spare);
                continue;
            }
            match rename_no_replace(&spare, dir) {
                Ok(()) => {
                    let private =
                        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
                    if private.is_err() {
                        // Not handed out as it is: the attempt fails to start, and
                        // nothing else would remove the directory.
                        remove(dir.to_path_buf());
                    }
                    return private;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    self.spares().push(spare);
                    return Err(e);
                }
                // Gone, or a file system without RENAME_NOREPLACE: a new directory.
                Err(_) => remove(spare),
            }
        }
    }

    /// The attempt that used `dir` ended: kept as a spare when it is empty and there
    /// is room, else removed (at once when empty, else in the background).
    pub(crate) fn release(&self, dir: PathBuf) {
        if self.spares().len() < MAX_SPARES && is_fresh(&dir) {
            let spare = self
                .root
                .join(format!("{SPARE_PREFIX}{}", uuid::Uuid::new_v4().simple()));
            if std::fs::rename(&dir, &spare).is_ok() {
                self.spares().push(spare);
                return;
            }
        }
        remove(dir);
    }
}

impl Drop for JobDirs {
    /// The spares go with the executor: nothing is left in the work root.
    fn drop(&mut self) {
        for spare in std::mem::take(&mut *self.spares()) {
            let _ = std::fs::remove_dir(spare);
        }
    }
}

/// Removes the empty spares under `root` (a missing root has none).
fn sweep_spares(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(SPARE_PREFIX)
        {
            // Only an empty directory goes: `remove_dir` refuses anything else.
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Renames `from` to `to`, failing with `AlreadyExists` when `to` exists (a plain
/// rename would replace an empty directory there).
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(std::io::Error::from)
}

/// A directory (not a link to one) with no entries and no extended attributes but
/// the system's security labels (SELinux gives every file one).
fn is_fresh(dir: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    if !meta.is_dir() {
        return false;
    }
    let empty = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none());
    empty && only_security_labels(dir)
}

/// Whether every extended attribute of `path` is a `security.` label (true with none).
fn only_security_labels(path: &Path) -> bool {
    // A longer list than this (ERANGE) is not a fresh directory's.
    let mut names = [0u8; 1024];
    let Ok(len) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return false;
    };
    names[..len.min(names.len())]
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .all(|name| name.starts_with(b"security."))
}

/// Removes a directory: at once when it is empty (one `rmdir`, cheaper than a hop to
/// the blocking pool), else with its contents in the background.
fn remove(dir: PathBuf) {
    match std::fs::remove_dir(&dir) {
        Ok(()) => return,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(_) => {} // not empty (or odd): the full removal below says what failed
    }
    let remove_all = move || {
        if let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "removing job directory failed");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            drop(handle.spawn_blocking(remove_all));
        }
        Err(_) => remove_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, JobDirs) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = JobDirs::new(tmp.path().join("jobs"));
        (tmp, dirs)
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn an_empty_directory_is_reused_private_and_empty() {
        let (_tmp, dirs) = root();
        let first = dirs.root.join("a");
        dirs.create(&first).expect("create");
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&first).unwrap());
        // The job opened its directory to everyone; it is empty at its end.
        std::fs::set_permissions(&first, std::fs::Permissions::from_mode(0o777)).unwrap();
        dirs.release(first.clone());
        assert!(!first.exists(), "the attempt's name is gone");
        assert_eq!(dirs.spares().len(), 1);

        let second = dirs.root.join("b");
        dirs.create(&second).expect("create");
        let reused = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&second).unwrap());
        assert_eq!(reused, inode, "the spare was renamed into place");
        assert_eq!(mode(&second), 0o700, "private again");
        assert!(std::fs::read_dir(&second).unwrap().next().is_none());
        assert!(dirs.spares().is_empty());
    }

    #[test]
    fn a_directory_with_a_user_attribute_is_not_reused() {
        let (_tmp, dirs) = root();
        let first = dirs.root.join("a");
        dirs.create(&first).expect("create");
        match rustix::fs::setxattr(
            &first,
            "user.hodei-test",
            b"1",
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) => {}
            Err(e) => {
                // tmpfs before 6.6 and some file systems refuse user attributes.
                eprintln!("SKIP: this file system takes no user attributes: {e}");
                return;
            }
        }
        assert!(!only_security_labels(&first));
        dirs.release(first.clone());
        assert!(dirs.spares().is_empty(), "not kept");
        assert!(!first.exists(), "removed");
    }

    #[test]
    fn the_spares_go_with_the_executor() {
        let (_tmp, dirs) = root();
        let first = dirs.root.join("a");
        dirs.create(&first).expect("create");
        dirs.release(first);
        let root = dirs.root.clone();
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 1);
        drop(dirs);
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    }

    #[test]
    fn spares_a_killed_agent_left_are_removed_by_the_next_one() {
        let (_tmp, dirs) = root();
        let first = dirs.root.join("a");
        dirs.create(&first).expect("create");
        dirs.release(first);
        let spare = dirs.spares()[0].clone();
        // A non-empty directory with the prefix is not a spare to sweep.
        let written = dirs.root.join(format!("{SPARE_PREFIX}written"));
        std::fs::create_dir(&written).unwrap();
        std::fs::write(written.join("f"), b"x").unwrap();
        let root = dirs.root.clone();
        std::mem::forget(dirs); // killed: its spares are not removed
        assert!(spare.exists());
        let next = JobDirs::new(root.clone());
        assert!(!spare.exists(), "the left spare is swept");
        assert!(written.exists(), "a directory with files stays");
        assert!(next.spares().is_empty());
    }

    #[test]
    fn a_directory_left_with_files_is_removed_not_reused() {
        let (_tmp, dirs) = root();
        let first = dirs.root.join("a");
        dirs.create(&first).expect("create");
        std::fs::write(first.join("left-behind"), b"x").unwrap();
        dirs.release(first.clone());
        assert!(dirs.spares().is_empty());
        // Removed in the background (no runtime here: at once).
        assert!(!first.exists());
        let second = dirs.root.join("b");
        dirs.create(&second).expect("create");
        assert!(std::fs::read_dir(&second).unwrap().next().is_none());
    }

    #[test]
    fn a_spare_that_changed_is_not_handed_out() {
        let (_tmp, dirs) = root();
        let first = dirs.root.join("a");
        dirs.create(&first).expect("create");
        dirs.release(first);
        let spare = dirs.spares()[0].clone();
        // Something wrote into the spare after it was set aside.
        std::fs::write(spare.join("late"), b"x").unwrap();
        let second = dirs.root.join("b");
        dirs.create(&second).expect("create");
        assert!(
            std::fs::read_dir(&second).unwrap().next().is_none(),
            "a new directory, not the spare"
        );
        assert!(!spare.exists(), "the changed spare is removed");
    }

    #[test]
    fn spares_are_bounded_and_a_taken_name_fails() {
        let (_tmp, dirs) = root();
        let names: Vec<PathBuf> = (0..MAX_SPARES + 2)
            .map(|i| dirs.root.join(format!("j{i}")))
            .collect();
        for n in &names {
            dirs.create(n).expect("create");
        }
        for n in &names {
            dirs.release(n.clone());
        }
        assert_eq!(dirs.spares().len(), MAX_SPARES);
        let entries = std::fs::read_dir(&dirs.root).unwrap().count();
        assert_eq!(entries, MAX_SPARES, "the others were removed");
        // An existing name is an error, with a spare as without, and the spare stays.
        let taken = dirs.root.join("taken");
        std::fs::create_dir(&taken).unwrap();
        let err = dirs.create(&taken).expect_err("taken");
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(dirs.spares().len(), MAX_SPARES);
    }
}
