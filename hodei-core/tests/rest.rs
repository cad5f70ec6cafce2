//! The REST adapter served on a real socket, driven by a real HTTP client.
//! The control plane has in-memory stores and no provider, so jobs stay
//! `pending` until cancelled.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use futures::StreamExt;
use hodei_core::api::rest::{self, ErrorBody, JobDto, JobList};
use hodei_core::control::ControlPlane;
use hodei_core::testing::TestServer;
use hodei_core::{JobId, LogEntry, LogStream};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

/// Bound on every wait, so a broken stream fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(20);

struct App {
    base: String,
    cp: ControlPlane,
    http: reqwest::Client,
    server: TestServer,
}

impl App {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn create(&self, spec: Value) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/jobs"))
            .json(&spec)
            .send()
            .await
            .unwrap()
    }

    async fn create_ok(&self, name: &str) -> JobDto {
        let r = self.create(echo(name)).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    async fn list(&self, query: &str) -> Vec<JobDto> {
        let r = self
            .http
            .get(self.url(&format!("/api/v1/jobs{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<JobList>().await.unwrap().jobs
    }

    async fn append(&self, id: &str, attempt: u32, lines: &[(u64, LogStream, &[u8])]) {
        let job: JobId = id.parse().unwrap();
        let entries = lines
            .iter()
            .map(|(seq, stream, data)| LogEntry::new(*seq, *stream, data.to_vec()))
            .collect();
        self.cp.logs().append(job, attempt, entries).await.unwrap();
    }
}

async fn spawn_app() -> App {
    let cp = ControlPlane::builder().build();
    let server = TestServer::spawn(cp.clone()).await.unwrap();
    App {
        base: server.http_url(),
        cp,
        http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
        server,
    }
}

fn echo(name: &str) -> Value {
    json!({
        "name": name,
        "command": {"type": "shell", "cmd": "echo", "args": ["hi"]},
        "secrets": {"API_TOKEN": "s3cr3t-value"},
        "timeout_ms": 60000
    })
}

async fn error_of(r: reqwest::Response, status: StatusCode) -> ErrorBody {
    assert_eq!(r.status(), status);
    let ct = r.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
    assert!(
        ct.starts_with("application/json"),
        "error content type {ct}"
    );
    r.json().await.unwrap()
}

#[tokio::test]
async fn create_get_list_and_cancel() {
    let app = spawn_app().await;
    let r = app.create(echo("first")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let raw: Value = r.json().await.unwrap();
    // Secrets are never echoed back; their names are.
    assert!(!raw.to_string().contains("s3cr3t-value"), "{raw}");
    assert_eq!(raw["secret_names"], json!(["API_TOKEN"]));
    assert_eq!(raw["state"], "pending");
    assert_eq!(raw["spec"]["command"]["cmd"], "echo");
    assert_eq!(raw["max_attempts"], 3);
    assert!(raw["created_at"].as_str().unwrap().contains('T'));
    let job: JobDto = serde_json::from_value(raw).unwrap();
    assert_eq!(location, format!("/api/v1/jobs/{}", job.id));

    let got: JobDto = app
        .http
        .get(app.url(&location))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, job);

    let second = app.create_ok("second").await;
    let all = app.list("").await;
    assert_eq!(all.len(), 2);

    // Cancel with a reason, then without a body.
    let r = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{}/cancel", job.id)))
        .json(&json!({"reason": "not needed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cancelled: Value = r.json().await.unwrap();
    assert_eq!(cancelled["state"], "cancelled");
    assert!(cancelled["finished_at"].is_string());
    let r = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{}/cancel", second.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let third = app.create_ok("third").await;
    let cancelled = app.list("?state=cancelled").await;
    let mut ids: Vec<_> = cancelled.iter().map(|j| j.id.clone()).collect();
    ids.sort();
    let mut want = vec![job.id.clone(), second.id.clone()];
    want.sort();
    assert_eq!(ids, want);
    let pending = app.list("?state=pending").await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, third.id);
    assert_eq!(app.list("?limit=1").await.len(), 1);

    // Cancelling a finished job is refused with 409.
    let r = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{}/cancel", job.id)))
        .send()
        .await
        .unwrap();
    let e = error_of(r, StatusCode::CONFLICT).await;
    assert_eq!(e.error.code, "failed_precondition");
}

#[tokio::test]
async fn bad_requests_are_400_json_and_store_nothing() {
    let app = spawn_app().await;

    // Malformed JSON.
    let r = app
        .http
        .post(app.url("/api/v1/jobs"))
        .header(CONTENT_TYPE, "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    let e = error_of(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(e.error.code, "invalid_argument");
    assert!(
        e.error.message.contains("malformed JSON"),
        "{}",
        e.error.message
    );

    // Unknown field, named.
    let mut spec = echo("x");
    spec["bogus"] = json!(1);
    let e = error_of(app.create(spec).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(e.error.field.as_deref(), Some("bogus"));
    assert!(e.error.message.contains("bogus"));

    // Mistyped nested field, named by its path.
    let mut spec = echo("x");
    spec["resources"] = json!({"cpu_cores": "lots"});
    let e = error_of(app.create(spec).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(e.error.field.as_deref(), Some("resources.cpu_cores"));

    // Invalid spec: zero timeout, named, every problem in details.
    let mut spec = echo("x");
    spec["timeout_ms"] = json!(0);
    spec["env"] = json!({"1BAD": "v"});
    let e = error_of(app.create(spec).await, StatusCode::BAD_REQUEST).await;
    let fields: Vec<_> = e.error.details.iter().map(|d| d.field.as_str()).collect();
    assert!(fields.contains(&"timeout_ms"), "{fields:?}");
    assert!(fields.len() >= 2, "{fields:?}");
    assert_eq!(e.error.field.as_deref(), Some(fields[0]));
    assert!(!e.error.message.contains("s3cr3t-value"));

    // Not JSON at all.
    let r = app
        .http
        .post(app.url("/api/v1/jobs"))
        .header(CONTENT_TYPE, "text/plain")
        .body(echo("x").to_string())
        .send()
        .await
        .unwrap();
    let e = error_of(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert_eq!(e.error.code, "unsupported_media_type");

    // Nothing was stored.
    assert!(app.list("").await.is_empty());
    assert_eq!(app.cp.queue_status().await.unwrap().pending, 0);

    // Bad ids, unknown ids, bad query values.
    let e = error_of(
        app.http
            .get(app.url("/api/v1/jobs/not-a-uuid"))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(e.error.field.as_deref(), Some("id"));
    let e = error_of(
        app.http
            .post(app.url("/api/v1/jobs/123/cancel"))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(e.error.field.as_deref(), Some("id"));
    let unknown = JobId::new();
    for path in [
        format!("/api/v1/jobs/{unknown}"),
        format!("/api/v1/jobs/{unknown}/logs"),
    ] {
        let e = error_of(
            app.http.get(app.url(&path)).send().await.unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
        assert_eq!(e.error.code, "not_found");
    }
    let e = error_of(
        app.http
            .post(app.url(&format!("/api/v1/jobs/{unknown}/cancel")))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(e.error.code, "not_found");
    let e = error_of(
        app.http
            .get(app.url("/api/v1/jobs?state=sleeping"))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(e.error.field.as_deref(), Some("state"));
    let e = error_of(
        app.http
            .get(app.url("/api/v1/jobs?limit=-3"))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(e.error.field.as_deref(), Some("limit"));

    // Unknown routes and wrong methods are JSON too.
    let e = error_of(
        app.http
            .get(app.url("/api/v1/nothing"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(e.error.code, "not_found");
    let e = error_of(
        app.http
            .delete(app.url("/api/v1/jobs"))
            .send()
            .await
            .unwrap(),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    assert_eq!(e.error.code, "method_not_allowed");
}

#[tokio::test]
async fn stored_logs_as_text_in_order() {
    let app = spawn_app().await;
    let job = app.create_ok("logs").await;
    app.append(
        &job.id,
        1,
        &[
            (1, LogStream::Stdout, b"first line"),
            (2, LogStream::Stderr, b"second \xff line"),
        ],
    )
    .await;
    app.append(&job.id, 2, &[(1, LogStream::Stdout, b"retry")])
        .await;
    let r = app
        .http
        .get(app.url(&format!("/api/v1/jobs/{}/logs", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let body = r.bytes().await.unwrap();
    assert_eq!(&body[..], b"first line\nsecond \xff line\nretry\n");

    // A job without logs has an empty body.
    let quiet = app.create_ok("quiet").await;
    let body = app
        .http
        .get(app.url(&format!("/api/v1/jobs/{}/logs", quiet.id)))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(body.is_empty());
}

#[tokio::test]
async fn followed_text_streams_until_the_job_ends() {
    let app = spawn_app().await;
    let job = app.create_ok("follow").await;
    app.append(&job.id, 1, &[(1, LogStream::Stdout, b"before")])
        .await;
    let r = app
        .http
        .get(app.url(&format!("/api/v1/jobs/{}/logs?follow=true", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.bytes_stream();
    let mut got = Vec::new();
    // The stored line arrives while the job is still pending.
    while !got.ends_with(b"before\n") {
        let chunk = tokio::time::timeout(WAIT, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.extend_from_slice(&chunk);
    }
    app.append(&job.id, 1, &[(2, LogStream::Stdout, b"live")])
        .await;
    app.append(&job.id, 1, &[(3, LogStream::Stderr, b"more")])
        .await;
    app.cp
        .cancel_job(job.id.parse().unwrap(), "done")
        .await
        .unwrap();
    // The body ends on its own once the job is finished.
    tokio::time::timeout(WAIT, async {
        while let Some(chunk) = body.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
    })
    .await
    .unwrap();
    assert_eq!(got, b"before\nlive\nmore\n");
}

/// Parses an SSE body into (event, id, data) triples.
fn sse_events(text: &str) -> Vec<(String, String, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let (mut ev, mut id, mut data) = (String::new(), String::new(), Vec::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    ev = v.trim_start().to_owned();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim_start().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                }
            }
            (!ev.is_empty()).then(|| (ev, id, data.join("\n")))
        })
        .collect()
}

#[tokio::test]
async fn sse_replays_follows_and_ends_with_the_state() {
    let app = spawn_app().await;
    let job = app.create_ok("sse").await;
    app.append(
        &job.id,
        1,
        &[
            (1, LogStream::Stdout, b"hello"),
            (2, LogStream::Stderr, b"bad \xff byte"),
        ],
    )
    .await;
    let r = app
        .http
        .get(app.url(&format!("/api/v1/jobs/{}/logs", job.id)))
        .header(ACCEPT, "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let cp = app.cp.clone();
    let id: JobId = job.id.parse().unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cp.logs()
            .append(
                id,
                1,
                vec![LogEntry::new(3, LogStream::System, &b"live\r"[..])],
            )
            .await
            .unwrap();
        cp.cancel_job(id, "enough").await.unwrap();
    });
    let text = tokio::time::timeout(WAIT, r.text()).await.unwrap().unwrap();
    let events = sse_events(&text);
    assert_eq!(
        events,
        vec![
            ("stdout".into(), "1:1".into(), "hello".into()),
            ("stderr".into(), "1:2".into(), "bad \u{fffd} byte".into()),
            ("system".into(), "1:3".into(), "live".into()),
            (
                "end".into(),
                String::new(),
                r#"{"exit_code":null,"state":"cancelled"}"#.into()
            ),
        ],
        "{text}"
    );

    // Resuming with Last-Event-ID skips what was seen.
    let text = app
        .http
        .get(app.url(&format!("/api/v1/jobs/{}/logs", job.id)))
        .header(ACCEPT, "text/event-stream")
        .header("last-event-id", "1:2")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    assert_eq!(events.len(), 2, "{text}");
    assert_eq!(events[0].1, "1:3");
    assert_eq!(events[1].0, "end");
}

#[tokio::test]
async fn shutdown_ends_open_log_streams() {
    let cp = ControlPlane::builder().build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rest::serve_rest(cp.clone(), listener, async move {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();
    let job: JobDto = http
        .post(format!("http://{addr}/api/v1/jobs"))
        .json(&echo("long"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http
        .get(format!(
            "http://{addr}/api/v1/jobs/{}/logs?follow=true",
            job.id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    stop_tx.send(()).unwrap();
    // The job is still pending, yet the stream and the server both end.
    tokio::time::timeout(WAIT, r.bytes())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn workers_providers_health_metrics_and_openapi() {
    let app = spawn_app().await;
    app.create_ok("one").await;
    app.create_ok("two").await;

    let get = |path: &str| app.http.get(app.url(path)).send();

    let r = get("/healthz").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "ok");
    let r = get("/readyz").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let workers: Value = get("/api/v1/workers").await.unwrap().json().await.unwrap();
    assert_eq!(workers, json!({"workers": []}));
    let providers: Value = get("/api/v1/providers")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(providers, json!({"providers": []}));

    // This server has no provider factory: registration is a 409, a bad
    // configuration a 400, and nothing is stored.
    let r = app
        .http
        .post(app.url("/api/v1/providers"))
        .json(&json!({"name": "local", "config": {"type": "bare_metal"}}))
        .send()
        .await
        .unwrap();
    let e = error_of(r, StatusCode::CONFLICT).await;
    assert_eq!(e.error.code, "failed_precondition");
    let r = app
        .http
        .post(app.url("/api/v1/providers"))
        .json(&json!({"name": "local", "config": {"type": "warp_drive"}}))
        .send()
        .await
        .unwrap();
    let e = error_of(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(e.error.field.as_deref(), Some("config.type"));
    let providers: Value = get("/api/v1/providers")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(providers, json!({"providers": []}));

    let r = get("/metrics").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("# TYPE hodei_jobs gauge"), "{text}");
    assert!(text.contains("hodei_jobs{state=\"pending\"} 2"), "{text}");
    assert!(text.contains("hodei_jobs{state=\"succeeded\"} 0"), "{text}");
    assert!(text.contains("hodei_workers{state=\"ready\"} 0"), "{text}");
    assert!(
        text.contains("hodei_providers{status=\"active\"} 0"),
        "{text}"
    );
    assert!(text.contains("hodei_queue_depth 2"), "{text}");

    let r = get("/api/v1/openapi.json").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/cancel",
        "/api/v1/jobs/{id}/logs",
        "/api/v1/workers",
        "/api/v1/providers",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} missing from {:?}", paths.keys());
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in ["JobDto", "ErrorBody", "ErrorDetail", "JobSpec"] {
        assert!(
            schemas.contains_key(s),
            "{s} missing from {:?}",
            schemas.keys()
        );
    }
    assert!(schemas["JobDto"]["properties"]["state"].is_object());
    assert!(schemas["JobSpec"]["properties"]["timeout_ms"].is_object());
}

/// The replay-then-follow stream shared by gRPC `SubscribeLogs` and REST
/// `?follow=true`: a burst far larger than the live fan-out buffer, appended
/// while both readers are subscribed but not reading, arrives complete and in
/// order on both (the follower falls back to the store on lag).
#[tokio::test]
async fn grpc_and_rest_followers_lose_nothing_under_a_burst() {
    use hodei_core::proto::v1;
    use hodei_core::proto::v1::log_stream_service_client::LogStreamServiceClient;

    const LINES: u64 = 1500;
    let app = spawn_app().await;
    let job = app.create_ok("burst").await;
    app.append(&job.id, 1, &[(1, LogStream::Stdout, b"line 1")])
        .await;

    let mut grpc = LogStreamServiceClient::connect(app.server.grpc_url())
        .await
        .unwrap();
    let mut grpc_stream = grpc
        .subscribe_logs(v1::SubscribeLogsRequest {
            job_id: job.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, grpc_stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.entries[0].sequence, 1);
    let rest_body = app
        .http
        .get(app.url(&format!("/api/v1/jobs/{}/logs?follow=true", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(rest_body.status(), StatusCode::OK);

    // One entry per batch: far more batches than the fan-out holds.
    let id: JobId = job.id.parse().unwrap();
    for seq in 2..=LINES {
        app.cp
            .logs()
            .append(
                id,
                1,
                vec![LogEntry::new(seq, LogStream::Stdout, format!("line {seq}"))],
            )
            .await
            .unwrap();
    }
    app.cp.cancel_job(id, "burst done").await.unwrap();

    let mut grpc_seqs = vec![1];
    while let Some(chunk) = tokio::time::timeout(WAIT, grpc_stream.message())
        .await
        .unwrap()
        .unwrap()
    {
        assert_eq!(chunk.attempt, 1);
        grpc_seqs.extend(chunk.entries.iter().map(|e| e.sequence));
    }
    assert_eq!(grpc_seqs, (1..=LINES).collect::<Vec<_>>());

    let text = tokio::time::timeout(WAIT, rest_body.text())
        .await
        .unwrap()
        .unwrap();
    let want: String = (1..=LINES).map(|s| format!("line {s}\n")).collect();
    assert_eq!(text, want);
}

// ---- Found by schemathesis (scripts/schemathesis.sh, docs/FUZZING.md) ----------

/// `?limit=`, `?state=` and `?follow=` with no value were taken as "absent"
/// although the schema says an integer, a state and a boolean: an empty value
/// (or `follow=1`) is a 400 naming the field.
#[tokio::test]
async fn empty_list_query_values_are_refused_with_their_field() {
    let app = spawn_app().await;
    for (query, field) in [
        ("?limit=", "limit"),
        ("?state=", "state"),
        ("?limit=&state=", "state"),
    ] {
        let r = app
            .http
            .get(app.url(&format!("/api/v1/jobs{query}")))
            .send()
            .await
            .unwrap();
        let e = error_of(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(e.error.field.as_deref(), Some(field), "{query}");
    }
    let job = app.create_ok("follow").await;
    for value in ["", "1", "yes"] {
        let r = app
            .http
            .get(app.url(&format!("/api/v1/jobs/{}/logs?follow={value}", job.id)))
            .send()
            .await
            .unwrap();
        let e = error_of(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(e.error.field.as_deref(), Some("follow"), "{value:?}");
    }
    // The documented range is what the server takes.
    assert_eq!(app.list("?limit=10000&state=pending").await.len(), 1);
}

/// The optional cancel body is nullable in the schema: JSON `null` means no
/// body, not a malformed one.
#[tokio::test]
async fn cancel_takes_a_null_body_as_no_reason() {
    let app = spawn_app().await;
    let job = app.create_ok("null-body").await;
    let r = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{}/cancel", job.id)))
        .header(CONTENT_TYPE, "application/json")
        .body("null")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cancelled: Value = r.json().await.unwrap();
    assert_eq!(cancelled["state"], "cancelled");
}

/// A malformed `Last-Event-ID` was ignored unless the client also asked for
/// SSE; it is a 400 naming the header either way.
#[tokio::test]
async fn a_bad_last_event_id_is_refused_for_every_log_form() {
    let app = spawn_app().await;
    let job = app.create_ok("event-id").await;
    for (value, sse) in [
        ("", false),
        ("x", false),
        ("+1:2", true),
        ("1234567890:1", true),
    ] {
        let mut req = app
            .http
            .get(app.url(&format!("/api/v1/jobs/{}/logs", job.id)))
            .header("last-event-id", value);
        if sse {
            req = req.header(ACCEPT, "text/event-stream");
        }
        let e = error_of(req.send().await.unwrap(), StatusCode::BAD_REQUEST).await;
        assert_eq!(e.error.field.as_deref(), Some("last-event-id"), "{value:?}");
    }
    let r = app
        .http
        .get(app.url(&format!("/api/v1/jobs/{}/logs", job.id)))
        .header("last-event-id", " 1:0 ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// The OpenAPI document says what the server checks, so generated clients
/// and schemathesis send what it accepts: UUID ids, the list bounds, a tagged
/// command with its required fields.
#[tokio::test]
async fn openapi_states_ids_bounds_and_the_command_shape() {
    let app = spawn_app().await;
    let doc: Value = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in ["/api/v1/jobs/{id}", "/api/v1/jobs/{id}/logs"] {
        let id = &doc["paths"][path]["get"]["parameters"][0];
        assert_eq!(id["name"], "id");
        assert_eq!(id["schema"]["format"], "uuid", "{path}: {id}");
    }
    let logs = doc["paths"]["/api/v1/jobs/{id}/logs"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let event_id = logs.iter().find(|p| p["name"] == "last-event-id").unwrap();
    // A header is a string or absent, never JSON null.
    assert_eq!(event_id["schema"]["type"], "string", "{event_id}");
    assert!(event_id["schema"]["pattern"].is_string(), "{event_id}");
    let params = doc["paths"]["/api/v1/jobs"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let limit = params.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(limit["schema"]["minimum"], 1, "{limit}");
    assert_eq!(limit["schema"]["maximum"], 10000, "{limit}");
    let command = &doc["components"]["schemas"]["JobSpec"]["properties"]["command"];
    let command = match command.get("$ref").and_then(Value::as_str) {
        Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => command,
    };
    let variants = command["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{command}"));
    let required: Vec<Vec<String>> = variants
        .iter()
        .map(|v| serde_json::from_value(v["required"].clone()).unwrap())
        .collect();
    assert!(
        required.iter().any(|r| r.contains(&"cmd".to_owned())),
        "{required:?}"
    );
    assert!(
        required.iter().any(|r| r.contains(&"content".to_owned())),
        "{required:?}"
    );
}

// ---- Accepted but not acted on (issue 14) ---------------------------------------

/// Kinds of artifact source or destination the agent does not act on (an
/// http URL, another destination than the server's store), and unsafe paths,
/// are refused with the field named, and nothing is stored; an empty list is fine.
#[tokio::test]
async fn unsupported_artifacts_are_refused_with_the_field_named_and_nothing_stored() {
    let app = spawn_app().await;
    let mut spec = echo("with-input");
    spec["inputs"] =
        json!([{"name": "src", "url": "http://example.invalid/s.tar", "path": "s.tar"}]);
    let e = error_of(app.create(spec).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(e.error.code, "invalid_argument");
    assert_eq!(e.error.field.as_deref(), Some("inputs[0].url"));
    assert!(
        e.error.message.contains("artifact://"),
        "{}",
        e.error.message
    );

    let mut spec = echo("with-output");
    spec["outputs"] = json!([{"name": "out", "path": "out/*", "url": "http://example.invalid/o"}]);
    let e = error_of(app.create(spec).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(e.error.field.as_deref(), Some("outputs[0].url"));

    let mut spec = echo("traversal");
    spec["outputs"] = json!([{"name": "../x", "path": "/etc/*"}]);
    let e = error_of(app.create(spec).await, StatusCode::BAD_REQUEST).await;
    let fields: Vec<_> = e.error.details.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["outputs[0].name", "outputs[0].path"]);

    // This control plane has no artifact store: a well-formed output is refused too.
    let mut spec = echo("no-store");
    spec["outputs"] = json!([{"name": "out", "path": "out/*"}]);
    let e = error_of(app.create(spec).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(e.error.field.as_deref(), Some("outputs"));
    assert!(
        e.error.message.contains("no artifact store"),
        "{}",
        e.error.message
    );

    assert!(app.list("").await.is_empty());
    assert_eq!(app.cp.queue_status().await.unwrap().pending, 0);

    let mut spec = echo("empty-lists");
    spec["inputs"] = json!([]);
    spec["outputs"] = json!([]);
    assert_eq!(app.create(spec).await.status(), StatusCode::CREATED);

    // The OpenAPI document describes what is accepted.
    let doc: Value = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let props = &doc["components"]["schemas"]["JobSpec"]["properties"];
    for field in ["inputs", "outputs"] {
        assert_eq!(props[field]["maxItems"], 1000, "{field}: {}", props[field]);
    }
    assert!(doc["paths"]["/api/v1/jobs/{id}/artifacts"]["get"].is_object());
    assert!(doc["paths"]["/api/v1/jobs/{id}/artifacts/{name}"]["get"].is_object());
}

/// The same refusal over gRPC: InvalidArgument naming the field, nothing stored.
#[tokio::test]
async fn grpc_refuses_unsupported_artifacts_as_invalid_argument() {
    use hodei_core::proto::v1;
    use hodei_core::proto::v1::job_execution_service_client::JobExecutionServiceClient;

    let app = spawn_app().await;
    let mut jobs = JobExecutionServiceClient::connect(app.server.grpc_url())
        .await
        .unwrap();
    let plain = hodei_core::JobSpec::new("grpc", hodei_core::CommandType::shell("echo", ["hi"]));
    let mut with_input = v1::JobSpec::from(&plain);
    with_input.inputs.push(v1::ArtifactSource {
        name: "src".into(),
        url: "http://example.invalid/s.tar".into(),
        path: "s.tar".into(),
    });
    let mut with_output = v1::JobSpec::from(&plain);
    with_output.outputs.push(v1::ArtifactDest {
        name: "out".into(),
        path: "out/*".into(),
        url: "http://example.invalid/o".into(),
    });
    for (spec, field) in [
        (with_input, "inputs[0].url"),
        (with_output, "outputs[0].url"),
    ] {
        let status = jobs
            .queue_job(v1::QueueJobRequest {
                spec: Some(spec),
                correlation_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(field), "{}", status.message());
    }
    assert!(app.list("").await.is_empty());
    assert_eq!(app.cp.queue_status().await.unwrap().pending, 0);
}

/// Marks a queued job `failed` as a worker's exit code 3 would, off the queue.
async fn fail_job(cp: &ControlPlane, id: JobId) {
    let mut job = cp.stores().jobs.get(id).await.unwrap().unwrap();
    job.fail(hodei_core::AttemptResult::exited(3)).unwrap();
    cp.stores().jobs.update(&job).await.unwrap();
    cp.stores().queue.remove(id).await.unwrap();
}

#[tokio::test]
async fn a_finished_job_is_retried_as_a_new_linked_job() {
    let app = spawn_app().await;
    let mut spec = echo("flaky");
    spec["labels"] = json!({"team": "build"});
    let r = app.create(spec).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let original: JobDto = r.json().await.unwrap();
    let original_id: JobId = original.id.parse().unwrap();
    fail_job(&app.cp, original_id).await;

    let r = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{}/retry", original.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let retried: Value = r.json().await.unwrap();
    let new_id = retried["id"].as_str().unwrap();
    assert_ne!(new_id, original.id);
    assert_eq!(location, format!("/api/v1/jobs/{new_id}"));
    assert_eq!(retried["state"], "pending");
    assert_eq!(retried["attempts"], 0);
    assert_eq!(retried["name"], "flaky");
    assert_eq!(retried["spec"]["command"], original.spec["command"]);
    assert_eq!(retried["spec"]["labels"]["team"], "build");
    assert_eq!(
        retried["spec"]["labels"][hodei_core::control::RETRY_OF_LABEL],
        original.id.as_str()
    );
    assert_eq!(retried["secret_names"], json!(["API_TOKEN"]));

    // The sealed secret is copied as it is (not sealed a second time), and the
    // original is untouched.
    let new_id: JobId = new_id.parse().unwrap();
    let stored_new = app.cp.get_job(new_id).await.unwrap();
    let stored_old = app.cp.get_job(original_id).await.unwrap();
    assert_eq!(stored_new.spec().secrets, stored_old.spec().secrets);
    assert_ne!(stored_new.spec().secrets["API_TOKEN"], "s3cr3t-value");
    assert_eq!(stored_old.state(), hodei_core::JobState::Failed);
    // The new job is queued.
    let queued = app.cp.stores().queue.peek(16).await.unwrap();
    assert_eq!(
        queued.iter().map(|e| e.job_id).collect::<Vec<_>>(),
        vec![new_id]
    );
    assert_eq!(app.list("?state=pending").await.len(), 1);

    // A cancelled job can be retried too.
    let r = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{new_id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{new_id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let again: Value = r.json().await.unwrap();
    assert_eq!(
        again["spec"]["labels"][hodei_core::control::RETRY_OF_LABEL],
        new_id.to_string()
    );
}

#[tokio::test]
async fn retry_refuses_unfinished_unknown_and_malformed_jobs() {
    let app = spawn_app().await;
    let pending = app.create_ok("still-queued").await;
    let r = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{}/retry", pending.id)))
        .send()
        .await
        .unwrap();
    let e = error_of(r, StatusCode::CONFLICT).await;
    assert_eq!(e.error.code, "failed_precondition");
    assert!(
        e.error.message.contains(&pending.id) && e.error.message.contains("cancel it first"),
        "{}",
        e.error.message
    );
    // Nothing new was stored.
    assert_eq!(app.list("").await.len(), 1);

    let unknown = JobId::new();
    let r = app
        .http
        .post(app.url(&format!("/api/v1/jobs/{unknown}/retry")))
        .send()
        .await
        .unwrap();
    let e = error_of(r, StatusCode::NOT_FOUND).await;
    assert_eq!(e.error.code, "not_found");

    let r = app
        .http
        .post(app.url("/api/v1/jobs/123/retry"))
        .send()
        .await
        .unwrap();
    let e = error_of(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(e.error.field.as_deref(), Some("id"));

    let r = app
        .http
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    let doc: Value = r.json().await.unwrap();
    let retry = &doc["paths"]["/api/v1/jobs/{id}/retry"]["post"];
    assert!(retry["responses"]["201"].is_object(), "{retry}");
    assert!(retry["responses"]["409"].is_object(), "{retry}");
}
