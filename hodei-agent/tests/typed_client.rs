//! `hodei_core::client::HodeiClient` end to end in one process: a real
//! control plane (gRPC on a real socket) whose provider hands each worker to
//! a real agent (`WorkerClient`, see `support`) running real processes. The
//! client submits, follows the output as the job prints it, waits for the end
//! and cancels.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::Duration;

use futures::stream::StreamExt;
use hodei_core::client::{ClientOptions, HodeiClient};
use hodei_core::{CommandType, JobSpec, JobState, LogStream};

const WAIT: Duration = Duration::from_secs(30);

/// A control plane served on a real socket with one in-process agent
/// worker, and a typed client of it.
async fn server_with_agent() -> (HodeiClient, tempfile::TempDir) {
    let (listener, addr) = hodei_core::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    // The agents are not stopped: they end with the test's runtime.
    let (cp, _agents) = support::control_plane_with_agents(addr, work.path()).await;
    tokio::spawn(hodei_core::server::serve_grpc(
        cp.clone(),
        listener,
        None,
        std::future::pending(),
    ));
    tokio::spawn(cp.clone().run());
    let client = HodeiClient::connect(format!("http://{addr}"), ClientOptions::new())
        .await
        .unwrap();
    (client, work)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agents_output_is_followed_in_order_until_the_job_ends() {
    let (client, _work) = server_with_agent().await;
    let spec = JobSpec::new(
        "followed",
        CommandType::script(
            "bash",
            "for i in 1 2 3 4 5; do echo out-$i; sleep 0.1; done; echo oops >&2; exit 3",
        ),
    )
    .with_max_attempts(1);
    let id = client.submit(&spec).await.unwrap();
    let follow = client.follow_logs(id).await.unwrap();
    let entries: Vec<_> = tokio::time::timeout(WAIT, follow.collect::<Vec<_>>())
        .await
        .expect("the log stream ends with the job");
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut sequences = Vec::new();
    for e in entries {
        let e = e.unwrap();
        assert_eq!(e.attempt, 1);
        sequences.push(e.entry.sequence);
        let text = String::from_utf8_lossy(&e.entry.data).into_owned();
        match e.entry.stream {
            LogStream::Stdout => stdout.extend(text.split('\n').map(str::to_owned)),
            LogStream::Stderr => stderr.push(text),
            _ => {}
        }
    }
    assert_eq!(stdout, ["out-1", "out-2", "out-3", "out-4", "out-5"]);
    assert_eq!(stderr, ["oops"]);
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");

    let job = client.wait(id, WAIT).await.unwrap();
    assert_eq!(job.state(), JobState::Failed);
    assert_eq!(job.execution_context().exit_code, Some(3));
    // What was followed is what is stored.
    assert_eq!(
        client
            .logs(id)
            .await
            .unwrap()
            .iter()
            .map(|e| e.entry.sequence)
            .collect::<Vec<_>>(),
        sequences
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_cancelled_by_the_client_ends_cancelled() {
    let (client, _work) = server_with_agent().await;
    let spec = JobSpec::new(
        "long",
        CommandType::script("bash", "echo started; sleep 60"),
    );
    let id = client.submit(&spec).await.unwrap();
    client
        .wait_for(id, WAIT, |j| j.state() == JobState::Running)
        .await
        .unwrap();
    client.cancel(id, "no longer needed").await.unwrap();
    let job = client.wait(id, WAIT).await.unwrap();
    assert_eq!(job.state(), JobState::Cancelled);
}
