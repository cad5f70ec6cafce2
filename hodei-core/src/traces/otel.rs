//! OpenTelemetry for the job spans (feature `otel`): their remote parent, and
//! the OTLP exporter that sends them to a collector.
//!
//! [`install_otlp`] builds a tracer provider exporting over OTLP/gRPC and
//! returns an [`OtelPipeline`]; its [`layer`](OtelPipeline::layer) goes into
//! the process's `tracing_subscriber` registry beside the log output. Keep the
//! pipeline alive for the life of the process: dropping it flushes and shuts
//! the exporter down. [`OtelPipeline::from_provider`] takes any other tracer
//! provider (another exporter, or an in-memory one in tests).
//!
//! The variables a binary reads ([`ENV_OTLP_ENDPOINT`], [`ENV_SERVICE_NAME`])
//! are the OpenTelemetry standard ones.
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let pipeline = hodei_core::traces::otel::install_otlp("http://collector:4317", "hodei-server")?;
//! let subscriber = tracing_subscriber::registry().with(pipeline.layer());
//! tracing::subscriber::set_global_default(subscriber)?;
//! // ... run; `pipeline` is dropped (and flushed) at the end of main.
//! # Ok(()) }
//! ```

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};

use super::{root_span_id_bytes, trace_id_bytes};

/// The OpenTelemetry API and SDK crates this module is built on: build a
/// tracer provider for [`OtelPipeline::from_provider`] with these, so the
/// versions match (the SDK's in-memory exporter comes with hodei-core's
/// `testing` feature).
pub use {opentelemetry, opentelemetry_sdk};

/// The OTLP collector endpoint variable (`http://host:4317`, gRPC).
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The service name variable (the process's name in the trace backend).
pub const ENV_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// The tracer's instrumentation scope name.
const SCOPE: &str = "hodei";

/// Why traces cannot be exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtelError {
    /// The OTLP exporter could not be built (a malformed endpoint).
    #[error("OTLP exporter for {endpoint:?}: {message}")]
    Exporter {
        /// The endpoint given.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// Flushing or shutting down the tracer provider failed.
    #[error("shutting the trace exporter down: {0}")]
    Shutdown(String),
}

/// The OpenTelemetry [`TraceId`] of a job's trace (see [`trace_id_bytes`]).
#[must_use]
pub fn trace_id(correlation_id: &str) -> TraceId {
    TraceId::from_bytes(trace_id_bytes(correlation_id))
}

/// The remote, sampled root [`SpanContext`] every job span of `correlation_id`
/// hangs from.
#[must_use]
pub fn job_root_context(correlation_id: &str) -> SpanContext {
    SpanContext::new(
        trace_id(correlation_id),
        SpanId::from_bytes(root_span_id_bytes(correlation_id)),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    )
}

/// Makes `span` (not yet entered) a child of the job's remote root, unless
/// the span it was created in already belongs to the job's trace (then it
/// stays that span's child). No-op when no OpenTelemetry layer is installed.
pub(super) fn link_to_job_trace(span: &Span, correlation_id: &str) {
    let root = job_root_context(correlation_id);
    let current = Span::current().context();
    if current.span().span_context().trace_id() == root.trace_id() {
        return;
    }
    // Fails only when no OpenTelemetry layer is installed or the span is
    // disabled: nothing to link then.
    let _ = span.set_parent(Context::new().with_remote_span_context(root));
}

/// A tracer provider the job spans are exported through; dropping it flushes
/// and shuts it down.
#[derive(Debug)]
pub struct OtelPipeline {
    provider: SdkTracerProvider,
}

/// Builds the OTLP/gRPC exporter to `endpoint` (`http://collector:4317`) and a
/// tracer provider that batches spans to it under `service_name`. Call it
/// inside a Tokio runtime (the gRPC client runs on it); spans are sent in the
/// background, and a collector that is down only costs the spans.
///
/// # Errors
/// [`OtelError::Exporter`] when the exporter cannot be built from `endpoint`.
pub fn install_otlp(endpoint: &str, service_name: &str) -> Result<OtelPipeline, OtelError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| OtelError::Exporter {
            endpoint: endpoint.to_owned(),
            message: e.to_string(),
        })?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_owned())
                .build(),
        )
        .build();
    Ok(OtelPipeline { provider })
}

/// [`install_otlp`] from the standard variables: `None` when
/// [`ENV_OTLP_ENDPOINT`] is unset or blank; the service name is
/// [`ENV_SERVICE_NAME`], else `default_service_name`.
///
/// # Errors
/// As [`install_otlp`].
pub fn install_from_env(default_service_name: &str) -> Result<Option<OtelPipeline>, OtelError> {
    let Some(endpoint) = std::env::var(ENV_OTLP_ENDPOINT)
        .ok()
        .filter(|e| !e.trim().is_empty())
    else {
        return Ok(None);
    };
    let service = std::env::var(ENV_SERVICE_NAME)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default_service_name.to_owned());
    install_otlp(endpoint.trim(), &service).map(Some)
}

impl OtelPipeline {
    /// Wraps a tracer provider built elsewhere (another exporter, or an
    /// in-memory one in tests).
    #[must_use]
    pub fn from_provider(provider: SdkTracerProvider) -> Self {
        Self { provider }
    }

    /// The tracer provider.
    #[must_use]
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// The `tracing_subscriber` layer turning spans into OpenTelemetry spans
    /// of this provider.
    #[must_use]
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let scope = InstrumentationScope::builder(SCOPE)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer_with_scope(scope))
    }

    /// Exports what is still buffered.
    ///
    /// # Errors
    /// [`OtelError::Shutdown`] when the exporter fails.
    pub fn flush(&self) -> Result<(), OtelError> {
        self.provider
            .force_flush()
            .map_err(|e| OtelError::Shutdown(e.to_string()))
    }

    /// Flushes and shuts the exporter down (what dropping does, with the error).
    ///
    /// # Errors
    /// [`OtelError::Shutdown`] when the exporter fails.
    pub fn shutdown(self) -> Result<(), OtelError> {
        self.provider
            .shutdown()
            .map_err(|e| OtelError::Shutdown(e.to_string()))
    }
}

impl Drop for OtelPipeline {
    fn drop(&mut self) {
        // A second shutdown (after `shutdown()`) only reports "already shut down".
        let _ = self.provider.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_context_is_remote_sampled_and_valid() {
        let c = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let root = job_root_context(c);
        assert!(root.is_valid());
        assert!(root.is_remote());
        assert!(root.is_sampled());
        assert_eq!(
            root.trace_id().to_string(),
            "0f8fad5bd9cb469fa16570867728950e"
        );
    }
}
