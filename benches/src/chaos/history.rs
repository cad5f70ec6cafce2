//! What the suite observed during a round, in time order: submissions, state
//! changes (polled), cancel requests and answers, faults, execution markers.
//! Invariants are checked on this record, and a violating job's record is printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hodei_core::proto::v1;

use super::markers::Mark;
use super::now_ms;

/// One observation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// `QueueJob` answered with this id.
    Accepted {
        /// Replica that accepted it.
        replica: String,
    },
    /// `QueueJob` failed (round-level: there is no id).
    SubmitFailed {
        /// Index of the planned job.
        index: usize,
        /// The error.
        error: String,
    },
    /// The job was seen in a new state (or with a new attempt / worker).
    State {
        /// `JobState` value.
        state: i32,
        /// Attempts started so far.
        attempts: u32,
        /// Assigned worker, if any.
        worker: String,
    },
    /// A cancel was sent.
    CancelSent {
        /// Replica it went to.
        replica: String,
    },
    /// The cancel was accepted; the job as the answer showed it.
    CancelAccepted {
        /// `JobState` in the answer.
        state: i32,
        /// Attempts in the answer.
        attempts: u32,
    },
    /// The cancel was refused or not answered.
    CancelRefused {
        /// The error.
        error: String,
    },
    /// A fault was injected (round-level).
    FaultInjected {
        /// What was done.
        what: String,
    },
    /// The fault was cleared (round-level).
    FaultCleared {
        /// What was done.
        what: String,
    },
    /// A marker line the job's script wrote.
    Marker(Mark),
}

/// One timed observation.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// What was seen.
    pub event: Event,
}

/// The record of one job.
#[derive(Debug, Clone, Default)]
pub struct JobHistory {
    /// Index of the job's plan within the round.
    pub index: usize,
    /// Observations in time order.
    pub entries: Vec<Entry>,
    /// Last polled `(state, attempts, worker)`.
    pub last: Option<(i32, u32, String)>,
}

/// The record of one round.
#[derive(Debug, Clone)]
pub struct History {
    /// When the round started (Unix ms).
    pub t0_ms: i64,
    /// Per job id.
    pub jobs: BTreeMap<String, JobHistory>,
    /// Observations not tied to one job (faults, failed submissions).
    pub round: Vec<Entry>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty record starting now.
    pub fn new() -> Self {
        Self {
            t0_ms: now_ms(),
            jobs: BTreeMap::new(),
            round: Vec::new(),
        }
    }

    /// Records an accepted submission.
    pub fn accepted(&mut self, id: &str, index: usize, replica: &str, at_ms: i64) {
        let h = self.jobs.entry(id.to_owned()).or_default();
        h.index = index;
        h.entries.push(Entry {
            at_ms,
            event: Event::Accepted {
                replica: replica.to_owned(),
            },
        });
    }

    /// Records an event of job `id`.
    pub fn job_event(&mut self, id: &str, event: Event) {
        let h = self.jobs.entry(id.to_owned()).or_default();
        h.entries.push(Entry {
            at_ms: now_ms(),
            event,
        });
    }

    /// Records a round-level event.
    pub fn round_event(&mut self, event: Event) {
        self.round.push(Entry {
            at_ms: now_ms(),
            event,
        });
    }

    /// Records a polled job when its state, attempts or worker changed.
    pub fn observe(&mut self, job: &v1::Job) {
        let h = self.jobs.entry(job.id.clone()).or_default();
        let now = (job.state, job.attempts, job.worker_id.clone());
        if h.last.as_ref() != Some(&now) {
            h.entries.push(Entry {
                at_ms: now_ms(),
                event: Event::State {
                    state: job.state,
                    attempts: job.attempts,
                    worker: job.worker_id.clone(),
                },
            });
            h.last = Some(now);
        }
    }

    /// Adds the markers (read at the end of the round) to their jobs' records.
    pub fn add_markers(&mut self, marks: &[Mark]) {
        for m in marks {
            if let Some(h) = self.jobs.get_mut(&m.job) {
                h.entries.push(Entry {
                    at_ms: m.at_ms,
                    event: Event::Marker(m.clone()),
                });
            }
        }
        for h in self.jobs.values_mut() {
            h.entries.sort_by_key(|e| e.at_ms);
        }
    }

    /// The faults of the round as `(injected, cleared)` pairs in Unix ms.
    pub fn fault_windows(&self) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let mut open = None;
        for e in &self.round {
            match &e.event {
                Event::FaultInjected { .. } => open = Some(e.at_ms),
                Event::FaultCleared { .. } => {
                    if let Some(start) = open.take() {
                        out.push((start, e.at_ms));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The job's record merged with the round's faults, one line each, with times
    /// relative to the round's start.
    pub fn render_job(&self, id: &str) -> String {
        let mut lines: Vec<(i64, String)> = self
            .round
            .iter()
            .filter(|e| {
                matches!(
                    e.event,
                    Event::FaultInjected { .. } | Event::FaultCleared { .. }
                )
            })
            .map(|e| (e.at_ms, describe(&e.event)))
            .collect();
        if let Some(h) = self.jobs.get(id) {
            lines.extend(h.entries.iter().map(|e| (e.at_ms, describe(&e.event))));
        }
        lines.sort_by_key(|(t, _)| *t);
        let mut s = String::new();
        for (t, what) in lines {
            let _ = writeln!(
                s,
                "      {:>9.3} s  {what}",
                (t - self.t0_ms) as f64 / 1000.0
            );
        }
        s
    }
}

/// A `JobState` value by name.
pub fn state_name(state: i32) -> String {
    v1::JobState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("JOB_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| state.to_string())
}

fn describe(e: &Event) -> String {
    match e {
        Event::Accepted { replica } => format!("submit accepted by replica {replica}"),
        Event::SubmitFailed { index, error } => format!("submit of job #{index} failed: {error}"),
        Event::State {
            state,
            attempts,
            worker,
        } => {
            let short: String = worker.chars().take(8).collect();
            format!(
                "state {} (attempts {attempts}{})",
                state_name(*state),
                if short.is_empty() {
                    String::new()
                } else {
                    format!(", worker {short}")
                }
            )
        }
        Event::CancelSent { replica } => format!("cancel sent to replica {replica}"),
        Event::CancelAccepted { state, attempts } => format!(
            "cancel accepted: {} (attempts {attempts})",
            state_name(*state)
        ),
        Event::CancelRefused { error } => format!("cancel not accepted: {error}"),
        Event::FaultInjected { what } => format!("FAULT {what}"),
        Event::FaultCleared { what } => format!("CLEARED {what}"),
        Event::Marker(m) => format!("execution marker: {m}"),
    }
}
