//! The connection to the server and the CLI's error type.

use std::fmt;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

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

/// Connects to `server` (eagerly, so an absent server is reported at once).
pub(crate) async fn connect(server: &str) -> Result<Channel, CliError> {
    let endpoint = Endpoint::from_shared(server.to_owned())
        .map_err(|e| CliError::Usage(format!("invalid server address {server:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    endpoint.connect().await.map_err(|e| {
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
    })
}
