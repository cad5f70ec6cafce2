//! Progress, worker stats and retry through the real server, the real agent
//! and the real CLI: a job's `::progress` lines are stored on the job and
//! shown by REST and `hodei job get`; the agent's resource usage is shown by
//! `GET /api/v1/workers` and `hodei worker list`; `hodei job retry` runs a
//! finished job again (and follows it with `--wait`).

use std::time::{Duration, Instant};

use hodei_core::proto::v1;
use serde_json::Value;

use super::cli;
use super::harness::*;

async fn until<T>(what: &str, within: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn progress_lines_are_stored_and_shown_by_rest_and_the_cli() {
    let s = start_server(&[]).await;
    let marker = tempfile::tempdir().unwrap();
    let go = marker.path().join("go");
    let id = s
        .submit(script(&format!(
            "echo starting\necho '::progress 40 compiling crates'\n\
             while [ ! -e {go} ]; do sleep 0.05; done\necho '::progress 100 done'",
            go = go.display()
        )))
        .await;
    let http = reqwest::Client::new();
    let job_url = format!("{}/api/v1/jobs/{id}", s.http);
    let progress = until(
        "progress 40 on the running job",
        Duration::from_secs(30),
        async || {
            let j: Value = http.get(&job_url).send().await.ok()?.json().await.ok()?;
            (j["progress"]["percent"] == 40).then(|| j["progress"].clone())
        },
    )
    .await;
    assert_eq!(progress["message"], "compiling crates");
    assert!(progress["updated_at"].is_string());
    let out = cli(&s, &["job", "get", &id]).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("PROGRESS:") && text.contains("40% compiling crates"),
        "{text}"
    );
    std::fs::write(&go, "").unwrap();
    let done = s.wait_done(&id, Duration::from_secs(30)).await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32);
    // The last report before the result is kept on the finished job.
    let p = done.progress.expect("progress kept");
    assert_eq!((p.percent, p.message.as_str()), (100, "done"));
    // The progress line stays in the log.
    assert!(
        s.log_lines(&id)
            .await
            .contains(&"::progress 40 compiling crates".to_owned())
    );
    let out = cli(&s, &["job", "get", &id, "-o", "json"]).await;
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["progress"]["percent"], 100, "{j}");

    // A flood of reports (paced by the agent, latest wins) ends on the last one.
    let flood = s
        .submit(script(
            "for i in $(seq 0 100); do echo \"::progress $i step $i\"; done; echo '::progress 101 ignored'",
        ))
        .await;
    let done = s.wait_done(&flood, Duration::from_secs(30)).await;
    assert_eq!(done.state, v1::JobState::Succeeded as i32);
    let p = done.progress.expect("progress kept");
    assert_eq!((p.percent, p.message.as_str()), (100, "step 100"));
}

#[tokio::test]
async fn worker_stats_are_shown_by_rest_and_worker_list() {
    let s = start_server(&[]).await;
    let marker = tempfile::tempdir().unwrap();
    let go = marker.path().join("go");
    let id = s
        .submit(script(&format!(
            "while [ ! -e {go} ]; do sleep 0.05; done",
            go = go.display()
        )))
        .await;
    s.wait_running(&id, Duration::from_secs(30)).await;
    let http = reqwest::Client::new();
    let stats = until("a worker with stats", Duration::from_secs(30), async || {
        let l: Value = http
            .get(format!("{}/api/v1/workers", s.http))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        l["workers"]
            .as_array()?
            .iter()
            .find(|w| w["stats"]["memory_bytes"].as_u64().unwrap_or(0) > 0)
            .map(|w| w["stats"].clone())
    })
    .await;
    assert!(stats["cpu_percent"].as_f64().unwrap() >= 0.0, "{stats}");
    assert!(stats["sampled_at"].is_string(), "{stats}");
    let out = cli(&s, &["worker", "list"]).await;
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("CPU") && header.contains("MEMORY"),
        "{table}"
    );
    assert!(table.contains('%') && table.contains("iB"), "{table}");
    let out = cli(&s, &["worker", "list", "-o", "json"]).await;
    let workers: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        workers
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["stats"]["memory_bytes"].as_u64().unwrap_or(0) > 0),
        "{workers}"
    );
    std::fs::write(&go, "").unwrap();
    s.wait_done(&id, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn cli_job_retry_runs_a_finished_job_again() {
    let s = start_server(&[]).await;
    let marker = tempfile::tempdir().unwrap();
    let m = marker.path().join("ran-once");
    // Fails the first time, succeeds when retried.
    let id = s
        .submit(script(&format!(
            "if [ -e {m} ]; then echo second run; exit 0; fi; touch {m}; echo first run; exit 3",
            m = m.display()
        )))
        .await;
    let j = s.wait_done(&id, Duration::from_secs(30)).await;
    assert_eq!(j.state, v1::JobState::Failed as i32);
    let out = cli(&s, &["job", "retry", &id, "--wait"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second run\n");
    // Not finished: refused (FailedPrecondition), exit code 1.
    let running = s.submit(script("sleep 30")).await;
    let out = cli(&s, &["job", "retry", &running]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("FailedPrecondition"),
        "{out:?}"
    );
    // The JSON form is the new job, labelled with the original.
    let out = cli(&s, &["job", "retry", &id, "-o", "json"]).await;
    assert!(out.status.success(), "{out:?}");
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["spec"]["labels"]["hodei.retry_of"], id.as_str(), "{j}");
    let err = s
        .jobs()
        .retry_job(v1::RetryJobRequest {
            job_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("job_id"));
}
