//! The connection to the server and the CLI's error type.

use std::fmt;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Why a command failed. Each variant prints as one clear line.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The server cannot be reached.
    Unreachable { server: String, detail: String },
    /// The server answered with an error.
    Rpc(tonic::Status),
    /// The user's input is wrong (arguments, spec file).
    Usage(String),
    /// The job spec has problems; one line per field.
    InvalidSpec(Vec<String>),
    /// Reading a file or writing output failed.
    Io(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Unreachable { server, detail } => write!(
                f,
                "cannot reach the Hodei server at {server}: is hodei-server running? ({detail})"
            ),
            CliError::Rpc(status) => {
                let msg = status.message();
                if msg.is_empty() {
                    write!(f, "server error: {:?}", status.code())
                } else {
                    write!(f, "{msg} ({:?})", status.code())
                }
            }
            CliError::Usage(msg) | CliError::Io(msg) => f.write_str(msg),
            CliError::InvalidSpec(problems) => {
                write!(f, "invalid job spec:")?;
                for p in problems {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for CliError {}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Rpc(s)
    }
}

impl CliError {
    /// The process exit code for this error: 2 for bad input, 1 otherwise.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::InvalidSpec(_) => 2,
            _ => 1,
        }
    }

    /// An RPC error, reworded when it means the connection broke.
    pub(crate) fn rpc(server: &str, status: tonic::Status) -> Self {
        if status.code() == tonic::Code::Unavailable
            && status.message().to_ascii_lowercase().contains("connect")
        {
            CliError::Unreachable {
                server: server.to_owned(),
                detail: status.message().to_owned(),
            }
        } else {
            CliError::Rpc(status)
        }
    }
}

/// A connection to the server that adds `authorization: Bearer $HODEI_TOKEN`
/// to every call when `HODEI_TOKEN` is set.
pub(crate) type Channel = InterceptedService<tonic::transport::Channel, BearerToken>;

/// Adds the API token to each request.
#[derive(Clone)]
pub(crate) struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The API token from `HODEI_TOKEN`.
fn bearer_from_env() -> Result<BearerToken, CliError> {
    match std::env::var("HODEI_TOKEN") {
        Ok(t) if !t.trim().is_empty() => format!("Bearer {}", t.trim())
            .parse()
            .map(|v| BearerToken(Some(v)))
            .map_err(|_| CliError::Usage("HODEI_TOKEN contains invalid characters".into())),
        _ => Ok(BearerToken(None)),
    }
}

/// TLS for an `https://` server: CA from `HODEI_TLS_CA`, client certificate
/// from `HODEI_TLS_CERT`/`HODEI_TLS_KEY` (when the server requires mTLS),
/// server name from `HODEI_TLS_DOMAIN`.
fn tls_from_env() -> Result<ClientTlsConfig, CliError> {
    let read = |var: &str| -> Result<Option<Vec<u8>>, CliError> {
        match std::env::var(var) {
            Ok(p) if !p.trim().is_empty() => std::fs::read(p.trim())
                .map(Some)
                .map_err(|e| CliError::Usage(format!("{var}={p}: {e}"))),
            _ => Ok(None),
        }
    };
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = read("HODEI_TLS_CA")? {
        tls = tls.ca_certificate(Certificate::from_pem(ca));
    }
    match (read("HODEI_TLS_CERT")?, read("HODEI_TLS_KEY")?) {
        (Some(c), Some(k)) => tls = tls.identity(Identity::from_pem(c, k)),
        (None, None) => {}
        _ => {
            return Err(CliError::Usage(
                "set both HODEI_TLS_CERT and HODEI_TLS_KEY, or neither".into(),
            ));
        }
    }
    if let Ok(d) = std::env::var("HODEI_TLS_DOMAIN") {
        tls = tls.domain_name(d);
    }
    Ok(tls)
}

/// Connects to `server` (eagerly, so an absent server is reported at once).
pub(crate) async fn connect(server: &str) -> Result<Channel, CliError> {
    let bearer = bearer_from_env()?;
    let mut endpoint = Endpoint::from_shared(server.to_owned())
        .map_err(|e| CliError::Usage(format!("invalid server address {server:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Followed logs arrive in chunks of up to 256 KiB: no window-update stall per chunk.
        .initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(4 << 20));
    if server.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls_from_env()?)
            .map_err(|e| CliError::Usage(format!("TLS configuration: {e}")))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail = s.to_string();
            source = s.source();
        }
        CliError::Unreachable {
            server: server.to_owned(),
            detail,
        }
    })?;
    Ok(InterceptedService::new(channel, bearer))
}
