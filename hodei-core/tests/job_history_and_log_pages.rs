//! A job's history of state changes (the in-memory store against the
//! conformance suite, `GET /api/v1/jobs/{id}/events`) and pages of its log
//! (`GET /api/v1/jobs/{id}/logs/lines`), over a real socket with a real HTTP
//! client. The control plane has no provider, so jobs stay `pending` until
//! cancelled.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hodei_core::api::rest::{ErrorBody, JobDto, JobEventList, LogLinesPage};
use hodei_core::control::ControlPlane;
use hodei_core::store::{
    InMemoryJobHistoryStore, JobHistoryStore, JobTransitionRecord, StoreError,
};
use hodei_core::testing::{TestServer, stores};
use hodei_core::{JobId, LogEntry, LogStream};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn in_memory_job_history_passes_the_suite() {
    stores::job_history_conformance(|| async {
        Arc::new(InMemoryJobHistoryStore::default()) as Arc<dyn JobHistoryStore>
    })
    .await;
}

/// The suite really detects a broken history: one that returns the newest first.
#[tokio::test]
async fn the_suite_catches_a_history_out_of_order() {
    #[derive(Default)]
    struct Reversed(InMemoryJobHistoryStore);

    #[async_trait]
    impl JobHistoryStore for Reversed {
        async fn record(&self, r: &JobTransitionRecord) -> Result<(), StoreError> {
            self.0.record(r).await
        }
        async fn history(&self, id: JobId) -> Result<Vec<JobTransitionRecord>, StoreError> {
            let mut all = self.0.history(id).await?;
            all.reverse();
            Ok(all)
        }
        async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
            self.0.prune_finished(before).await
        }
    }

    let outcome = tokio::spawn(stores::job_history_conformance(|| async {
        Arc::new(Reversed::default()) as Arc<dyn JobHistoryStore>
    }))
    .await;
    let message = outcome
        .expect_err("a reversed history must fail the suite")
        .into_panic()
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(message.contains("history/in-order"), "{message}");
}

struct App {
    base: String,
    cp: ControlPlane,
    http: reqwest::Client,
    _server: TestServer,
}

async fn spawn_app() -> App {
    let cp = ControlPlane::builder().build();
    let server = TestServer::spawn(cp.clone()).await.unwrap();
    App {
        base: server.http_url(),
        cp,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        _server: server,
    }
}

impl App {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn create(&self, name: &str) -> JobDto {
        let r = self
            .http
            .post(format!("{}/api/v1/jobs", self.base))
            .json(&json!({"name": name, "command": {"type": "shell", "cmd": "true", "args": []}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }

    async fn lines(&self, id: &str, query: &str) -> LogLinesPage {
        let r = self
            .get(&format!("/api/v1/jobs/{id}/logs/lines{query}"))
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{query}");
        r.json().await.unwrap()
    }
}

async fn error_field(r: reqwest::Response, status: StatusCode) -> Option<String> {
    assert_eq!(r.status(), status);
    r.json::<ErrorBody>().await.unwrap().error.field
}

#[tokio::test]
async fn events_list_every_state_change_with_its_time_and_reason() {
    let app = spawn_app().await;
    let before = Utc::now();
    let job = app.create("timeline").await;
    let r = app
        .http
        .post(format!("{}/api/v1/jobs/{}/cancel", app.base, job.id))
        .json(&json!({"reason": "not needed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.get(&format!("/api/v1/jobs/{}/events", job.id)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let raw: serde_json::Value = r.json().await.unwrap();
    let events: JobEventList = serde_json::from_value(raw.clone()).unwrap();
    let steps: Vec<_> = raw["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["from"].clone(), e["to"].clone(), e["reason"].clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (json!(null), json!("pending"), json!("")),
            (json!("pending"), json!("cancelled"), json!("not needed")),
        ]
    );
    let times: Vec<_> = events.events.iter().map(|e| e.at).collect();
    assert!(
        times[0] >= before - chrono::Duration::seconds(1),
        "{times:?}"
    );
    assert!(times[0] <= times[1], "in order: {times:?}");
    assert!(times[1] <= Utc::now(), "{times:?}");
    assert_eq!(raw["events"][0]["attempt"], 0);

    // The same history through the control plane.
    let history = app.cp.job_history(job.id.parse().unwrap()).await.unwrap();
    assert_eq!(history.len(), 2);

    assert_eq!(
        error_field(
            app.get(&format!("/api/v1/jobs/{}/events", JobId::new()))
                .await,
            StatusCode::NOT_FOUND
        )
        .await,
        None
    );
    assert_eq!(
        error_field(
            app.get("/api/v1/jobs/nope/events").await,
            StatusCode::BAD_REQUEST
        )
        .await,
        Some("id".into())
    );
    // Documented in the OpenAPI document.
    let doc: serde_json::Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    assert!(doc["paths"]["/api/v1/jobs/{id}/events"]["get"].is_object());
    assert!(doc["paths"]["/api/v1/jobs/{id}/logs/lines"]["get"].is_object());
}

#[tokio::test]
async fn log_pages_by_line_range_across_attempts_and_search() {
    let app = spawn_app().await;
    let job = app.create("big-log").await;
    let id: JobId = job.id.parse().unwrap();
    let entries: Vec<LogEntry> = (1..=2500u64)
        .map(|i| LogEntry::new(i, LogStream::Stdout, format!("line {i}").into_bytes()))
        .collect();
    app.cp.logs().append(id, 1, entries).await.unwrap();
    app.cp
        .logs()
        .append(
            id,
            2,
            vec![
                LogEntry::new(1, LogStream::Stderr, b"Second try: LINE 7 again".to_vec()),
                LogEntry::new(2, LogStream::Stdout, b"\xffbad utf-8".to_vec()),
                // One entry, several lines (the agent batches output), split
                // as the SSE form splits them.
                LogEntry::new(3, LogStream::Stdout, b"x\r\ny\rz\r".to_vec()),
            ],
        )
        .await
        .unwrap();
    // Defaults: from the start, 1000 lines; every attempt's count of lines
    // and of the entries holding them.
    let page = app.lines(&job.id, "").await;
    let counts: Vec<_> = page
        .attempts
        .iter()
        .map(|a| (a.attempt, a.lines, a.entries))
        .collect();
    assert_eq!(counts, vec![(1, 2500, 2500), (2, 5, 3)]);
    assert_eq!(page.lines.len(), 1000);
    assert_eq!(page.lines[0].text, "line 1");
    assert_eq!(page.lines[999].line, 1000);
    assert!(page.more);
    // A far range, continuing into the next attempt.
    let page = app
        .lines(&job.id, "?attempt=1&from_line=2499&limit=3")
        .await;
    let got: Vec<_> = page
        .lines
        .iter()
        .map(|l| (l.attempt, l.line, l.stream.as_str(), l.text.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, 2499, "stdout", "line 2499"),
            (1, 2500, "stdout", "line 2500"),
            (2, 1, "stderr", "Second try: LINE 7 again"),
        ]
    );
    assert!(page.more);
    let page = app.lines(&job.id, "?attempt=2&from_line=2").await;
    let got: Vec<_> = page
        .lines
        .iter()
        .map(|l| (l.line, l.text.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![(2, "\u{fffd}bad utf-8"), (3, "x"), (4, "y"), (5, "z")]
    );
    assert!(!page.more);
    // Search: case-insensitive, every attempt, in order, capped by limit.
    let page = app.lines(&job.id, "?contains=line%207").await;
    let hits: Vec<_> = page.lines.iter().map(|l| (l.attempt, l.line)).collect();
    let mut expected: Vec<(u32, u64)> = vec![(1, 7)];
    expected.extend((70..=79).map(|s| (1, s)));
    expected.extend((700..=799).map(|s| (1, s)));
    expected.push((2, 1));
    assert_eq!(hits, expected);
    assert!(!page.more);
    let page = app.lines(&job.id, "?contains=LINE%207&limit=2").await;
    assert_eq!(page.lines.len(), 2);
    assert!(page.more);
    let page = app.lines(&job.id, "?contains=nowhere").await;
    assert!(page.lines.is_empty());

    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=10001", "limit"),
        ("?limit=x", "limit"),
        ("?from_line=0", "from_line"),
        ("?from_line=-1", "from_line"),
        ("?attempt=", "attempt"),
        ("?contains=", "contains"),
    ] {
        let r = app
            .get(&format!("/api/v1/jobs/{}/logs/lines{query}", job.id))
            .await;
        assert_eq!(
            error_field(r, StatusCode::BAD_REQUEST).await.as_deref(),
            Some(field),
            "{query}"
        );
    }
    let r = app
        .get(&format!("/api/v1/jobs/{}/logs/lines", JobId::new()))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
