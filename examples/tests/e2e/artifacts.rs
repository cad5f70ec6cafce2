//! Job artifacts through the real server and agent (process provider): an
//! output glob becomes downloadable artifacts with matching checksums, a job's
//! `artifact://` input is fetched before its command runs, a failing job still
//! uploads its outputs, a missing input fails the job before it starts, and the
//! CLI lists and downloads them.

use std::time::Duration;

use hodei_core::proto::v1;
use hodei_core::{ArtifactDest, ArtifactSource};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::*;

const WITHIN: Duration = Duration::from_secs(90);

fn output(name: &str, path: &str) -> ArtifactDest {
    ArtifactDest {
        name: name.into(),
        path: path.into(),
        url: String::new(),
    }
}

async fn list(http: &reqwest::Client, s: &TestServer, job: &str) -> Vec<Value> {
    let v: Value = http
        .get(format!(
            "http://127.0.0.1:{}/api/v1/jobs/{job}/artifacts",
            s.http_port()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["artifacts"].as_array().cloned().unwrap_or_default()
}

async fn download(
    http: &reqwest::Client,
    s: &TestServer,
    job: &str,
    name: &str,
) -> (String, Vec<u8>) {
    let r = http
        .get(format!(
            "http://127.0.0.1:{}/api/v1/jobs/{job}/artifacts/{name}",
            s.http_port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{name}");
    let sha = r.headers()["x-artifact-sha256"]
        .to_str()
        .unwrap()
        .to_owned();
    (sha, r.bytes().await.unwrap().to_vec())
}

/// Every log line of a job, the agent's `system` lines included.
async fn all_logs(s: &TestServer, id: &str) -> Vec<String> {
    let r = s
        .logs()
        .get_logs(v1::GetLogsRequest {
            job_id: id.into(),
            attempt: 0,
        })
        .await
        .expect("get logs")
        .into_inner();
    r.chunks
        .iter()
        .flat_map(|c| c.entries.iter())
        .map(|e| String::from_utf8_lossy(&e.data).into_owned())
        .collect()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[tokio::test]
async fn outputs_become_artifacts_inputs_are_fetched_and_failed_jobs_still_upload() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("artifacts");
    let s = start_server(&[("HODEI_ARTIFACT_DIR", store.to_str().unwrap())]).await;
    let http = reqwest::Client::new();

    // Producer: an output glob over a tree, one file left out by the glob.
    let mut producer = script(
        "mkdir -p out/sub\nprintf 'hello from the producer\\n' > out/a.txt\n\
         head -c 300000 /dev/urandom > out/sub/big.txt\necho skip > out/skip.log",
    );
    producer.outputs = vec![output("out", "out/**/*.txt")];
    let a = s.submit(producer).await;
    let job = s.wait_done(&a, WITHIN).await;
    assert_eq!(job.state, v1::JobState::Succeeded as i32, "{}", job.error);
    let items = list(&http, &s, &a).await;
    let names: Vec<_> = items.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["out/out/a.txt", "out/out/sub/big.txt"], "{items:?}");
    for item in &items {
        let name = item["name"].as_str().unwrap();
        let (header_sha, content) = download(&http, &s, &a, name).await;
        assert_eq!(sha256(&content), header_sha, "{name}");
        assert_eq!(item["sha256"], header_sha, "{name}");
        assert_eq!(item["size"], content.len(), "{name}");
    }
    assert_eq!(
        download(&http, &s, &a, "out/out/a.txt").await.1,
        b"hello from the producer\n"
    );

    // Consumer: takes the producer's artifact as input, then fails: its output
    // is uploaded all the same.
    let mut consumer = script("cat in/a.txt > result.txt\necho consumed >> result.txt\nexit 3");
    consumer.max_attempts = 1;
    consumer.inputs = vec![ArtifactSource {
        name: "greeting".into(),
        url: format!("artifact://{a}/out/out/a.txt"),
        path: "in/a.txt".into(),
    }];
    consumer.outputs = vec![output("result", "result.txt")];
    let b = s.submit(consumer).await;
    let job = s.wait_done(&b, WITHIN).await;
    assert_eq!(job.state, v1::JobState::Failed as i32, "{}", job.error);
    let (sha, content) = download(&http, &s, &b, "result").await;
    assert_eq!(content, b"hello from the producer\nconsumed\n");
    assert_eq!(sha, sha256(&content));
    let logs = all_logs(&s, &b).await.join("\n");
    assert!(
        logs.contains(&format!("input artifact://{a}/out/out/a.txt")),
        "{logs}"
    );
    assert!(logs.contains("output result uploaded"), "{logs}");

    // An input that does not exist: the command never runs.
    let mut missing = script("touch ran.txt");
    missing.max_attempts = 1;
    missing.inputs = vec![ArtifactSource {
        name: String::new(),
        url: format!("artifact://{a}/nope"),
        path: "x".into(),
    }];
    missing.outputs = vec![output("ran", "ran.txt")];
    let c = s.submit(missing).await;
    let job = s.wait_done(&c, WITHIN).await;
    assert_eq!(job.state, v1::JobState::Failed as i32);
    let logs = all_logs(&s, &c).await.join("\n");
    assert!(logs.contains("input error: inputs[0]"), "{logs} / {job:?}");
    assert!(list(&http, &s, &c).await.is_empty());

    // The CLI lists and downloads, checking each checksum.
    let saved = dir.path().join("saved");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hodei"))
        .args(["job", "artifacts", &a, "-o", "json", "--download"])
        .arg(&saved)
        .env(
            "HODEI_SERVER",
            format!("http://127.0.0.1:{}", s.grpc_port()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed.len(), 2);
    assert_eq!(
        std::fs::read(saved.join("out/out/a.txt")).unwrap(),
        b"hello from the producer\n"
    );
    assert_eq!(
        sha256(&std::fs::read(saved.join("out/out/sub/big.txt")).unwrap()),
        printed[1]["sha256"].as_str().unwrap()
    );
}

#[tokio::test]
async fn an_output_over_the_size_limit_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(&[
        ("HODEI_ARTIFACT_DIR", dir.path().to_str().unwrap()),
        ("HODEI_ARTIFACT_MAX_FILE_BYTES", "1000"),
    ])
    .await;
    let mut spec = script("head -c 5000 /dev/zero > big.bin\necho small > small.txt");
    spec.max_attempts = 1;
    spec.outputs = vec![output("big", "big.bin"), output("small", "small.txt")];
    let id = s.submit(spec).await;
    let job = s.wait_done(&id, WITHIN).await;
    assert!(job.error.contains("big"), "{}", job.error);
    assert!(job.error.contains("1000 bytes"), "{}", job.error);
    let http = reqwest::Client::new();
    let names: Vec<_> = list(&http, &s, &id)
        .await
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["small"]);
}
