//! Security end to end: the real server with API tokens and with mTLS, the
//! real agents it spawns (authenticating with their session tokens, and with
//! client certificates made by `hodei certs`), and the real CLI.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{free_port, start_server};

fn hodei(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hodei"));
    cmd.args(args)
        .env_remove("HODEI_TOKEN")
        .env_remove("HODEI_TLS_CA")
        .env_remove("HODEI_TLS_CERT")
        .env_remove("HODEI_TLS_KEY")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run hodei")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `hodei token create`: the token and its server line.
pub(crate) fn new_token(scope: &str, name: &str) -> (String, String) {
    let out = hodei(&["token", "create", "--scope", scope, "--name", name], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {prefix} in {stdout}"))
    };
    (field("token:"), field("server line:"))
}

#[tokio::test]
async fn api_tokens_guard_the_cli_and_rest_while_workers_still_run_jobs() {
    let (submit, submit_line) = new_token("submit", "ci");
    let (admin, admin_line) = new_token("admin", "ops");
    let tokens = format!("{submit_line},{admin_line}");
    let s = start_server(&[("HODEI_API_TOKENS", &tokens)]).await;

    // Without a token the CLI is refused.
    let out = hodei(&["--server", &s.grpc, "job", "list"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("Unauthenticated"),
        "{}",
        text(&out.stderr)
    );
    // With a submit token a job runs end to end: the agent registers and
    // reports through the worker RPCs, which API tokens do not cover.
    let out = hodei(
        &[
            "--server",
            &s.grpc,
            "job",
            "run",
            "--",
            "sh",
            "-c",
            "echo authorized-run",
        ],
        &[("HODEI_TOKEN", &submit)],
    );
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("authorized-run"));
    let out = hodei(
        &["--server", &s.grpc, "worker", "list"],
        &[("HODEI_TOKEN", &submit)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // REST: open health, 401 without a token, 403 with the wrong scope.
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/healthz", s.http))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = http
        .get(format!("{}/api/v1/jobs", s.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{}/api/v1/jobs", s.http))
        .bearer_auth(&submit)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{}/api/v1/providers", s.http))
        .bearer_auth(&submit)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{}/api/v1/providers", s.http))
        .bearer_auth(&admin)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(r.status() != 401 && r.status() != 403, "{}", r.status());
}

/// Polls `GET url` with `token` until it answers `want`; panics after 15 s.
async fn until_status(http: &reqwest::Client, url: &str, token: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        if got.as_u16() == want {
            return;
        }
        assert!(Instant::now() < deadline, "still {got}, expected {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn tokens_added_to_and_removed_from_the_tokens_file_apply_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.txt");
    let (alice, alice_line) = new_token("submit", "alice");
    let (bob, bob_line) = new_token("submit", "bob");
    std::fs::write(&file, format!("# operators\n{alice_line}\n")).unwrap();
    let path = file.display().to_string();
    let s = start_server(&[
        ("HODEI_API_TOKENS_FILE", &path),
        ("HODEI_API_TOKENS_RELOAD_INTERVAL_SECS", "1"),
    ])
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/jobs", s.http);
    until_status(&http, &url, &alice, 200).await;
    let r = http.get(&url).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // bob's line added: accepted without a restart, by REST and by the CLI (gRPC).
    std::fs::write(&file, format!("{alice_line}\n{bob_line}\n")).unwrap();
    until_status(&http, &url, &bob, 200).await;
    let out = hodei(
        &["--server", &s.grpc, "job", "list"],
        &[("HODEI_TOKEN", &bob)],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // alice's line removed: refused.
    std::fs::write(&file, format!("{bob_line}\n")).unwrap();
    until_status(&http, &url, &alice, 401).await;
    let out = hodei(
        &["--server", &s.grpc, "job", "list"],
        &[("HODEI_TOKEN", &alice)],
    );
    assert!(
        text(&out.stderr).contains("Unauthenticated"),
        "{}",
        text(&out.stderr)
    );
    let r = http.get(&url).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

// ---------- mTLS through the real binaries ----------

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn certs(args: &[&str]) -> String {
    let mut all = vec!["certs"];
    all.extend_from_slice(args);
    let out = hodei(&all, &[]);
    assert!(out.status.success(), "hodei {all:?}: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("serial:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no serial in {stdout}"))
}

fn p(dir: &Path, f: &str) -> String {
    dir.join(f).display().to_string()
}

#[tokio::test]
async fn mtls_with_certificates_from_hodei_certs_runs_jobs_and_refuses_bad_clients() {
    let pki = tempfile::tempdir().unwrap();
    let d = pki.path();
    let dir = d.display().to_string();
    certs(&["ca", "--out", &dir]);
    certs(&[
        "server",
        "--ca",
        &dir,
        "--san",
        "localhost",
        "--san",
        "127.0.0.1",
        "--out",
        &dir,
    ]);
    certs(&[
        "worker",
        "--ca",
        &dir,
        "--name",
        "local-workers",
        "--out",
        &dir,
    ]);
    certs(&["worker", "--ca", &dir, "--name", "cli", "--out", &dir]);
    let revoked = certs(&["worker", "--ca", &dir, "--name", "stolen", "--out", &dir]);
    let (token, line) = new_token("submit", "ci");

    let grpc_port = free_port();
    let http_port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hodei-server"));
    cmd.env("GRPC_PORT", grpc_port.to_string())
        .env("HODEI_HTTP_PORT", http_port.to_string())
        .env("HODEI_BIND_ADDRESS", "127.0.0.1")
        .env("HODEI_WORKER_BINARY", env!("CARGO_BIN_EXE_hodei-worker"))
        .env_remove("HODEI_DATABASE_URL")
        .env_remove("DATABASE_URL")
        .env("HODEI_TLS_CERT", p(d, "server.crt"))
        .env("HODEI_TLS_KEY", p(d, "server.key"))
        .env("HODEI_TLS_CLIENT_CA", p(d, "ca.crt"))
        .env("HODEI_TLS_REVOKED_SERIALS", &revoked)
        .env("HODEI_WORKER_TLS_CERT", p(d, "local-workers.crt"))
        .env("HODEI_WORKER_TLS_KEY", p(d, "local-workers.key"))
        .env("HODEI_API_TOKENS", &line)
        // REST over HTTPS with the same server certificate.
        .env("HODEI_REST_TLS", "1")
        // Agents report their certificate's days to expiry in heartbeats.
        .env("HODEI_HEARTBEAT_INTERVAL_MS", "300")
        .env(
            "RUST_LOG",
            std::env::var("HODEI_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null());
    let _server = Server {
        child: cmd.spawn().expect("spawn hodei-server"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", grpc_port)).is_err() {
        assert!(Instant::now() < deadline, "server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let server = format!("https://127.0.0.1:{grpc_port}");
    let ca = p(d, "ca.crt");
    let (cli_crt, cli_key) = (p(d, "cli.crt"), p(d, "cli.key"));
    let (bad_crt, bad_key) = (p(d, "stolen.crt"), p(d, "stolen.key"));
    let good = [
        ("HODEI_TOKEN", token.as_str()),
        ("HODEI_TLS_CA", ca.as_str()),
        ("HODEI_TLS_CERT", cli_crt.as_str()),
        ("HODEI_TLS_KEY", cli_key.as_str()),
    ];

    // A job through mTLS: CLI → server, and server ↔ agent (client certificate
    // made by `hodei certs worker`).
    let out = hodei(
        &[
            "--server",
            &server,
            "job",
            "run",
            "--",
            "sh",
            "-c",
            "echo over-mtls",
        ],
        &good,
    );
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("over-mtls"));

    // No client certificate, a revoked one, plain text: refused.
    let no_cert = hodei(
        &["--server", &server, "job", "list"],
        &[("HODEI_TOKEN", &token), ("HODEI_TLS_CA", &ca)],
    );
    assert!(!no_cert.status.success(), "{}", text(&no_cert.stdout));
    let revoked_out = hodei(
        &["--server", &server, "job", "list"],
        &[
            ("HODEI_TOKEN", &token),
            ("HODEI_TLS_CA", &ca),
            ("HODEI_TLS_CERT", &bad_crt),
            ("HODEI_TLS_KEY", &bad_key),
        ],
    );
    assert!(
        !revoked_out.status.success(),
        "{}",
        text(&revoked_out.stdout)
    );
    let plain = hodei(
        &[
            "--server",
            &format!("http://127.0.0.1:{grpc_port}"),
            "job",
            "list",
        ],
        &[("HODEI_TOKEN", &token)],
    );
    assert!(!plain.status.success());
    // The good client still gets through, and needs its token on top.
    let out = hodei(&["--server", &server, "job", "list"], &good);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = hodei(&["--server", &server, "job", "list"], &good[1..]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Unauthenticated"));

    // REST is HTTPS with the server certificate, trusted through the CA that
    // `hodei certs` made; no client certificate is needed, the token still is.
    let ca_pem = std::fs::read(d.join("ca.crt")).unwrap();
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).unwrap())
        .build()
        .unwrap();
    let rest = format!("https://127.0.0.1:{http_port}");
    let r = https
        .get(format!("{rest}/api/v1/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = https
        .get(format!("{rest}/api/v1/jobs"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jobs = r.text().await.unwrap();
    assert!(jobs.contains("\"id\""), "{jobs}");
    // Plain HTTP on the REST port gets no answer; a client without the CA is refused.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{http_port}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("{rest}/healthz"))
            .send()
            .await
            .is_err()
    );

    // The days-to-expiry gauge on /metrics: the server's certificate (365
    // days), and the local worker's client certificate (90 days) as its agent
    // reports it in heartbeats.
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let metrics = https
            .get(format!("{rest}/metrics"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("certificate=\"worker\"") || Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        metrics.contains("hodei_tls_certificate_days_to_expiry{certificate=\"server\"} 36"),
        "{metrics}"
    );
    let worker_days: Vec<i64> = metrics
        .lines()
        .filter(|l| {
            l.starts_with(
                "hodei_tls_certificate_days_to_expiry{certificate=\"worker\",worker_id=\"",
            )
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        !worker_days.is_empty() && worker_days.iter().all(|d| (89..=90).contains(d)),
        "{metrics}"
    );
}
