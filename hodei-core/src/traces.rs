//! One trace per job: the spans of a job's life in every process share one
//! trace, linked by the job's correlation id.
//!
//! A job passes through several processes: the server that takes the
//! submission (REST or gRPC), the controller that dispatches it or provisions
//! a worker for it (maybe another replica), the provider that creates that
//! worker, and the agent that runs it. None of them hands a trace context to
//! the next; what they all know is the job's [`CorrelationId`] (the
//! `RunJobCommand` carries it to the agent). So the trace id is *derived* from
//! it ([`trace_id_bytes`]): each process makes its job spans children of the
//! same remote parent (trace id from the correlation id, span id from
//! [`root_span_id_bytes`]), and a trace backend shows them as one trace
//! without any change to the wire protocol. The root itself is never
//! exported: backends show the spans under a "missing" root.
//!
//! | span | where | [`Stage`] |
//! |---|---|---|
//! | `hodei.job.submit` | REST `POST /api/v1/jobs`, gRPC `QueueJob` | [`Stage::Submit`] |
//! | `hodei.job.dispatch` | the controller places the job (assign or provision) | [`Stage::Dispatch`] |
//! | `hodei.job.provision` | the provisioning saga of the job's worker | [`Stage::Provision`] |
//! | `hodei.provider.create_worker` | the provider's `create_worker` call | [`Stage::CreateWorker`] |
//! | `hodei.agent.run` | the agent running the job | [`Stage::Run`] |
//!
//! Each carries the attributes `job.id`, `correlation_id`, `attempt`,
//! `provider` and `worker.id` (those known at that point).
//!
//! Without the `otel` feature these are plain [`tracing`] spans (their fields
//! show in the logs); with it, [`otel`] sets their OpenTelemetry parent and
//! builds the OTLP exporter.
//!
//! ```
//! use hodei_core::traces::{self, Stage};
//! use hodei_core::{CommandType, Job, JobSpec};
//!
//! let job = Job::try_new(JobSpec::new("build", CommandType::shell("make", ["all"])))?;
//! let span = traces::job_span(Stage::Dispatch, &job);
//! let _entered = span.enter();
//! // The trace id of a UUID correlation id is its 128 bits.
//! let id = job.correlation_id().to_string();
//! assert_eq!(
//!     traces::trace_id_bytes(&id),
//!     *uuid::Uuid::parse_str(&id)?.as_bytes()
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use sha2::{Digest, Sha256};
use tracing::Span;
use tracing::field::{Empty, display};

use crate::domain::ids::{JobId, WorkerId};
use crate::domain::job::Job;

#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod otel;

/// A step of a job's life that gets a span (see the [module](self) table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// The submission (REST or gRPC).
    Submit,
    /// The controller placing the job: on an idle worker, or provisioning one.
    Dispatch,
    /// The provisioning saga of the worker made for the job.
    Provision,
    /// The provider's `create_worker` call.
    CreateWorker,
    /// The agent running the job.
    Run,
}

impl Stage {
    /// The span's name.
    #[must_use]
    pub const fn span_name(self) -> &'static str {
        match self {
            Self::Submit => "hodei.job.submit",
            Self::Dispatch => "hodei.job.dispatch",
            Self::Provision => "hodei.job.provision",
            Self::CreateWorker => "hodei.provider.create_worker",
            Self::Run => "hodei.agent.run",
        }
    }
}

/// The span of `stage` of a job whose correlation id is `correlation_id`
/// (a UUID, or any text an older client sent), with `job.id`, `attempt`,
/// `provider` and `worker.id` still empty: fill them with [`record_job`],
/// [`record_worker`] and [`record_provider`].
///
/// With the `otel` feature its OpenTelemetry parent is the job's remote root
/// (see the [module](self)) — unless the span it is created in already belongs
/// to the job's trace, in which case it stays that span's child.
#[must_use]
pub fn correlation_span(stage: Stage, correlation_id: &str) -> Span {
    // A span's name is static per call site: one call site per stage.
    macro_rules! span {
        ($name:literal) => {
            tracing::info_span!(
                $name,
                job.id = Empty,
                correlation_id = %correlation_id,
                attempt = Empty,
                provider = Empty,
                worker.id = Empty,
            )
        };
    }
    let span = match stage {
        Stage::Submit => span!("hodei.job.submit"),
        Stage::Dispatch => span!("hodei.job.dispatch"),
        Stage::Provision => span!("hodei.job.provision"),
        Stage::CreateWorker => span!("hodei.provider.create_worker"),
        Stage::Run => span!("hodei.agent.run"),
    };
    #[cfg(feature = "otel")]
    otel::link_to_job_trace(&span, correlation_id);
    span
}

/// The span of `stage` of `job`: [`correlation_span`] with the job's
/// correlation id, then [`record_job`].
#[must_use]
pub fn job_span(stage: Stage, job: &Job) -> Span {
    let span = correlation_span(stage, &job.correlation_id().to_string());
    record_job(&span, job);
    span
}

/// The span of the provisioning saga of `worker_id` (on `provider`) for `job`.
#[must_use]
pub fn provision_span(job: &Job, provider: &str, worker_id: WorkerId) -> Span {
    let span = job_span(Stage::Provision, job);
    record_provider(&span, provider);
    record_worker(&span, worker_id);
    span
}

/// The span of a provider's `create_worker` call for `worker_id`: a job span
/// when the worker is made for `job`, else (a warm pool's worker) a plain span
/// of the same name that belongs to no job's trace.
#[must_use]
pub fn create_worker_span(job: Option<&Job>, provider: &str, worker_id: WorkerId) -> Span {
    let span = match job {
        Some(job) => job_span(Stage::CreateWorker, job),
        None => tracing::info_span!(
            "hodei.provider.create_worker",
            provider = Empty,
            worker.id = Empty,
        ),
    };
    record_provider(&span, provider);
    record_worker(&span, worker_id);
    span
}

/// Records `job.id`, `attempt` and (when bound) `worker.id` of `job` on `span`.
pub fn record_job(span: &Span, job: &Job) {
    span.record("job.id", display(job.id()));
    span.record("attempt", job.execution_context().attempt);
    if let Some(w) = job.worker_id() {
        record_worker(span, w);
    }
}

/// Records `job.id` and `attempt` on `span` (the agent knows no more of the job).
pub fn record_attempt(span: &Span, job_id: JobId, attempt: u32) {
    span.record("job.id", display(job_id));
    span.record("attempt", attempt);
}

/// Records `worker.id` on `span`.
pub fn record_worker(span: &Span, worker_id: WorkerId) {
    span.record("worker.id", display(worker_id));
}

/// Records `provider` (the provider's name) on `span`.
pub fn record_provider(span: &Span, provider: &str) {
    span.record("provider", provider);
}

/// The 16 bytes of the trace id of the job whose correlation id is
/// `correlation_id`: a UUID's own 128 bits (so the trace id reads as the
/// correlation id without its dashes), any other text's first 16 bytes of
/// SHA-256. Never all zero (an invalid trace id): the nil UUID is hashed too.
#[must_use]
pub fn trace_id_bytes(correlation_id: &str) -> [u8; 16] {
    if let Ok(u) = uuid::Uuid::parse_str(correlation_id.trim())
        && !u.is_nil()
    {
        return *u.as_bytes();
    }
    let digest = Sha256::digest(correlation_id.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    if id == [0; 16] {
        id[15] = 1;
    }
    id
}

/// The 8 bytes of the span id of the job's (never exported) remote root: the
/// first 8 bytes of SHA-256 of `hodei-root:` and the trace id, never all zero.
#[must_use]
pub fn root_span_id_bytes(correlation_id: &str) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"hodei-root:");
    h.update(trace_id_bytes(correlation_id));
    let digest = h.finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuid_correlation_id_is_the_trace_id() {
        let c = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(
            hex::encode(trace_id_bytes(c)),
            "0f8fad5bd9cb469fa16570867728950e"
        );
        // Upper case and surrounding blanks parse to the same UUID.
        assert_eq!(
            trace_id_bytes(&format!(" {} ", c.to_uppercase())),
            trace_id_bytes(c)
        );
    }

    #[test]
    fn other_text_is_hashed_deterministically() {
        let a = trace_id_bytes("order-42");
        assert_eq!(a, trace_id_bytes("order-42"));
        assert_ne!(a, trace_id_bytes("order-43"));
        assert_ne!(a, [0; 16]);
        let digest = Sha256::digest(b"order-42");
        assert_eq!(a[..], digest[..16]);
    }

    #[test]
    fn the_nil_uuid_still_gets_a_valid_trace_id() {
        let nil = "00000000-0000-0000-0000-000000000000";
        assert_ne!(trace_id_bytes(nil), [0; 16]);
        assert_eq!(trace_id_bytes(nil), trace_id_bytes(nil));
    }

    #[test]
    fn the_root_span_id_follows_the_trace_id() {
        let c = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert_eq!(root_span_id_bytes(c), root_span_id_bytes(&c.to_uppercase()));
        assert_ne!(root_span_id_bytes(c), root_span_id_bytes("order-42"));
        assert_ne!(root_span_id_bytes(c), [0; 8]);
    }

    #[test]
    fn spans_are_named_by_stage() {
        assert_eq!(Stage::Run.span_name(), "hodei.agent.run");
        assert_eq!(Stage::Submit.span_name(), "hodei.job.submit");
    }
}
