//! Concurrency limits through the real server and workers: a key limited to
//! 1 runs its jobs one at a time (checked from the recorded transition
//! times, not from timing), while a job without the key is not held up.
//! The same settings through the `hodei` CLI (gRPC): limits, the shared
//! strategy and a provider's price, with the scopes they need.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::harness::*;
use crate::security::new_token;

/// `hodei ARGS` against the server with `token`.
async fn hodei(s: &TestServer, token: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_hodei"));
    cmd.args(args)
        .env(
            "HODEI_SERVER",
            format!("http://127.0.0.1:{}", s.grpc_port()),
        )
        .env("HODEI_TOKEN", token);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("cli finished in time")
        .expect("cli ran")
}

/// `hodei -o json ARGS` that must succeed; its stdout as JSON.
async fn hodei_json(s: &TestServer, token: &str, args: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let out = hodei(s, token, &all).await;
    assert!(
        out.status.success(),
        "hodei {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "hodei {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A command that must fail; its stderr.
async fn hodei_fails(s: &TestServer, token: &str, args: &[&str]) -> String {
    let out = hodei(s, token, args).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "hodei {args:?} succeeded: {err}");
    err
}

/// (slot taken = first `scheduled`, slot freed = terminal) of a job, from its stored history.
async fn span(c: &reqwest::Client, http: &str, id: &str) -> (DateTime<Utc>, DateTime<Utc>) {
    let v: Value = c
        .get(format!("{http}/api/v1/jobs/{id}/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = v["events"].as_array().unwrap_or_else(|| panic!("{v}"));
    let at = |e: &Value| e["at"].as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let start = events
        .iter()
        .find(|e| e["to"] == "scheduled")
        .map(at)
        .unwrap_or_else(|| panic!("never scheduled: {v}"));
    let end = events
        .iter()
        .rfind(|e| e["to"] == "succeeded")
        .map(at)
        .unwrap_or_else(|| panic!("never succeeded: {v}"));
    (start, end)
}

#[tokio::test]
async fn a_key_limited_to_one_runs_its_jobs_one_at_a_time() {
    let s = start_server(&[("HODEI_MAX_WORKERS", "4")]).await;
    let c = reqwest::Client::new();
    let limit = |k: &str| format!("{}/api/v1/concurrency-limits/{k}", s.http);

    // Typed validation errors name the field.
    let r = c
        .put(limit("bad%20key"))
        .json(&json!({"max_running": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "key", "{body}");
    let r = c
        .put(limit("deploy"))
        .json(&json!({"max_running": 1_000_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "max_running", "{body}");

    let r = c
        .put(limit("deploy"))
        .json(&json!({"max_running": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set: Value = r.json().await.unwrap();
    assert_eq!(set["max_running"], 1, "{set}");

    let mut ids = Vec::new();
    for i in 0..3 {
        let spec = script(&format!("sleep 1; echo deploy-{i}")).with_concurrency_key("deploy");
        ids.push(s.submit(spec).await);
    }
    // Not held up by the full key.
    let free = s.submit(script("echo free")).await;
    let j = s.wait_done(&free, Duration::from_secs(60)).await;
    assert_eq!(state_name(j.state), "JOB_STATE_SUCCEEDED");
    let listed: Value = c
        .get(format!("{}/api/v1/concurrency-limits", s.http))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed["limits"][0]["running"].as_u64().unwrap() <= 1,
        "never more than the limit hold a slot: {listed}"
    );
    for id in &ids {
        let j = s.wait_done(id, Duration::from_secs(120)).await;
        assert_eq!(state_name(j.state), "JOB_STATE_SUCCEEDED", "{j:?}");
        assert_eq!(
            j.spec.as_ref().map(|sp| sp.concurrency_key.as_str()),
            Some("deploy")
        );
    }
    let mut spans = Vec::new();
    for id in &ids {
        spans.push(span(&c, &s.http, id).await);
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "two jobs of a key limited to 1 overlapped: {:?} started before {:?} ended",
            w[1],
            w[0]
        );
    }
    let after: Value = c
        .get(limit("deploy"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after["running"], 0, "every slot freed: {after}");

    // The strategy is set and read back over REST; an unknown one is a 400 naming it.
    let url = format!("{}/api/v1/scheduler", s.http);
    let r = c
        .put(&url)
        .json(&json!({"strategy": "cost_aware"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = c.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["strategy"], "cost_aware");
    let r = c
        .put(&url)
        .json(&json!({"strategy": "random"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "strategy", "{body}");
}

#[tokio::test]
async fn the_cli_sets_lists_and_removes_concurrency_limits_and_the_strategy() {
    let (ci, ci_line) = new_token("submit", "ci-bot");
    let (ops, ops_line) = new_token("admin", "ops");
    let s = start_server(&[("HODEI_API_TOKENS", &format!("{ci_line},{ops_line}"))]).await;

    // Set a limit, read it back in the list and alone.
    let set = hodei_json(&s, &ops, &["limit", "set", "deploy-prod", "2"]).await;
    assert_eq!(set["key"], "deploy-prod", "{set}");
    assert_eq!(set["max_running"], 2, "{set}");
    let listed = hodei_json(&s, &ci, &["limit", "list"]).await;
    let limits = listed.as_array().unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(limits.len(), 1, "{listed}");
    let l = &limits[0];
    assert_eq!(l["key"], "deploy-prod", "{listed}");
    assert_eq!(l["max_running"], 2, "{listed}");
    assert_eq!(l["running"], 0, "{listed}");
    assert_eq!(l["jobs"], json!([]), "{listed}");
    assert!(
        l["updated_at"]
            .as_str()
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
            .is_some(),
        "{listed}"
    );
    let one = hodei_json(&s, &ci, &["limit", "get", "deploy-prod"]).await;
    assert_eq!(one["max_running"], 2, "{one}");
    // The table is the default.
    let out = hodei(&s, &ci, &["limit", "list"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("KEY") && table.contains("deploy-prod"),
        "{table}"
    );
    // The same limit over REST.
    let rest: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/concurrency-limits/deploy-prod", s.http))
        .bearer_auth(&ci)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest["max_running"], 2, "{rest}");

    // Changing it needs an admin token; bad input names the field.
    let err = hodei_fails(&s, &ci, &["limit", "set", "deploy-prod", "5"]).await;
    assert!(err.contains("PermissionDenied"), "{err}");
    let err = hodei_fails(&s, &ops, &["limit", "set", "bad key", "1"]).await;
    assert!(
        err.contains("key") && err.contains("InvalidArgument"),
        "{err}"
    );
    let err = hodei_fails(&s, &ops, &["limit", "get", "nothing-here"]).await;
    assert!(err.contains("NotFound"), "{err}");

    // Remove it: gone from the list, a second removal is NOT_FOUND.
    let rm = hodei_json(&s, &ops, &["limit", "rm", "deploy-prod"]).await;
    assert_eq!(rm["removed"], true, "{rm}");
    let listed = hodei_json(&s, &ci, &["limit", "list"]).await;
    assert_eq!(listed, json!([]));
    let err = hodei_fails(&s, &ops, &["limit", "rm", "deploy-prod"]).await;
    assert!(err.contains("NotFound"), "{err}");

    // The strategy: set (admin), read back by anyone, as JSON.
    let err = hodei_fails(&s, &ci, &["scheduler", "set", "fifo"]).await;
    assert!(err.contains("PermissionDenied"), "{err}");
    let set = hodei_json(&s, &ops, &["scheduler", "set", "cost-aware"]).await;
    assert_eq!(set["strategy"], "cost_aware", "{set}");
    assert!(set["previous"].is_string(), "{set}");
    let got = hodei_json(&s, &ci, &["scheduler", "get"]).await;
    assert_eq!(got, json!({"strategy": "cost_aware"}));
    let set = hodei_json(&s, &ops, &["scheduler", "set", "least_loaded"]).await;
    assert_eq!(set["previous"], "cost_aware", "{set}");
    // An unknown strategy exits non-zero naming it, before reaching the server.
    let out = hodei(&s, &ops, &["scheduler", "set", "random"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("random"), "{err}");
    let got = hodei_json(&s, &ci, &["scheduler", "get"]).await;
    assert_eq!(got["strategy"], "least_loaded");

    // A provider's price (admin); an unknown provider is NOT_FOUND.
    let providers = hodei_json(&s, &ci, &["provider", "list"]).await;
    let name = providers[0]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no provider: {providers}"))
        .to_owned();
    let priced = hodei_json(
        &s,
        &ops,
        &[
            "provider",
            "pricing",
            &name,
            "--cpu-hour",
            "0.04",
            "--gib-hour",
            "0.005",
        ],
    )
    .await;
    assert_eq!(priced["provider"], name.as_str(), "{priced}");
    assert_eq!(priced["price_per_cpu_hour"], 0.04, "{priced}");
    assert_eq!(priced["price_per_gib_hour"], 0.005, "{priced}");
    let err = hodei_fails(&s, &ci, &["provider", "pricing", &name, "--cpu-hour", "1"]).await;
    assert!(err.contains("PermissionDenied"), "{err}");
    let err = hodei_fails(
        &s,
        &ops,
        &["provider", "pricing", "nope", "--cpu-hour", "1"],
    )
    .await;
    assert!(err.contains("NotFound"), "{err}");
}
