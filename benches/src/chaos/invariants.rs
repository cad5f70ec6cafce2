//! The invariants a round must keep, checked on its recorded history.

use std::collections::BTreeMap;
use std::time::Duration;

use hodei_core::proto::v1;

use super::faults::Fault;
use super::history::{Event, History, state_name};
use super::jobs::{self, JobPlan};
use super::markers::{Mark, MarkKind};
use super::round::RoundConfig;

/// A start marker may follow an accepted cancel by this much: the run command can
/// be on the wire when the cancel is accepted.
const CANCEL_SLACK_MS: i64 = 1_000;

/// Whether a `JobState` value is final.
pub fn is_final(state: i32) -> bool {
    state >= v1::JobState::Succeeded as i32
}

/// Everything collected in a round besides the history.
#[derive(Debug, Default)]
pub struct Observed {
    /// Faults actually injected.
    pub injected: usize,
    /// The plan of every accepted job, by id.
    pub plans: BTreeMap<String, JobPlan>,
    /// The job as `GetJob` showed it at the end.
    pub final_jobs: BTreeMap<String, v1::Job>,
    /// `GetLogs` (every attempt) at the end.
    pub logs: BTreeMap<String, v1::GetLogsResponse>,
    /// REST bodies about each job at the end.
    pub rest: BTreeMap<String, Vec<String>>,
    /// Every server's log.
    pub server_logs: Vec<String>,
    /// Execution markers.
    pub marks: Vec<Mark>,
    /// Processes of the round still alive after the grace.
    pub orphans: Vec<String>,
    /// How long the recovery window lasted.
    pub recovered_within: Option<Duration>,
    /// Things worth saying that are not violations.
    pub notes: Vec<String>,
    /// Injections that failed to run (a server that did not come back, …).
    pub errors: Vec<String>,
}

/// Kinds of violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// Neither final nor pending after the recovery window.
    Lost,
    /// Ran again after it succeeded.
    Duplicated,
    /// Ran after its cancel was accepted, or ended other than cancelled.
    RanAfterCancel,
    /// A succeeded attempt's log is incomplete or out of order.
    Log,
    /// A secret in a log, a response or a server log.
    Secret,
    /// A process of the round alive after the grace.
    Orphan,
    /// The fault could not be injected or cleared (e.g. the server did not restart).
    Error,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Lost => "LOST",
            Kind::Duplicated => "DUPLICATED",
            Kind::RanAfterCancel => "RAN AFTER CANCEL",
            Kind::Log => "LOG",
            Kind::Secret => "SECRET",
            Kind::Orphan => "ORPHAN",
            Kind::Error => "ERROR",
        }
    }
}

/// One violated invariant.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Which.
    pub kind: Kind,
    /// The job, when it is about one.
    pub job: Option<String>,
    /// What was seen.
    pub detail: String,
    /// The job's history, rendered.
    pub history: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.job {
            Some(j) => writeln!(f, "  {} job {j}: {}", self.kind.name(), self.detail)?,
            None => writeln!(f, "  {}: {}", self.kind.name(), self.detail)?,
        }
        if !self.history.is_empty() {
            write!(f, "{}", self.history)?;
        }
        Ok(())
    }
}

/// The verdict of one round.
#[derive(Debug, Clone)]
pub struct RoundOutcome {
    /// Round number.
    pub index: usize,
    /// Its seed.
    pub seed: u64,
    /// Its fault.
    pub fault: Fault,
    /// Faults injected.
    pub injected: usize,
    /// Jobs accepted.
    pub jobs: usize,
    /// Jobs lost.
    pub lost: usize,
    /// Jobs that ran again after success.
    pub duplicated: usize,
    /// Jobs that ran after an accepted cancel.
    pub ran_after_cancel: usize,
    /// Succeeded jobs whose log was not complete and in order.
    pub bad_logs: usize,
    /// Places a secret was found.
    pub secret_leaks: usize,
    /// Processes left over.
    pub orphans: usize,
    /// Jobs run more than once to completion (allowed: at-least-once).
    pub reruns: usize,
    /// Jobs still pending (retrying) after the window.
    pub pending: usize,
    /// Per injection: fault cleared → every affected job running again or final.
    pub recovery: Vec<Duration>,
    /// The violations, each with its job's history.
    pub violations: Vec<Violation>,
    /// Remarks.
    pub notes: Vec<String>,
}

/// Checks every invariant of a round.
pub fn check(cfg: &RoundConfig, h: &History, o: &Observed) -> RoundOutcome {
    let mut out = RoundOutcome {
        index: cfg.index,
        seed: cfg.seed,
        fault: cfg.fault,
        injected: o.injected,
        jobs: h.jobs.len(),
        lost: 0,
        duplicated: 0,
        ran_after_cancel: 0,
        bad_logs: 0,
        secret_leaks: 0,
        orphans: o.orphans.len(),
        reruns: 0,
        pending: 0,
        recovery: Vec::new(),
        violations: Vec::new(),
        notes: o.notes.clone(),
    };
    let mut violate = |kind: Kind, job: Option<&str>, detail: String| {
        out.violations.push(Violation {
            kind,
            job: job.map(str::to_owned),
            detail,
            history: job.map(|j| h.render_job(j)).unwrap_or_default(),
        });
    };
    for e in &o.errors {
        violate(Kind::Error, None, e.clone());
    }
    let secrets: BTreeMap<&str, &str> = o
        .plans
        .iter()
        .filter_map(|(id, p)| p.secret.as_deref().map(|s| (id.as_str(), s)))
        .collect();
    let (mut lost, mut dup, mut cancel, mut logs, mut leaks, mut reruns, mut pending) =
        (0, 0, 0, 0, 0, 0, 0);
    for (id, jh) in &h.jobs {
        let job = o.final_jobs.get(id);
        let state = job
            .map(|j| j.state)
            .or_else(|| jh.last.as_ref().map(|(s, ..)| *s))
            .unwrap_or(0);
        let starts: Vec<&Mark> = o
            .marks
            .iter()
            .filter(|m| &m.job == id && m.kind == MarkKind::Start)
            .collect();
        let ends = o
            .marks
            .iter()
            .filter(|m| &m.job == id && m.kind == MarkKind::End)
            .count();
        if ends > 1 {
            reruns += 1;
        }
        // 1. Lost.
        if !is_final(state) {
            if state == v1::JobState::Pending as i32 {
                pending += 1;
            } else {
                lost += 1;
                violate(
                    Kind::Lost,
                    Some(id),
                    format!(
                        "{} after the recovery window ({:?}), attempts {}",
                        state_name(state),
                        o.recovered_within.unwrap_or_default(),
                        job.map_or(0, |j| j.attempts)
                    ),
                );
            }
        }
        // 2. Nothing runs after success.
        if state == v1::JobState::Succeeded as i32 {
            let succeeded_at = jh
                .entries
                .iter()
                .find_map(|e| match e.event {
                    Event::State { state, .. } if state == v1::JobState::Succeeded as i32 => {
                        Some(e.at_ms)
                    }
                    _ => None,
                })
                .into_iter()
                .chain(job.and_then(|j| j.finished_at_ms))
                .min();
            if let Some(t) = succeeded_at {
                let late: Vec<String> = starts
                    .iter()
                    .filter(|m| m.at_ms > t)
                    .map(|m| format!("{m} at +{} ms", m.at_ms - t))
                    .collect();
                if !late.is_empty() {
                    dup += 1;
                    violate(
                        Kind::Duplicated,
                        Some(id),
                        format!("ran after it succeeded: {}", late.join(", ")),
                    );
                }
            }
        }
        // 3. Nothing runs after an accepted cancel.
        let accepted_cancel = jh.entries.iter().find_map(|e| match e.event {
            Event::CancelAccepted { state, .. } => Some((e.at_ms, state)),
            _ => None,
        });
        if let Some((at, answered)) = accepted_cancel {
            let late: Vec<String> = starts
                .iter()
                .filter(|m| m.at_ms > at + CANCEL_SLACK_MS)
                .map(|m| format!("{m} {} ms after the cancel", m.at_ms - at))
                .collect();
            let wrong_end = answered == v1::JobState::Cancelled as i32
                && state != v1::JobState::Cancelled as i32;
            if !late.is_empty() || wrong_end {
                cancel += 1;
                let mut what = Vec::new();
                if !late.is_empty() {
                    what.push(format!(
                        "ran after its cancel was accepted: {}",
                        late.join(", ")
                    ));
                }
                if wrong_end {
                    what.push(format!(
                        "cancel answered cancelled but the job ended {}",
                        state_name(state)
                    ));
                }
                violate(Kind::RanAfterCancel, Some(id), what.join("; "));
            }
        }
        // 4. A succeeded attempt's log is complete and in order.
        if state == v1::JobState::Succeeded as i32
            && let (Some(j), Some(plan)) = (job, o.plans.get(id))
        {
            match o.logs.get(id) {
                Some(l) => {
                    let lines = jobs::attempt_lines(l, j.attempts);
                    if let Err(e) = plan.check_output(&lines) {
                        logs += 1;
                        violate(
                            Kind::Log,
                            Some(id),
                            format!("attempt {} (succeeded): {e}", j.attempts),
                        );
                    }
                }
                None => {
                    logs += 1;
                    violate(Kind::Log, Some(id), "its logs could not be read".into());
                }
            }
        }
    }
    // 5. No secret anywhere a client or operator reads.
    for (owner, secret) in &secrets {
        for id in h.jobs.keys() {
            let text = jobs::grpc_text(o.final_jobs.get(id), o.logs.get(id));
            if text.contains(secret) {
                leaks += 1;
                violate(
                    Kind::Secret,
                    Some(owner),
                    format!("its secret is in the gRPC job/logs of job {id}"),
                );
            }
            for body in o.rest.get(id).into_iter().flatten() {
                if body.contains(secret) {
                    leaks += 1;
                    violate(
                        Kind::Secret,
                        Some(owner),
                        format!("its secret is in a REST response about job {id}"),
                    );
                }
            }
        }
        for (i, log) in o.server_logs.iter().enumerate() {
            if log.contains(secret) {
                leaks += 1;
                violate(
                    Kind::Secret,
                    Some(owner),
                    format!("its secret is in the log of server replica #{}", i + 1),
                );
            }
        }
    }
    // 6. No process left behind.
    if !o.orphans.is_empty() {
        violate(
            Kind::Orphan,
            None,
            format!(
                "{} process(es) of the round alive after the grace: {}",
                o.orphans.len(),
                o.orphans.join(", ")
            ),
        );
    }
    if cfg.verbose {
        for id in h.jobs.keys() {
            out.notes
                .push(format!("job {id}:\n{}", h.render_job(id).trim_end()));
        }
    }
    out.lost = lost;
    out.duplicated = dup;
    out.ran_after_cancel = cancel;
    out.bad_logs = logs;
    out.secret_leaks = leaks;
    out.reruns = reruns;
    out.pending = pending;
    for (took, job) in recovery_times(h, o) {
        if took > SLOW_RECOVERY {
            out.notes.push(format!(
                "slow recovery: job {job} ran again or ended {:.1} s after the fault cleared:\n{}",
                took.as_secs_f64(),
                h.render_job(&job).trim_end()
            ));
        }
        out.recovery.push(took);
    }
    out
}

/// A recovery slower than this is printed with the slowest job's history.
const SLOW_RECOVERY: Duration = Duration::from_secs(20);

/// Per fault window: from the clearing to the moment every job that was open at
/// the injection ran again (a start marker) or was seen final; jobs that never did
/// are lost and counted there, not here.
fn recovery_times(h: &History, o: &Observed) -> Vec<(Duration, String)> {
    let mut out = Vec::new();
    for (injected, cleared) in h.fault_windows() {
        let mut worst: Option<(i64, &str)> = None;
        for (id, jh) in &h.jobs {
            let accepted_before = jh
                .entries
                .iter()
                .any(|e| matches!(e.event, Event::Accepted { .. }) && e.at_ms <= injected);
            let final_before = jh.entries.iter().any(|e| {
                matches!(e.event, Event::State { state, .. } if is_final(state))
                    && e.at_ms <= injected
            });
            if !accepted_before || final_before {
                continue;
            }
            let again = jh
                .entries
                .iter()
                .filter(|e| e.at_ms >= cleared)
                .find_map(|e| match &e.event {
                    Event::State { state, .. } if is_final(*state) => Some(e.at_ms),
                    Event::Marker(m) if m.kind == MarkKind::Start => Some(e.at_ms),
                    _ => None,
                })
                .or_else(|| {
                    o.marks
                        .iter()
                        .filter(|m| &m.job == id && m.kind == MarkKind::Start && m.at_ms >= cleared)
                        .map(|m| m.at_ms)
                        .min()
                });
            if let Some(t) = again
                && worst.is_none_or(|(w, _)| t - cleared > w)
            {
                worst = Some((t - cleared, id));
            }
        }
        if let Some((w, id)) = worst {
            out.push((
                Duration::from_millis(u64::try_from(w).unwrap_or(0)),
                id.to_owned(),
            ));
        }
    }
    out
}
