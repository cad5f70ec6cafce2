//! The real gRPC services ([`crate::server`]) and REST API ([`crate::api::rest`])
//! of one [`ControlPlane`], served in-process on free loopback ports, for
//! integration tests (feature `testing` + `server`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use hodei_core::control::ControlPlane;
//! use hodei_core::testing::TestServer;
//!
//! let server = TestServer::spawn(ControlPlane::builder().build()).await?;
//! let health = reqwest::get(format!("{}/healthz", server.http_url())).await?;
//! assert!(health.status().is_success());
//! server.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! The control plane's own loop ([`ControlPlane::run`]) is not started: tests
//! that want scheduling spawn it themselves.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

use crate::control::ControlPlane;
use crate::server::{ServeError, ServerOptions};

/// How long [`TestServer::shutdown`] waits for open connections to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why a [`TestServer`] did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestServerError {
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[source] ServeError),
    /// The REST server failed.
    #[error("REST server: {0}")]
    Rest(#[source] std::io::Error),
    /// A server task panicked or was cancelled.
    #[error("{server} server task: {source}")]
    Task {
        /// `gRPC` or `REST`.
        server: &'static str,
        /// The join error.
        source: JoinError,
    },
    /// Connections were still open after [`SHUTDOWN_GRACE`]; the servers were aborted.
    #[error("the servers did not stop within {0:?} (open streams?); aborted")]
    ShutdownTimedOut(Duration),
}

/// Both listeners of a [`TestServer`], bound but not yet serving: for a
/// control plane that must know its own address before it is built (e.g.
/// `ControlPlaneConfig::worker_server_address`).
#[derive(Debug)]
pub struct TestListeners {
    grpc: TcpListener,
    grpc_addr: SocketAddr,
    http: TcpListener,
    http_addr: SocketAddr,
}

impl TestListeners {
    /// Binds two free ports on 127.0.0.1.
    ///
    /// # Errors
    ///
    /// [`ServeError::Bind`] when no port can be bound.
    pub async fn bind() -> Result<Self, ServeError> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let (grpc, grpc_addr) = crate::server::bind(any).await?;
        let (http, http_addr) = crate::server::bind(any).await?;
        Ok(Self {
            grpc,
            grpc_addr,
            http,
            http_addr,
        })
    }

    /// The gRPC listener's address.
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The REST listener's address.
    #[must_use]
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves `cp` on these listeners, plain and open.
    #[must_use]
    pub fn serve(self, cp: ControlPlane) -> TestServer {
        self.serve_with(cp, ServerOptions::new())
    }

    /// Serves `cp` on these listeners with the TLS and API tokens of
    /// `options`, on both gRPC and REST.
    #[must_use]
    pub fn serve_with(self, cp: ControlPlane, options: ServerOptions) -> TestServer {
        // `/metrics` reads the process-wide recorder: install it now, before
        // the test records anything, not when the REST task first runs.
        let _ = crate::telemetry::install();
        let tls = options.tls.is_some();
        let (stop, stopped) = watch::channel(false);
        let grpc = tokio::spawn(crate::server::serve_grpc_with(
            cp.clone(),
            self.grpc,
            options.clone(),
            stop_signal(stopped.clone()),
        ));
        let rest = tokio::spawn(crate::api::rest::serve_rest_with_options(
            cp.clone(),
            self.http,
            options,
            stop_signal(stopped),
        ));
        TestServer {
            cp,
            grpc_addr: self.grpc_addr,
            http_addr: self.http_addr,
            tls,
            stop,
            tasks: Some((grpc, rest)),
        }
    }
}

/// Resolves once `rx` turns true, or when its sender is gone.
async fn stop_signal(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

type Tasks = (
    JoinHandle<Result<(), ServeError>>,
    JoinHandle<std::io::Result<()>>,
);

/// A control plane's gRPC services and REST API on free loopback ports.
///
/// [`TestServer::shutdown`] stops both gracefully (open REST log streams end)
/// and reports how they ended; dropping it aborts both server tasks, which
/// closes the listeners (connections already accepted are not cut).
#[derive(Debug)]
pub struct TestServer {
    cp: ControlPlane,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    tls: bool,
    stop: watch::Sender<bool>,
    tasks: Option<Tasks>,
}

impl TestServer {
    /// Serves `cp`, plain and open, on two free ports.
    ///
    /// # Errors
    ///
    /// [`ServeError::Bind`] when no port can be bound.
    pub async fn spawn(cp: ControlPlane) -> Result<Self, ServeError> {
        Ok(TestListeners::bind().await?.serve(cp))
    }

    /// Serves `cp` with the TLS and API tokens of `options` on both gRPC and
    /// REST. With TLS the URLs name `localhost` (the name test certificates
    /// carry).
    ///
    /// # Errors
    ///
    /// [`ServeError::Bind`] when no port can be bound.
    pub async fn spawn_with(cp: ControlPlane, options: ServerOptions) -> Result<Self, ServeError> {
        Ok(TestListeners::bind().await?.serve_with(cp, options))
    }

    /// The control plane served.
    #[must_use]
    pub fn control_plane(&self) -> &ControlPlane {
        &self.cp
    }

    /// The gRPC address (127.0.0.1 and the port).
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The REST address (127.0.0.1 and the port).
    #[must_use]
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The gRPC endpoint: `http://127.0.0.1:<port>`, or
    /// `https://localhost:<port>` with TLS.
    #[must_use]
    pub fn grpc_url(&self) -> String {
        self.url(self.grpc_addr)
    }

    /// The REST base URL (no trailing slash): `http://127.0.0.1:<port>`, or
    /// `https://localhost:<port>` with TLS.
    #[must_use]
    pub fn http_url(&self) -> String {
        self.url(self.http_addr)
    }

    fn url(&self, addr: SocketAddr) -> String {
        if self.tls {
            format!("https://localhost:{}", addr.port())
        } else {
            format!("http://{addr}")
        }
    }

    /// Stops both servers gracefully: no new connections, open REST log
    /// streams end, in-flight requests finish (within [`SHUTDOWN_GRACE`],
    /// then they are aborted). Returns how the servers ended.
    ///
    /// # Errors
    ///
    /// A server that failed, panicked or did not stop in time.
    pub async fn shutdown(mut self) -> Result<(), TestServerError> {
        let Some((mut grpc, mut rest)) = self.tasks.take() else {
            return Ok(());
        };
        let _ = self.stop.send(true);
        let both = async {
            let grpc_ended = (&mut grpc).await;
            let rest_ended = (&mut rest).await;
            (grpc_ended, rest_ended)
        };
        let Ok((grpc_ended, rest_ended)) = tokio::time::timeout(SHUTDOWN_GRACE, both).await else {
            grpc.abort();
            rest.abort();
            return Err(TestServerError::ShutdownTimedOut(SHUTDOWN_GRACE));
        };
        grpc_ended
            .map_err(|source| TestServerError::Task {
                server: "gRPC",
                source,
            })?
            .map_err(TestServerError::Grpc)?;
        rest_ended
            .map_err(|source| TestServerError::Task {
                server: "REST",
                source,
            })?
            .map_err(TestServerError::Rest)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some((grpc, rest)) = self.tasks.take() {
            let _ = self.stop.send(true);
            grpc.abort();
            rest.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1;
    use crate::proto::v1::job_query_service_client::JobQueryServiceClient;

    async fn refused(addr: SocketAddr) -> bool {
        matches!(
            tokio::net::TcpStream::connect(addr).await,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    }

    #[tokio::test]
    async fn serves_rest_and_grpc_then_stops_on_shutdown() {
        let cp = ControlPlane::builder().build();
        let server = TestServer::spawn(cp.clone()).await.unwrap();
        assert_ne!(server.grpc_addr(), server.http_addr());
        assert_eq!(server.http_url(), format!("http://{}", server.http_addr()));

        // A job created over REST is listed over gRPC, by the same control plane.
        let http = reqwest::Client::new();
        let created = http
            .post(format!("{}/api/v1/jobs", server.http_url()))
            .json(&serde_json::json!({
                "name": "served",
                "command": {"type": "shell", "cmd": "true", "args": []}
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), reqwest::StatusCode::CREATED);
        let mut query = JobQueryServiceClient::connect(server.grpc_url())
            .await
            .unwrap();
        let listed = query
            .list_jobs(v1::ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.jobs.len(), 1, "{listed:?}");
        drop(query);

        let (grpc, rest) = (server.grpc_addr(), server.http_addr());
        server.shutdown().await.unwrap();
        assert!(refused(grpc).await, "gRPC port still open");
        assert!(refused(rest).await, "REST port still open");
    }

    #[tokio::test]
    async fn dropping_it_closes_both_ports() {
        let server = TestServer::spawn(ControlPlane::builder().build())
            .await
            .unwrap();
        let (grpc, rest) = (server.grpc_addr(), server.http_addr());
        assert!(!refused(rest).await);
        drop(server);
        // The aborted tasks drop their listeners on the next poll.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !(refused(grpc).await && refused(rest).await) {
            assert!(tokio::time::Instant::now() < deadline, "ports still open");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
