//! The reproduction of issue 13: `kill -9` of the server while its workers
//! are still being provisioned, on a real Postgres. Before the fix the jobs
//! whose workers were half made stayed `scheduled` forever.

use std::time::Duration;

use hodei_core::proto::v1;

use crate::harness::*;

const KEY: &str = "0202020202020202020202020202020202020202020202020202020202020202";

#[tokio::test]
async fn kill_9_while_workers_are_provisioned_loses_no_job() {
    let Some(db) = fresh_database().await else {
        return;
    };
    // Workers slow to start: a wrapper that sleeps before starting the agent.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("slow-worker.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nsleep 4\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_hodei-worker")
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let wrapper = wrapper.display().to_string();
    let env = [
        ("HODEI_DATABASE_URL", db.as_str()),
        ("HODEI_SECRETS_KEY", KEY),
        ("HODEI_WORKER_BINARY", wrapper.as_str()),
        ("HODEI_MAX_WORKERS", "4"),
        ("HODEI_WORKER_LOST_AFTER_MS", "4000"),
        ("HODEI_DISPATCH_LEASE_MS", "3000"),
        ("HODEI_REGISTRATION_TIMEOUT_SECS", "20"),
        ("HODEI_AUDIT_INTERVAL_MS", "1000"),
    ];
    let mut s = start_server(&env).await;
    let (grpc, http) = (s.grpc_port(), s.http_port());
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push((i, s.submit(script(&format!("echo done-{i}"))).await));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut scheduled = 0;
    for (_, id) in &ids {
        if s.get(id).await.state == v1::JobState::Scheduled as i32 {
            scheduled += 1;
        }
    }
    assert!(
        scheduled > 0,
        "the fault must hit jobs whose workers are being provisioned"
    );
    s.kill9();
    let s2 = start_server_at(grpc, http, &env).await;
    for (i, id) in &ids {
        let j = s2.wait_done(id, Duration::from_secs(120)).await;
        assert_eq!(
            j.state,
            v1::JobState::Succeeded as i32,
            "job {i} ({scheduled} were being provisioned at the kill): {} {}\n{}",
            state_name(j.state),
            j.error,
            s2.server_log()
        );
        let lines = s2.log_lines(id).await;
        assert!(
            lines.iter().any(|l| l.contains(&format!("done-{i}"))),
            "job {i} log: {lines:?}"
        );
    }
    drop(s2);
    drop(s);
    kill_agents_of(grpc);
}

/// The agents a killed server started keep running their jobs (their output
/// pipes to the dead server are broken, which must not kill them), re-attach to
/// the restarted server and finish the job in its first attempt, every line once.
#[tokio::test]
async fn a_job_running_through_a_kill_9_of_the_server_finishes_in_its_first_attempt() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let env = [
        ("HODEI_DATABASE_URL", db.as_str()),
        ("HODEI_SECRETS_KEY", KEY),
        ("HODEI_WORKER_LOST_AFTER_MS", "15000"),
    ];
    let mut s = start_server(&env).await;
    let (grpc, http) = (s.grpc_port(), s.http_port());
    let id = s
        .submit(script(
            "for i in $(seq 1 40); do echo \"line-$i\"; sleep 0.1; done",
        ))
        .await;
    s.wait_running(&id, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.kill9();
    let s2 = start_server_at(grpc, http, &env).await;
    let j = s2.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(
        j.state,
        v1::JobState::Succeeded as i32,
        "{} {}\n{}",
        state_name(j.state),
        j.error,
        s2.server_log()
    );
    assert_eq!(j.attempts, 1, "not retried: the agent kept running it");
    let lines: Vec<String> = s2
        .log_lines(&id)
        .await
        .into_iter()
        .filter(|l| l.starts_with("line-"))
        .collect();
    let expected: Vec<String> = (1..=40).map(|i| format!("line-{i}")).collect();
    assert_eq!(lines, expected, "every line once, in order");
    drop(s2);
    drop(s);
    kill_agents_of(grpc);
}
