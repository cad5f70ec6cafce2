//! Client certificates for mTLS: loading, expiry warnings and hot reload.
//!
//! [`CertificateManager`] reads a client certificate, its private key and the CA
//! bundle that signs the server's certificate, turns them into tonic's
//! rustls-based [`ClientTlsConfig`], and parses the client certificate to know
//! when it expires. [`CertificateManager::spawn_watcher`] polls the files'
//! modification times and reloads them when they change: every new connection
//! (including reconnects) uses the latest configuration, while established
//! connections and running jobs are untouched.
//!
//! ```no_run
//! use hodei_agent::tls::{CertificateManager, CertificatePaths, TlsSettings};
//!
//! let paths = CertificatePaths {
//!     client_cert_path: "/etc/hodei/tls/client.crt".into(),
//!     client_key_path: "/etc/hodei/tls/client.key".into(),
//!     ca_cert_path: "/etc/hodei/tls/ca.crt".into(),
//! };
//! let manager = CertificateManager::load(paths, TlsSettings::default())?;
//! println!("certificate expires in {} days", manager.days_to_expiry());
//! # Ok::<(), hodei_agent::tls::TlsError>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hodei_core::cert_expiry::{self, CertExpiryError, CertificateExpiry, ExpiryTracker};
use hodei_core::watch::FileStamps;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use x509_parser::pem::Pem;

/// Where the client certificate, its key and the CA bundle live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    /// PEM client certificate (the first certificate is the leaf; a chain may follow).
    pub client_cert_path: PathBuf,
    /// PEM private key of the client certificate.
    pub client_key_path: PathBuf,
    /// PEM CA bundle used to verify the server.
    pub ca_cert_path: PathBuf,
}

/// Tunables of a [`CertificateManager`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsSettings {
    /// Server name to verify instead of the host of the server URL.
    pub domain_name: Option<String>,
    /// Days before expiry at which a warning is logged (default 30 and 7).
    pub warn_thresholds_days: Vec<u32>,
    /// How often the watcher checks the files for changes (default 30 s).
    pub poll_interval: Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            domain_name: None,
            warn_thresholds_days: vec![30, 7],
            poll_interval: Duration::from_secs(30),
        }
    }
}

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM block of the expected kind.
    #[error("{path} is not valid PEM: {message}")]
    InvalidPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The PEM block is not a parseable X.509 certificate.
    #[error("{path} does not hold a valid X.509 certificate: {message}")]
    InvalidCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// What is known about the loaded client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CertificateInfo {
    /// Subject distinguished name.
    pub subject: String,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    expiry: CertificateExpiry,
}

impl From<CertificateExpiry> for CertificateInfo {
    fn from(expiry: CertificateExpiry) -> Self {
        Self {
            subject: expiry.subject.clone(),
            not_after: expiry.not_after,
            expiry,
        }
    }
}

impl CertificateInfo {
    /// Serial of the certificate, lowercase hex without leading zeros.
    #[must_use]
    pub fn serial(&self) -> &str {
        &self.expiry.serial
    }
}

#[derive(Debug, Clone)]
struct Loaded {
    tls: ClientTlsConfig,
    info: CertificateInfo,
    stamps: FileStamps,
}

#[derive(Debug)]
struct Inner {
    paths: CertificatePaths,
    settings: TlsSettings,
    state: RwLock<Loaded>,
    expiry: ExpiryTracker,
}

/// Loads client TLS material, warns before it expires and reloads it when the files change.
///
/// Cheap to clone; clones share the loaded state.
#[derive(Debug, Clone)]
pub struct CertificateManager {
    inner: Arc<Inner>,
}

impl CertificateManager {
    /// Loads and validates the three files.
    pub fn load(paths: CertificatePaths, settings: TlsSettings) -> Result<Self, TlsError> {
        let loaded = load_files(&paths, &settings)?;
        let expiry = ExpiryTracker::new("client", settings.warn_thresholds_days.clone());
        expiry.loaded(&loaded.info.expiry);
        Ok(Self {
            inner: Arc::new(Inner {
                paths,
                settings,
                state: RwLock::new(loaded),
                expiry,
            }),
        })
    }

    /// The files this manager loads.
    #[must_use]
    pub fn paths(&self) -> &CertificatePaths {
        &self.inner.paths
    }

    /// The TLS configuration for a new connection (the latest loaded).
    #[must_use]
    pub fn client_tls_config(&self) -> ClientTlsConfig {
        self.read_state(|s| s.tls.clone())
    }

    /// Subject and expiry of the loaded client certificate.
    #[must_use]
    pub fn certificate_info(&self) -> CertificateInfo {
        self.read_state(|s| s.info.clone())
    }

    /// Whole days until the client certificate expires (negative once expired).
    #[must_use]
    pub fn days_to_expiry(&self) -> i64 {
        cert_expiry::days_until(self.certificate_info().not_after, Utc::now())
    }

    /// The smallest configured warning threshold the certificate is within, if any.
    #[must_use]
    pub fn expiry_warning(&self) -> Option<u32> {
        self.inner.expiry.crossed(self.days_to_expiry())
    }

    /// Reloads the files if any modification time changed. Returns whether it reloaded.
    ///
    /// On error the previous configuration stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        if self.read_state(|s| s.stamps.clone()) == stamps(&self.inner.paths) {
            // Still re-evaluate expiry warnings: time passes without file changes.
            let info = self.read_state(|s| s.info.expiry.clone());
            self.inner.expiry.recheck(&info);
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// Reloads the files unconditionally.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load_files(&self.inner.paths, &self.inner.settings)?;
        self.inner.expiry.loaded(&loaded.info.expiry);
        tracing::info!(
            subject = %loaded.info.subject,
            not_after = %loaded.info.not_after,
            "reloaded client certificate"
        );
        self.write_state(|s| *s = loaded);
        Ok(())
    }

    /// Polls the files every `poll_interval` and reloads them on change, until `cancel` fires.
    pub fn spawn_watcher(&self, cancel: CancellationToken) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.inner.settings.poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let me = this.clone();
                match tokio::task::spawn_blocking(move || me.reload_if_changed()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "certificate reload failed; keeping the previous certificates");
                    }
                    Err(e) => tracing::error!(error = %e, "certificate reload task failed"),
                }
            }
        })
    }

    fn read_state<T>(&self, f: impl FnOnce(&Loaded) -> T) -> T {
        match self.inner.state.read() {
            Ok(g) => f(&g),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    fn write_state(&self, f: impl FnOnce(&mut Loaded)) {
        match self.inner.state.write() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

fn stamps(paths: &CertificatePaths) -> FileStamps {
    FileStamps::of([
        Some(paths.client_cert_path.as_path()),
        Some(paths.client_key_path.as_path()),
        Some(paths.ca_cert_path.as_path()),
    ])
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn pem_blocks(path: &Path, data: &[u8]) -> Result<Vec<Pem>, TlsError> {
    let mut blocks = Vec::new();
    for block in Pem::iter_from_buffer(data) {
        match block {
            Ok(b) => blocks.push(b),
            Err(e) => {
                return Err(TlsError::InvalidPem {
                    path: path.to_owned(),
                    message: e.to_string(),
                });
            }
        }
    }
    if blocks.is_empty() {
        return Err(TlsError::InvalidPem {
            path: path.to_owned(),
            message: "no PEM block found".to_owned(),
        });
    }
    Ok(blocks)
}

fn parse_certificates(path: &Path, data: &[u8]) -> Result<CertificateInfo, TlsError> {
    CertificateExpiry::from_pem(data)
        .map(CertificateInfo::from)
        .map_err(|e| match e {
            CertExpiryError::X509(message) => TlsError::InvalidCertificate {
                path: path.to_owned(),
                message,
            },
            other => TlsError::InvalidPem {
                path: path.to_owned(),
                message: other.to_string(),
            },
        })
}

fn check_key(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    let blocks = pem_blocks(path, data)?;
    if blocks.iter().any(|b| b.label.ends_with("PRIVATE KEY")) {
        Ok(())
    } else {
        Err(TlsError::InvalidPem {
            path: path.to_owned(),
            message: "no PRIVATE KEY block found".to_owned(),
        })
    }
}

fn load_files(paths: &CertificatePaths, settings: &TlsSettings) -> Result<Loaded, TlsError> {
    // Modification times first: a change racing with the read is seen on the next poll.
    let stamps = stamps(paths);
    let cert = read(&paths.client_cert_path)?;
    let key = read(&paths.client_key_path)?;
    let ca = read(&paths.ca_cert_path)?;
    let info = parse_certificates(&paths.client_cert_path, &cert)?;
    check_key(&paths.client_key_path, &key)?;
    parse_certificates(&paths.ca_cert_path, &ca)?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key));
    if let Some(domain) = &settings.domain_name {
        tls = tls.domain_name(domain.clone());
    }
    Ok(Loaded { tls, info, stamps })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn write_pki(dir: &Path, days: u64) -> CertificatePaths {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["worker".into()]).unwrap();
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(86_400)).into();
        params.not_after = (now + Duration::from_secs(86_400 * days + 3_600)).into();
        let cert = params
            .signed_by(&key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
            .unwrap();
        let paths = CertificatePaths {
            client_cert_path: dir.join("client.crt"),
            client_key_path: dir.join("client.key"),
            ca_cert_path: dir.join("ca.crt"),
        };
        std::fs::write(&paths.client_cert_path, cert.pem()).unwrap();
        std::fs::write(&paths.client_key_path, key.serialize_pem()).unwrap();
        std::fs::write(&paths.ca_cert_path, ca.pem()).unwrap();
        paths
    }

    #[test]
    fn load_reports_days_to_expiry_and_records_the_client_gauge() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_pki(dir.path(), 5);
        let m = CertificateManager::load(paths.clone(), TlsSettings::default()).unwrap();
        assert_eq!(m.days_to_expiry(), 5);
        assert_eq!(m.expiry_warning(), Some(7));
        assert_eq!(cert_expiry::recorded().get("client"), Some(&5));
        // A rotated certificate is picked up, and the gauge follows it.
        std::thread::sleep(Duration::from_millis(20));
        write_pki(dir.path(), 90);
        assert!(m.reload_if_changed().unwrap());
        assert_eq!(m.days_to_expiry(), 90);
        assert_eq!(m.expiry_warning(), None);
        assert_eq!(cert_expiry::recorded().get("client"), Some(&90));
        // A key in place of the certificate is refused as PEM of the wrong kind.
        std::fs::copy(&paths.client_key_path, &paths.client_cert_path).unwrap();
        assert!(matches!(m.reload(), Err(TlsError::InvalidPem { .. })));
        assert_eq!(m.days_to_expiry(), 90, "the previous certificate stays");
    }
}
