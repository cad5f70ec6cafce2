//! The audit log through the real server: jobs submitted, cancelled and
//! retried over REST and the CLI with named API tokens, and a secret injected
//! by a real worker, read back from `GET /api/v1/audit` and `hodei audit list`
//! with the token names, filters and paging; bad filters are a 400 naming the
//! field, and reading the log needs an admin token.

use std::time::Duration;

use serde_json::{Value, json};

use super::harness::*;
use super::security::new_token;

async fn hodei(s: &TestServer, token: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hodei"));
    cmd.arg("--server")
        .arg(&s.grpc)
        .args(args)
        .env("HODEI_TOKEN", token);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("cli finished in time")
        .expect("cli ran")
}

fn entries(page: &Value) -> Vec<(String, String, String, String)> {
    page["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries in {page}"))
        .iter()
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (f("actor"), f("action"), f("target"), f("outcome"))
        })
        .collect()
}

#[tokio::test]
async fn submit_cancel_retry_and_secret_injection_are_audited_with_the_token_name() {
    let (ci, ci_line) = new_token("submit", "ci-bot");
    let (ops, ops_line) = new_token("admin", "ops");
    let s = start_server(&[("HODEI_API_TOKENS", &format!("{ci_line},{ops_line}"))]).await;
    let http = reqwest::Client::new();
    let api = |p: &str| format!("{}{p}", s.http);

    // Submit a long job over REST as ci-bot, then cancel it.
    let r = http
        .post(api("/api/v1/jobs"))
        .bearer_auth(&ci)
        .json(
            &json!({"name": "long", "command": {"type": "shell", "cmd": "sleep", "args": ["30"]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = http
        .post(api(&format!("/api/v1/jobs/{id}/cancel")))
        .bearer_auth(&ci)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Retry it with the CLI (gRPC RetryJob), still as ci-bot.
    let out = hodei(&s, &ci, &["job", "retry", &id, "-o", "json"]).await;
    assert!(out.status.success(), "{out:?}");
    let retried: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new_id = retried["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    // A refused action is recorded as a failure: the new job is not finished.
    let out = hodei(&s, &ci, &["job", "retry", &new_id]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // A job with a secret, run by a real worker: the worker's injection is audited.
    let r = http
        .post(api("/api/v1/jobs"))
        .bearer_auth(&ci)
        .json(
            &json!({"name": "secretive", "command": {"type": "shell", "cmd": "true"},
                      "secrets": {"DEPLOY_KEY": "value-0123456789"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let secret_job = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Waited for over REST: the harness's gRPC client carries no token.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let done = loop {
        let j: Value = http
            .get(api(&format!("/api/v1/jobs/{secret_job}")))
            .bearer_auth(&ci)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if j["finished_at"].is_string() {
            break j;
        }
        assert!(std::time::Instant::now() < deadline, "job not done: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["state"], "succeeded", "{done}");

    // Provider changes by the admin token: registered, then paused.
    let r = http
        .post(api("/api/v1/providers"))
        .bearer_auth(&ops)
        .json(&json!({"name": "local-2", "config": {"type": "bare_metal"}, "max_workers": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .patch(api("/api/v1/providers/local-2"))
        .bearer_auth(&ops)
        .json(&json!({"state": "maintenance"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Reading the log needs an admin token.
    let r = http
        .get(api("/api/v1/audit"))
        .bearer_auth(&ci)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let page: Value = http
        .get(api("/api/v1/audit?limit=1000"))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let got = entries(&page);
    let job = |i: &str| format!("job:{i}");
    let s2 = |a: &str| a.to_owned();
    for want in [
        (s2("ci-bot"), s2("job_submit"), job(&id), s2("success")),
        (s2("ci-bot"), s2("job_cancel"), job(&id), s2("success")),
        (s2("ci-bot"), s2("job_retry"), job(&id), s2("success")),
        (s2("ci-bot"), s2("job_retry"), job(&new_id), s2("failure")),
        (
            s2("ci-bot"),
            s2("job_submit"),
            job(&secret_job),
            s2("success"),
        ),
        (
            s2("ops"),
            s2("provider_register"),
            s2("provider:local-2"),
            s2("success"),
        ),
        (
            s2("ops"),
            s2("provider_update"),
            s2("provider:local-2"),
            s2("success"),
        ),
    ] {
        assert!(got.contains(&want), "{want:?} missing in {got:?}");
    }
    // Newest first: the cancel came after the submit.
    let pos = |a: &str| {
        got.iter()
            .position(|e| e.1 == a && e.2 == job(&id))
            .unwrap()
    };
    assert!(pos("job_cancel") < pos("job_submit"), "{got:?}");
    // The secret injection names the worker and the secret, never its value.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let injected = loop {
        let page: Value = http
            .get(api(&format!(
                "/api/v1/audit?action=secret_injected&target=job:{secret_job}"
            )))
            .bearer_auth(&ops)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(e) = page["entries"].as_array().and_then(|a| a.first()) {
            break e.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no secret_injected entry"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        injected["actor"],
        format!("worker:{}", done["worker_id"].as_str().unwrap())
    );
    let detail = injected["detail"].as_str().unwrap();
    assert!(detail.contains("DEPLOY_KEY"), "{detail}");
    assert!(!page.to_string().contains("value-0123456789"));

    // Filters combine; paging walks back with next_before.
    let page: Value = http
        .get(api("/api/v1/audit?actor=ci-bot&action=job_cancel"))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(entries(&page).len(), 1, "{page}");
    let first: Value = http
        .get(api("/api/v1/audit?actor=ci-bot&limit=2"))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(entries(&first).len(), 2);
    let before = first["next_before"].as_u64().expect("a next page");
    let second: Value = http
        .get(api(&format!(
            "/api/v1/audit?actor=ci-bot&limit=2&before={before}"
        )))
        .bearer_auth(&ops)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids = |p: &Value| -> Vec<u64> {
        p["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_u64().unwrap())
            .collect()
    };
    assert!(ids(&second).iter().all(|i| *i < before), "older page");
    // Bad filters name the field.
    for (q, field) in [
        ("action=drop_tables", "action"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("before=x", "before"),
    ] {
        let r = http
            .get(api(&format!("/api/v1/audit?{q}")))
            .bearer_auth(&ops)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["field"], field, "{q}: {body}");
    }

    // The CLI shows the same log (admin token), as a table and as JSON.
    let out = hodei(&s, &ops, &["audit", "list", "--actor", "ci-bot"]).await;
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("job_cancel") && table.contains(&job(&id)),
        "{table}"
    );
    let out = hodei(
        &s,
        &ops,
        &["audit", "list", "--action", "job_retry", "-o", "json"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entries(&page).len(), 2, "{page}");
    let out = hodei(&s, &ci, &["audit", "list"]).await;
    assert_eq!(out.status.code(), Some(1), "submit token refused: {out:?}");
}
