//! Writes the seed inputs of the fuzz targets to `fuzz/seeds/<target>/`: one
//! well-formed example of each message kind, so the fuzzer starts from inputs
//! that get past decoding. Run from `fuzz/` with `cargo run --example seeds`.

use std::fs;
use std::path::Path;

use hodei_core::domain::spec::{
    ArtifactDest, ArtifactSource, CommandType, Constraint, ConstraintOp, JobSpec,
};
use hodei_core::proto::v1;
use prost::Message;

const JOB: &str = "7b0c3c0e-5d4c-4f5e-9b8a-1c2d3e4f5a6b";
const WORKER: &str = "0f1e2d3c-4b5a-4968-8776-655443322110";

fn full_spec() -> JobSpec {
    let mut s = JobSpec::new("build", CommandType::script("bash", "echo $TOKEN"))
        .with_env("A", "1")
        .with_secret("TOKEN", "s3cr3t-value")
        .with_timeout_ms(60_000)
        .with_max_attempts(2)
        .with_provider("docker")
        .with_priority(5);
    s.image = Some("alpine:3".into());
    s.constraints = vec![Constraint {
        key: "zone".into(),
        op: ConstraintOp::In,
        values: vec!["a".into(), "b".into()],
    }];
    s.inputs = vec![ArtifactSource {
        name: "src".into(),
        url: "http://127.0.0.1/src.tar".into(),
        path: "src".into(),
    }];
    s.outputs = vec![ArtifactDest {
        name: "out".into(),
        path: "out".into(),
        url: "http://127.0.0.1/out".into(),
    }];
    s.working_dir = Some("/work".into());
    s.labels.insert("team".into(), "ci".into());
    s
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("seeds").join(target);
    fs::create_dir_all(&dir).expect("seed dir");
    fs::write(dir.join(name), bytes).expect("seed file");
}

fn proto(kind: u8, name: &str, m: &impl Message) {
    let mut bytes = vec![kind];
    bytes.extend(m.encode_to_vec());
    write("proto_messages", name, &bytes);
}

fn main() {
    use v1::worker_message::Payload;
    let spec = full_spec();
    let shell = JobSpec::new("s", CommandType::shell("echo", ["hi"]));
    let wm = |p: Payload| v1::WorkerMessage { payload: Some(p) };
    let usage = v1::ResourceUsage {
        cpu_percent: 12.5,
        memory_bytes: 1 << 20,
        memory_limit_bytes: 1 << 30,
        ..Default::default()
    };
    proto(
        0,
        "heartbeat",
        &wm(Payload::Heartbeat(v1::WorkerHeartbeat {
            worker_id: WORKER.into(),
            state: 3,
            running_jobs: vec![JOB.into()],
            usage: Some(usage),
            timestamp_ms: 1_700_000_000_000,
            dropped_messages: 0,
            certificate_days_to_expiry: Some(30),
        })),
    );
    proto(
        0,
        "log_batch",
        &wm(Payload::LogBatch(v1::LogBatch {
            job_id: JOB.into(),
            attempt: 1,
            entries: vec![v1::LogEntry {
                sequence: 1,
                stream: 2,
                data: b"hello\nworld".to_vec().into(),
                timestamp_ms: 1_700_000_000_000,
            }],
        })),
    );
    proto(
        0,
        "job_result",
        &wm(Payload::JobResult(v1::JobResultMessage {
            job_id: JOB.into(),
            attempt: 1,
            outcome: 1,
            exit_code: Some(0),
            duration_ms: 10,
            secrets_injected: vec!["TOKEN".into()],
            last_sequence: 1,
            ..Default::default()
        })),
    );
    proto(
        0,
        "stats",
        &wm(Payload::Stats(v1::WorkerStatsMessage {
            worker_id: WORKER.into(),
            usage: Some(usage),
            timestamp_ms: 1,
        })),
    );
    proto(
        0,
        "job_started",
        &wm(Payload::JobStarted(v1::JobStartedMessage {
            job_id: JOB.into(),
            attempt: 1,
        })),
    );
    proto(
        1,
        "register",
        &v1::RegisterRequest {
            otp: "one-time".into(),
            worker_info: Some(v1::WorkerInfo {
                worker_id: WORKER.into(),
                hostname: "h".into(),
                agent_version: "0.1.0".into(),
                max_concurrent_jobs: 1,
                labels: [("zone".to_owned(), "a".to_owned())].into(),
                architectures: vec!["x86_64".into()],
            }),
            resume_session_token: String::new(),
        },
    );
    for (name, s) in [("queue_full", &spec), ("queue_shell", &shell)] {
        proto(
            2,
            name,
            &v1::QueueJobRequest {
                spec: Some(v1::JobSpec::from(s)),
                correlation_id: JOB.into(),
            },
        );
    }
    proto(
        3,
        "assign",
        &v1::AssignJobRequest {
            job_id: JOB.into(),
            worker_id: WORKER.into(),
        },
    );
    proto(
        7,
        "fail",
        &v1::FailJobRequest {
            job_id: JOB.into(),
            worker_id: WORKER.into(),
            attempt: 1,
            error: "boom".into(),
            exit_code: Some(2),
        },
    );
    proto(
        9,
        "list",
        &v1::ListJobsRequest {
            state: 1,
            limit: 10,
        },
    );
    proto(
        11,
        "register_provider",
        &v1::RegisterProviderRequest {
            name: "docker".into(),
            provider_type: 3,
            config_json: r#"{"type":"docker","image":"hodei-worker:latest"}"#.into(),
            max_workers: Some(2),
        },
    );
    proto(
        12,
        "worker_status",
        &v1::UpdateWorkerStatusRequest {
            worker_id: WORKER.into(),
            state: 5,
        },
    );
    proto(
        16,
        "run_job",
        &v1::ServerMessage {
            payload: Some(v1::server_message::Payload::RunJob(v1::RunJobCommand {
                job_id: JOB.into(),
                attempt: 1,
                spec: Some(v1::JobSpec::from(&spec)),
                correlation_id: JOB.into(),
                resume_after_sequence: 0,
            })),
        },
    );
    proto(19, "spec", &v1::JobSpec::from(&spec));

    for (name, s) in [("full", &spec), ("shell", &shell)] {
        let json = serde_json::to_vec_pretty(s).expect("spec JSON");
        write("jobspec_json", name, &json);
    }
    write(
        "jobspec_json",
        "minimal",
        br#"{"command":{"type":"shell","cmd":"echo","args":["hi"]}}"#,
    );
}
