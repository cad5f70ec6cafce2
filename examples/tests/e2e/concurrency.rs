//! Concurrency limits through the real server and workers: a key limited to
//! 1 runs its jobs one at a time (checked from the recorded transition
//! times, not from timing), while a job without the key is not held up.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::harness::*;

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
