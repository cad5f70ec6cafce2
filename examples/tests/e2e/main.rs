//! End-to-end tests: the real `hodei-server` and `hodei-worker` binaries,
//! real child processes, real sockets, the embedded in-memory store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod artifacts;
mod audit;
mod concurrency;
mod crash_safety;
mod dashboard;
mod demo;
mod docker;
mod failover;
mod harness;
mod observability;
mod postgres;
mod runtime_providers;
mod security;
mod templates;

use std::time::Duration;

use harness::*;
use hodei_core::proto::v1;
use tokio_stream::StreamExt;

#[tokio::test]
async fn two_hundred_jobs_through_four_workers_all_succeed() {
    let s = start_server(&[("HODEI_MAX_WORKERS", "4")]).await;
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push((i, s.submit(script(&format!("echo job-{i}"))).await));
    }
    for (i, id) in &ids {
        let j = s.wait_done(id, Duration::from_secs(120)).await;
        assert_eq!(
            j.state,
            v1::JobState::Succeeded as i32,
            "job {i}: {} {}",
            state_name(j.state),
            j.error
        );
        assert_eq!(s.log_lines(id).await, vec![format!("job-{i}")]);
    }
    let workers = s
        .scheduler()
        .get_available_workers(v1::GetAvailableWorkersRequest { include_busy: true })
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert!(
        workers.len() <= 4,
        "at most 4 workers, got {}",
        workers.len()
    );
    let distinct: std::collections::BTreeSet<String> = {
        let mut set = std::collections::BTreeSet::new();
        for (_, id) in &ids {
            set.insert(s.get(id).await.worker_id);
        }
        set
    };
    assert!(
        distinct.len() <= 4,
        "jobs ran on {} workers",
        distinct.len()
    );
}

#[tokio::test]
async fn non_zero_exit_fails_with_the_code() {
    let s = start_server(&[]).await;
    let id = s
        .submit(script("echo oops >&2; exit 7").with_max_attempts(3))
        .await;
    let j = s.wait_done(&id, Duration::from_secs(30)).await;
    assert_eq!(j.state, v1::JobState::Failed as i32, "{j:?}");
    assert_eq!(j.exit_code, Some(7));
    // A job's own failure is final: no retry.
    assert_eq!(j.attempts, 1);
    assert_eq!(s.log_lines(&id).await, vec!["oops".to_owned()]);
}

#[tokio::test]
async fn killed_worker_mid_job_is_retried_on_another_worker() {
    let s = start_server(&[]).await;
    let marker = tempfile::tempdir().unwrap();
    let m = marker.path().join("first-attempt");
    let id = s
        .submit(script(&format!(
            "echo agent=$PPID\nif [ ! -e {m} ]; then touch {m}; sleep 60; fi\necho second attempt ok",
            m = m.display()
        )))
        .await;
    let j = s.wait_running(&id, Duration::from_secs(30)).await;
    let first_worker = j.worker_id.clone();
    // Find the agent pid from the job's own output.
    let pid = loop {
        if let Some(l) = s
            .log_lines(&id)
            .await
            .into_iter()
            .find(|l| l.starts_with("agent="))
        {
            break l.trim_start_matches("agent=").parse::<u32>().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let j = s.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(j.state, v1::JobState::Succeeded as i32, "{j:?}");
    assert_eq!(j.attempts, 2);
    assert_ne!(j.worker_id, first_worker, "retried on another worker");
    assert!(
        s.log_lines(&id)
            .await
            .contains(&"second attempt ok".to_owned())
    );
}

#[tokio::test]
async fn cancel_of_a_running_job_kills_its_process_group() {
    let s = start_server(&[]).await;
    let id = s
        .submit(script("sleep 1000 &\necho child=$!\necho main=$$\nwait"))
        .await;
    s.wait_running(&id, Duration::from_secs(30)).await;
    let (child, main) = loop {
        let lines = s.log_lines(&id).await;
        let get = |p: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(p))
                .map(|l| l[p.len()..].parse::<u32>().unwrap())
        };
        if let (Some(c), Some(m)) = (get("child="), get("main=")) {
            break (c, m);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(alive(child) && alive(main));
    s.jobs()
        .cancel_job(v1::CancelJobRequest {
            job_id: id.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap();
    let j = s.wait_done(&id, Duration::from_secs(30)).await;
    assert_eq!(j.state, v1::JobState::Cancelled as i32);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (alive(child) || alive(main)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(child), "background grandchild survived the cancel");
    assert!(!alive(main), "job process survived the cancel");
}

#[tokio::test]
async fn timeout_ends_the_job_as_timeout() {
    let s = start_server(&[]).await;
    let id = s
        .submit(script("echo start; sleep 60").with_timeout_ms(1000))
        .await;
    let j = s.wait_done(&id, Duration::from_secs(40)).await;
    assert_eq!(j.state, v1::JobState::Timeout as i32, "{j:?}");
}

#[tokio::test]
async fn subscribe_logs_gets_every_line_in_order() {
    let s = start_server(&[]).await;
    let id = s
        .submit(script(
            "for i in $(seq 1 5000); do echo line-$i; done; echo err >&2",
        ))
        .await;
    let mut stream = s
        .logs()
        .subscribe_logs(v1::SubscribeLogsRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    let mut last_seq = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        for e in chunk.entries {
            assert_eq!(e.sequence, last_seq + 1, "sequence without gaps");
            last_seq = e.sequence;
            if e.stream == v1::LogStream::Stdout as i32 {
                // An entry holds one or more lines (the agent groups lines read together).
                out.extend(
                    String::from_utf8_lossy(&e.data)
                        .split('\n')
                        .map(str::to_owned),
                );
            }
        }
    }
    let want: Vec<String> = (1..=5000).map(|i| format!("line-{i}")).collect();
    assert_eq!(out, want);
    let j = s.get(&id).await;
    assert_eq!(
        j.state,
        v1::JobState::Succeeded as i32,
        "stream ended with the job"
    );
}

#[tokio::test]
async fn invalid_spec_is_refused_and_nothing_stored() {
    let s = start_server(&[]).await;
    let mut spec = script("echo hi").with_timeout_ms(0);
    spec.resources.cpu_cores = -1.0;
    let err = s
        .jobs()
        .queue_job(v1::QueueJobRequest {
            spec: Some((&spec).into()),
            correlation_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("resources.cpu_cores"),
        "{}",
        err.message()
    );
    let err = s
        .jobs()
        .queue_job(v1::QueueJobRequest {
            spec: None,
            correlation_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("spec"));
    let listed = s
        .query()
        .list_jobs(v1::ListJobsRequest {
            state: 0,
            limit: 100,
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(listed.is_empty(), "nothing stored: {listed:?}");
    let err = s
        .query()
        .get_job(v1::GetJobRequest {
            job_id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = s
        .query()
        .get_job(v1::GetJobRequest {
            job_id: hodei_core::JobId::new().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_used_or_unknown_otp_is_refused() {
    let s = start_server(&[]).await;
    let id = s.submit(script("echo agent=$PPID")).await;
    s.wait_done(&id, Duration::from_secs(30)).await;
    let pid: u32 = s
        .log_lines(&id)
        .await
        .iter()
        .find_map(|l| l.strip_prefix("agent=").map(|p| p.parse().unwrap()))
        .unwrap();
    // The worker's own, already used, one-time token.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("agent still running");
    let otp = environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(b"HODEI_OTP="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("agent has HODEI_OTP");
    for token in [otp, "0".repeat(64)] {
        let err = s
            .agent()
            .register(v1::RegisterRequest {
                otp: token,
                worker_info: None,
                resume_session_token: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    }
    // A stream without a session is refused too.
    let err = s
        .agent()
        .worker_stream(tokio_stream::iter(Vec::<v1::WorkerMessage>::new()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn a_worker_cannot_act_on_jobs_not_assigned_to_it() {
    let s = start_server(&[]).await;
    let id = s.submit(script("sleep 0.2; echo x")).await;
    let j = s.wait_done(&id, Duration::from_secs(30)).await;
    // Without a session: UNAUTHENTICATED.
    let err = s
        .jobs()
        .complete_job(v1::CompleteJobRequest {
            job_id: id.clone(),
            worker_id: j.worker_id.clone(),
            attempt: 1,
            exit_code: 0,
            duration_ms: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

#[tokio::test]
async fn rest_refuses_invalid_specs_and_runs_valid_ones() {
    let s = start_server(&[]).await;
    let c = reqwest::Client::new();
    let post = |body: &'static str| {
        c.post(format!("{}/api/v1/jobs", s.http))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = post(r#"{"command":{"type":"shell","cmd":"echo"},"timeout_ms":0}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "timeout_ms", "{body}");
    let r = post(r#"{"command":{"type":"shell","cmd":"echo"},"bogus":1}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = post(r#"{"name":"ok","command":{"type":"shell","cmd":"echo","args":["via rest"]}}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    let j = s.wait_done(&id, Duration::from_secs(30)).await;
    assert_eq!(j.state, v1::JobState::Succeeded as i32);
    let logs = c
        .get(format!("{}/api/v1/jobs/{id}/logs", s.http))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(logs, "via rest\n");
    let listed: serde_json::Value = c
        .get(format!("{}/api/v1/jobs", s.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed["jobs"].as_array().unwrap().len(),
        1,
        "only the valid job is stored"
    );
}

/// Runs the real `hodei` CLI against the test server.
async fn cli(s: &TestServer, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hodei"));
    cmd.arg("--server").arg(&s.grpc).args(args);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("cli finished in time")
        .expect("cli ran")
}

#[tokio::test]
async fn cli_job_run_streams_logs_and_exits_with_the_job_code() {
    let s = start_server(&[]).await;
    let out = cli(
        &s,
        &[
            "job",
            "run",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));
    let out = cli(&s, &["job", "run", "--timeout", "1s", "--", "sleep", "30"]).await;
    assert_eq!(out.status.code(), Some(124), "timeout → 124: {out:?}");
    let out = cli(
        &s,
        &[
            "job",
            "run",
            "-e",
            "WHO=world",
            "--",
            "sh",
            "-c",
            "echo hello $WHO",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello world\n");
    let out = cli(&s, &["job", "list", "-o", "json"]).await;
    assert_eq!(out.status.code(), Some(0));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json list");
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
}

#[tokio::test]
async fn a_canary_secret_is_found_nowhere_but_in_the_job() {
    const CANARY: &str = "canary-7f3a9c1e-secret";
    let s = start_server(&[("RUST_LOG", "debug")]).await;
    // The job proves it received the secret without printing it: a hash of stdin.
    let spec = script("secrets=$(cat); echo \"raw: $secrets\"; echo \"sum: $(printf %s \"$secrets\" | sha256sum | cut -c1-16)\"")
        .with_secret("API_TOKEN", CANARY);
    let id = s.submit(spec).await;
    let j = s.wait_done(&id, Duration::from_secs(30)).await;
    assert_eq!(j.state, v1::JobState::Succeeded as i32, "{j:?}");
    let lines = s.log_lines(&id).await;
    let expected_json = format!("{{\"API_TOKEN\":\"{CANARY}\"}}");
    let want_sum = {
        use std::io::Write;
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(expected_json.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)[..16].to_owned()
    };
    assert!(
        lines.contains(&format!("sum: {want_sum}")),
        "the job read the secret: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("***")),
        "redacted in logs: {lines:?}"
    );
    let everything = format!(
        "{lines:?}\n{:?}\n{:?}\n{}",
        s.get(&id).await,
        s.query()
            .list_jobs(v1::ListJobsRequest {
                state: 0,
                limit: 10
            })
            .await
            .unwrap()
            .into_inner(),
        reqwest::get(format!("{}/api/v1/jobs/{id}", s.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(
        !everything.contains(CANARY),
        "canary leaked in API responses or logs"
    );
    let server_log = s.server_log();
    assert!(server_log.contains("job queued"), "server log captured");
    assert!(
        !server_log.contains(CANARY),
        "canary leaked into the server's tracing output"
    );
}
