//! `hodei audit list`: the audit log (who submitted, cancelled or retried
//! which job, changed which provider or template, which secrets workers
//! injected), newest first. Needs an admin token.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use hodei_core::proto::v1;
use hodei_core::proto::v1::audit_service_client::AuditServiceClient;
use serde::Serialize;

use super::client::{self, CliError};
use super::output::{self, Format};

/// `hodei audit …`.
#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// List audit entries, newest first.
    List {
        /// Only this actor (an API token's name, `anonymous`, `worker:<id>`).
        #[arg(long)]
        actor: Option<String>,
        /// Only this action (job_submit, job_cancel, job_retry,
        /// provider_register, provider_update, provider_delete,
        /// template_create, template_run, secret_injected).
        #[arg(long)]
        action: Option<String>,
        /// Only this target (`job:<id>`, `provider:<name>`, `template:<name>`).
        #[arg(long)]
        target: Option<String>,
        /// Only entries at or after this time: RFC 3339, or an age such as 1h.
        #[arg(long, value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
        /// Only entries older than this id (the `next_before` of a previous page).
        #[arg(long)]
        before: Option<u64>,
        /// At most this many (1..=1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
}

/// `2026-12-06T05:00:00Z`, or `30m` meaning 30 minutes ago.
fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let age = super::args::parse_duration(s)
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor an age like 1h"))?;
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .ok_or_else(|| format!("{s:?} is too far back"))
}

/// One entry, as printed.
#[derive(Debug, Serialize)]
pub(crate) struct AuditView {
    pub(crate) id: u64,
    pub(crate) at: DateTime<Utc>,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) target: String,
    pub(crate) outcome: String,
    pub(crate) detail: String,
}

impl From<v1::AuditEntry> for AuditView {
    fn from(e: v1::AuditEntry) -> Self {
        Self {
            id: e.id,
            at: DateTime::from_timestamp_millis(e.at_ms).unwrap_or_default(),
            actor: e.actor,
            action: e.action,
            target: e.target,
            outcome: e.outcome,
            detail: e.detail,
        }
    }
}

/// A page as printed with `-o json`.
#[derive(Debug, Serialize)]
struct AuditPageView {
    entries: Vec<AuditView>,
    next_before: Option<u64>,
}

/// Entries as a table.
pub(crate) fn audit_table(entries: &[AuditView]) -> String {
    output::table(
        &[
            "ID", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAIL",
        ],
        entries
            .iter()
            .map(|e| {
                vec![
                    e.id.to_string(),
                    e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    e.actor.clone(),
                    e.action.clone(),
                    e.target.clone(),
                    e.outcome.clone(),
                    if e.detail.is_empty() {
                        "-".into()
                    } else {
                        e.detail.clone()
                    },
                ]
            })
            .collect(),
    )
}

/// Runs `hodei audit …`.
pub(crate) async fn run(server: &str, format: Format, cmd: AuditCommand) -> Result<u8, CliError> {
    let AuditCommand::List {
        actor,
        action,
        target,
        since,
        before,
        limit,
    } = cmd;
    let channel = client::connect(server).await?;
    let resp = AuditServiceClient::new(channel)
        .list_audit(v1::ListAuditRequest {
            actor: actor.unwrap_or_default(),
            action: action.unwrap_or_default(),
            target: target.unwrap_or_default(),
            since_ms: since.map_or(0, |t| t.timestamp_millis()),
            before: before.unwrap_or(0),
            limit,
        })
        .await
        .map_err(|s| CliError::rpc(server, s))?
        .into_inner();
    let next_before = (resp.next_before != 0).then_some(resp.next_before);
    let entries: Vec<AuditView> = resp.entries.into_iter().map(Into::into).collect();
    match format {
        Format::Json => println!(
            "{}",
            output::json(&AuditPageView {
                entries,
                next_before
            })
        ),
        Format::Table => {
            print!("{}", audit_table(&entries));
            if let Some(b) = next_before {
                eprintln!("[hodei] more entries: --before {b}");
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_an_age() {
        let t = parse_since("2026-12-06T05:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-06T05:00:00+00:00");
        let ago = parse_since("1h").unwrap();
        let diff = Utc::now() - ago;
        assert!(diff.num_minutes() >= 59 && diff.num_minutes() <= 61);
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn the_table_shows_every_column() {
        let rows = audit_table(&[AuditView {
            id: 7,
            at: DateTime::from_timestamp_millis(0).unwrap(),
            actor: "ci-bot".into(),
            action: "job_cancel".into(),
            target: "job:abc".into(),
            outcome: "failure".into(),
            detail: "job abc not found".into(),
        }]);
        for s in [
            "ci-bot",
            "job_cancel",
            "job:abc",
            "failure",
            "job abc not found",
        ] {
            assert!(rows.contains(s), "{s} missing in {rows}");
        }
    }
}
