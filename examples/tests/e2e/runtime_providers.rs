//! Providers registered at runtime through `POST /api/v1/providers`, on the
//! real server and a real Postgres: they run jobs, count their load, leave
//! scheduling in maintenance, and come back after a restart.

use std::time::{Duration, Instant};

use hodei_core::proto::v1;
use serde_json::{Value, json};

use crate::harness::*;

const KEY: &str = "0202020202020202020202020202020202020202020202020202020202020202";

async fn providers(s: &TestServer) -> Vec<Value> {
    let v: Value = reqwest::get(format!("{}/api/v1/providers", s.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["providers"].as_array().cloned().unwrap_or_default()
}

async fn provider(s: &TestServer, name: &str) -> Value {
    providers(s)
        .await
        .into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("provider {name} not listed"))
}

async fn post(s: &TestServer, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/providers", s.http))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn patch(s: &TestServer, name: &str, state: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .patch(format!("{}/api/v1/providers/{name}", s.http))
        .json(&json!({ "state": state }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// `hodei -o json ARGS` against the server; its stdout as JSON.
async fn cli(s: &TestServer, args: &[&str]) -> Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hodei"))
        .args(["--server", &s.grpc, "-o", "json"])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "hodei {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn field(body: &Value) -> &str {
    body["error"]["field"].as_str().unwrap_or_default()
}

/// Runs `sleep; echo` and checks it ran on `provider_id`.
async fn run_on(s: &TestServer, provider_id: &str, tag: &str) {
    let id = s.submit(script(&format!("sleep 0.2; echo {tag}"))).await;
    let j = s.wait_done(&id, Duration::from_secs(90)).await;
    assert_eq!(
        j.state,
        v1::JobState::Succeeded as i32,
        "{tag}: {}",
        j.error
    );
    assert_eq!(j.provider_id, provider_id, "{tag} ran on another provider");
    assert_eq!(s.log_lines(&id).await, vec![tag.to_owned()]);
}

#[tokio::test]
async fn a_provider_registered_at_runtime_runs_jobs_counts_them_drains_and_survives_a_restart() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let env = [
        ("HODEI_DATABASE_URL", db.as_str()),
        ("HODEI_SECRETS_KEY", KEY),
        ("HODEI_MAX_WORKERS", "2"),
    ];
    let s = start_server(&env).await;
    let agent = env!("CARGO_BIN_EXE_hodei-worker");

    // Bad input: 400 naming the field, nothing registered.
    for (body, want) in [
        (
            json!({"name": "bad", "config": {"type": "bare_metal", "hosts": ["10.0.0.9"]}}),
            "config.hosts",
        ),
        (
            json!({"name": "bad", "config": {"type": "bare_metal", "agent_binary": "/nonexistent/w"}}),
            "config.agent_binary",
        ),
        (
            json!({"name": "bad", "config": {"type": "docker", "image": " "}}),
            "config.image",
        ),
        (
            json!({"name": "bad", "config": {"type": "lambda", "region": "r", "function": "f"}}),
            "config.type",
        ),
        (
            json!({"name": "bad", "config": {"type": "custom", "settings": {"kind": "vmware"}}}),
            "config.settings.kind",
        ),
        (
            json!({"name": "bad", "config": {"type": "bare_metal"}, "max_workers": 0}),
            "max_workers",
        ),
    ] {
        let (code, b) = post(&s, body.clone()).await;
        assert_eq!(code, 400, "{body}: {b}");
        assert_eq!(field(&b), want, "{body}: {b}");
    }
    assert!(providers(&s).await.iter().all(|p| p["name"] != "bad"));

    // Register a process provider with one worker at most.
    let (code, b) = post(
        &s,
        json!({"name": "rt", "config": {"type": "bare_metal", "agent_binary": agent}, "max_workers": 1}),
    )
    .await;
    assert_eq!(code, 201, "{b}");
    let rt_id = b["id"].as_str().unwrap().to_owned();
    assert_eq!(b["type"], "bare_metal");
    let (code, b) = post(&s, json!({"name": "rt", "config": {"type": "bare_metal"}})).await;
    assert_eq!(code, 409, "a taken name: {b}");
    let (code, b) = patch(&s, "rt", "overloaded").await;
    assert_eq!((code, field(&b)), (400, "state"), "{b}");
    let (code, _) = patch(&s, "nope", "maintenance").await;
    assert_eq!(code, 404);

    // Only rt takes work: its load is counted while a job runs on it.
    let process_id = provider(&s, "process").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, b) = patch(&s, "process", "maintenance").await;
    assert_eq!(
        (code, b["status"].as_str()),
        (200, Some("maintenance")),
        "{b}"
    );
    let id = s.submit(script("sleep 3; echo counted")).await;
    let running = s.wait_running(&id, Duration::from_secs(60)).await;
    assert_eq!(running.provider_id, rt_id);
    // The load is recounted just after the assignment, off the job path.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = provider(&s, "rt").await;
        if p["active_jobs"] == 1 && p["status"] == "overloaded" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "one job on a one-worker provider, not counted: {p}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let j = s.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(j.state, v1::JobState::Succeeded as i32, "{}", j.error);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = provider(&s, "rt").await;
        if p["active_jobs"] == 0 && p["status"] == "active" {
            break;
        }
        assert!(Instant::now() < deadline, "load not released: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Maintenance takes rt out of scheduling: a job waits, its idle worker is retired.
    let (code, b) = patch(&s, "rt", "maintenance").await;
    assert_eq!(code, 200, "{b}");
    let waiting = s.submit(script("echo waited")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let j = s.get(&waiting).await;
    assert_eq!(
        j.state,
        v1::JobState::Pending as i32,
        "placed on a provider in maintenance: {}",
        state_name(j.state)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while provider(&s, "rt").await["workers"] != 0 {
        assert!(
            Instant::now() < deadline,
            "rt's idle worker was not drained"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _) = patch(&s, "process", "active").await;
    assert_eq!(code, 200);
    let j = s.wait_done(&waiting, Duration::from_secs(60)).await;
    assert_eq!(j.state, v1::JobState::Succeeded as i32, "{}", j.error);
    assert_eq!(j.provider_id, process_id);
    drop(s);

    // Same database, new server: rt is back with its id and its maintenance.
    let s = start_server(&env).await;
    let p = provider(&s, "rt").await;
    assert_eq!(p["id"], rt_id.as_str(), "{p}");
    assert_eq!(
        p["status"], "maintenance",
        "the operator's state survives: {p}"
    );
    assert_eq!(p["active_jobs"], 0);
    // The CLI this time (gRPC SetProviderState, ListProviders), as JSON.
    let set = cli(&s, &["provider", "set-state", "rt", "active"]).await;
    assert_eq!(set["status"], "active", "{set}");
    let set = cli(&s, &["provider", "set-state", "process", "maintenance"]).await;
    assert_eq!(set["status"], "maintenance", "{set}");
    let list = cli(&s, &["provider", "list"]).await;
    let rt = list
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == "rt"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (rt["id"].as_str(), rt["active_jobs"].as_u64()),
        (Some(rt_id.as_str()), Some(0)),
        "{list}"
    );
    run_on(&s, &rt_id, "after-restart").await;
    let grpc = s.grpc_port();
    drop(s);
    kill_agents_of(grpc);
}
