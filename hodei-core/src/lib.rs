//! # hodei-core
//!
//! The core of Hodei, a job-execution SDK: the domain model (jobs, workers,
//! providers and their state machines), the provider traits that users
//! implement, the store traits with in-memory implementations, and the
//! scheduler strategies. With the `server` feature it also holds the control
//! plane and its gRPC and REST adapters.
//!
//! The default build has no I/O dependencies: no tonic, no database driver, no
//! provider SDK.
//!
//! ```
//! use hodei_core::{CommandType, Job, JobSpec, JobState, AttemptResult, ProviderId};
//!
//! let spec = JobSpec::new("build", CommandType::script("bash", "echo building"))
//!     .with_timeout_ms(60_000)
//!     .with_max_attempts(2);
//! let mut job = Job::try_new(spec)?;
//! job.submit_to_provider(ProviderId::new(), None)?;
//! job.mark_running()?;
//! job.complete(AttemptResult::exited(0))?;
//! assert_eq!(job.state(), JobState::Succeeded);
//! // Terminal states are final.
//! assert!(job.cancel("too late").is_err());
//! # Ok::<(), hodei_core::DomainError>(())
//! ```
//!
//! ## Features
//! - `proto`: generated `hodei.v1` types, client stubs and conversions.
//! - `client`: [`client::HodeiClient`], a typed gRPC client for the job API
//!   (submit, get, list, cancel, logs, wait), with token and (m)TLS; no server code.
//! - `cert-expiry`: certificate expiry checks and the days-to-expiry gauge.
//! - `server`: the control plane and its gRPC + REST adapters.
//! - `testing`: store conformance suite and provider conformance kit.
//! - `otel`: OpenTelemetry for the job spans of [`traces`] and the OTLP exporter.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod artifacts;
pub mod domain;
pub mod otp;
pub mod provider;
pub mod scheduler;
pub mod settings;
pub mod store;
pub mod switch;
pub mod traces;
pub mod watch;

#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod api;
#[cfg(feature = "cert-expiry")]
#[cfg_attr(docsrs, doc(cfg(feature = "cert-expiry")))]
pub mod cert_expiry;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod control;
#[cfg(feature = "proto")]
#[cfg_attr(docsrs, doc(cfg(feature = "proto")))]
pub mod proto;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server_config;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod telemetry;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod tls;

pub use domain::error::{DomainError, OptionalCapability, ProviderError};
pub use domain::ids::{CorrelationId, InvalidId, JobId, ProviderId, WorkerId};
pub use domain::job::{AttemptOutcome, AttemptResult, ExecutionContext, Job, JobState, Transition};
pub use domain::logs::{LogEntry, LogStream};
pub use domain::provider::{
    Provider, ProviderCapabilities, ProviderConfig, ProviderStatus, ProviderType,
};
pub use domain::spec::{
    ArtifactDest, ArtifactSource, CommandType, Constraint, ConstraintOp, FieldError,
    JobPreferences, JobResources, JobSpec, ValidationErrors,
};
pub use domain::template::{
    JobTemplate, ParameterType, TEMPLATE_LABEL, TEMPLATE_VERSION_LABEL, TemplateParameter,
};
pub use domain::worker::{
    WORKER_ENV_JOB_TIMEOUT_SECS, Worker, WorkerHandle, WorkerSpec, WorkerState,
};
pub use provider::{CostEstimate, Eligibility, HealthStatus, ResourceUsage, WorkerEvent};
pub use store::Stores;
pub use store::memory::{
    InMemoryJobQueue, InMemoryJobRepository, InMemoryLogStore, InMemoryOtpTokenStore,
    InMemoryProviderConfigRepository, InMemoryWorkerRegistry,
};

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub use scheduler::{Decision, SchedulingSnapshot, Strategy, WaitReason};
