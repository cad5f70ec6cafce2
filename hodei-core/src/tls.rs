//! Server-side TLS and mTLS for the gRPC endpoint: certificate loading, client
//! certificate verification with a revoked-serials list, expiry warnings, a
//! days-to-expiry metric, and hot reload of rotated files.
//!
//! [`ServerTls`] builds a rustls [`ServerConfig`](rustls::ServerConfig) from a
//! [`ServerTlsSettings`]. With a client CA every connection must present a
//! client certificate signed by that CA, valid now, and whose serial is not in
//! [`ServerTlsSettings::revoked_serials`]; anything else is refused during the
//! handshake. [`ServerTls::incoming`] accepts TCP connections and hands
//! completed TLS streams to tonic's `serve_with_incoming`; each handshake uses
//! the configuration current at that moment, so after
//! [`ServerTls::reload_if_changed`] (run periodically by
//! [`ServerTls::spawn_watcher`]) new connections get the rotated certificate
//! while open connections and their streams are untouched.
//!
//! ```no_run
//! use hodei_core::tls::{ServerTls, ServerTlsSettings};
//!
//! let mut settings = ServerTlsSettings::new("/etc/hodei/tls/server.crt", "/etc/hodei/tls/server.key");
//! settings.client_ca_path = Some("/etc/hodei/tls/ca.crt".into());
//! settings.revoked_serials = vec!["3f9a01".into()];
//! let tls = ServerTls::load(settings)?;
//! println!("server certificate expires in {} days", tls.days_to_expiry());
//! # Ok::<(), hodei_core::tls::ServerTlsError>(())
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::Stream;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::cert_expiry::{self, CertificateExpiry, ExpiryTracker};
pub use crate::cert_expiry::{record_days_to_expiry, write_prometheus};
use crate::watch::FileStamps;

/// Server certificate (PEM, leaf first).
pub const ENV_TLS_CERT: &str = "HODEI_TLS_CERT";
/// Server private key (PEM).
pub const ENV_TLS_KEY: &str = "HODEI_TLS_KEY";
/// CA bundle that signs client certificates (PEM); set = mTLS required.
pub const ENV_TLS_CLIENT_CA: &str = "HODEI_TLS_CLIENT_CA";
/// Revoked client certificate serials, comma-separated hex.
pub const ENV_TLS_REVOKED_SERIALS: &str = "HODEI_TLS_REVOKED_SERIALS";
/// File of revoked serials (hex, one a line, `#` comments), re-read when it changes.
pub const ENV_TLS_REVOKED_SERIALS_FILE: &str = "HODEI_TLS_REVOKED_SERIALS_FILE";
/// Seconds between checks of the files for changes (default 30).
pub const ENV_TLS_RELOAD_INTERVAL_SECS: &str = "HODEI_TLS_RELOAD_INTERVAL_SECS";
/// `1`/`true`/`yes`: serve the REST API over TLS too, with the certificate and
/// key of `HODEI_TLS_CERT`/`HODEI_TLS_KEY` (server-side TLS only: REST clients
/// authenticate with API tokens, not client certificates).
pub const ENV_REST_TLS: &str = "HODEI_REST_TLS";

/// Where the server's TLS material lives and how it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerTlsSettings {
    /// PEM server certificate chain (leaf first).
    pub cert_path: PathBuf,
    /// PEM private key of the server certificate.
    pub key_path: PathBuf,
    /// PEM CA bundle for client certificates. `Some` = every connection must
    /// present a certificate signed by it; `None` = server-side TLS only.
    pub client_ca_path: Option<PathBuf>,
    /// Serials of revoked client certificates, hex (`0x`, `:` and case ignored).
    pub revoked_serials: Vec<String>,
    /// A file of more revoked serials (hex, one a line, `#` comments); it is
    /// watched like the certificate files, so revoking needs no restart.
    pub revoked_serials_file: Option<PathBuf>,
    /// Days before expiry at which a warning is logged (default 30 and 7).
    pub warn_thresholds_days: Vec<u32>,
    /// How often the watcher checks the files (default 30 s).
    pub poll_interval: Duration,
    /// Longest time a TLS handshake may take (default 10 s).
    pub handshake_timeout: Duration,
    /// ALPN protocols offered (default `h2`, for gRPC).
    pub alpn_protocols: Vec<Vec<u8>>,
    /// The endpoint served, for logs (default `gRPC`).
    pub endpoint: String,
}

impl ServerTlsSettings {
    /// Settings for a certificate and key; no client authentication yet.
    #[must_use]
    pub fn new(cert_path: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Self {
        Self {
            cert_path: cert_path.into(),
            key_path: key_path.into(),
            client_ca_path: None,
            revoked_serials: Vec::new(),
            revoked_serials_file: None,
            warn_thresholds_days: vec![30, 7],
            poll_interval: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            alpn_protocols: vec![b"h2".to_vec()],
            endpoint: "gRPC".to_owned(),
        }
    }

    /// The same certificate and key for the REST API: no client certificates
    /// (REST clients authenticate with API tokens), ALPN `http/1.1`.
    #[must_use]
    pub fn for_rest(mut self) -> Self {
        self.client_ca_path = None;
        self.revoked_serials.clear();
        self.revoked_serials_file = None;
        self.alpn_protocols = vec![b"http/1.1".to_vec()];
        self.endpoint = "REST".to_owned();
        self
    }

    /// Whether `HODEI_REST_TLS` asks for TLS on the REST API.
    ///
    /// # Errors
    /// [`ServerTlsError::Config`] for a value that is not a yes/no.
    pub fn rest_tls_from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<bool, ServerTlsError> {
        match lookup(ENV_REST_TLS) {
            None => Ok(false),
            Some(v) if v.trim().is_empty() => Ok(false),
            Some(v) => crate::switch::parse_switch(&v).ok_or_else(|| {
                ServerTlsError::Config(format!(
                    "{ENV_REST_TLS}={v:?}: expected {}",
                    crate::switch::EXPECTED
                ))
            }),
        }
    }

    /// Requires client certificates signed by this CA bundle.
    #[must_use]
    pub fn with_client_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.client_ca_path = Some(path.into());
        self
    }

    /// Refuses client certificates with these serials (hex).
    #[must_use]
    pub fn with_revoked_serials(mut self, serials: impl IntoIterator<Item = String>) -> Self {
        self.revoked_serials = serials.into_iter().collect();
        self
    }

    /// Reads `HODEI_TLS_CERT`, `HODEI_TLS_KEY`, `HODEI_TLS_CLIENT_CA`,
    /// `HODEI_TLS_REVOKED_SERIALS`. `None` when neither certificate nor key is set.
    ///
    /// # Errors
    /// [`ServerTlsError::Config`] when only one of certificate and key is set,
    /// or a client CA or revocation list is given without them.
    pub fn from_env() -> Result<Option<Self>, ServerTlsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    ///
    /// # Errors
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ServerTlsError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let cert = get(ENV_TLS_CERT);
        let key = get(ENV_TLS_KEY);
        let ca = get(ENV_TLS_CLIENT_CA);
        let revoked = get(ENV_TLS_REVOKED_SERIALS);
        let revoked_file = get(ENV_TLS_REVOKED_SERIALS_FILE);
        let (cert, key) = match (cert, key) {
            (Some(c), Some(k)) => (c, k),
            (None, None) => {
                if ca.is_some() || revoked.is_some() || revoked_file.is_some() {
                    return Err(ServerTlsError::Config(format!(
                        "{ENV_TLS_CLIENT_CA}/{ENV_TLS_REVOKED_SERIALS} need {ENV_TLS_CERT} and {ENV_TLS_KEY}"
                    )));
                }
                return Ok(None);
            }
            _ => {
                return Err(ServerTlsError::Config(format!(
                    "set both {ENV_TLS_CERT} and {ENV_TLS_KEY}, or neither"
                )));
            }
        };
        let mut s = Self::new(cert.trim(), key.trim());
        s.client_ca_path = ca.map(|c| PathBuf::from(c.trim()));
        s.revoked_serials = revoked
            .map(|r| {
                r.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        s.revoked_serials_file = revoked_file.map(|f| PathBuf::from(f.trim()));
        if let Some(v) = get(ENV_TLS_RELOAD_INTERVAL_SECS) {
            let secs: u64 = v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ServerTlsError::Config(format!(
                    "{ENV_TLS_RELOAD_INTERVAL_SECS}={v:?} is not a positive number of seconds"
                ))
            })?;
            s.poll_interval = Duration::from_secs(secs);
        }
        Ok(Some(s))
    }
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerTlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file holds no usable PEM data of the expected kind.
    #[error("{path}: {message}")]
    InvalidPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the material (key does not match, unusable CA, ...).
    #[error("TLS configuration: {0}")]
    Rustls(String),
    /// The settings are inconsistent or a serial is not hex.
    #[error("TLS settings: {0}")]
    Config(String),
}

/// What is known about the loaded server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerCertificateInfo {
    /// Subject distinguished name.
    pub subject: String,
    /// Serial, lowercase hex without leading zeros.
    pub serial: String,
    /// End of validity.
    pub not_after: DateTime<Utc>,
}

impl From<CertificateExpiry> for ServerCertificateInfo {
    fn from(c: CertificateExpiry) -> Self {
        Self {
            subject: c.subject,
            serial: c.serial,
            not_after: c.not_after,
        }
    }
}

impl ServerCertificateInfo {
    fn expiry(&self) -> CertificateExpiry {
        CertificateExpiry {
            subject: self.subject.clone(),
            serial: self.serial.clone(),
            not_after: self.not_after,
        }
    }
}

#[derive(Debug)]
struct Loaded {
    config: Arc<rustls::ServerConfig>,
    info: ServerCertificateInfo,
    stamps: FileStamps,
}

#[derive(Debug)]
struct Inner {
    settings: ServerTlsSettings,
    state: RwLock<Loaded>,
    expiry: ExpiryTracker,
}

/// The server's TLS configuration, reloadable. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct ServerTls {
    inner: Arc<Inner>,
}

impl ServerTls {
    /// Loads and validates the files, logs expiry warnings and records the metric.
    ///
    /// # Errors
    /// Unreadable or invalid files, a key not matching the certificate, a
    /// serial that is not hex.
    pub fn load(settings: ServerTlsSettings) -> Result<Self, ServerTlsError> {
        let loaded = load_files(&settings)?;
        let expiry = ExpiryTracker::new("server", settings.warn_thresholds_days.clone());
        expiry.loaded(&loaded.info.expiry());
        let this = Self {
            inner: Arc::new(Inner {
                settings,
                state: RwLock::new(loaded),
                expiry,
            }),
        };
        tracing::info!(
            subject = %this.certificate_info().subject,
            not_after = %this.certificate_info().not_after,
            client_auth = this.inner.settings.client_ca_path.is_some(),
            revoked_serials = this.inner.settings.revoked_serials.len(),
            endpoint = %this.inner.settings.endpoint,
            "TLS enabled"
        );
        Ok(this)
    }

    /// The settings this was loaded from.
    #[must_use]
    pub fn settings(&self) -> &ServerTlsSettings {
        &self.inner.settings
    }

    /// The rustls configuration for the next handshake (the latest loaded).
    #[must_use]
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.read(|s| Arc::clone(&s.config))
    }

    /// Subject, serial and expiry of the loaded server certificate.
    #[must_use]
    pub fn certificate_info(&self) -> ServerCertificateInfo {
        self.read(|s| s.info.clone())
    }

    /// Whole days until the server certificate expires (negative once expired).
    #[must_use]
    pub fn days_to_expiry(&self) -> i64 {
        cert_expiry::days_until(self.certificate_info().not_after, Utc::now())
    }

    /// Reloads when a file's modification time changed; otherwise re-checks
    /// expiry. Returns whether it reloaded. On error the previous
    /// configuration stays in use.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub fn reload_if_changed(&self) -> Result<bool, ServerTlsError> {
        if self.read(|s| s.stamps.clone()) == stamps(&self.inner.settings) {
            let info = self.read(|s| s.info.expiry());
            self.inner.expiry.recheck(&info);
            return Ok(false);
        }
        self.reload()?;
        Ok(true)
    }

    /// Reloads the files unconditionally.
    ///
    /// # Errors
    /// As [`load`](Self::load); the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), ServerTlsError> {
        let loaded = load_files(&self.inner.settings)?;
        self.inner.expiry.loaded(&loaded.info.expiry());
        tracing::info!(
            subject = %loaded.info.subject,
            serial = %loaded.info.serial,
            not_after = %loaded.info.not_after,
            endpoint = %self.inner.settings.endpoint,
            "reloaded the server TLS certificate; new connections use it"
        );
        self.write(|s| *s = loaded);
        Ok(())
    }

    /// Checks the files every `poll_interval` and reloads them on change;
    /// abort the handle to stop.
    pub fn spawn_watcher(&self) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.inner.settings.poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let me = this.clone();
                match tokio::task::spawn_blocking(move || me.reload_if_changed()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(
                        error = %e,
                        "server certificate reload failed; keeping the previous certificate"
                    ),
                    Err(e) => tracing::error!(error = %e, "server certificate reload task failed"),
                }
            }
        })
    }

    /// Accepts connections on `listener` and yields the ones whose TLS
    /// handshake succeeded (refused handshakes are logged and dropped). Each
    /// handshake runs in its own task with the configuration current when the
    /// connection arrived. Accepting stops when the stream is dropped.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>>
    + Send
    + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = tx.closed() => return,
                    a = listener.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(this.server_config());
                let timeout = this.inner.settings.handshake_timeout;
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "TLS handshake refused");
                        }
                        Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    /// Like [`incoming`](Self::incoming), as an [`axum::serve::Listener`]
    /// (for the REST API): handshakes run concurrently, each with the
    /// configuration current when its connection arrived.
    ///
    /// # Errors
    /// The listener's local address cannot be read.
    pub fn axum_listener(&self, listener: TcpListener) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        Ok(TlsListener {
            incoming: Box::pin(self.incoming(listener)),
            local,
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Loaded) -> T) -> T {
        match self.inner.state.read() {
            Ok(g) => f(&g),
            Err(p) => f(&p.into_inner()),
        }
    }

    fn write(&self, f: impl FnOnce(&mut Loaded)) {
        match self.inner.state.write() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

type TlsIncoming = std::pin::Pin<
    Box<
        dyn Stream<Item = Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>>
            + Send,
    >,
>;

/// TLS connections for `axum::serve`, from [`ServerTls::axum_listener`].
pub struct TlsListener {
    incoming: TlsIncoming,
    local: std::net::SocketAddr,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use futures::StreamExt as _;
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.get_ref().0.peer_addr().unwrap_or(self.local);
                    return (stream, peer);
                }
                Some(Err(e)) => tracing::warn!(error = %e, "TLS accept failed"),
                // The accept task only ends when this stream is dropped.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Normalizes a certificate serial: lowercase hex without `0x`, `:`, spaces
/// or leading zeros (`"0"` for zero).
///
/// # Errors
/// [`ServerTlsError::Config`] when it is not hexadecimal.
pub fn normalize_serial(s: &str) -> Result<String, ServerTlsError> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let cleaned: String = t
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    if cleaned.is_empty() || !cleaned.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ServerTlsError::Config(format!(
            "revoked serial {s:?} is not hexadecimal"
        )));
    }
    let trimmed = cleaned.trim_start_matches('0');
    Ok(if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    })
}

/// The serial of a DER certificate in the form of [`normalize_serial`].
fn serial_of(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert_expiry::serial_hex(cert.raw_serial()))
}

/// A client-certificate verifier that refuses revoked serials, then delegates
/// to webpki (chain to the client CA, validity period, key usage).
#[derive(Debug)]
struct RevocationCheckingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: HashSet<String>,
}

impl ClientCertVerifier for RevocationCheckingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !self.revoked.is_empty() {
            match serial_of(end_entity.as_ref()) {
                Some(serial) if self.revoked.contains(&serial) => {
                    tracing::warn!(%serial, "refused a revoked client certificate");
                    return Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::Revoked,
                    ));
                }
                Some(_) => {}
                None => {
                    return Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::BadEncoding,
                    ));
                }
            }
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn stamps(s: &ServerTlsSettings) -> FileStamps {
    FileStamps::of([
        Some(s.cert_path.as_path()),
        Some(s.key_path.as_path()),
        s.client_ca_path.as_deref(),
        s.revoked_serials_file.as_deref(),
    ])
}

/// Every revoked serial: the list plus the file's lines.
fn revoked_serials(s: &ServerTlsSettings) -> Result<HashSet<String>, ServerTlsError> {
    let mut all = s
        .revoked_serials
        .iter()
        .map(|r| normalize_serial(r))
        .collect::<Result<HashSet<_>, _>>()?;
    if let Some(path) = &s.revoked_serials_file {
        let text = String::from_utf8_lossy(&read(path)?).into_owned();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if !line.is_empty() {
                all.insert(normalize_serial(line)?);
            }
        }
    }
    Ok(all)
}

fn read(path: &Path) -> Result<Vec<u8>, ServerTlsError> {
    std::fs::read(path).map_err(|source| ServerTlsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path, data: &[u8]) -> Result<Vec<CertificateDer<'static>>, ServerTlsError> {
    let certs = CertificateDer::pem_slice_iter(data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerTlsError::InvalidPem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ServerTlsError::InvalidPem {
            path: path.to_owned(),
            message: "no CERTIFICATE block found".to_owned(),
        });
    }
    Ok(certs)
}

fn load_files(s: &ServerTlsSettings) -> Result<Loaded, ServerTlsError> {
    let stamps = stamps(s);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&s.cert_path, &read(&s.cert_path)?)?;
    let key_pem = read(&s.key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| ServerTlsError::InvalidPem {
        path: s.key_path.clone(),
        message: format!("no usable PRIVATE KEY: {e}"),
    })?;
    let info = CertificateExpiry::from_der(chain[0].as_ref())
        .map(ServerCertificateInfo::from)
        .map_err(|e| ServerTlsError::InvalidPem {
            path: s.cert_path.clone(),
            message: e.to_string(),
        })?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerTlsError::Rustls(e.to_string()))?;
    let builder = match &s.client_ca_path {
        Some(ca_path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca_path, &read(ca_path)?)? {
                roots.add(c).map_err(|e| ServerTlsError::InvalidPem {
                    path: ca_path.clone(),
                    message: format!("unusable CA certificate: {e}"),
                })?;
            }
            let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ServerTlsError::Rustls(e.to_string()))?;
            let revoked = revoked_serials(s)?;
            builder.with_client_cert_verifier(Arc::new(RevocationCheckingVerifier {
                inner: webpki,
                revoked,
            }))
        }
        None => {
            if !s.revoked_serials.is_empty() || s.revoked_serials_file.is_some() {
                return Err(ServerTlsError::Config(
                    "revoked serials need a client CA (mTLS)".to_owned(),
                ));
            }
            builder.with_no_client_auth()
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| ServerTlsError::Rustls(e.to_string()))?;
    config.alpn_protocols.clone_from(&s.alpn_protocols);
    Ok(Loaded {
        config: Arc::new(config),
        info,
        stamps,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serials_normalize() {
        assert_eq!(normalize_serial("0x00AB:cd").unwrap(), "abcd");
        assert_eq!(normalize_serial("000").unwrap(), "0");
        assert!(normalize_serial("xyz").is_err());
    }

    #[test]
    fn env_settings() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(ServerTlsSettings::from_lookup(env(&[])).unwrap().is_none());
        assert!(ServerTlsSettings::from_lookup(env(&[(ENV_TLS_CERT, "/c")])).is_err());
        let s = ServerTlsSettings::from_lookup(env(&[
            (ENV_TLS_CERT, "/c"),
            (ENV_TLS_KEY, "/k"),
            (ENV_TLS_CLIENT_CA, "/ca"),
            (ENV_TLS_REVOKED_SERIALS, "ab, 0x01"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.client_ca_path, Some(PathBuf::from("/ca")));
        assert_eq!(s.revoked_serials, vec!["ab".to_owned(), "0x01".to_owned()]);
    }
}
