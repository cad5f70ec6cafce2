//! # hodei-providers
//!
//! Worker providers for Hodei: each one creates and destroys workers that run
//! the `hodei-worker` agent. Each implements the four required traits of
//! [`hodei_core::provider`] (so the control plane holds it as
//! `Arc<dyn WorkerProvider>`) and offers the optional ones it really has:
//!
//! | provider | cost | own eligibility | logs | metrics |
//! |---|---|---|---|---|
//! | process | measured start-up, free | default (capabilities) | yes | yes (`/proc`) |
//! | docker | measured start-up, free | yes (worker image present) | yes | yes |
//! | kubernetes | measured start-up, priced by config | default (capabilities) | yes | yes (metrics-server) |
//! | qemu | measured start-up, free | default (capabilities) | yes (console) | yes |
//! | firecracker | measured start-up, free | default (capabilities) | yes (console) | yes |
//!
//! | feature | provider | workers are |
//! |---|---|---|
//! | `process` (default) | [`process::ProcessProvider`] | local child processes |
//! | `docker` | `docker::DockerProvider` | Docker containers of the worker image (bollard) |
//! | `kubernetes` | `kubernetes::KubernetesProvider` | Kubernetes pods of the worker image (kube-rs) |
//! | `qemu` | `qemu::QemuMicroVmProvider` | QEMU microvm guests (KVM or software emulation) |
//! | `firecracker` | `firecracker::FirecrackerProvider` | Firecracker microVMs (hardware KVM) |
//!
//! The `factory` feature adds `factory::BundledProviderFactory`, which builds
//! any compiled-in provider from the domain `ProviderConfig` (runtime
//! registration through the API, re-creation at start).
//!
//! ```no_run
//! # #[cfg(feature = "process")] {
//! use std::sync::Arc;
//! use hodei_core::provider::WorkerProvider;
//! use hodei_providers::process::{ProcessProvider, ProcessProviderConfig};
//!
//! let provider: Arc<dyn WorkerProvider> =
//!     Arc::new(ProcessProvider::new(ProcessProviderConfig::default().with_max_workers(4)));
//! assert_eq!(provider.name(), "process");
//! # }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "process", feature = "qemu", feature = "firecracker"))]
mod host;

#[cfg(feature = "process")]
#[cfg_attr(docsrs, doc(cfg(feature = "process")))]
pub mod process;

#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
pub mod docker;

#[cfg(feature = "kubernetes")]
#[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
pub mod kubernetes;

#[cfg(feature = "qemu")]
#[cfg_attr(docsrs, doc(cfg(feature = "qemu")))]
pub mod qemu;

#[cfg(feature = "firecracker")]
#[cfg_attr(docsrs, doc(cfg(feature = "firecracker")))]
pub mod firecracker;

#[cfg(feature = "factory")]
#[cfg_attr(docsrs, doc(cfg(feature = "factory")))]
pub mod factory;

#[cfg(feature = "factory")]
#[cfg_attr(docsrs, doc(cfg(feature = "factory")))]
pub mod server_setup;
