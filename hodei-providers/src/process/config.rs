//! Configuration of the [`ProcessProvider`](super::ProcessProvider).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hodei_core::ProviderError;
use hodei_core::settings::Setting;

/// Name of the agent binary looked up when [`ProcessProviderConfig::agent_binary`] is `None`.
pub const AGENT_BINARY_NAME: &str = "hodei-worker";

/// Environment variable naming the agent binary.
pub const ENV_WORKER_BINARY: &str = "HODEI_WORKER_BINARY";

/// Environment variable capping the number of worker processes.
pub const ENV_MAX_WORKERS: &str = "HODEI_PROCESS_MAX_WORKERS";

/// Every variable [`ProcessProviderConfig::from_env`] reads.
pub const SETTINGS: &[Setting] = &[
    Setting::new(
        ENV_WORKER_BINARY,
        "hodei-worker next to the server",
        "agent binary the process provider spawns",
    ),
    Setting::new(
        ENV_MAX_WORKERS,
        "HODEI_MAX_WORKERS",
        "most worker processes alive at once",
    ),
];

/// How the process provider runs worker agents as local child processes.
///
/// Build it in code from [`Default`] and the `with_*` methods, or from the
/// environment with [`ProcessProviderConfig::from_env`].
///
/// ```
/// use hodei_providers::process::ProcessProviderConfig;
/// let config = ProcessProviderConfig::default()
///     .with_agent_binary("/usr/local/bin/hodei-worker")
///     .with_max_workers(4);
/// assert_eq!(config.name, "process");
/// assert_eq!(config.max_workers, 4);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProcessProviderConfig {
    /// Unique provider name the server registers it under. Default `process`.
    pub name: String,
    /// The agent binary to run. `None`: `hodei-worker` next to the current
    /// executable (or one directory up when that is cargo's `deps/`), then on `PATH`.
    pub agent_binary: Option<PathBuf>,
    /// Most worker processes alive at once. Default 16.
    pub max_workers: u32,
    /// Lines of each worker's stdout/stderr kept for `get_worker_logs`. Default 1000.
    pub log_lines_kept: usize,
    /// Extra environment given to every agent (before the spec's own environment,
    /// which wins on conflicts).
    pub extra_env: BTreeMap<String, String>,
    /// How long `destroy_worker` waits after SIGTERM before it sends SIGKILL. Default 10 s.
    pub destroy_grace: Duration,
    /// A leftover worker process younger than this is never taken for an
    /// orphan by [`cleanup_orphans`](super::ProcessProvider::cleanup_orphans):
    /// another replica sharing this provider's id may have just started it.
    /// Default 30 s.
    pub orphan_min_age: Duration,
}

impl Default for ProcessProviderConfig {
    fn default() -> Self {
        Self {
            name: "process".to_owned(),
            agent_binary: None,
            max_workers: 16,
            log_lines_kept: 1000,
            extra_env: BTreeMap::new(),
            destroy_grace: Duration::from_secs(10),
            orphan_min_age: Duration::from_secs(30),
        }
    }
}

impl ProcessProviderConfig {
    /// Defaults overridden by `HODEI_WORKER_BINARY` and `HODEI_PROCESS_MAX_WORKERS`.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] when `HODEI_PROCESS_MAX_WORKERS` is not a positive integer.
    pub fn from_env() -> Result<Self, ProviderError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] when `HODEI_PROCESS_MAX_WORKERS` is not a positive integer.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ProviderError> {
        let mut config = Self::default();
        if let Some(bin) = lookup(ENV_WORKER_BINARY).filter(|s| !s.trim().is_empty()) {
            config.agent_binary = Some(PathBuf::from(bin));
        }
        if let Some(max) = lookup(ENV_MAX_WORKERS).filter(|s| !s.trim().is_empty()) {
            config.max_workers = match max.trim().parse::<u32>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(ProviderError::InvalidConfig(format!(
                        "{ENV_MAX_WORKERS}={max:?} is not a positive integer"
                    )));
                }
            };
        }
        Ok(config)
    }

    /// Sets the provider name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the agent binary.
    #[must_use]
    pub fn with_agent_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.agent_binary = Some(path.into());
        self
    }

    /// Sets the maximum number of live workers.
    #[must_use]
    pub fn with_max_workers(mut self, n: u32) -> Self {
        self.max_workers = n;
        self
    }

    /// Sets how many output lines are kept per worker.
    #[must_use]
    pub fn with_log_lines_kept(mut self, n: usize) -> Self {
        self.log_lines_kept = n;
        self
    }

    /// Adds an environment variable given to every agent.
    #[must_use]
    pub fn with_env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.extra_env.insert(k.into(), v.into());
        self
    }

    /// Sets the grace period between SIGTERM and SIGKILL.
    #[must_use]
    pub fn with_destroy_grace(mut self, grace: Duration) -> Self {
        self.destroy_grace = grace;
        self
    }

    /// Sets the minimum age of a process taken for an orphan.
    #[must_use]
    pub fn with_orphan_min_age(mut self, age: Duration) -> Self {
        self.orphan_min_age = age;
        self
    }

    /// The agent binary this configuration resolves to, if one can be found.
    ///
    /// An explicit [`agent_binary`](Self::agent_binary) is returned as is (even
    /// when it does not exist, so the error can name it); otherwise the
    /// directory of the current executable, its parent when that directory is
    /// cargo's `deps/`, then `PATH` are searched.
    #[must_use]
    pub fn resolve_agent_binary(&self) -> Option<PathBuf> {
        if let Some(p) = &self.agent_binary {
            return Some(p.clone());
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            dirs.push(dir.to_path_buf());
            if dir.file_name().is_some_and(|n| n == "deps")
                && let Some(up) = dir.parent()
            {
                dirs.push(up.to_path_buf());
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        dirs.into_iter()
            .map(|d| d.join(AGENT_BINARY_NAME))
            .find(|p| is_executable_file(p))
    }
}

/// Whether `path` is a regular file with an execute bit set.
#[must_use]
pub fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_settings_table_lists_every_variable_read() {
        let unlisted =
            hodei_core::settings::unlisted(SETTINGS, |get| ProcessProviderConfig::from_lookup(get));
        assert!(
            unlisted.is_empty(),
            "read but not in SETTINGS: {unlisted:?}"
        );
    }
    use super::*;

    #[test]
    fn env_overrides_defaults() {
        let c = ProcessProviderConfig::from_lookup(|k| match k {
            ENV_WORKER_BINARY => Some("/opt/hodei-worker".into()),
            ENV_MAX_WORKERS => Some("3".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.agent_binary, Some(PathBuf::from("/opt/hodei-worker")));
        assert_eq!(c.max_workers, 3);
        assert_eq!(c.log_lines_kept, 1000);
    }

    #[test]
    fn bad_max_workers_is_invalid_config() {
        for bad in ["0", "-1", "many"] {
            let err = ProcessProviderConfig::from_lookup(|k| {
                (k == ENV_MAX_WORKERS).then(|| bad.to_owned())
            })
            .unwrap_err();
            assert!(matches!(err, ProviderError::InvalidConfig(_)), "{bad}");
        }
    }

    #[test]
    fn explicit_binary_is_returned_even_if_missing() {
        let c = ProcessProviderConfig::default().with_agent_binary("/nope/hodei-worker");
        assert_eq!(
            c.resolve_agent_binary(),
            Some(PathBuf::from("/nope/hodei-worker"))
        );
    }
}
