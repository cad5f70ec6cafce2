//! Logs and job traces of `hodei-server` and `hodei-worker`: the log output
//! (filtered by `RUST_LOG`) and, in a build with the `otel` feature, the
//! OTLP exporter of the job spans (`hodei_core::traces`) when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use hodei_core::server_config::TraceExport;
use tracing_subscriber::EnvFilter;
#[cfg(feature = "otel")]
use tracing_subscriber::Layer as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Keeps the trace exporter alive; [`Logging::shutdown`] flushes it.
pub(crate) struct Logging {
    #[cfg(feature = "otel")]
    pipeline: Option<hodei_core::traces::otel::OtelPipeline>,
}

/// Installs the process's subscriber: logs to `writer` (`RUST_LOG`, else
/// `default_filter`), and the job spans to `traces` when given.
///
/// In a build without the `otel` feature, `traces` cannot be acted on: the
/// error says so (the caller refuses to start, or logs it loudly and goes on).
pub(crate) fn init<W>(
    default_filter: &str,
    ansi: bool,
    writer: W,
    traces: Option<&TraceExport>,
) -> (Logging, Result<(), String>)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // The filter applies to the whole subscriber, not as a per-layer filter
    // of the log output: a per-layer filter that a `log`-crate `enabled()`
    // query (sqlx asks one for its notices) answers "no" to swallows the
    // next event of that thread (tokio-rs/tracing#2519): a replica's first
    // lines after connecting to an already-migrated database went missing.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(writer);
    #[cfg(feature = "otel")]
    {
        use hodei_core::traces::otel;
        let mut outcome = Ok(());
        let pipeline =
            traces.and_then(|t| match otel::install_otlp(&t.endpoint, &t.service_name) {
                Ok(p) => Some(p),
                Err(e) => {
                    outcome = Err(e.to_string());
                    None
                }
            });
        // Only Hodei's own spans (and the events in them) become OpenTelemetry
        // spans: not the HTTP/2 and database internals.
        let spans = pipeline.as_ref().map(|p| {
            p.layer().with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("hodei", tracing::Level::INFO),
            )
        });
        // The spans exported are those `RUST_LOG` enables too (the default does).
        tracing_subscriber::registry()
            .with(filter)
            .with(logs)
            .with(spans)
            .init();
        if let (Some(t), Some(_)) = (traces, &pipeline) {
            tracing::info!(endpoint = %t.endpoint, service = %t.service_name, "exporting job traces over OTLP");
            // The filter is global: a RUST_LOG that hides Hodei's info spans
            // would export nothing, which must not go unnoticed.
            if !tracing::enabled!(target: "hodei_core::traces", tracing::Level::INFO) {
                tracing::warn!(
                    "RUST_LOG turns off hodei_core's info spans, so no job traces are exported: \
                     add `hodei_core=info,hodei_agent=info` to it"
                );
            }
        }
        (Logging { pipeline }, outcome)
    }
    #[cfg(not(feature = "otel"))]
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(logs)
            .init();
        let outcome = match traces {
            Some(t) => Err(format!(
                "{}={} is set, but this build cannot export traces: build hodei-examples with the \
                 `otel` cargo feature (or unset the variable)",
                hodei_core::server_config::ENV_OTLP_ENDPOINT,
                t.endpoint
            )),
            None => Ok(()),
        };
        (Logging {}, outcome)
    }
}

impl Logging {
    /// Flushes the spans still buffered and stops the exporter (off the async
    /// threads: the exporter's gRPC client runs on them).
    pub(crate) async fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.pipeline {
            match tokio::task::spawn_blocking(move || p.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("traces: {e}"),
                Err(e) => eprintln!("traces: {e}"),
            }
        }
    }
}
