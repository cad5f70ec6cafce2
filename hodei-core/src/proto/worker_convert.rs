//! The worker stream's wire messages ↔ the domain's [`WorkerCommand`] and
//! [`WorkerReport`].

use crate::domain::logs::LogEntry;
use crate::domain::worker_protocol::{
    Ack, AttemptReport, Heartbeat, RunJob, WorkerCommand, WorkerReport,
};
use crate::proto::convert::{
    ConvertError, attempt_result_from_proto, from_millis, outcome_to_proto, parse_job_id, to_millis,
};
use crate::proto::v1;
use crate::proto::v1::server_message::Payload as Out;
use crate::proto::v1::worker_message::Payload as In;

impl From<WorkerCommand> for v1::ServerMessage {
    fn from(cmd: WorkerCommand) -> Self {
        let payload = match cmd {
            WorkerCommand::Run(run) => Out::RunJob(run_job_to_proto(&run)),
            WorkerCommand::Cancel {
                job_id,
                attempt,
                reason,
            } => Out::CancelJob(v1::CancelJobCommand {
                job_id: job_id.to_string(),
                attempt,
                reason,
            }),
            WorkerCommand::Ack(ack) => Out::Ack(ack_to_proto(ack)),
            WorkerCommand::KeepAlive { at } => Out::KeepAlive(v1::KeepAliveMessage {
                timestamp_ms: to_millis(at),
            }),
        };
        v1::ServerMessage {
            payload: Some(payload),
        }
    }
}

fn run_job_to_proto(run: &RunJob) -> v1::RunJobCommand {
    v1::RunJobCommand {
        job_id: run.job_id.to_string(),
        attempt: run.attempt,
        spec: Some(v1::JobSpec::from(&run.spec)),
        correlation_id: run.correlation_id.clone(),
        resume_after_sequence: run.resume_after_sequence,
    }
}

fn ack_to_proto(ack: Ack) -> v1::AckMessage {
    v1::AckMessage {
        job_id: ack.job_id.to_string(),
        attempt: ack.attempt,
        acked_sequence: ack.acked_sequence,
        result_acked: ack.result_acked,
    }
}

/// A message from an agent's stream in domain terms; `None` for an empty one
/// (a newer agent's message this server does not know).
pub fn worker_report_from_proto(
    msg: v1::WorkerMessage,
) -> Result<Option<WorkerReport>, ConvertError> {
    let Some(payload) = msg.payload else {
        return Ok(None);
    };
    Ok(Some(match payload {
        In::Heartbeat(hb) => WorkerReport::Heartbeat(heartbeat_from_proto(&hb)),
        In::JobStarted(s) => WorkerReport::JobStarted {
            job_id: parse_job_id(&s.job_id, "job_started.job_id")?,
            attempt: s.attempt,
        },
        In::LogBatch(batch) => WorkerReport::Logs {
            job_id: parse_job_id(&batch.job_id, "log_batch.job_id")?,
            attempt: batch.attempt,
            entries: batch
                .entries
                .into_iter()
                .map(LogEntry::try_from)
                .collect::<Result<Vec<_>, _>>()?,
        },
        In::JobResult(r) => WorkerReport::Result(attempt_report_from_proto(&r)?),
        In::Stats(s) => match s.usage.as_ref() {
            Some(u) => WorkerReport::Stats(u.into()),
            None => return Ok(None),
        },
        In::Progress(p) => WorkerReport::Progress {
            job_id: parse_job_id(&p.job_id, "progress.job_id")?,
            attempt: p.attempt,
            percent: p.percent,
            message: p.message,
        },
    }))
}

/// A job result message as the domain's [`AttemptReport`].
///
/// # Errors
/// A job id or outcome that does not parse, naming the field.
pub fn attempt_report_from_proto(r: &v1::JobResultMessage) -> Result<AttemptReport, ConvertError> {
    Ok(AttemptReport::new(
        parse_job_id(&r.job_id, "job_result.job_id")?,
        r.attempt,
        attempt_result_from_proto(r)?,
    )
    .with_ran_for(std::time::Duration::from_millis(r.duration_ms))
    .with_last_sequence(r.last_sequence))
}

impl From<&AttemptReport> for v1::JobResultMessage {
    fn from(r: &AttemptReport) -> Self {
        let res = &r.result;
        Self {
            job_id: r.job_id.to_string(),
            attempt: r.attempt,
            outcome: outcome_to_proto(res.outcome) as i32,
            exit_code: res.exit_code,
            signal: res.signal,
            duration_ms: u64::try_from(r.ran_for.as_millis()).unwrap_or(u64::MAX),
            error: res.error.clone().unwrap_or_default(),
            secrets_injected: res.secrets_injected.clone(),
            log_bytes_dropped: res.log_bytes_dropped,
            last_sequence: r.last_sequence,
        }
    }
}

/// A heartbeat's content; running job ids that do not parse are left out
/// (they cannot name a job of this server).
#[must_use]
pub fn heartbeat_from_proto(hb: &v1::WorkerHeartbeat) -> Heartbeat {
    let mut out = Heartbeat::new(
        hb.running_jobs
            .iter()
            .filter_map(|id| id.parse().ok())
            .collect(),
    );
    if let Some(u) = hb.usage.as_ref() {
        out = out.with_usage(u.into());
    }
    if hb.timestamp_ms > 0 {
        out = out.sent_at(from_millis(hb.timestamp_ms));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::JobId;
    use crate::domain::job::AttemptResult;

    #[test]
    fn a_malformed_job_id_names_its_field() {
        let msg = v1::WorkerMessage {
            payload: Some(In::JobStarted(v1::JobStartedMessage {
                job_id: "nope".into(),
                attempt: 1,
            })),
        };
        let err = worker_report_from_proto(msg).unwrap_err();
        assert_eq!(err.field, "job_started.job_id");
    }

    #[test]
    fn heartbeat_keeps_the_ids_that_parse() {
        let id = JobId::new();
        let hb = v1::WorkerHeartbeat {
            running_jobs: vec![id.to_string(), "garbage".into()],
            timestamp_ms: 1_700_000_000_000,
            ..Default::default()
        };
        let h = heartbeat_from_proto(&hb);
        assert_eq!(h.running_jobs, vec![id]);
        assert_eq!(
            h.sent_at.map(|t| t.timestamp_millis()),
            Some(1_700_000_000_000)
        );
        assert!(h.usage.is_none());
    }

    #[test]
    fn ack_round_trips_to_the_wire() {
        let id = JobId::new();
        let msg = v1::ServerMessage::from(WorkerCommand::Ack(Ack::new(id, 2, 17, true)));
        let Some(Out::Ack(a)) = msg.payload else {
            panic!("not an ack");
        };
        assert_eq!(a.job_id, id.to_string());
        assert_eq!((a.attempt, a.acked_sequence, a.result_acked), (2, 17, true));
    }

    #[test]
    fn a_job_result_round_trips_with_its_run_time_and_last_sequence() {
        let id = JobId::new();
        let mut result = AttemptResult::exited(3);
        result.secrets_injected = vec!["TOKEN".into()];
        result.log_bytes_dropped = 12;
        let report = AttemptReport::new(id, 2, result)
            .with_ran_for(std::time::Duration::from_millis(1_500))
            .with_last_sequence(41);
        let wire = v1::JobResultMessage::from(&report);
        assert_eq!((wire.duration_ms, wire.last_sequence), (1_500, 41));
        assert_eq!(attempt_report_from_proto(&wire).unwrap(), report);
    }
}
