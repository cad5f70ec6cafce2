//! `hodei provider …`: list providers with their load, register one at
//! runtime, set its state (active, maintenance, disabled), set its price,
//! remove it.

use clap::{ArgGroup, Subcommand, ValueEnum};
use hodei_core::ProviderConfig;
use hodei_core::proto::convert::provider_type_to_proto;
use hodei_core::proto::v1;
use hodei_core::proto::v1::provider_management_service_client::ProviderManagementServiceClient;

use super::client::{self, CliError};
use serde::Serialize;

use super::output::{self, Format, ProviderView};

/// `hodei provider …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ProviderCommand {
    /// List providers with their state, workers and running jobs.
    List,
    /// Register a provider at runtime; the server stores it and re-creates it
    /// when it starts again.
    ///
    /// The configuration is the `ProviderConfig` JSON, e.g.
    /// `{"type":"bare_metal"}`, `{"type":"docker","image":"hodei-worker:latest"}`,
    /// `{"type":"custom","settings":{"kind":"qemu"}}`.
    Add {
        /// Unique name.
        name: String,
        /// The configuration as JSON, or `@FILE` to read it from a file.
        #[arg(short, long)]
        config: String,
        /// Most workers at once (default: the server's HODEI_MAX_WORKERS).
        #[arg(long)]
        max_workers: Option<u32>,
    },
    /// Set a provider's state. Leaving `active` takes it out of scheduling:
    /// idle workers are retired, busy ones finish their jobs first.
    SetState {
        /// Provider name or id.
        provider: String,
        /// The new state.
        #[arg(value_enum)]
        state: OperatorState,
    },
    /// Remove a disabled provider whose workers are gone.
    Remove {
        /// Provider name or id.
        provider: String,
    },
    /// Set the price the `cost_aware` strategy ranks a provider by, for each
    /// job's own resources (cpu cores · CPU-hour price + memory GiB · GiB-hour
    /// price). Replaces the whole price: an omitted one is 0.
    #[command(group(ArgGroup::new("price").required(true).multiple(true).args(["cpu_hour", "gib_hour"])))]
    Pricing {
        /// Provider name or id.
        provider: String,
        /// Price of one CPU core for one hour.
        #[arg(long, value_name = "PRICE", default_value_t = 0.0, value_parser = parse_price)]
        cpu_hour: f64,
        /// Price of one GiB of memory for one hour.
        #[arg(long, value_name = "PRICE", default_value_t = 0.0, value_parser = parse_price)]
        gib_hour: f64,
    },
}

/// A price: a finite number, not negative.
fn parse_price(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a price (a finite number >= 0)")),
    }
}

/// A provider's price, as printed.
#[derive(Debug, Serialize)]
pub(crate) struct PricingView {
    pub(crate) provider_id: String,
    pub(crate) provider: String,
    pub(crate) price_per_cpu_hour: f64,
    pub(crate) price_per_gib_hour: f64,
}

/// Prices as a table.
pub(crate) fn pricing_table(p: &PricingView) -> String {
    output::table(
        &["PROVIDER", "ID", "PRICE/CPU-HOUR", "PRICE/GIB-HOUR"],
        vec![vec![
            p.provider.clone(),
            p.provider_id.clone(),
            p.price_per_cpu_hour.to_string(),
            p.price_per_gib_hour.to_string(),
        ]],
    )
}

/// The states an operator sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OperatorState {
    /// Takes work.
    Active,
    /// Out of scheduling, workers drained.
    Maintenance,
    /// Out of scheduling, workers drained; may then be removed.
    Disabled,
}

impl OperatorState {
    fn to_proto(self) -> v1::ProviderStatus {
        match self {
            OperatorState::Active => v1::ProviderStatus::Active,
            OperatorState::Maintenance => v1::ProviderStatus::Maintenance,
            OperatorState::Disabled => v1::ProviderStatus::Disabled,
        }
    }
}

/// The configuration of `--config`: inline JSON or `@FILE`.
fn parse_config(arg: &str) -> Result<ProviderConfig, CliError> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Io(format!("cannot read {path}: {e}")))?,
        None => arg.to_owned(),
    };
    serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("--config: not a provider configuration: {e}")))
}

fn print_one(format: Format, p: Option<v1::Provider>) {
    let views: Vec<ProviderView> = p.into_iter().map(Into::into).collect();
    match format {
        Format::Json => match views.first() {
            Some(v) => println!("{}", output::json(v)),
            None => println!("null"),
        },
        Format::Table => print!("{}", output::provider_table(&views)),
    }
}

/// Runs a provider command; returns the exit code.
pub(crate) async fn run(
    server: &str,
    format: Format,
    cmd: ProviderCommand,
) -> Result<u8, CliError> {
    // Bad input is refused before connecting.
    let add = match &cmd {
        ProviderCommand::Add { config, .. } => Some(parse_config(config)?),
        _ => None,
    };
    let channel = client::connect(server).await?;
    let mut c = ProviderManagementServiceClient::new(channel);
    let rpc = |s| CliError::rpc(server, s);
    match cmd {
        ProviderCommand::List => {
            let providers = c
                .list_providers(v1::ListProvidersRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .providers;
            let views: Vec<ProviderView> = providers.into_iter().map(Into::into).collect();
            match format {
                Format::Json => println!("{}", output::json(&views)),
                Format::Table => print!("{}", output::provider_table(&views)),
            }
        }
        ProviderCommand::Add {
            name, max_workers, ..
        } => {
            let config = add.ok_or_else(|| CliError::Usage("--config is required".into()))?;
            let config_json = serde_json::to_string(&config)
                .map_err(|e| CliError::Usage(format!("--config: {e}")))?;
            let p = c
                .register_provider(v1::RegisterProviderRequest {
                    name,
                    provider_type: provider_type_to_proto(config.provider_type()) as i32,
                    config_json,
                    max_workers,
                })
                .await
                .map_err(rpc)?
                .into_inner()
                .provider;
            print_one(format, p);
        }
        ProviderCommand::SetState { provider, state } => {
            let p = c
                .set_provider_state(v1::SetProviderStateRequest {
                    provider,
                    state: state.to_proto() as i32,
                })
                .await
                .map_err(rpc)?
                .into_inner()
                .provider;
            print_one(format, p);
        }
        ProviderCommand::Remove { provider } => {
            let p = c
                .remove_provider(v1::RemoveProviderRequest { provider })
                .await
                .map_err(rpc)?
                .into_inner()
                .provider;
            print_one(format, p);
        }
        ProviderCommand::Pricing {
            provider,
            cpu_hour,
            gib_hour,
        } => {
            let r = c
                .set_provider_pricing(v1::SetProviderPricingRequest {
                    provider: provider.clone(),
                    price_per_cpu_hour: cpu_hour,
                    price_per_gib_hour: gib_hour,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            let (provider_id, provider) = r
                .provider
                .map_or((String::new(), provider), |p| (p.id, p.name));
            let view = PricingView {
                provider_id,
                provider,
                price_per_cpu_hour: r.price_per_cpu_hour,
                price_per_gib_hour: r.price_per_gib_hour,
            };
            match format {
                Format::Json => println!("{}", output::json(&view)),
                Format::Table => print!("{}", pricing_table(&view)),
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_json_or_a_file_and_bad_json_is_a_usage_error() {
        let c =
            parse_config(r#"{"type":"docker","image":"w:1","docker_host":null,"network":null}"#)
                .unwrap();
        assert_eq!(c.provider_type(), hodei_core::ProviderType::Docker);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.json");
        std::fs::write(&f, r#"{"type":"bare_metal","agent_binary":null}"#).unwrap();
        let c = parse_config(&format!("@{}", f.display())).unwrap();
        assert_eq!(c.provider_type(), hodei_core::ProviderType::BareMetal);
        assert!(matches!(parse_config("{nope"), Err(CliError::Usage(m)) if m.contains("--config")));
        assert!(matches!(
            parse_config("@/nonexistent/x.json"),
            Err(CliError::Io(_))
        ));
    }

    #[test]
    fn prices_are_finite_and_not_negative() {
        assert_eq!(parse_price("0.04"), Ok(0.04));
        assert_eq!(parse_price("0"), Ok(0.0));
        for bad in ["-1", "NaN", "inf", "cheap"] {
            let e = parse_price(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        let t = pricing_table(&PricingView {
            provider_id: "p-1".into(),
            provider: "docker".into(),
            price_per_cpu_hour: 0.04,
            price_per_gib_hour: 0.005,
        });
        for s in ["docker", "p-1", "0.04", "0.005"] {
            assert!(t.contains(s), "{s} missing in {t}");
        }
    }
}
