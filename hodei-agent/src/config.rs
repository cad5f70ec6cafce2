//! Agent configuration: built in code or read from `HODEI_*` environment variables.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `HODEI_SERVER` | control-plane gRPC URL, or several comma-separated (replicas on one database, dialled in turn) | `http://localhost:50051` |
//! | `HODEI_OTP` | one-time registration token | (empty) |
//! | `HODEI_WORKER_ID` | worker UUID | a new random one |
//! | `HODEI_MAX_CONCURRENT_JOBS` | jobs run at once | 1 |
//! | `HODEI_HEARTBEAT_INTERVAL_MS` | overrides the server's heartbeat interval | (server's) |
//! | `HODEI_KILL_GRACE_SECS` | TERM → KILL grace of a cancelled job | 10 |
//! | `HODEI_SHUTDOWN_GRACE_SECS` | how long running jobs may finish on shutdown | 30 |
//! | `HODEI_LOG_CAP_BYTES` | per-job log cap | none |
//! | `HODEI_WORK_DIR` | root of per-job working directories | `$TMPDIR/hodei-jobs` |
//! | `HODEI_WORKER_LABELS` | `k=v,k2=v2` labels announced at registration | none |
//! | `HODEI_TLS_CERT`, `HODEI_TLS_KEY`, `HODEI_TLS_CA` | client cert, key, CA (all three → mTLS) | plain TCP |
//! | `HODEI_TLS_DOMAIN` | server name to verify | host of the address being dialled |
//!
//! With several addresses the agent registers with the first it reaches; when its stream
//! breaks it resumes its session on the next one (then the next, in turn, with backoff), so
//! an agent follows the service rather than one replica. Its running jobs keep running, and
//! their unacknowledged logs and results are resent to whichever replica it reaches.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hodei_core::WorkerId;
use hodei_core::domain::agent_env as env;

use crate::tls::CertificatePaths;

/// Default control-plane URL.
pub const DEFAULT_SERVER: &str = "http://localhost:50051";

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}: {message}")]
pub struct ConfigError {
    /// Variable (or field) name.
    pub variable: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(variable: &str, message: impl Into<String>) -> Self {
        Self {
            variable: variable.to_owned(),
            message: message.into(),
        }
    }
}

/// The control-plane replicas an agent may dial, in order: one or more `http://` or
/// `https://` URLs, each checked when the list is made.
///
/// ```
/// use hodei_agent::config::ServerAddresses;
///
/// let servers = ServerAddresses::parse("HODEI_SERVER", "http://cp-a:50051, http://cp-b:50051")?;
/// assert_eq!(servers.len(), 2);
/// assert_eq!(servers.to_string(), "http://cp-a:50051,http://cp-b:50051");
/// let err = ServerAddresses::parse("HODEI_SERVER", "http://cp-a:50051,cp-b:50051").unwrap_err();
/// assert_eq!(err.variable, "HODEI_SERVER");
/// # Ok::<(), hodei_agent::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddresses(Vec<String>);

impl ServerAddresses {
    /// Reads a comma-separated list (blanks around entries and empty entries are ignored);
    /// `variable` names the setting in errors.
    pub fn parse(variable: &str, list: &str) -> Result<Self, ConfigError> {
        Self::from_urls(
            variable,
            list.split(',').map(str::trim).filter(|a| !a.is_empty()),
        )
    }

    /// A list from URLs given in code; errors name the field `server_addresses`.
    pub fn new<I, S>(urls: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::from_urls("server_addresses", urls.into_iter().map(Into::into))
    }

    fn from_urls<I, S>(variable: &str, urls: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        if urls.is_empty() {
            return Err(ConfigError::new(variable, "no server address given"));
        }
        for url in &urls {
            check_url(variable, url)?;
        }
        Ok(Self(urls))
    }

    /// The addresses, in the order they are dialled.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The address at `index` modulo the length (the list is never empty).
    #[must_use]
    pub fn get_wrapping(&self, index: usize) -> &str {
        &self.0[index % self.0.len()]
    }

    /// How many addresses.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a list holds at least one address.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::str::FromStr for ServerAddresses {
    type Err = ConfigError;

    /// A comma-separated list; errors name the field `server_addresses`.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        Self::parse("server_addresses", list)
    }
}

/// Comma-separated, as `HODEI_SERVER` takes it.
impl std::fmt::Display for ServerAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// An `http://` or `https://` URL with a host, as tonic can dial it.
fn check_url(variable: &str, url: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::new(
            variable,
            format!("{url:?} must start with http:// or https://"),
        ));
    }
    let uri: tonic::transport::Uri = url
        .parse()
        .map_err(|e| ConfigError::new(variable, format!("{url:?} is not a valid URL: {e}")))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(ConfigError::new(variable, format!("{url:?} has no host")));
    }
    Ok(())
}

/// Reconnect backoff: exponential with jitter, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackoffConfig {
    /// First delay (default 100 ms).
    pub initial: Duration,
    /// Largest delay (default 5 s).
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl BackoffConfig {
    /// A backoff between `initial` and `max`.
    #[must_use]
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }
}

/// Everything the agent needs to know. Build with [`AgentConfig::new`] and adjust the fields,
/// or read it from the environment with [`AgentConfig::from_env`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    /// Control-plane replicas (`http://` or `https://`), dialled in turn: the first at
    /// start, the next whenever a connection fails or breaks.
    pub servers: ServerAddresses,
    /// One-time registration token.
    pub otp: String,
    /// This worker's id.
    pub worker_id: WorkerId,
    /// Jobs run at once.
    pub max_concurrent_jobs: u32,
    /// Overrides the heartbeat interval the server asks for.
    pub heartbeat_interval: Option<Duration>,
    /// TERM → KILL grace of a cancelled or timed-out job.
    pub kill_grace: Duration,
    /// How long running jobs may finish after a shutdown request before they are cancelled.
    pub shutdown_grace: Duration,
    /// After draining, how long to wait for the server to acknowledge the last logs and results.
    pub flush_timeout: Duration,
    /// Per-job log cap in bytes.
    pub log_cap_bytes: Option<u64>,
    /// Root of per-job working directories.
    pub work_root: PathBuf,
    /// Client certificates; `None` = plain TCP (unless the URL is `https://`, which then uses
    /// server-side TLS only with the certificates given here).
    pub tls: Option<CertificatePaths>,
    /// Server name to verify instead of the host of the address being dialled.
    pub tls_domain: Option<String>,
    /// How often certificate files are checked for changes.
    pub tls_poll_interval: Duration,
    /// Host name announced at registration.
    pub hostname: String,
    /// Labels announced at registration.
    pub labels: BTreeMap<String, String>,
    /// CPU architectures announced at registration.
    pub architectures: Vec<String>,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// Connect timeout of one attempt.
    pub connect_timeout: Duration,
    /// Log entries held for resending until the server acknowledges them; a full buffer slows
    /// the jobs down.
    pub unacked_max_entries: usize,
    /// Capacity of the outbound stream channel.
    pub outbound_capacity: usize,
    /// TTL of cached resource usage.
    pub metrics_ttl: Duration,
    /// How often a fresh resource-usage sample is sent to the server
    /// (`HODEI_STATS_INTERVAL_MS`, default 15 s): what `hodei worker list` shows.
    pub stats_interval: Duration,
}

impl AgentConfig {
    /// Defaults for the control-plane addresses and a one-time token.
    #[must_use]
    pub fn new(servers: ServerAddresses, otp: impl Into<String>) -> Self {
        Self {
            servers,
            otp: otp.into(),
            worker_id: WorkerId::new(),
            max_concurrent_jobs: 1,
            heartbeat_interval: None,
            kill_grace: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            flush_timeout: Duration::from_secs(10),
            log_cap_bytes: None,
            work_root: std::env::temp_dir().join("hodei-jobs"),
            tls: None,
            tls_domain: None,
            tls_poll_interval: Duration::from_secs(30),
            hostname: local_hostname(),
            labels: BTreeMap::new(),
            architectures: vec![std::env::consts::ARCH.to_owned()],
            backoff: BackoffConfig::default(),
            connect_timeout: Duration::from_secs(5),
            unacked_max_entries: 10_000,
            outbound_capacity: 256,
            metrics_ttl: Duration::from_secs(35),
            stats_interval: Duration::from_secs(15),
        }
    }

    /// Reads the `HODEI_*` variables of the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env) with any variable source (used by tests and by hosts
    /// that keep their configuration elsewhere).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let servers = ServerAddresses::parse(
            env::SERVER,
            &get(env::SERVER).unwrap_or_else(|| DEFAULT_SERVER.to_owned()),
        )?;
        let mut c = Self::new(servers, get(env::OTP).unwrap_or_default());
        if let Some(v) = get(env::WORKER_ID) {
            c.worker_id = v
                .parse()
                .map_err(|_| ConfigError::new(env::WORKER_ID, format!("{v:?} is not a UUID")))?;
        }
        if let Some(n) = parse_num::<u32>(&get, env::MAX_CONCURRENT_JOBS)? {
            if n == 0 {
                return Err(ConfigError::new(
                    env::MAX_CONCURRENT_JOBS,
                    "must be at least 1",
                ));
            }
            c.max_concurrent_jobs = n;
        }
        if let Some(ms) = parse_num::<u64>(&get, env::HEARTBEAT_INTERVAL_MS)? {
            if ms == 0 {
                return Err(ConfigError::new(
                    env::HEARTBEAT_INTERVAL_MS,
                    "must be positive",
                ));
            }
            c.heartbeat_interval = Some(Duration::from_millis(ms));
        }
        if let Some(ms) = parse_num::<u64>(&get, env::STATS_INTERVAL_MS)? {
            if ms == 0 {
                return Err(ConfigError::new(env::STATS_INTERVAL_MS, "must be positive"));
            }
            c.stats_interval = Duration::from_millis(ms);
        }
        if let Some(s) = parse_num::<u64>(&get, env::KILL_GRACE_SECS)? {
            c.kill_grace = Duration::from_secs(s);
        }
        if let Some(s) = parse_num::<u64>(&get, env::SHUTDOWN_GRACE_SECS)? {
            c.shutdown_grace = Duration::from_secs(s);
        }
        c.log_cap_bytes = parse_num::<u64>(&get, env::LOG_CAP_BYTES)?;
        if let Some(dir) = get(env::WORK_DIR) {
            c.work_root = PathBuf::from(dir);
        }
        if let Some(labels) = get(env::WORKER_LABELS) {
            for pair in labels.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    ConfigError::new(env::WORKER_LABELS, format!("{pair:?} is not key=value"))
                })?;
                c.labels.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        let (cert, key, ca) = (get(env::TLS_CERT), get(env::TLS_KEY), get(env::TLS_CA));
        c.tls = match (cert, key, ca) {
            (Some(cert), Some(key), Some(ca)) => Some(CertificatePaths {
                client_cert_path: cert.into(),
                client_key_path: key.into(),
                ca_cert_path: ca.into(),
            }),
            (None, None, None) => None,
            _ => {
                return Err(ConfigError::new(
                    "HODEI_TLS_CERT/HODEI_TLS_KEY/HODEI_TLS_CA",
                    "set all three for mTLS, or none for plain TCP",
                ));
            }
        };
        c.tls_domain = get(env::TLS_DOMAIN);
        Ok(c)
    }
}

fn parse_num<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    var: &str,
) -> Result<Option<T>, ConfigError> {
    match get(var) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ConfigError::new(var, format!("{v:?} is not a non-negative integer"))),
    }
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_without_variables() {
        let c = AgentConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(c.servers.iter().collect::<Vec<_>>(), vec![DEFAULT_SERVER]);
        assert_eq!(c.max_concurrent_jobs, 1);
        assert_eq!(c.kill_grace, Duration::from_secs(10));
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert!(c.tls.is_none());
        assert!(c.heartbeat_interval.is_none());
    }

    #[test]
    fn reads_every_variable() {
        let id = WorkerId::new();
        let c = AgentConfig::from_lookup(lookup(&[
            ("HODEI_SERVER", "https://cp:50051"),
            ("HODEI_OTP", "tok"),
            ("HODEI_WORKER_ID", &id.to_string()),
            ("HODEI_MAX_CONCURRENT_JOBS", "4"),
            ("HODEI_HEARTBEAT_INTERVAL_MS", "250"),
            ("HODEI_KILL_GRACE_SECS", "3"),
            ("HODEI_SHUTDOWN_GRACE_SECS", "7"),
            ("HODEI_LOG_CAP_BYTES", "1024"),
            ("HODEI_WORKER_LABELS", "zone=a, gpu=no"),
            ("HODEI_TLS_CERT", "/c"),
            ("HODEI_TLS_KEY", "/k"),
            ("HODEI_TLS_CA", "/ca"),
            ("HODEI_TLS_DOMAIN", "cp.internal"),
        ]))
        .unwrap();
        assert_eq!(c.otp, "tok");
        assert_eq!(c.worker_id, id);
        assert_eq!(c.max_concurrent_jobs, 4);
        assert_eq!(c.heartbeat_interval, Some(Duration::from_millis(250)));
        assert_eq!(c.kill_grace, Duration::from_secs(3));
        assert_eq!(c.shutdown_grace, Duration::from_secs(7));
        assert_eq!(c.log_cap_bytes, Some(1024));
        assert_eq!(c.labels.get("gpu").map(String::as_str), Some("no"));
        assert_eq!(c.tls.unwrap().ca_cert_path, PathBuf::from("/ca"));
        assert_eq!(c.tls_domain.as_deref(), Some("cp.internal"));
    }

    #[test]
    fn rejects_bad_values_naming_the_variable() {
        let e = AgentConfig::from_lookup(lookup(&[("HODEI_WORKER_ID", "nope")])).unwrap_err();
        assert_eq!(e.variable, "HODEI_WORKER_ID");
        let e =
            AgentConfig::from_lookup(lookup(&[("HODEI_MAX_CONCURRENT_JOBS", "0")])).unwrap_err();
        assert_eq!(e.variable, "HODEI_MAX_CONCURRENT_JOBS");
        let e = AgentConfig::from_lookup(lookup(&[("HODEI_TLS_CERT", "/c")])).unwrap_err();
        assert!(e.variable.contains("HODEI_TLS_KEY"));
        let e = AgentConfig::from_lookup(lookup(&[("HODEI_SERVER", "cp:50051")])).unwrap_err();
        assert_eq!(e.variable, "HODEI_SERVER");
    }

    #[test]
    fn several_servers_are_read_in_order_and_each_is_checked() {
        let c = AgentConfig::from_lookup(lookup(&[(
            "HODEI_SERVER",
            " http://cp-a:50051 ,https://[::1]:50052,,http://10.0.0.3:50053,",
        )]))
        .unwrap();
        assert_eq!(
            c.servers.iter().collect::<Vec<_>>(),
            vec![
                "http://cp-a:50051",
                "https://[::1]:50052",
                "http://10.0.0.3:50053"
            ]
        );
        assert_eq!(c.servers.get_wrapping(4), "https://[::1]:50052");
        // The second address is bad: the error names the variable and the address.
        for bad in [
            "http://cp-a:50051,cp-b:50051",
            "http://cp-a:50051,http://",
            "http://cp-a:50051,http://cp b:1",
            " , ",
        ] {
            let e = AgentConfig::from_lookup(lookup(&[("HODEI_SERVER", bad)])).unwrap_err();
            assert_eq!(e.variable, "HODEI_SERVER", "{bad:?}");
        }
        let e = AgentConfig::from_lookup(lookup(&[("HODEI_SERVER", "http://a:1,ftp://b:2")]))
            .unwrap_err();
        assert!(e.message.contains("ftp://b:2"), "{e}");
        // In code: the field is named.
        let e = ServerAddresses::new(["http://a:1", "b:2"]).unwrap_err();
        assert_eq!(e.variable, "server_addresses");
        assert!(ServerAddresses::new(Vec::<String>::new()).is_err());
        let s: ServerAddresses = "http://a:1,http://b:2".parse().unwrap();
        assert_eq!(
            s,
            ServerAddresses::new(["http://a:1", "http://b:2"]).unwrap()
        );
    }
}
