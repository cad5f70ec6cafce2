//! Serving the control plane over gRPC: all services of the contract plus the
//! standard health service and server reflection (so `grpcurl` works).

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::transport::server::Router;
use tonic::transport::{Server, ServerTlsConfig};

use crate::api::grpc::{
    ArtifactApi, JobArtifactApi, JobExecutionApi, JobQueryApi, LogStreamApi, MetricsApi,
    ProviderManagementApi, SchedulerApi, WorkerAgentApi,
};
use crate::control::ControlPlane;
use crate::proto::v1;

/// HTTP/2 flow-control window per stream, for servers and clients of the wire contract.
pub const HTTP2_STREAM_WINDOW: u32 = 1 << 20;
/// HTTP/2 flow-control window per connection.
pub const HTTP2_CONNECTION_WINDOW: u32 = 4 << 20;
/// Largest HTTP/2 frame a server or client of the wire contract accepts. With
/// HTTP/2's default of 16 KiB, a 512 KiB log batch crosses the wire as 32 DATA
/// frames, each its own `writev` on the sender and its own trip through h2 and
/// tonic on the receiver; with 256 KiB frames it is two. A quarter of
/// [`HTTP2_STREAM_WINDOW`], so several frames are in flight while the window
/// update for the first comes back (a frame as large as the window would
/// make each one wait for the receiver to take in the whole previous one).
/// Peers that advertise less still get frames of their size.
pub const HTTP2_MAX_FRAME_SIZE: u32 = 256 * 1024;

/// Errors starting or running the gRPC server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Binding or serving failed.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection setup failed.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    /// Could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Largest gRPC message accepted (log batches are far smaller).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Options of [`grpc_router_with`] and [`serve_grpc_with`]: TLS and API authentication.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Server TLS (and mTLS when it has a client CA), reloadable. `None` = plain TCP.
    pub tls: Option<crate::tls::ServerTls>,
    /// API tokens for the client-facing services. `None` = open.
    pub auth: Option<crate::api::auth::ApiAuth>,
}

impl ServerOptions {
    /// No TLS, no authentication.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves over TLS with this (reloadable) configuration.
    #[must_use]
    pub fn with_tls(mut self, tls: crate::tls::ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Requires API tokens on the client-facing services.
    #[must_use]
    pub fn with_auth(mut self, auth: crate::api::auth::ApiAuth) -> Self {
        self.auth = Some(auth);
        self
    }
}

/// Builds the router with every service, health and reflection.
pub async fn grpc_router(
    cp: &ControlPlane,
    tls: Option<ServerTlsConfig>,
) -> Result<Router, ServeError> {
    build_router(cp, tls, None).await
}

/// Builds the router with every service, health and reflection, with API
/// tokens enforced on the client-facing services when `options.auth` is set.
///
/// TLS from `options.tls` is not part of the router: it is applied by
/// [`serve_grpc_with`] (or serve the router over [`ServerTls::incoming`](crate::tls::ServerTls::incoming)).
pub async fn grpc_router_with(
    cp: &ControlPlane,
    options: &ServerOptions,
) -> Result<Router, ServeError> {
    build_router(cp, None, options.auth.clone()).await
}

async fn build_router(
    cp: &ControlPlane,
    tls: Option<ServerTlsConfig>,
    auth: Option<crate::api::auth::ApiAuth>,
) -> Result<Router, ServeError> {
    use v1::artifact_service_server::ArtifactServiceServer;
    use v1::audit_service_server::AuditServiceServer;
    use v1::job_artifact_service_server::JobArtifactServiceServer;
    use v1::job_execution_service_server::JobExecutionServiceServer;
    use v1::job_query_service_server::JobQueryServiceServer;
    use v1::log_stream_service_server::LogStreamServiceServer;
    use v1::metrics_service_server::MetricsServiceServer;
    use v1::provider_management_service_server::ProviderManagementServiceServer;
    use v1::scheduler_service_server::SchedulerServiceServer;
    use v1::template_service_server::TemplateServiceServer;
    use v1::worker_agent_service_server::WorkerAgentServiceServer;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<WorkerAgentServiceServer<WorkerAgentApi>>()
        .await;
    health_reporter
        .set_serving::<ArtifactServiceServer<ArtifactApi>>()
        .await;
    health_reporter
        .set_serving::<JobArtifactServiceServer<JobArtifactApi>>()
        .await;
    health_reporter
        .set_serving::<JobExecutionServiceServer<JobExecutionApi>>()
        .await;
    health_reporter
        .set_serving::<JobQueryServiceServer<JobQueryApi>>()
        .await;
    health_reporter
        .set_serving::<SchedulerServiceServer<SchedulerApi>>()
        .await;
    health_reporter
        .set_serving::<ProviderManagementServiceServer<ProviderManagementApi>>()
        .await;
    health_reporter
        .set_serving::<LogStreamServiceServer<LogStreamApi>>()
        .await;
    health_reporter
        .set_serving::<MetricsServiceServer<MetricsApi>>()
        .await;
    health_reporter
        .set_serving::<TemplateServiceServer<crate::api::grpc::TemplateApi>>()
        .await;
    health_reporter
        .set_serving::<AuditServiceServer<crate::api::grpc::AuditApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        // HTTP/2's default 64 KiB window would stall every log batch (up to 512 KiB)
        // for a window update round trip; credit costs no memory until data flows.
        .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW))
        .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW))
        .max_frame_size(Some(HTTP2_MAX_FRAME_SIZE))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    // API tokens guard the client-facing services; the worker-facing RPCs,
    // health and reflection are exempt (see `api::auth::grpc_required_scope`).
    let guard = crate::api::auth::GrpcAuthLayer::new(auth);
    Ok(builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            WorkerAgentServiceServer::new(WorkerAgentApi::new(cp.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        // Worker-facing like WorkerAgentService: the session token is checked by the service.
        .add_service(
            ArtifactServiceServer::new(ArtifactApi::new(cp.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            guard.wrap(JobExecutionServiceServer::new(JobExecutionApi::new(
                cp.clone(),
            ))),
        )
        .add_service(guard.wrap(JobQueryServiceServer::new(JobQueryApi::new(cp.clone()))))
        .add_service(
            guard.wrap(JobArtifactServiceServer::new(JobArtifactApi::new(
                cp.clone(),
            ))),
        )
        .add_service(guard.wrap(SchedulerServiceServer::new(SchedulerApi::new(cp.clone()))))
        .add_service(guard.wrap(ProviderManagementServiceServer::new(
            ProviderManagementApi::new(cp.clone()),
        )))
        .add_service(guard.wrap(LogStreamServiceServer::new(LogStreamApi::new(cp.clone()))))
        .add_service(guard.wrap(MetricsServiceServer::new(MetricsApi::new(cp.clone()))))
        .add_service(guard.wrap(TemplateServiceServer::new(
            crate::api::grpc::TemplateApi::new(cp.clone()),
        )))
        .add_service(
            guard.wrap(AuditServiceServer::new(crate::api::grpc::AuditApi::new(
                cp.clone(),
            ))),
        ))
}

/// Serves gRPC on `listener` until `shutdown` resolves.
pub async fn serve_grpc(
    cp: ControlPlane,
    listener: TcpListener,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let router = grpc_router(&cp, tls).await?;
    router
        .serve_with_incoming_shutdown(nodelay_incoming(listener), shutdown)
        .await?;
    Ok(())
}

/// Serves gRPC on `listener` until `shutdown` resolves, with the TLS (mTLS,
/// revocation, hot reload of rotated files: a watcher runs while serving) and
/// API authentication of `options`.
pub async fn serve_grpc_with(
    cp: ControlPlane,
    listener: TcpListener,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let router = grpc_router_with(&cp, &options).await?;
    if let Some(auth) = &options.auth {
        auth.start_watcher();
    }
    match &options.tls {
        Some(tls) => {
            let watcher = tls.spawn_watcher();
            let served = router
                .serve_with_incoming_shutdown(tls.incoming(listener), shutdown)
                .await;
            watcher.abort();
            served?;
        }
        None => {
            router
                .serve_with_incoming_shutdown(nodelay_incoming(listener), shutdown)
                .await?;
        }
    }
    Ok(())
}

/// Binds `addr` (use port 0 for a free port) and returns the listener and its address.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let l = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = l
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok((l, local))
}

/// Accepted connections with `TCP_NODELAY`: tonic ignores its own `tcp_nodelay`
/// setting for a listener it is handed, and without it every small message
/// (a run command, an ack) waits ~40 ms for Nagle's algorithm.
fn nodelay_incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
