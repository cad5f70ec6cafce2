//! Preparing a job: its private directory, the script file, the program and arguments.

use std::path::{Path, PathBuf};

use hodei_core::CommandType;

/// Header injected into scripts of shells that support `pipefail` (bash, zsh, ksh, mksh).
pub const STRICT_HEADER: &str = "set -euo pipefail\n";

/// Header injected into scripts of plain POSIX shells (`sh`, `dash`, `ash`, `busybox sh`):
/// `pipefail` is only in POSIX since 2024 and older `dash` rejects it — and with `set -e` a
/// failing `set` would end the script — so it is probed in a subshell first.
pub const POSIX_HEADER: &str = "set -eu\n(set -o pipefail) 2>/dev/null && set -o pipefail\n";

/// Which header a script interpreter gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShellFamily {
    /// bash, zsh, ksh: `set -euo pipefail`.
    Strict,
    /// sh, dash, ash: `set -eu` plus `pipefail` when supported.
    Posix,
}

/// Which shell family `program` (a name or path) belongs to, if any.
pub(crate) fn shell_family(program: &str) -> Option<ShellFamily> {
    let name = Path::new(program)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(program);
    match name {
        "bash" | "zsh" | "ksh" | "ksh93" | "mksh" => Some(ShellFamily::Strict),
        "sh" | "dash" | "ash" | "posh" => Some(ShellFamily::Posix),
        _ => None,
    }
}

/// Creates `dir` (and `work_root` above it) with mode 0700. Fails if `dir` already exists.
///
/// Synchronous on purpose: one `mkdir` takes microseconds, while a hop to the blocking
/// pool and back is a measurable part of a job's start latency.
pub(crate) fn create_job_dir(work_root: &Path, dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700);
    match builder.create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // First job (or the root was removed): create the root, then retry.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(work_root)?;
            builder.create(dir)
        }
        other => other,
    }
}

/// What to spawn for a command.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub program: String,
    pub args: Vec<String>,
}

/// Errors preparing a command.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrepareError {
    #[error("the command is empty")]
    EmptyCommand,
    #[error("the script interpreter is empty")]
    EmptyInterpreter,
    #[error("writing the script file failed: {0}")]
    Write(#[source] std::io::Error),
    #[error("unsupported command type")]
    Unsupported,
}

/// Turns a command into program + arguments; for a script, writes the script file into
/// `dir` (mode 0700, with the shell header for shell interpreters).
pub(crate) fn prepare(command: &CommandType, dir: &Path) -> Result<Prepared, PrepareError> {
    match command {
        CommandType::Shell { cmd, args } => {
            if cmd.trim().is_empty() {
                return Err(PrepareError::EmptyCommand);
            }
            Ok(Prepared {
                program: cmd.clone(),
                args: args.clone(),
            })
        }
        CommandType::Script {
            interpreter,
            content,
        } => {
            let mut tokens = interpreter.split_whitespace().map(str::to_owned);
            let program = tokens.next().ok_or(PrepareError::EmptyInterpreter)?;
            let mut args: Vec<String> = tokens.collect();
            // `env bash` style: the shell is the first non-option argument of env.
            let shell = if Path::new(&program).file_name().is_some_and(|n| n == "env") {
                args.iter()
                    .find(|a| !a.starts_with('-') && !a.contains('='))
            } else {
                Some(&program)
            };
            let header = match shell.and_then(|s| shell_family(s)) {
                Some(ShellFamily::Strict) => STRICT_HEADER,
                Some(ShellFamily::Posix) => POSIX_HEADER,
                None => "",
            };
            let file = dir.join("script");
            write_script(&file, header, content).map_err(PrepareError::Write)?;
            args.push(file.to_string_lossy().into_owned());
            Ok(Prepared { program, args })
        }
        _ => Err(PrepareError::Unsupported),
    }
}

/// Writes the script in one `write` (synchronous, like [`create_job_dir`]: a script is small
/// and goes to the page cache; each blocking-pool hop would cost more than the write).
/// Scripts far larger than a page cache write are the exception, not the case to tune for.
fn write_script(file: &PathBuf, header: &str, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut body = Vec::with_capacity(header.len() + content.len() + 1);
    body.extend_from_slice(header.as_bytes());
    body.extend_from_slice(content.as_bytes());
    if !content.ends_with('\n') {
        body.push(b'\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(file)?;
    f.write_all(&body)
}
