//! `hodei_core::client::HodeiClient` against a real in-process server: the
//! control plane with memory stores, gRPC on a real socket. The test plays
//! the agent over the worker stream (as `otel_trace.rs` does) where a job
//! must run.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::stream::StreamExt;
use hodei_core::api::auth::{ApiAuth, ApiToken, Scope, generate_token};
use hodei_core::client::{ClientError, ClientOptions, HodeiClient, JobListFilter};
use hodei_core::control::{ControlPlane, PoolPolicy};
use hodei_core::server::{ServerOptions, serve_grpc_with};
use hodei_core::testing::{HandOffProvider, PlayedAgent};
use hodei_core::{
    AttemptResult, CommandType, CorrelationId, JobId, JobSpec, JobState, LogEntry, LogStream,
};

const WAIT: Duration = Duration::from_secs(20);

/// Serves `cp` over gRPC on 127.0.0.1:0 and returns the client endpoint.
async fn serve(cp: &ControlPlane, options: ServerOptions) -> String {
    let (listener, addr): (_, SocketAddr) = hodei_core::server::bind(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let cp = cp.clone();
    tokio::spawn(async move {
        serve_grpc_with(cp, listener, options, std::future::pending())
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

async fn open_server() -> (ControlPlane, HodeiClient) {
    let cp = ControlPlane::builder().build();
    let endpoint = serve(&cp, ServerOptions::new()).await;
    let client = HodeiClient::connect(endpoint, ClientOptions::new())
        .await
        .unwrap();
    (cp, client)
}

fn shell(name: &str) -> JobSpec {
    JobSpec::new(name, CommandType::shell("echo", ["hi"]))
}

#[tokio::test]
async fn client_submit_get_list_and_cancel_round_trip() {
    let (_cp, client) = open_server().await;
    let mut spec = shell("round-trip")
        .with_env("A", "1")
        .with_secret("TOKEN", "s3cr3t");
    spec.labels.insert("team".into(), "core".into());
    let id = client.submit(&spec).await.unwrap();

    let job = client.get(id).await.unwrap();
    assert_eq!(job.id(), id);
    assert_eq!(job.state(), JobState::Pending);
    assert_eq!(job.spec().name, "round-trip");
    assert_eq!(job.spec().env.get("A").map(String::as_str), Some("1"));
    assert_eq!(
        job.spec().labels.get("team").map(String::as_str),
        Some("core")
    );
    // The secret's name comes back, its value never does.
    assert_eq!(
        job.spec().secrets.get("TOKEN").map(String::as_str),
        Some("")
    );

    // The correlation id the client chose is the job's.
    let correlation = CorrelationId::new();
    let second = client
        .submit_job(&shell("correlated"), Some(correlation))
        .await
        .unwrap();
    assert_eq!(second.correlation_id(), correlation);

    let all = client.list(&JobListFilter::new()).await.unwrap();
    let ids: Vec<JobId> = all.iter().map(|j| j.id()).collect();
    assert!(ids.contains(&id) && ids.contains(&second.id()), "{ids:?}");
    assert_eq!(
        client
            .list(&JobListFilter::new().with_limit(1))
            .await
            .unwrap()
            .len(),
        1
    );

    let cancelled = client.cancel(id, "not needed").await.unwrap();
    assert_eq!(cancelled.state(), JobState::Cancelled);
    let only_cancelled = client
        .list(&JobListFilter::new().with_state(JobState::Cancelled))
        .await
        .unwrap();
    assert_eq!(
        only_cancelled.iter().map(|j| j.id()).collect::<Vec<_>>(),
        vec![id]
    );
    let pending = client
        .list(&JobListFilter::new().with_state(JobState::Pending))
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|j| j.id()).collect::<Vec<_>>(),
        vec![second.id()]
    );
    // A cancelled job is terminal: waiting returns at once.
    let waited = client.wait(id, Duration::from_secs(5)).await.unwrap();
    assert_eq!(waited.state(), JobState::Cancelled);
    assert!(waited.finished_at().is_some());
}

#[tokio::test]
async fn client_an_invalid_spec_is_an_invalid_argument_naming_the_field() {
    let (_cp, client) = open_server().await;
    let err = client
        .submit(&shell("bad").with_timeout_ms(0).with_env("1BAD", "v"))
        .await
        .unwrap_err();
    let ClientError::InvalidArgument { field, message } = &err else {
        panic!("expected InvalidArgument, got {err:?}")
    };
    assert!(
        field == "timeout_ms" || field == "env.1BAD",
        "field {field:?}, message {message:?}"
    );
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    let bad_command = JobSpec::new("x", CommandType::shell(" ", Vec::<String>::new()));
    let err = client.submit(&bad_command).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::InvalidArgument { field, .. } if field == "command.cmd"),
        "{err:?}"
    );
}

#[tokio::test]
async fn client_an_unknown_job_is_not_found() {
    let (_cp, client) = open_server().await;
    let unknown = JobId::new();
    for err in [
        client.get(unknown).await.unwrap_err(),
        client.cancel(unknown, "x").await.unwrap_err(),
        client.logs(unknown).await.unwrap_err(),
        client.follow_logs(unknown).await.err().unwrap(),
        client.wait(unknown, WAIT).await.unwrap_err(),
    ] {
        assert!(matches!(err, ClientError::NotFound(_)), "{err:?}");
        assert_eq!(err.code(), Some(tonic::Code::NotFound));
    }
}

#[tokio::test]
async fn client_an_absent_server_is_unreachable_at_connect() {
    // A port that was just free: nothing listens on it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let endpoint = format!("http://{addr}");
    let err = HodeiClient::connect(
        endpoint.clone(),
        ClientOptions::new().with_connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    let ClientError::Unreachable {
        endpoint: at,
        detail,
    } = &err
    else {
        panic!("expected Unreachable, got {err:?}")
    };
    assert_eq!(at, &endpoint);
    assert!(!detail.is_empty());
    assert!(err.to_string().contains(&endpoint), "{err}");

    let err = HodeiClient::connect("not a url", ClientOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidConfig(_)), "{err:?}");

    // A lazy client fails at its first call instead, the same way.
    let lazy = HodeiClient::connect_lazy(
        endpoint.clone(),
        ClientOptions::new().with_connect_timeout(Duration::from_secs(2)),
    )
    .unwrap();
    let err = lazy.get(JobId::new()).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Unreachable { endpoint: at, .. } if at == &endpoint),
        "{err:?}"
    );
}

#[tokio::test]
async fn client_a_lazy_client_works_once_the_server_is_up() {
    let cp = ControlPlane::builder().build();
    let endpoint = serve(&cp, ServerOptions::new()).await;
    let client = HodeiClient::connect_lazy(endpoint, ClientOptions::new()).unwrap();
    let id = client.submit(&shell("lazy")).await.unwrap();
    assert_eq!(client.get(id).await.unwrap().state(), JobState::Pending);
}

#[tokio::test]
async fn client_the_token_is_sent_with_every_call() {
    let secret = generate_token();
    let auth = ApiAuth::new(vec![ApiToken::from_secret("ci", Scope::Submit, &secret)]);
    let cp = ControlPlane::builder().build();
    let endpoint = serve(&cp, ServerOptions::new().with_auth(auth)).await;

    let anonymous = HodeiClient::connect(endpoint.clone(), ClientOptions::new())
        .await
        .unwrap();
    let err = anonymous.submit(&shell("anon")).await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthenticated(_)), "{err:?}");
    let wrong = HodeiClient::connect(
        endpoint.clone(),
        ClientOptions::new().with_token("hodei_nope"),
    )
    .await
    .unwrap();
    let err = wrong.list(&JobListFilter::new()).await.unwrap_err();
    assert!(matches!(err, ClientError::Unauthenticated(_)), "{err:?}");

    let client = HodeiClient::connect(endpoint, ClientOptions::new().with_token(secret.clone()))
        .await
        .unwrap();
    let id = client.submit(&shell("authed")).await.unwrap();
    // Clones share the channel and its token.
    let clone = client.clone();
    assert_eq!(clone.get(id).await.unwrap().id(), id);
    assert_eq!(
        clone.cancel(id, "done").await.unwrap().state(),
        JobState::Cancelled
    );
    assert!(!format!("{client:?}").contains(&secret));
}

// ---------- a job that runs: the test plays the agent ----------

fn line(sequence: u64, text: &str) -> LogEntry {
    LogEntry::new(sequence, LogStream::Stdout, text.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_follow_logs_delivers_lines_in_order_and_ends_with_the_job() {
    let cp = ControlPlane::builder().build();
    let (provider, mut created) = HandOffProvider::new("client-test");
    provider
        .register(&cp, PoolPolicy::default().max_workers(1))
        .await
        .unwrap();
    tokio::spawn(cp.clone().run());
    let endpoint = serve(&cp, ServerOptions::new()).await;
    let client = HodeiClient::connect(endpoint, ClientOptions::new())
        .await
        .unwrap();

    let id = client.submit(&shell("logged")).await.unwrap();
    let mut agent = PlayedAgent::join(&cp, &mut created, WAIT).await.unwrap();
    let worker = agent.worker_id();
    let run = agent.next_run().await.unwrap();
    assert_eq!(run.job_id, id);
    agent.start(&run).await.unwrap();
    let running = client
        .wait_for(id, WAIT, |j| j.state() == JobState::Running)
        .await
        .unwrap();
    assert_eq!(running.worker_id(), Some(worker));

    // Two lines stored before anyone follows (replayed), two while following (live).
    cp.logs()
        .append(id, run.attempt, vec![line(1, "one"), line(2, "two")])
        .await
        .unwrap();
    let mut follow = Box::pin(client.follow_logs(id).await.unwrap());
    let first = tokio::time::timeout(WAIT, follow.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((first.attempt, first.entry.sequence), (run.attempt, 1));
    cp.logs()
        .append(id, run.attempt, vec![line(3, "three")])
        .await
        .unwrap();
    cp.logs()
        .append(id, run.attempt, vec![line(4, "four")])
        .await
        .unwrap();
    agent.finish(&run, AttemptResult::exited(0)).await.unwrap();
    // The stream ends by itself once the job has ended.
    let rest: Vec<_> = tokio::time::timeout(WAIT, follow.collect::<Vec<_>>())
        .await
        .expect("the log stream ends with the job");
    let mut lines = vec![String::from_utf8_lossy(&first.entry.data).into_owned()];
    for item in rest {
        let e = item.unwrap();
        assert_eq!(e.attempt, run.attempt);
        lines.push(String::from_utf8_lossy(&e.entry.data).into_owned());
    }
    assert_eq!(lines, ["one", "two", "three", "four"]);

    let done = client.wait(id, WAIT).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded);
    assert_eq!(done.execution_context().exit_code, Some(0));
    let stored: Vec<u64> = client
        .logs(id)
        .await
        .unwrap()
        .iter()
        .map(|e| e.entry.sequence)
        .collect();
    assert_eq!(stored, [1, 2, 3, 4]);
}

#[tokio::test]
async fn client_waiting_for_a_job_that_does_not_end_times_out() {
    let (_cp, client) = open_server().await;
    let id = client.submit(&shell("stuck")).await.unwrap();
    let err = client
        .wait(id, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::WaitTimeout { job, state: JobState::Pending, .. } if job == id),
        "{err:?}"
    );
}
