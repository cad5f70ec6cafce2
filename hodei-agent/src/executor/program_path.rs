//! Finds a job's program on the job's own `PATH` before it is spawned.
//!
//! With a bare program name (`sh`) and a `PATH` of its own in the child's
//! environment, the standard library cannot use `posix_spawn` (a vfork: no
//! copy of the agent's page tables) and falls back to `fork` + `execvp`;
//! profiles of the throughput benchmark showed that copy (`copy_page_range`
//! under `_Fork`) as the agent's largest kernel cost. Given an absolute path,
//! `posix_spawn` is used. The program still sees the name it was given as
//! its `argv[0]`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `program` found in the directories of `path`, as `execvp` would find it:
/// the first regular file with an execute bit. `None` when `program` already
/// names a path (has a `/`), when it is not found, or when a directory of
/// `path` before it is relative (it would be looked up from the job's working
/// directory: left to `execvp` so nothing changes).
pub(super) fn resolve(program: &str, path: &OsStr) -> Option<PathBuf> {
    if program.is_empty() || program.contains('/') {
        return None;
    }
    for dir in std::env::split_paths(path) {
        if !dir.is_absolute() {
            return None;
        }
        let candidate = dir.join(program);
        if is_executable_file(&candidate) {
            return Some(candidate);
        }
    }
    None
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_found_in_the_first_directory_that_has_it() {
        let found = resolve("sh", OsStr::new("/nonexistent-dir:/bin:/usr/bin")).unwrap();
        assert!(found.is_absolute() && found.ends_with("sh"), "{found:?}");
    }

    #[test]
    fn paths_missing_programs_and_relative_directories_are_left_to_execvp() {
        assert_eq!(resolve("/bin/sh", OsStr::new("/bin")), None);
        assert_eq!(resolve("./run.sh", OsStr::new("/bin")), None);
        assert_eq!(
            resolve("no-such-program-here", OsStr::new("/bin:/usr/bin")),
            None
        );
        assert_eq!(resolve("sh", OsStr::new("relative:/bin")), None);
        assert_eq!(resolve("", OsStr::new("/bin")), None);
    }

    #[test]
    fn a_file_without_an_execute_bit_is_skipped() {
        let dir = std::env::temp_dir().join(format!("hodei-path-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sh"), "not a program").unwrap();
        let path = std::env::join_paths([dir.as_path(), Path::new("/bin")]).unwrap();
        let found = resolve("sh", &path).unwrap();
        assert_ne!(found, dir.join("sh"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
