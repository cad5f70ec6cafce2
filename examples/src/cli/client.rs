//! The connection to the server and the CLI's error type.

use std::fmt;

use hodei_core::JobId;
use hodei_core::client::{BearerToken, ClientError, ClientOptions, HodeiClient};

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

/// The authenticated channel of a [`HodeiClient`], for the RPCs it does not
/// wrap (providers, templates, scheduling, audit, artifacts).
pub(crate) type Channel = hodei_core::client::AuthChannel;

impl From<ClientError> for CliError {
    /// Prints as the CLI always has: the server's message and its code.
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Unreachable { endpoint, detail } => CliError::Unreachable {
                server: endpoint,
                detail,
            },
            ClientError::InvalidConfig(m) => CliError::Usage(m),
            ClientError::Rpc(status) => CliError::Rpc(status),
            other => match (other.code(), other.server_message()) {
                (Some(code), Some(message)) => CliError::Rpc(tonic::Status::new(code, message)),
                _ => CliError::Rpc(tonic::Status::internal(other.to_string())),
            },
        }
    }
}

/// Client options from the environment: the API token from `HODEI_TOKEN`;
/// for an `https://` server, the CA from `HODEI_TLS_CA`, a client certificate
/// from `HODEI_TLS_CERT`/`HODEI_TLS_KEY` (when the server requires mTLS) and
/// the server name from `HODEI_TLS_DOMAIN`.
fn options_from_env(server: &str) -> Result<ClientOptions, CliError> {
    let mut options = ClientOptions::new();
    if let Ok(t) = std::env::var("HODEI_TOKEN")
        && !t.trim().is_empty()
    {
        if BearerToken::new(Some(t.trim())).is_none() {
            return Err(CliError::Usage(
                "HODEI_TOKEN contains invalid characters".into(),
            ));
        }
        options = options.with_token(t);
    }
    if !server.starts_with("https://") {
        return Ok(options);
    }
    let read = |var: &str| -> Result<Option<Vec<u8>>, CliError> {
        match std::env::var(var) {
            Ok(p) if !p.trim().is_empty() => std::fs::read(p.trim())
                .map(Some)
                .map_err(|e| CliError::Usage(format!("{var}={p}: {e}"))),
            _ => Ok(None),
        }
    };
    if let Some(ca) = read("HODEI_TLS_CA")? {
        options = options.with_tls_ca_pem(ca);
    }
    match (read("HODEI_TLS_CERT")?, read("HODEI_TLS_KEY")?) {
        (Some(c), Some(k)) => options = options.with_identity_pem(c, k),
        (None, None) => {}
        _ => {
            return Err(CliError::Usage(
                "set both HODEI_TLS_CERT and HODEI_TLS_KEY, or neither".into(),
            ));
        }
    }
    if let Ok(d) = std::env::var("HODEI_TLS_DOMAIN") {
        options = options.with_tls_domain(d);
    }
    Ok(options)
}

/// A client of `server`, connected at once so an absent server is reported
/// before anything else.
pub(crate) async fn connect_client(server: &str) -> Result<HodeiClient, CliError> {
    Ok(HodeiClient::connect(server, options_from_env(server)?).await?)
}

/// The authenticated channel to `server`, for the RPCs the client does not wrap.
pub(crate) async fn connect(server: &str) -> Result<Channel, CliError> {
    Ok(connect_client(server).await?.channel())
}

/// A job id typed by the user; refused as the server refuses one.
pub(crate) fn parse_job_id(id: &str) -> Result<JobId, CliError> {
    id.trim().parse().map_err(|_| {
        CliError::Rpc(tonic::Status::invalid_argument(format!(
            "job_id: {id:?} is not a valid id (UUID)"
        )))
    })
}
