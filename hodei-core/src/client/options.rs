//! [`ClientOptions`]: how [`super::HodeiClient`] connects.

use std::fmt;
use std::time::Duration;

/// How a [`super::HodeiClient`] connects: API token, TLS (for `https://`
/// endpoints), timeouts and HTTP/2 windows and frame size. Built with the `with_*` methods
/// from [`ClientOptions::default`].
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    pub(crate) token: Option<String>,
    pub(crate) tls_ca_pem: Option<Vec<u8>>,
    pub(crate) identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    pub(crate) tls_domain: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) stream_window: u32,
    pub(crate) connection_window: u32,
    pub(crate) max_frame_size: u32,
    pub(crate) max_message_bytes: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            token: None,
            tls_ca_pem: None,
            identity_pem: None,
            tls_domain: None,
            connect_timeout: Duration::from_secs(5),
            // Followed logs arrive in chunks of up to 512 KiB: windows this
            // size avoid a window-update stall per chunk, and frames of a
            // quarter of the stream window carry a chunk in two HTTP/2 frames
            // instead of 32 (see `hodei_core::server::HTTP2_MAX_FRAME_SIZE`).
            stream_window: 1 << 20,
            connection_window: 4 << 20,
            max_frame_size: 256 * 1024,
            // All stored logs of a job come in one `GetLogs` answer.
            max_message_bytes: 64 << 20,
        }
    }
}

impl ClientOptions {
    /// The defaults: no token, system TLS defaults, 5 s connect timeout.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `authorization: Bearer <token>` with every call (an API token of
    /// the server's `HODEI_API_TOKENS`). A blank token sends nothing.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.token = (!token.trim().is_empty()).then(|| token.trim().to_owned());
        self
    }

    /// Trusts this CA (PEM) for the server's certificate.
    #[must_use]
    pub fn with_tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca_pem = Some(pem.into());
        self
    }

    /// Presents this client certificate and key (PEM), for a server that
    /// requires mutual TLS.
    #[must_use]
    pub fn with_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity_pem = Some((cert.into(), key.into()));
        self
    }

    /// Checks the server's certificate against this name instead of the
    /// endpoint's host.
    #[must_use]
    pub fn with_tls_domain(mut self, domain: impl Into<String>) -> Self {
        self.tls_domain = Some(domain.into());
        self
    }

    /// Gives up connecting after this long (default 5 s).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// HTTP/2 per-stream window in bytes (default 1 MiB).
    #[must_use]
    pub fn with_stream_window(mut self, bytes: u32) -> Self {
        self.stream_window = bytes;
        self
    }

    /// HTTP/2 per-connection window in bytes (default 4 MiB).
    #[must_use]
    pub fn with_connection_window(mut self, bytes: u32) -> Self {
        self.connection_window = bytes;
        self
    }

    /// Largest HTTP/2 frame the server may send, in bytes (default 256 KiB;
    /// HTTP/2 allows 16 KiB to 16 MiB - 1, and the value is clamped to that).
    #[must_use]
    pub fn with_max_frame_size(mut self, bytes: u32) -> Self {
        self.max_frame_size = bytes.clamp(16 * 1024, (1 << 24) - 1);
        self
    }
}

impl ClientOptions {
    /// Largest answer accepted, in bytes (default 64 MiB: all stored logs of
    /// a job come in one answer).
    #[must_use]
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }
}

/// Never prints the token or key material.
impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls_ca_pem", &self.tls_ca_pem.is_some())
            .field("identity_pem", &self.identity_pem.is_some())
            .field("tls_domain", &self.tls_domain)
            .field("connect_timeout", &self.connect_timeout)
            .field("stream_window", &self.stream_window)
            .field("connection_window", &self.connection_window)
            .field("max_frame_size", &self.max_frame_size)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}
