//! What the CLI prints: serializable views of the wire types (for `-o json`)
//! and aligned tables (for `-o table`).

use chrono::{DateTime, SecondsFormat, Utc};
use hodei_core::proto::convert;
use hodei_core::proto::v1;
use hodei_core::{Job, JobSpec, JobState, LogEntry, LogStream};
use serde::Serialize;

/// `-o table|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns for people.
    Table,
    /// Pretty JSON for programs.
    Json,
}

fn time(ms: i64) -> DateTime<Utc> {
    convert::from_millis(ms)
}

fn show_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// Lower-case name of a job state number.
pub(crate) fn job_state_name(v: i32) -> String {
    match convert::job_state_from_proto(v, "state") {
        Ok(Some(s)) => s.as_str().to_owned(),
        Ok(None) => "unknown".to_owned(),
        Err(_) => format!("state-{v}"),
    }
}

/// A job state by its lower-case name.
pub(crate) fn parse_job_state(s: &str) -> Result<JobState, String> {
    let want = s.trim().to_ascii_lowercase();
    let want = if want == "canceled" {
        "cancelled".to_owned()
    } else {
        want
    };
    JobState::ALL
        .into_iter()
        .find(|st| st.as_str() == want)
        .ok_or_else(|| {
            let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            format!("unknown job state {s:?} (one of: {})", names.join(", "))
        })
}

/// `PREFIX_SOME_NAME` → `some_name`.
fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

/// A job, as printed.
#[derive(Debug, Serialize)]
pub(crate) struct JobView {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) state: String,
    pub(crate) attempts: u32,
    pub(crate) max_attempts: u32,
    pub(crate) exit_code: Option<i32>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) error: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) worker_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) provider_id: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) correlation_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) secret_names: Vec<String>,
    /// The spec without secret values, when the server sent one that converts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) spec: Option<JobSpec>,
    /// Latest progress the current attempt reported.
    pub(crate) progress: Option<ProgressView>,
}

/// A job's reported progress, as printed.
#[derive(Debug, Serialize)]
pub(crate) struct ProgressView {
    pub(crate) percent: u32,
    pub(crate) message: String,
    pub(crate) updated_at: DateTime<Utc>,
}

impl ProgressView {
    /// `40% compiling crates`.
    pub(crate) fn show(&self) -> String {
        if self.message.is_empty() {
            format!("{}%", self.percent)
        } else {
            format!("{}% {}", self.percent, self.message)
        }
    }
}

impl From<&Job> for JobView {
    /// A job as the client read it back: secret names only (their values
    /// never leave the server).
    fn from(j: &Job) -> Self {
        let ctx = j.execution_context();
        Self {
            id: j.id().to_string(),
            name: j.spec().name.clone(),
            state: j.state().as_str().to_owned(),
            attempts: j.attempts(),
            max_attempts: j.max_attempts(),
            exit_code: ctx.exit_code,
            error: ctx.error.clone().unwrap_or_default(),
            worker_id: ctx.worker_id.map(|w| w.to_string()).unwrap_or_default(),
            provider_id: j
                .selected_provider()
                .or(ctx.provider_id)
                .map(|p| p.to_string())
                .unwrap_or_default(),
            created_at: j.created_at(),
            started_at: ctx.started_at,
            finished_at: j.finished_at(),
            correlation_id: j.correlation_id().to_string(),
            secret_names: j.spec().secret_names().map(str::to_owned).collect(),
            spec: Some(j.spec().redacted()),
            progress: ctx.progress.as_ref().map(|p| ProgressView {
                percent: u32::from(p.percent),
                message: p.message.clone(),
                updated_at: p.updated_at,
            }),
        }
    }
}

impl JobView {
    /// One job as `key: value` lines.
    pub(crate) fn detail(&self) -> String {
        let mut rows: Vec<Vec<String>> = vec![
            vec!["ID".into(), self.id.clone()],
            vec!["NAME".into(), dash(&self.name)],
            vec!["STATE".into(), self.state.clone()],
            vec![
                "ATTEMPTS".into(),
                format!("{}/{}", self.attempts, self.max_attempts),
            ],
            vec![
                "EXIT CODE".into(),
                self.exit_code.map_or("-".into(), |c| c.to_string()),
            ],
            vec!["ERROR".into(), dash(&self.error)],
            vec!["WORKER".into(), dash(&self.worker_id)],
            vec!["PROVIDER".into(), dash(&self.provider_id)],
            vec!["CREATED".into(), show_time(Some(self.created_at))],
            vec!["STARTED".into(), show_time(self.started_at)],
            vec!["FINISHED".into(), show_time(self.finished_at)],
        ];
        if let Some(p) = &self.progress {
            rows.push(vec!["PROGRESS".into(), p.show()]);
        }
        if let Some(spec) = &self.spec {
            let command = match &spec.command {
                hodei_core::CommandType::Shell { cmd, args } => std::iter::once(cmd.as_str())
                    .chain(args.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(" "),
                hodei_core::CommandType::Script {
                    interpreter,
                    content,
                } => {
                    format!("{interpreter} script ({} bytes)", content.len())
                }
                other => format!("{other:?}"),
            };
            rows.push(vec!["COMMAND".into(), command]);
            rows.push(vec!["TIMEOUT".into(), format!("{} ms", spec.timeout_ms)]);
        }
        if !self.secret_names.is_empty() {
            rows.push(vec!["SECRETS".into(), self.secret_names.join(", ")]);
        }
        for r in &mut rows {
            r[0].push(':');
        }
        render_rows(&rows)
    }
}

/// Jobs as a table.
pub(crate) fn job_table(jobs: &[JobView]) -> String {
    table(
        &["ID", "NAME", "STATE", "ATTEMPTS", "EXIT", "CREATED"],
        jobs.iter()
            .map(|j| {
                vec![
                    j.id.clone(),
                    dash(&j.name),
                    j.state.clone(),
                    format!("{}/{}", j.attempts, j.max_attempts),
                    j.exit_code.map_or("-".into(), |c| c.to_string()),
                    show_time(Some(j.created_at)),
                ]
            })
            .collect(),
    )
}

/// A worker, as printed.
#[derive(Debug, Serialize)]
pub(crate) struct WorkerView {
    pub(crate) id: String,
    pub(crate) provider_id: String,
    pub(crate) provider_name: String,
    pub(crate) state: String,
    pub(crate) current_jobs: Vec<String>,
    pub(crate) jobs_run: u32,
    pub(crate) last_heartbeat: DateTime<Utc>,
    pub(crate) labels: std::collections::BTreeMap<String, String>,
    /// Latest resource usage its agent reported (`null` before the first).
    pub(crate) stats: Option<WorkerStatsView>,
}

/// A worker's latest resource usage, as printed.
#[derive(Debug, Serialize)]
pub(crate) struct WorkerStatsView {
    pub(crate) cpu_percent: f64,
    pub(crate) memory_bytes: u64,
    /// 0 = no limit known.
    pub(crate) memory_limit_bytes: u64,
    pub(crate) sampled_at: DateTime<Utc>,
}

/// `512.0 MiB` style sizes.
fn show_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    // Display only: the precision lost converting to f64 does not show.
    #[allow(clippy::cast_precision_loss)]
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl From<v1::Worker> for WorkerView {
    fn from(w: v1::Worker) -> Self {
        let state = v1::WorkerState::try_from(w.state).map_or_else(
            |_| format!("state-{}", w.state),
            |s| enum_name(s.as_str_name(), "WORKER_STATE_"),
        );
        Self {
            id: w.id,
            provider_id: w.provider_id,
            provider_name: w.provider_name,
            state,
            current_jobs: w.current_jobs,
            jobs_run: w.jobs_run,
            last_heartbeat: time(w.last_heartbeat_ms),
            labels: convert::sorted(w.labels),
            stats: w.usage.map(|u| WorkerStatsView {
                cpu_percent: u.cpu_percent,
                memory_bytes: u.memory_bytes,
                memory_limit_bytes: u.memory_limit_bytes,
                sampled_at: time(w.usage_at_ms),
            }),
        }
    }
}

/// Workers as a table.
pub(crate) fn worker_table(workers: &[WorkerView]) -> String {
    table(
        &[
            "ID",
            "PROVIDER",
            "STATE",
            "JOBS",
            "RUN",
            "CPU",
            "MEMORY",
            "LAST HEARTBEAT",
        ],
        workers
            .iter()
            .map(|w| {
                vec![
                    w.id.clone(),
                    dash(&w.provider_name),
                    w.state.clone(),
                    if w.current_jobs.is_empty() {
                        "-".into()
                    } else {
                        w.current_jobs.join(",")
                    },
                    w.jobs_run.to_string(),
                    w.stats
                        .as_ref()
                        .map_or("-".into(), |s| format!("{:.1}%", s.cpu_percent)),
                    w.stats.as_ref().map_or("-".into(), |s| {
                        if s.memory_limit_bytes == 0 {
                            show_bytes(s.memory_bytes)
                        } else {
                            format!(
                                "{} / {}",
                                show_bytes(s.memory_bytes),
                                show_bytes(s.memory_limit_bytes)
                            )
                        }
                    }),
                    show_time(Some(w.last_heartbeat)),
                ]
            })
            .collect(),
    )
}

/// A provider, as printed.
#[derive(Debug, Serialize)]
pub(crate) struct ProviderView {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) provider_type: String,
    pub(crate) status: String,
    pub(crate) active_jobs: u32,
    pub(crate) active_workers: u32,
    pub(crate) max_workers: u32,
    pub(crate) max_cpu_cores: f64,
    pub(crate) max_memory_mb: u64,
    pub(crate) gpu: bool,
    pub(crate) architectures: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) last_error: String,
}

impl From<v1::Provider> for ProviderView {
    fn from(p: v1::Provider) -> Self {
        let provider_type = v1::ProviderType::try_from(p.provider_type).map_or_else(
            |_| format!("type-{}", p.provider_type),
            |t| enum_name(t.as_str_name(), "PROVIDER_TYPE_"),
        );
        let status = v1::ProviderStatus::try_from(p.status).map_or_else(
            |_| format!("status-{}", p.status),
            |s| enum_name(s.as_str_name(), "PROVIDER_STATUS_"),
        );
        let caps = p.capabilities.unwrap_or_default();
        Self {
            id: p.id,
            name: p.name,
            provider_type,
            status,
            active_jobs: p.active_jobs,
            active_workers: p.active_workers,
            max_workers: caps.max_workers,
            max_cpu_cores: caps.max_cpu_cores,
            max_memory_mb: caps.max_memory_mb,
            gpu: caps.gpu,
            architectures: caps.architectures,
            last_error: p.last_error,
        }
    }
}

/// Providers as a table.
pub(crate) fn provider_table(providers: &[ProviderView]) -> String {
    table(
        &[
            "NAME", "TYPE", "STATUS", "WORKERS", "JOBS", "CPU", "MEMORY", "ID",
        ],
        providers
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.provider_type.clone(),
                    p.status.clone(),
                    format!("{}/{}", p.active_workers, p.max_workers),
                    p.active_jobs.to_string(),
                    format!("{}", p.max_cpu_cores),
                    format!("{} MiB", p.max_memory_mb),
                    p.id.clone(),
                ]
            })
            .collect(),
    )
}

/// A log entry, as printed by `-o json` (one JSON object per line).
#[derive(Debug, Serialize)]
pub(crate) struct LogLineView<'a> {
    pub(crate) job_id: &'a str,
    pub(crate) attempt: u32,
    pub(crate) sequence: u64,
    pub(crate) stream: &'static str,
    pub(crate) data: String,
    pub(crate) timestamp: DateTime<Utc>,
}

impl<'a> LogLineView<'a> {
    pub(crate) fn new(job_id: &'a str, attempt: u32, e: &LogEntry) -> Self {
        let stream = match e.stream {
            LogStream::Stderr => "stderr",
            LogStream::System => "system",
            _ => "stdout",
        };
        Self {
            job_id,
            attempt,
            sequence: e.sequence,
            stream,
            data: String::from_utf8_lossy(&e.data).into_owned(),
            timestamp: e.timestamp,
        }
    }
}

/// Pretty JSON of anything serializable.
pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot encode output: {e}\"}}"))
}

/// A header row and data rows, columns padded to their widest cell.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut all = vec![header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>()];
    all.extend(rows);
    render_rows(&all)
}

fn render_rows(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned() {
        let t = table(
            &["ID", "STATE"],
            vec![
                vec!["a".into(), "running".into()],
                vec!["long-id".into(), "-".into()],
            ],
        );
        assert_eq!(t, "ID       STATE\na        running\nlong-id  -\n");
    }

    #[test]
    fn job_states_parse_by_name() {
        assert_eq!(parse_job_state("Running").unwrap(), JobState::Running);
        assert_eq!(parse_job_state("canceled").unwrap(), JobState::Cancelled);
        assert!(parse_job_state("nope").unwrap_err().contains("pending"));
        assert_eq!(job_state_name(v1::JobState::Timeout as i32), "timeout");
    }

    #[test]
    fn workers_show_cpu_and_memory_and_jobs_their_progress() {
        let w = v1::Worker {
            id: "w-1".into(),
            usage: Some(v1::ResourceUsage {
                cpu_percent: 37.25,
                memory_bytes: 512 << 20,
                memory_limit_bytes: 2 << 30,
                ..v1::ResourceUsage::default()
            }),
            usage_at_ms: 1_000,
            ..v1::Worker::default()
        };
        let table = worker_table(&[WorkerView::from(w), WorkerView::from(v1::Worker::default())]);
        assert!(table.contains("CPU") && table.contains("MEMORY"), "{table}");
        assert!(table.contains("37.2%"), "{table}");
        assert!(table.contains("512.0 MiB / 2.0 GiB"), "{table}");
        let mut job = Job::new(JobSpec::new(
            "j",
            hodei_core::CommandType::shell("echo", ["hi"]),
        ));
        job.submit_to_provider(
            hodei_core::ProviderId::new(),
            Some(hodei_core::WorkerId::new()),
        )
        .unwrap();
        job.record_progress(
            hodei_core::domain::progress::JobProgress::new(40, "compiling").unwrap(),
        )
        .unwrap();
        assert!(JobView::from(&job).detail().contains("40% compiling"));
        assert_eq!(show_bytes(999), "999 B");
    }

    #[test]
    fn a_job_view_shows_the_job() {
        let spec = JobSpec::new("j", hodei_core::CommandType::shell("echo", ["hi"]))
            .with_max_attempts(3)
            .with_secret("TOKEN", "s3cr3t");
        let mut job = Job::new(spec);
        job.submit_to_provider(hodei_core::ProviderId::new(), None)
            .unwrap();
        job.mark_running().unwrap();
        job.queue("worker lost").unwrap();
        job.submit_to_provider(hodei_core::ProviderId::new(), None)
            .unwrap();
        job.mark_running().unwrap();
        job.fail(hodei_core::AttemptResult::exited(4)).unwrap();
        let view = JobView::from(&job);
        assert_eq!(view.secret_names, ["TOKEN"]);
        assert!(!json(&view).contains("s3cr3t"));
        assert_eq!(view.state, "failed");
        assert_eq!(view.spec.as_ref().map(|s| s.name.as_str()), Some("j"));
        let detail = view.detail();
        assert!(detail.contains("ATTEMPTS:   2/3"), "{detail}");
        assert!(detail.contains("COMMAND:    echo hi"), "{detail}");
        let j: serde_json::Value = serde_json::from_str(&json(&view)).unwrap();
        assert_eq!(j["exit_code"], 4);
        assert_eq!(j["state"], "failed");
    }

    #[test]
    fn provider_views_name_their_enums() {
        let p = ProviderView::from(v1::Provider {
            name: "process".into(),
            provider_type: v1::ProviderType::BareMetal as i32,
            status: v1::ProviderStatus::Active as i32,
            ..v1::Provider::default()
        });
        assert_eq!(p.provider_type, "bare_metal");
        assert_eq!(p.status, "active");
    }
}
