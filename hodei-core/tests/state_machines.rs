//! Property tests of the job and worker state machines: random sequences of
//! operations never break the invariants of the aggregates.

use std::collections::BTreeSet;

use hodei_core::{
    AttemptOutcome, AttemptResult, CommandType, DomainError, Job, JobId, JobSpec, JobState,
    ProviderId, Worker, WorkerHandle, WorkerId, WorkerState,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum JobOp {
    Queue,
    Release,
    Submit { with_worker: bool },
    AssignWorker,
    MarkRunning,
    Complete,
    Fail { code: i32 },
    Cancel,
    Timeout,
}

fn job_op() -> impl Strategy<Value = JobOp> {
    prop_oneof![
        Just(JobOp::Queue),
        Just(JobOp::Release),
        any::<bool>().prop_map(|with_worker| JobOp::Submit { with_worker }),
        Just(JobOp::AssignWorker),
        Just(JobOp::MarkRunning),
        Just(JobOp::Complete),
        (1..255i32).prop_map(|code| JobOp::Fail { code }),
        Just(JobOp::Cancel),
        Just(JobOp::Timeout),
    ]
}

/// What an operation returned: a transition, a non-transition success, or an error.
enum Outcome {
    Moved(hodei_core::Transition),
    Stayed,
    Refused(DomainError),
}

fn apply_job(job: &mut Job, op: &JobOp) -> Outcome {
    let r = match op {
        JobOp::Queue => job.queue("retry"),
        JobOp::Release => job.release("no capacity"),
        JobOp::Submit { with_worker } => {
            job.submit_to_provider(ProviderId::new(), with_worker.then(WorkerId::new))
        }
        JobOp::AssignWorker => {
            return match job.assign_worker(WorkerId::new()) {
                Ok(()) => Outcome::Stayed,
                Err(e) => Outcome::Refused(e),
            };
        }
        JobOp::MarkRunning => job.mark_running(),
        JobOp::Complete => job.complete(AttemptResult::exited(0)),
        JobOp::Fail { code } => job.fail(AttemptResult::exited(*code)),
        JobOp::Cancel => job.cancel("user"),
        JobOp::Timeout => job.timeout(),
    };
    match r {
        Ok(t) => Outcome::Moved(t),
        Err(e) => Outcome::Refused(e),
    }
}

fn check_job_invariants(job: &Job) -> Result<(), TestCaseError> {
    prop_assert!(
        job.attempts() <= job.max_attempts(),
        "attempts {} > max {}",
        job.attempts(),
        job.max_attempts()
    );
    prop_assert_eq!(
        job.execution_context().attempt,
        job.attempts(),
        "the context names the current attempt"
    );
    if job.state().is_terminal() {
        prop_assert!(
            job.finished_at().is_some(),
            "a terminal job has finished_at"
        );
    } else {
        prop_assert!(job.finished_at().is_none(), "a live job has no finished_at");
    }
    match job.state() {
        JobState::Pending => prop_assert!(job.selected_provider().is_none()),
        JobState::Scheduled | JobState::Running => {
            prop_assert!(job.selected_provider().is_some());
            prop_assert!(
                job.attempts() >= 1,
                "a scheduled job has started an attempt"
            );
        }
        _ => {}
    }
    if job.state() == JobState::Running {
        prop_assert!(job.execution_context().started_at.is_some());
        prop_assert!(job.deadline().is_some());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn job_operations_keep_the_invariants(
        max_attempts in 1u32..5,
        allow_retry in any::<bool>(),
        ops in prop::collection::vec(job_op(), 0..40),
    ) {
        let mut spec = JobSpec::new("prop", CommandType::shell("true", [""; 0]))
            .with_max_attempts(max_attempts);
        spec.preferences.allow_retry = allow_retry;
        let mut job = Job::try_new(spec).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_job_invariants(&job)?;
        let mut states_seen = BTreeSet::new();
        for op in &ops {
            let before = job.clone();
            let outcome = apply_job(&mut job, op);
            match outcome {
                Outcome::Moved(t) => {
                    prop_assert!(
                        !before.state().is_terminal(),
                        "{op:?} changed terminal job in state {}", before.state()
                    );
                    prop_assert_eq!(t.from, before.state());
                    prop_assert_eq!(t.to, job.state());
                    prop_assert!(
                        JobState::TRANSITIONS.contains(&(t.from, t.to)),
                        "{:?} made {} -> {}, not in the table", op, t.from, t.to
                    );
                    if matches!(op, JobOp::Submit { .. }) {
                        prop_assert_eq!(job.attempts(), before.attempts() + 1);
                    }
                    if matches!(op, JobOp::Release) {
                        prop_assert_eq!(job.attempts() + 1, before.attempts());
                    }
                }
                Outcome::Stayed => {
                    prop_assert_eq!(job.state(), before.state());
                    prop_assert_eq!(job.state(), JobState::Scheduled);
                }
                Outcome::Refused(e) => {
                    prop_assert!(
                        matches!(
                            e,
                            DomainError::InvalidStateTransition { .. }
                                | DomainError::MaxAttemptsExceeded { .. }
                        ),
                        "{op:?} refused with an unexpected error {e:?}"
                    );
                    prop_assert_eq!(&job, &before, "a refused {:?} changed the job", op);
                }
            }
            check_job_invariants(&job)?;
            states_seen.insert(job.state());
        }
        if job.state().is_terminal() {
            // Every method on a terminal job is refused and changes nothing.
            let all = [
                JobOp::Queue, JobOp::Release, JobOp::Submit { with_worker: true },
                JobOp::AssignWorker, JobOp::MarkRunning, JobOp::Complete,
                JobOp::Fail { code: 1 }, JobOp::Cancel, JobOp::Timeout,
            ];
            for op in &all {
                let before = job.clone();
                let refused = matches!(apply_job(&mut job, op), Outcome::Refused(_));
                prop_assert!(refused, "{:?} accepted on a terminal job", op);
                prop_assert_eq!(&job, &before);
            }
        }
    }

    /// A job whose worker keeps dying is retried exactly `max_attempts` times.
    #[test]
    fn retries_stop_at_max_attempts(max_attempts in 1u32..6) {
        let spec = JobSpec::new("retry", CommandType::shell("true", [""; 0]))
            .with_max_attempts(max_attempts);
        let mut job = Job::new(spec);
        let mut runs = 0;
        loop {
            prop_assert!(job.submit_to_provider(ProviderId::new(), None).is_ok());
            prop_assert!(job.mark_running().is_ok());
            runs += 1;
            match job.queue("worker lost") {
                Ok(_) => continue,
                Err(DomainError::MaxAttemptsExceeded { max_attempts: m, .. }) => {
                    prop_assert_eq!(m, max_attempts);
                    break;
                }
                Err(e) => return Err(TestCaseError::fail(format!("unexpected {e:?}"))),
            }
        }
        prop_assert_eq!(runs, max_attempts);
        let refused = job.fail(AttemptResult::with_outcome(AttemptOutcome::WorkerLost, None));
        prop_assert!(refused.is_ok(), "a running job without retries can still fail");
        prop_assert_eq!(job.state(), JobState::Failed);
    }
}

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum WorkerOp {
    Created,
    Registered,
    Disconnected,
    Heartbeat,
    Assign,
    /// Releases the n-th current job (modulo), or an unknown job when none runs.
    Release(usize),
    ReleaseUnknown,
    Drain,
    Terminating,
    Terminated,
}

fn worker_op() -> impl Strategy<Value = WorkerOp> {
    prop_oneof![
        1 => Just(WorkerOp::Created),
        1 => Just(WorkerOp::Registered),
        1 => Just(WorkerOp::Disconnected),
        1 => Just(WorkerOp::Heartbeat),
        3 => Just(WorkerOp::Assign),
        3 => any::<usize>().prop_map(WorkerOp::Release),
        1 => Just(WorkerOp::ReleaseUnknown),
        1 => Just(WorkerOp::Drain),
        1 => Just(WorkerOp::Terminating),
        1 => Just(WorkerOp::Terminated),
    ]
}

fn apply_worker(w: &mut Worker, op: &WorkerOp) -> Result<(), DomainError> {
    match op {
        WorkerOp::Created => {
            let h = WorkerHandle::new(w.id(), w.provider_id(), "ext");
            let created = w.created(h);
            // Whatever its state (an agent may register first), a created worker has its handle.
            assert!(
                created.is_err() || w.handle().is_some(),
                "created without a handle"
            );
            created
        }
        WorkerOp::Registered => w.registered(),
        WorkerOp::Disconnected => w.disconnected(),
        WorkerOp::Heartbeat => {
            w.heartbeat();
            Ok(())
        }
        WorkerOp::Assign => w.assign(JobId::new()),
        WorkerOp::Release(n) => {
            let job = match w.current_jobs() {
                [] => JobId::new(),
                jobs => jobs[n % jobs.len()],
            };
            w.release(job)
        }
        WorkerOp::ReleaseUnknown => w.release(JobId::new()),
        WorkerOp::Drain => w.drain(),
        WorkerOp::Terminating => w.terminating(),
        WorkerOp::Terminated => w.terminated().map(|_| ()),
    }
}

fn allowed_worker_move(op: &WorkerOp, from: WorkerState, to: WorkerState) -> bool {
    if from == to || WorkerState::TRANSITIONS.contains(&(from, to)) {
        return true;
    }
    // `registered` with jobs still running goes Connecting (or Creating) -> Ready -> Busy.
    matches!(op, WorkerOp::Registered)
        && matches!(from, WorkerState::Connecting | WorkerState::Creating)
        && to == WorkerState::Busy
        && WorkerState::TRANSITIONS.contains(&(from, WorkerState::Ready))
        && WorkerState::TRANSITIONS.contains(&(WorkerState::Ready, WorkerState::Busy))
}

fn check_worker_invariants(w: &Worker) -> Result<(), TestCaseError> {
    prop_assert!(
        w.current_jobs().len() as u32 <= w.max_concurrent_jobs(),
        "{} jobs on a worker of concurrency {}",
        w.current_jobs().len(),
        w.max_concurrent_jobs()
    );
    if let Some(max) = w.max_jobs() {
        prop_assert!(w.jobs_run() <= max, "ran {} of at most {max}", w.jobs_run());
    }
    match w.state() {
        WorkerState::Ready => {
            prop_assert!(w.current_jobs().is_empty(), "a ready worker runs nothing");
            prop_assert!(w.idle_since().is_some(), "a ready worker is idle");
        }
        WorkerState::Busy => {
            prop_assert!(!w.current_jobs().is_empty(), "a busy worker runs something");
            prop_assert!(w.idle_since().is_none(), "a busy worker is not idle");
        }
        WorkerState::Terminated => {
            prop_assert!(
                w.current_jobs().is_empty(),
                "a terminated worker runs nothing"
            );
        }
        _ => {}
    }
    if w.state() == WorkerState::Creating {
        prop_assert!(
            w.handle().is_none(),
            "a worker being created has no handle yet"
        );
    }
    if w.has_capacity() {
        prop_assert!(matches!(w.state(), WorkerState::Ready | WorkerState::Busy));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn worker_operations_keep_the_invariants(
        concurrency in 1u32..4,
        max_jobs in prop::option::of(1u32..6),
        ops in prop::collection::vec(worker_op(), 0..60),
    ) {
        let mut w = Worker::new(WorkerId::new(), ProviderId::new()).with_limits(concurrency, max_jobs);
        check_worker_invariants(&w)?;
        for op in &ops {
            let before = w.clone();
            match apply_worker(&mut w, op) {
                Ok(()) => {
                    prop_assert!(
                        allowed_worker_move(op, before.state(), w.state()),
                        "{:?} made {} -> {}, not in the table", op, before.state(), w.state()
                    );
                    prop_assert!(
                        before.state() != WorkerState::Terminated || w.state() == WorkerState::Terminated,
                        "a terminated worker came back"
                    );
                    if matches!(op, WorkerOp::Created) {
                        // Either the creation step, or the handle of a worker whose
                        // agent registered first (its state unchanged).
                        prop_assert!(
                            before.state() == WorkerState::Creating
                                || (before.handle().is_none() && w.state() == before.state()),
                            "created from {} with handle {:?}", before.state(), before.handle()
                        );
                    }
                    if matches!(op, WorkerOp::Disconnected) {
                        prop_assert_ne!(before.state(), WorkerState::Creating);
                    }
                    if matches!(op, WorkerOp::Assign) {
                        prop_assert_eq!(w.jobs_run(), before.jobs_run() + 1);
                        prop_assert_eq!(w.state(), WorkerState::Busy);
                    }
                }
                Err(e) => {
                    prop_assert!(
                        matches!(e, DomainError::InvalidStateTransition { .. }),
                        "{op:?} refused with an unexpected error {e:?}"
                    );
                    prop_assert_eq!(&w, &before, "a refused {:?} changed the worker", op);
                }
            }
            check_worker_invariants(&w)?;
        }
    }
}

/// Regressions found by the properties above: a worker reached `Connecting`
/// without a provider handle (`disconnected` while `Creating`), and a late
/// `created` flipped a registered worker back to `Connecting`.
#[test]
fn created_and_disconnected_respect_the_creation_step() {
    let p = ProviderId::new();
    let mut w = Worker::new(WorkerId::new(), p);
    assert!(w.disconnected().is_err(), "no stream while creating");
    assert_eq!(w.state(), WorkerState::Creating);
    w.created(WorkerHandle::new(w.id(), p, "a")).unwrap();
    w.registered().unwrap();
    assert!(w.created(WorkerHandle::new(w.id(), p, "b")).is_err());
    assert_eq!(w.state(), WorkerState::Ready);
    assert_eq!(w.handle().map(|h| h.external_id.as_str()), Some("a"));
    w.disconnected().unwrap();
    assert_eq!(w.state(), WorkerState::Connecting);
}

/// An agent can register before its provider's create call returned (a fast
/// container, a warm process): the worker is ready at once, and the late
/// `created` only records the handle.
#[test]
fn an_agent_registering_before_created_returns_keeps_its_worker_ready() {
    let p = ProviderId::new();
    let mut w = Worker::new(WorkerId::new(), p);
    w.registered().unwrap();
    assert_eq!(w.state(), WorkerState::Ready);
    assert!(w.handle().is_none());
    w.created(WorkerHandle::new(w.id(), p, "late")).unwrap();
    assert_eq!(w.state(), WorkerState::Ready);
    assert_eq!(w.handle().map(|h| h.external_id.as_str()), Some("late"));
    assert!(w.created(WorkerHandle::new(w.id(), p, "again")).is_err());
}
