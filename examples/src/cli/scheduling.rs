//! `hodei scheduler …` and `hodei limit …`: the scheduling settings every
//! replica shares — the strategy, and concurrency limits per key. Reading
//! them needs a submit token, changing them an admin token.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use hodei_core::Strategy;
use hodei_core::proto::convert;
use hodei_core::proto::v1;
use hodei_core::proto::v1::scheduler_service_client::SchedulerServiceClient;
use serde::Serialize;

use super::client::{self, CliError};
use super::output::{self, Format};

/// `hodei scheduler …`.
#[derive(Debug, Subcommand)]
pub(crate) enum SchedulerCommand {
    /// Show the strategy every replica uses now.
    Get,
    /// Switch the strategy of every replica (stored: survives restarts).
    Set {
        /// fifo, priority, least_loaded, bin_packing, cost_aware or
        /// fastest_startup (`-` and `_` alike, any case).
        #[arg(value_parser = parse_strategy)]
        strategy: Strategy,
    },
}

/// `hodei limit …`.
#[derive(Debug, Subcommand)]
pub(crate) enum LimitCommand {
    /// List every concurrency limit with the jobs holding its slots.
    List,
    /// Show one key's limit.
    Get {
        /// The concurrency key.
        key: String,
    },
    /// Set a key's limit: at most MAX_RUNNING of the jobs with
    /// `concurrency_key` = KEY are scheduled or running at once (0 holds them
    /// all in the queue).
    Set {
        /// The concurrency key (ASCII letters, digits, . _ - : /).
        key: String,
        /// At most this many at once (0..=100000).
        #[arg(value_parser = clap::value_parser!(u32).range(0..=i64::from(hodei_core::control::MAX_CONCURRENCY_LIMIT)))]
        max_running: u32,
    },
    /// Remove a key's limit (its jobs are then unlimited).
    #[command(visible_aliases = ["remove", "delete"])]
    Rm {
        /// The concurrency key.
        key: String,
    },
}

/// A strategy name as the server's own parser reads it; the error names it.
fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse::<Strategy>().map_err(|e| e.to_string())
}

/// The wire enum of a strategy.
fn strategy_to_proto(s: Strategy) -> v1::SchedulingStrategy {
    let name = format!("SCHEDULING_STRATEGY_{}", s.as_str().to_ascii_uppercase());
    v1::SchedulingStrategy::from_str_name(&name).unwrap_or(v1::SchedulingStrategy::Unspecified)
}

/// The name of a wire strategy (`cost_aware`), `unspecified` when unset.
fn strategy_name(v: i32) -> String {
    v1::SchedulingStrategy::try_from(v)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("SCHEDULING_STRATEGY_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown ({v})"))
}

/// The strategy, as printed.
#[derive(Debug, Serialize)]
pub(crate) struct SchedulerView {
    /// The strategy in use now.
    pub(crate) strategy: String,
    /// The strategy before `scheduler set` (absent for `scheduler get`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) previous: Option<String>,
}

/// The strategy as a table.
pub(crate) fn scheduler_table(v: &SchedulerView) -> String {
    match &v.previous {
        Some(prev) => output::table(
            &["STRATEGY", "PREVIOUS"],
            vec![vec![v.strategy.clone(), prev.clone()]],
        ),
        None => output::table(&["STRATEGY"], vec![vec![v.strategy.clone()]]),
    }
}

/// One key's limit, as printed (the fields of the REST API).
#[derive(Debug, Serialize)]
pub(crate) struct LimitView {
    pub(crate) key: String,
    pub(crate) max_running: u32,
    /// Jobs holding a slot now.
    pub(crate) running: u32,
    /// Their ids, oldest slot first.
    pub(crate) jobs: Vec<String>,
    pub(crate) updated_at: DateTime<Utc>,
}

impl From<v1::ConcurrencyLimit> for LimitView {
    fn from(l: v1::ConcurrencyLimit) -> Self {
        Self {
            running: u32::try_from(l.jobs.len()).unwrap_or(u32::MAX),
            key: l.key,
            max_running: l.max_running,
            jobs: l.jobs,
            updated_at: convert::from_millis(l.updated_at_ms),
        }
    }
}

/// Limits as a table.
pub(crate) fn limit_table(limits: &[LimitView]) -> String {
    output::table(
        &["KEY", "MAX", "RUNNING", "JOBS", "UPDATED"],
        limits
            .iter()
            .map(|l| {
                vec![
                    l.key.clone(),
                    l.max_running.to_string(),
                    l.running.to_string(),
                    if l.jobs.is_empty() {
                        "-".into()
                    } else {
                        l.jobs.join(",")
                    },
                    l.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]
            })
            .collect(),
    )
}

/// What `limit rm` printed with `-o json`.
#[derive(Debug, Serialize)]
struct RemovedView {
    key: String,
    removed: bool,
}

fn print_limit(format: Format, l: Option<v1::ConcurrencyLimit>) {
    let views: Vec<LimitView> = l.into_iter().map(Into::into).collect();
    match format {
        Format::Json => match views.first() {
            Some(v) => println!("{}", output::json(v)),
            None => println!("null"),
        },
        Format::Table => print!("{}", limit_table(&views)),
    }
}

/// Runs `hodei scheduler …`.
pub(crate) async fn run_scheduler(
    server: &str,
    format: Format,
    cmd: SchedulerCommand,
) -> Result<u8, CliError> {
    let channel = client::connect(server).await?;
    let mut c = SchedulerServiceClient::new(channel);
    let rpc = |s| CliError::rpc(server, s);
    let view = match cmd {
        // GetQueueStatus reports the shared (stored) strategy.
        SchedulerCommand::Get => {
            let q = c
                .get_queue_status(v1::GetQueueStatusRequest {})
                .await
                .map_err(rpc)?
                .into_inner();
            SchedulerView {
                strategy: strategy_name(q.strategy),
                previous: None,
            }
        }
        SchedulerCommand::Set { strategy } => {
            let r = c
                .configure_scheduler(v1::ConfigureSchedulerRequest {
                    strategy: strategy_to_proto(strategy) as i32,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            SchedulerView {
                strategy: strategy_name(r.current),
                previous: Some(strategy_name(r.previous)),
            }
        }
    };
    match format {
        Format::Json => println!("{}", output::json(&view)),
        Format::Table => print!("{}", scheduler_table(&view)),
    }
    Ok(0)
}

/// Runs `hodei limit …`.
pub(crate) async fn run_limit(
    server: &str,
    format: Format,
    cmd: LimitCommand,
) -> Result<u8, CliError> {
    let channel = client::connect(server).await?;
    let mut c = SchedulerServiceClient::new(channel);
    let rpc = |s| CliError::rpc(server, s);
    match cmd {
        LimitCommand::List => {
            let limits = c
                .list_concurrency_limits(v1::ListConcurrencyLimitsRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .limits;
            let views: Vec<LimitView> = limits.into_iter().map(Into::into).collect();
            match format {
                Format::Json => println!("{}", output::json(&views)),
                Format::Table => print!("{}", limit_table(&views)),
            }
        }
        LimitCommand::Get { key } => {
            let l = c
                .get_concurrency_limit(v1::GetConcurrencyLimitRequest { key })
                .await
                .map_err(rpc)?
                .into_inner()
                .limit;
            print_limit(format, l);
        }
        LimitCommand::Set { key, max_running } => {
            let l = c
                .set_concurrency_limit(v1::SetConcurrencyLimitRequest { key, max_running })
                .await
                .map_err(rpc)?
                .into_inner()
                .limit;
            print_limit(format, l);
        }
        LimitCommand::Rm { key } => {
            c.delete_concurrency_limit(v1::DeleteConcurrencyLimitRequest { key: key.clone() })
                .await
                .map_err(rpc)?;
            match format {
                Format::Json => println!("{}", output::json(&RemovedView { key, removed: true })),
                Format::Table => println!("removed the concurrency limit of {key}"),
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_round_trip_through_the_wire_enum() {
        for s in Strategy::ALL {
            let wire = strategy_to_proto(s);
            assert_ne!(wire, v1::SchedulingStrategy::Unspecified, "{s}");
            assert_eq!(strategy_name(wire as i32), s.as_str());
        }
        assert_eq!(strategy_name(0), "unspecified");
        assert_eq!(strategy_name(99), "unknown (99)");
    }

    #[test]
    fn an_unknown_strategy_is_refused_naming_it() {
        assert_eq!(parse_strategy("least-loaded"), Ok(Strategy::LeastLoaded));
        let e = parse_strategy("random").unwrap_err();
        assert!(e.contains("\"random\""), "{e}");
    }

    #[test]
    fn limits_convert_and_show_their_jobs() {
        let v: LimitView = v1::ConcurrencyLimit {
            key: "deploy-prod".into(),
            max_running: 2,
            jobs: vec!["j1".into(), "j2".into()],
            updated_at_ms: 0,
        }
        .into();
        assert_eq!(v.running, 2);
        let t = limit_table(&[v]);
        for s in ["KEY", "deploy-prod", "j1,j2", "1970-01-01"] {
            assert!(t.contains(s), "{s} missing in {t}");
        }
        let t = scheduler_table(&SchedulerView {
            strategy: "fifo".into(),
            previous: Some("priority".into()),
        });
        assert!(t.contains("PREVIOUS") && t.contains("priority"), "{t}");
    }
}
