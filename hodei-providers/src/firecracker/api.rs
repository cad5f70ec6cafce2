//! A minimal client of Firecracker's HTTP API on its Unix socket.
//!
//! Firecracker's API server speaks HTTP/1.1 with `Content-Length` bodies; one
//! request per connection keeps this client small (no HTTP stack needed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Largest response body read (Firecracker's answers are small JSON documents).
const MAX_RESPONSE: usize = 1 << 20;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirecrackerApiError {
    /// Firecracker answered with an error status; `fault_message` is its explanation.
    #[error("Firecracker rejected {method} {path} ({status}): {fault_message}")]
    Rejected {
        /// HTTP method of the request.
        method: String,
        /// Path of the request.
        path: String,
        /// HTTP status (400 for a bad request).
        status: u16,
        /// Firecracker's `fault_message` (or the raw body when it has none).
        fault_message: String,
    },
    /// The socket could not be reached or the exchange broke off.
    #[error("Firecracker API {method} {path}: {reason}")]
    Transport {
        /// HTTP method of the request.
        method: String,
        /// Path of the request.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// A client of one Firecracker API socket.
#[derive(Debug, Clone)]
pub struct FirecrackerApi {
    socket: PathBuf,
    timeout: Duration,
}

impl FirecrackerApi {
    /// A client of the API socket at `socket`; each call times out after `timeout`.
    #[must_use]
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self {
            socket: socket.into(),
            timeout,
        }
    }

    /// The socket path.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `PUT path` with a JSON body; `Ok` on a 2xx answer.
    ///
    /// # Errors
    /// [`FirecrackerApiError::Rejected`] with Firecracker's `fault_message` on an
    /// error status, [`FirecrackerApiError::Transport`] when the socket fails.
    pub async fn put(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(), FirecrackerApiError> {
        self.request("PUT", path, Some(body)).await.map(|_| ())
    }

    /// `GET path`; the answer's body.
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub async fn get(&self, path: &str) -> Result<String, FirecrackerApiError> {
        self.request("GET", path, None).await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<String, FirecrackerApiError> {
        let transport = |reason: String| FirecrackerApiError::Transport {
            method: method.to_owned(),
            path: path.to_owned(),
            reason,
        };
        let body = body.map(serde_json::Value::to_string).unwrap_or_default();
        let exchange = async {
            let mut stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.socket.display()))?;
            let mut request = format!(
                "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
            );
            if !body.is_empty() {
                request.push_str("Content-Type: application/json\r\n");
            }
            request.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ));
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            read_response(&mut stream).await
        };
        let (status, text) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| transport(format!("no answer within {:?}", self.timeout)))?
            .map_err(transport)?;
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let fault_message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("fault_message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| text.trim().to_owned());
        Err(FirecrackerApiError::Rejected {
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            fault_message,
        })
    }
}

/// Reads one HTTP/1.1 response: its status and body (`Content-Length`, or up to EOF).
async fn read_response(stream: &mut UnixStream) -> Result<(u16, String), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before a complete response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err("response headers too large".into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {:?}", head.lines().next()))?;
    let length = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let mut body = buf[header_end..].to_vec();
    match length {
        Some(len) if len > MAX_RESPONSE => return Err("response body too large".into()),
        Some(len) => {
            while body.len() < len {
                let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed inside the response body".into());
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        // 204 and other bodiless answers.
        None if status == 204 || status == 304 || (100..200).contains(&status) => body.clear(),
        None => loop {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 || body.len() > MAX_RESPONSE {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        },
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
