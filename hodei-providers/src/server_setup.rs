//! The bundled providers of a server configured from its settings
//! ([`ServerConfig`]) and the providers' own environment variables.
//!
//! [`provider_factory`] builds the [`BundledProviderFactory`] whose bases a
//! provider registered at runtime starts from; [`register_enabled`] then
//! registers the local process provider and every provider switched on
//! (`HODEI_DOCKER_ENABLED`, `HODEI_K8S_ENABLED`, `HODEI_QEMU_ENABLED`,
//! `HODEI_FC_ENABLED`).

use hodei_core::ProviderError;
use hodei_core::control::{ControlError, ControlPlane};
use hodei_core::domain::agent_env;
use hodei_core::server_config::ServerConfig;
use hodei_core::settings::SettingGroup;
use hodei_core::store::Stores;

#[cfg(feature = "docker")]
use crate::docker::DockerProviderConfig;
use crate::factory::{BundledProviderFactory, TypedConfig};
#[cfg(feature = "firecracker")]
use crate::firecracker::FirecrackerProviderConfig;
#[cfg(feature = "kubernetes")]
use crate::kubernetes::KubernetesProviderConfig;
use crate::process::ProcessProviderConfig;
#[cfg(feature = "qemu")]
use crate::qemu::QemuProviderConfig;

/// A provider of the server that cannot be configured or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderSetupError {
    /// A provider's environment does not give a valid configuration.
    #[error("{what} configuration")]
    Configuration {
        /// The provider (`process provider`, `Docker provider`, …).
        what: &'static str,
        /// What is wrong.
        #[source]
        source: ProviderError,
    },
    /// The environment of a provider switched on does not give a valid base
    /// configuration for the factory.
    #[error("{what} configuration: {source}")]
    Base {
        /// The provider.
        what: &'static str,
        /// What is wrong.
        source: ProviderError,
    },
    /// Registering a provider with the control plane failed.
    #[error("{context}")]
    Register {
        /// Which provider, and the settings that matter.
        context: String,
        /// Why.
        #[source]
        source: ControlError,
    },
    /// A provider is switched on that this build does not include.
    #[error("{variable} is set but this build has no {what} (hodei-providers feature `{feature}`)")]
    NotCompiled {
        /// The switch.
        variable: &'static str,
        /// The provider.
        what: &'static str,
        /// The crate feature that includes it.
        feature: &'static str,
    },
}

/// The text of a server's `--help` listing every environment setting: the
/// server's, `store`'s, and those of the providers in this build.
#[must_use]
pub fn settings_help(store: SettingGroup) -> String {
    let mut groups = vec![
        SettingGroup::new("Server", hodei_core::server_config::SETTINGS),
        store,
        SettingGroup::new("Process provider", crate::process::config::SETTINGS),
    ];
    #[cfg(feature = "docker")]
    groups.push(SettingGroup::new(
        "Docker provider",
        crate::docker::config::SETTINGS,
    ));
    #[cfg(feature = "kubernetes")]
    groups.push(SettingGroup::new(
        "Kubernetes provider",
        crate::kubernetes::config::SETTINGS,
    ));
    #[cfg(feature = "qemu")]
    groups.push(SettingGroup::new(
        "QEMU provider",
        crate::qemu::config::SETTINGS,
    ));
    #[cfg(feature = "firecracker")]
    groups.push(SettingGroup::new(
        "Firecracker provider",
        crate::firecracker::config::SETTINGS,
    ));
    hodei_core::settings::render_help(&groups)
}

/// The local process provider's configuration: its environment, the
/// replica's provider name and the client certificate of local workers.
///
/// # Errors
/// [`ProviderSetupError::Configuration`] when the process provider's environment is invalid.
pub fn process_base(settings: &ServerConfig) -> Result<ProcessProviderConfig, ProviderSetupError> {
    let c = ProcessProviderConfig::from_env()
        .map_err(|source| ProviderSetupError::Configuration {
            what: "process provider",
            source,
        })?
        .with_max_workers(settings.pool.max_workers);
    let c = match &settings.process_provider_name {
        Some(name) => c.with_name(name.clone()),
        None => c,
    };
    // Local workers get their own client certificate (they inherit the
    // server's environment, whose HODEI_TLS_CERT/KEY are the server's).
    Ok(match &settings.worker_tls {
        Some(w) => c
            .with_env(agent_env::TLS_CERT, w.cert.clone())
            .with_env(agent_env::TLS_KEY, w.key.clone())
            .with_env(agent_env::TLS_CA, w.ca.clone()),
        None if settings
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_path.is_some()) =>
        {
            tracing::warn!(
                "mTLS is on but HODEI_WORKER_TLS_CERT/KEY are not set: locally spawned \
                 workers cannot connect"
            );
            c
        }
        None => c,
    })
}

/// The provider factory, its bases read from the environment: a provider
/// registered at runtime gets the same settings as one enabled at start.
///
/// A kind not switched on may still be registered at runtime: its
/// environment is then used if valid, the defaults otherwise (with a warning).
///
/// # Errors
/// [`ProviderSetupError::Base`] when a provider switched on has an invalid
/// environment; [`ProviderSetupError::NotCompiled`] when it is not in this build.
pub fn provider_factory(
    settings: &ServerConfig,
    stores: &Stores,
    process: ProcessProviderConfig,
) -> Result<BundledProviderFactory, ProviderSetupError> {
    let factory = BundledProviderFactory::new(settings.pool.clone(), stores.workers.clone())
        .server_address(settings.bind, settings.worker_server_address.clone())
        .process_base(process);
    #[cfg(feature = "docker")]
    let factory = factory.docker_base(base(
        settings.providers.docker,
        DockerProviderConfig::from_env(),
        "Docker provider",
    )?);
    #[cfg(feature = "kubernetes")]
    let factory = factory.kubernetes_base(base(
        settings.providers.kubernetes,
        KubernetesProviderConfig::from_env(),
        "Kubernetes provider",
    )?);
    #[cfg(feature = "qemu")]
    let factory = factory.qemu_base(base(
        settings.providers.qemu,
        QemuProviderConfig::from_env(),
        "QEMU provider",
    )?);
    #[cfg(feature = "firecracker")]
    let factory = factory.firecracker_base(base(
        settings.providers.firecracker,
        FirecrackerProviderConfig::from_env(),
        "Firecracker provider",
    )?);
    not_compiled(settings)?;
    Ok(factory)
}

/// Registers the local process provider (`process`, from [`process_base`])
/// and every provider switched on in `settings`, configured from its environment.
///
/// # Errors
/// [`ProviderSetupError::Configuration`] for a provider's invalid environment,
/// [`ProviderSetupError::Register`] when the control plane refuses one or it cannot start.
pub async fn register_enabled(
    factory: &BundledProviderFactory,
    cp: &ControlPlane,
    settings: &ServerConfig,
    process: ProcessProviderConfig,
) -> Result<(), ProviderSetupError> {
    let register = |context: String| move |source| ProviderSetupError::Register { context, source };
    factory
        .register(cp, TypedConfig::Process(process))
        .await
        .map_err(register("registering the process provider".into()))?;
    #[cfg(feature = "docker")]
    if settings.providers.docker {
        let config = DockerProviderConfig::from_env().map_err(configuration("Docker provider"))?;
        let (bind, address) = (settings.bind, &settings.worker_server_address);
        factory
            .register(cp, TypedConfig::Docker(config))
            .await
            .map_err(register(format!(
                "Docker provider (HODEI_BIND_ADDRESS={bind}, worker server address {address})"
            )))?;
    }
    #[cfg(feature = "kubernetes")]
    if settings.providers.kubernetes {
        let config =
            KubernetesProviderConfig::from_env().map_err(configuration("Kubernetes provider"))?;
        factory
            .register(cp, TypedConfig::Kubernetes(Box::new(config)))
            .await
            .map_err(register("registering the Kubernetes provider".into()))?;
    }
    #[cfg(feature = "qemu")]
    if settings.providers.qemu {
        let config = QemuProviderConfig::from_env().map_err(configuration("QEMU provider"))?;
        factory
            .register(cp, TypedConfig::Qemu(config))
            .await
            .map_err(register("registering the QEMU provider".into()))?;
    }
    #[cfg(feature = "firecracker")]
    if settings.providers.firecracker {
        let config =
            FirecrackerProviderConfig::from_env().map_err(configuration("Firecracker provider"))?;
        factory
            .register(cp, TypedConfig::Firecracker(config))
            .await
            .map_err(register("registering the Firecracker provider".into()))?;
    }
    not_compiled(settings)
}

#[cfg(any(
    feature = "docker",
    feature = "kubernetes",
    feature = "qemu",
    feature = "firecracker"
))]
fn configuration(what: &'static str) -> impl FnOnce(ProviderError) -> ProviderSetupError {
    move |source| ProviderSetupError::Configuration { what, source }
}

/// A base configuration: the environment's, or the defaults (with a
/// warning) when it is invalid and the provider is not switched on.
#[cfg(any(
    feature = "docker",
    feature = "kubernetes",
    feature = "qemu",
    feature = "firecracker"
))]
fn base<T: Default>(
    enabled: bool,
    r: Result<T, ProviderError>,
    what: &'static str,
) -> Result<T, ProviderSetupError> {
    match r {
        Ok(c) => Ok(c),
        Err(source) if enabled => Err(ProviderSetupError::Base { what, source }),
        Err(e) => {
            tracing::warn!(error = %e, "{what} configuration ignored; runtime {what}s use the defaults");
            Ok(T::default())
        }
    }
}

/// A provider switched on that this build lacks.
fn not_compiled(settings: &ServerConfig) -> Result<(), ProviderSetupError> {
    let on = settings.providers;
    let missing = [
        (
            on.docker && cfg!(not(feature = "docker")),
            "HODEI_DOCKER_ENABLED",
            "Docker provider",
            "docker",
        ),
        (
            on.kubernetes && cfg!(not(feature = "kubernetes")),
            "HODEI_K8S_ENABLED",
            "Kubernetes provider",
            "kubernetes",
        ),
        (
            on.qemu && cfg!(not(feature = "qemu")),
            "HODEI_QEMU_ENABLED",
            "QEMU provider",
            "qemu",
        ),
        (
            on.firecracker && cfg!(not(feature = "firecracker")),
            "HODEI_FC_ENABLED",
            "Firecracker provider",
            "firecracker",
        ),
    ];
    match missing.into_iter().find(|m| m.0) {
        Some((_, variable, what, feature)) => Err(ProviderSetupError::NotCompiled {
            variable,
            what,
            feature,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> ServerConfig {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ServerConfig::from_lookup(|k| {
            vars.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        })
        .unwrap()
    }

    #[test]
    fn process_base_takes_the_name_pool_size_and_worker_certificate() {
        let s = settings(&[
            ("HODEI_PROCESS_PROVIDER_NAME", "local-b"),
            ("HODEI_MAX_WORKERS", "7"),
            ("HODEI_WORKER_TLS_CERT", "w.pem"),
            ("HODEI_WORKER_TLS_KEY", "w.key"),
            ("HODEI_WORKER_TLS_CA", "ca.pem"),
        ]);
        let c = process_base(&s).unwrap();
        assert_eq!(c.name, "local-b");
        assert_eq!(c.max_workers, 7);
        assert_eq!(
            c.extra_env.get("HODEI_TLS_CERT").map(String::as_str),
            Some("w.pem")
        );
        assert_eq!(
            c.extra_env.get("HODEI_TLS_CA").map(String::as_str),
            Some("ca.pem")
        );
    }

    #[test]
    fn errors_keep_the_server_messages() {
        let e = ProviderSetupError::Base {
            what: "Docker provider",
            source: ProviderError::InvalidConfig("bad".into()),
        };
        assert!(
            e.to_string().starts_with("Docker provider configuration: "),
            "{e}"
        );
        let e = ProviderSetupError::NotCompiled {
            variable: "HODEI_FC_ENABLED",
            what: "Firecracker provider",
            feature: "firecracker",
        };
        assert!(e.to_string().contains("HODEI_FC_ENABLED"), "{e}");
    }
}
