//! Security of the control plane's endpoints over real sockets: mTLS
//! (refusals at handshake, a good client, live rotation of the server
//! certificate), API tokens over gRPC and REST, and worker isolation (a worker
//! cannot complete or fail another worker's job) through mTLS.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hodei_core::api::auth::{ApiAuth, ApiToken, Scope, generate_token};
use hodei_core::control::ControlPlane;
use hodei_core::proto::v1;
use hodei_core::proto::v1::job_execution_service_client::JobExecutionServiceClient;
use hodei_core::proto::v1::job_query_service_client::JobQueryServiceClient;
use hodei_core::proto::v1::provider_management_service_client::ProviderManagementServiceClient;
use hodei_core::proto::v1::scheduler_service_client::SchedulerServiceClient;
use hodei_core::proto::v1::worker_agent_service_client::WorkerAgentServiceClient;
use hodei_core::server::ServerOptions;
use hodei_core::testing::TestServer;
use hodei_core::tls::{ServerTls, ServerTlsSettings};
use hodei_core::{CommandType, JobSpec, ProviderId, Worker, WorkerHandle, WorkerId};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

// ---------- a small PKI ----------

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

struct Leaf {
    cert: String,
    key: String,
    serial: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

fn leaf(ca: &Ca, cn: &str, server: bool, serial: u64, expired: bool) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if server {
        params
            .subject_alt_names
            .push(SanType::DnsName("localhost".try_into().unwrap()));
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    params.serial_number = Some(SerialNumber::from(serial));
    let now = SystemTime::now();
    if expired {
        params.not_before = (now - Duration::from_secs(86_400 * 30)).into();
        params.not_after = (now - Duration::from_secs(86_400)).into();
    } else {
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(86_400 * 90)).into();
    }
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap().pem();
    Leaf {
        cert,
        key: key.serialize_pem(),
        serial: format!("{serial:x}"),
    }
}

struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("Test CA");
        std::fs::write(dir.path().join("ca.crt"), &ca.pem).unwrap();
        Self { dir, ca }
    }
    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }
    fn write_server(&self, l: &Leaf) {
        // Key first, certificate last: the watcher sees a consistent pair.
        write_atomic(&self.path("server.key"), &l.key);
        write_atomic(&self.path("server.crt"), &l.cert);
    }
    fn settings(&self, revoked: &[&str]) -> ServerTlsSettings {
        let mut s = ServerTlsSettings::new(self.path("server.crt"), self.path("server.key"))
            .with_client_ca(self.path("ca.crt"))
            .with_revoked_serials(revoked.iter().map(|s| (*s).to_owned()));
        s.poll_interval = Duration::from_millis(100);
        s
    }
}

fn write_atomic(p: &Path, s: &str) {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, s).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

// ---------- servers and clients ----------

fn client_tls(ca_pem: &str, id: Option<&Leaf>) -> ClientTlsConfig {
    let mut t = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(l) = id {
        t = t.identity(Identity::from_pem(&l.cert, &l.key));
    }
    t
}

async fn tls_channel(addr: SocketAddr, tls: ClientTlsConfig) -> Result<Channel, String> {
    Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// Connects and makes one call; with TLS 1.3 a refused client certificate may
/// only show on the first request.
async fn call_over(addr: SocketAddr, tls: ClientTlsConfig) -> Result<(), String> {
    let ch = tls_channel(addr, tls).await?;
    JobQueryServiceClient::new(ch)
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

/// The serial of the certificate the server presents to a fresh handshake.
async fn presented_serial(addr: SocketAddr, ca_pem: &str, id: &Leaf) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_slice_iter(id.cert.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(id.key.as_bytes()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    hodei_core::tls::normalize_serial(&hex::encode(cert.raw_serial())).unwrap()
}

// ---------- mTLS ----------

#[tokio::test]
async fn mtls_refuses_wrong_ca_expired_revoked_and_missing_certificates() {
    let pki = Pki::new();
    pki.write_server(&leaf(&pki.ca, "server", true, 1000, false));
    let good = leaf(&pki.ca, "worker-good", false, 2001, false);
    let expired = leaf(&pki.ca, "worker-expired", false, 2002, true);
    let revoked = leaf(&pki.ca, "worker-revoked", false, 0xdead_beef, false);
    let rogue_ca = ca("Rogue CA");
    let rogue = leaf(&rogue_ca, "worker-rogue", false, 2003, false);

    let tls =
        ServerTls::load(pki.settings(&[&format!("0x{}", revoked.serial.to_uppercase())])).unwrap();
    assert!(tls.days_to_expiry() >= 88, "{}", tls.days_to_expiry());
    let cp = ControlPlane::builder().build();
    let server = TestServer::spawn_with(cp.clone(), ServerOptions::new().with_tls(tls))
        .await
        .unwrap();
    let addr = server.grpc_addr();
    let ca_pem = pki.ca.pem.clone();

    call_over(addr, client_tls(&ca_pem, Some(&good)))
        .await
        .expect("a client certificate signed by the CA is accepted");
    for (what, id) in [
        ("a certificate from another CA", Some(&rogue)),
        ("an expired certificate", Some(&expired)),
        ("a revoked serial", Some(&revoked)),
        ("no client certificate", None),
    ] {
        let r = call_over(addr, client_tls(&ca_pem, id)).await;
        assert!(r.is_err(), "{what} must be refused");
    }
    // Plain TCP to the TLS port does not get through either.
    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{}", addr.port()))
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(
            JobQueryServiceClient::new(ch)
                .list_jobs(v1::ListJobsRequest::default())
                .await
                .is_err()
        );
    }
    // The good client still works after the refusals.
    call_over(addr, client_tls(&ca_pem, Some(&good)))
        .await
        .unwrap();

    // The metric is exported by REST /metrics.
    let mut out = String::new();
    hodei_core::tls::write_prometheus(&mut out);
    assert!(
        out.contains("hodei_tls_certificate_days_to_expiry{certificate=\"server\"}"),
        "{out}"
    );
}

#[tokio::test]
async fn rotated_server_certificate_is_used_for_new_connections_and_open_streams_survive() {
    let pki = Pki::new();
    pki.write_server(&leaf(&pki.ca, "server", true, 0x1111, false));
    let client = leaf(&pki.ca, "worker", false, 0x2222, false);
    let tls = ServerTls::load(pki.settings(&[])).unwrap();
    let cp = ControlPlane::builder().build();
    let server = TestServer::spawn_with(cp.clone(), ServerOptions::new().with_tls(tls.clone()))
        .await
        .unwrap();
    let addr = server.grpc_addr();
    let ca_pem = pki.ca.pem.clone();

    assert_eq!(presented_serial(addr, &ca_pem, &client).await, "1111");
    // A long-lived stream on a connection made with the old certificate.
    let ch = tls_channel(addr, client_tls(&ca_pem, Some(&client)))
        .await
        .unwrap();
    let mut events = JobExecutionServiceClient::new(ch.clone())
        .execution_event_stream(v1::ExecutionEventStreamRequest::default())
        .await
        .unwrap()
        .into_inner();

    // Rotate: new key and certificate (same CA), written while serving.
    tokio::time::sleep(Duration::from_millis(20)).await;
    pki.write_server(&leaf(&pki.ca, "server", true, 0x3333, false));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tls.certificate_info().serial != "3333" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher did not reload the rotated certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(presented_serial(addr, &ca_pem, &client).await, "3333");

    // The old connection and its stream are still alive.
    let job = cp
        .create_job(
            JobSpec::new("after-rotation", CommandType::shell("true", [""; 0])),
            None,
        )
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event on the old stream")
        .expect("stream open")
        .expect("event");
    assert_eq!(ev.job_id, job.id().to_string());
    JobQueryServiceClient::new(ch)
        .get_job(v1::GetJobRequest {
            job_id: job.id().to_string(),
        })
        .await
        .unwrap();
}

// ---------- API tokens ----------

struct Tokens {
    submit: String,
    admin: String,
    auth: ApiAuth,
}

fn tokens() -> Tokens {
    let submit = generate_token();
    let admin = generate_token();
    let auth = ApiAuth::new(vec![
        ApiToken::from_secret("ci", Scope::Submit, &submit),
        ApiToken::from_secret("ops", Scope::Admin, &admin),
    ]);
    Tokens {
        submit,
        admin,
        auth,
    }
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test]
async fn grpc_api_calls_need_a_token_with_the_right_scope() {
    let t = tokens();
    let cp = ControlPlane::builder().build();
    let server = TestServer::spawn_with(cp.clone(), ServerOptions::new().with_auth(t.auth.clone()))
        .await
        .unwrap();
    let addr = server.grpc_addr();
    let ch = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut query = JobQueryServiceClient::new(ch.clone());
    let mut jobs = JobExecutionServiceClient::new(ch.clone());
    let mut sched = SchedulerServiceClient::new(ch.clone());
    let mut providers = ProviderManagementServiceClient::new(ch.clone());

    // No token, a wrong token, a non-bearer header: UNAUTHENTICATED.
    let e = query
        .list_jobs(v1::ListJobsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = query
        .list_jobs(with_token(v1::ListJobsRequest::default(), "hodei_nope"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut basic = tonic::Request::new(v1::ListJobsRequest::default());
    basic
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
    assert_eq!(
        query.list_jobs(basic).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // submit scope: jobs and listings work.
    let spec = JobSpec::new("hello", CommandType::shell("echo", ["hi"]));
    let job = jobs
        .queue_job(with_token(
            v1::QueueJobRequest {
                spec: Some((&spec).into()),
                correlation_id: String::new(),
            },
            &t.submit,
        ))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    query
        .get_job(with_token(
            v1::GetJobRequest {
                job_id: job.id.clone(),
            },
            &t.submit,
        ))
        .await
        .unwrap();
    sched
        .get_available_workers(with_token(
            v1::GetAvailableWorkersRequest { include_busy: true },
            &t.submit,
        ))
        .await
        .unwrap();
    providers
        .list_providers(with_token(v1::ListProvidersRequest {}, &t.submit))
        .await
        .unwrap();

    // submit scope on admin calls: PERMISSION_DENIED; admin passes the check.
    let e = sched
        .configure_scheduler(with_token(
            v1::ConfigureSchedulerRequest::default(),
            &t.submit,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = providers
        .register_provider(with_token(
            v1::RegisterProviderRequest::default(),
            &t.submit,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = jobs
        .assign_job(with_token(
            v1::AssignJobRequest {
                job_id: job.id.clone(),
                worker_id: WorkerId::new().to_string(),
            },
            &t.submit,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let r = sched
        .configure_scheduler(with_token(
            v1::ConfigureSchedulerRequest::default(),
            &t.admin,
        ))
        .await;
    if let Err(e) = r {
        assert!(
            !matches!(e.code(), Code::PermissionDenied | Code::Unauthenticated),
            "{e:?}"
        );
    }
    let e = jobs
        .assign_job(with_token(
            v1::AssignJobRequest {
                job_id: job.id.clone(),
                worker_id: WorkerId::new().to_string(),
            },
            &t.admin,
        ))
        .await
        .unwrap_err();
    // Past authorization: the worker is simply not connected.
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // Worker RPCs and health are not API-token protected (they fail on the
    // worker's own credentials instead).
    let e = WorkerAgentServiceClient::new(ch.clone())
        .register(v1::RegisterRequest {
            otp: "not-a-valid-otp".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!e.message().contains("API token"), "{e:?}");
    let e = jobs
        .complete_job(v1::CompleteJobRequest {
            job_id: job.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(!e.message().contains("API token"), "{e:?}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is open");
}

#[tokio::test]
async fn rest_api_calls_need_a_token_with_the_right_scope() {
    let t = tokens();
    let cp = ControlPlane::builder().build();
    let server = TestServer::spawn_with(cp.clone(), ServerOptions::new().with_auth(t.auth.clone()))
        .await
        .unwrap();
    let base = server.http_url();
    let http = reqwest::Client::new();

    for open in ["/healthz", "/readyz"] {
        let r = http.get(format!("{base}{open}")).send().await.unwrap();
        assert!(r.status().is_success(), "{open}: {}", r.status());
    }
    let r = http
        .get(format!("{base}/api/v1/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    let r = http
        .get(format!("{base}/api/v1/jobs"))
        .bearer_auth("hodei_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = http
        .post(format!("{base}/api/v1/jobs"))
        .bearer_auth(&t.submit)
        .json(&serde_json::json!({"name": "rest", "command": {"type": "shell", "cmd": "true", "args": []}}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status() == 201 || r.status() == 400,
        "authorized submit reaches the handler: {}",
        r.status()
    );
    for p in [
        "/api/v1/jobs",
        "/api/v1/workers",
        "/api/v1/providers",
        "/metrics",
    ] {
        let r = http
            .get(format!("{base}{p}"))
            .bearer_auth(&t.submit)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{p}");
    }
    let r = http
        .post(format!("{base}/api/v1/providers"))
        .bearer_auth(&t.submit)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "permission_denied", "{body}");
    let r = http
        .post(format!("{base}/api/v1/providers"))
        .bearer_auth(&t.admin)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status() != 401 && r.status() != 403,
        "admin passes: {}",
        r.status()
    );
}

// ---------- worker isolation through mTLS ----------

/// Registers a worker over gRPC with a one-time token and opens its stream.
async fn register_worker(
    cp: &ControlPlane,
    ch: &Channel,
) -> (
    WorkerId,
    String,
    tonic::Streaming<v1::ServerMessage>,
    tokio::sync::mpsc::Sender<v1::WorkerMessage>,
) {
    let id = WorkerId::new();
    let provider = ProviderId::new();
    let mut worker = Worker::new(id, provider);
    worker
        .created(WorkerHandle::new(id, provider, "test-worker"))
        .unwrap();
    cp.stores().workers.register(&worker).await.unwrap();
    let otp = hodei_core::otp::generate_token();
    cp.stores()
        .otps
        .insert(
            &hodei_core::otp::hash_token(&otp),
            id,
            chrono::Utc::now() + chrono::Duration::minutes(5),
        )
        .await
        .unwrap();
    let reg = WorkerAgentServiceClient::new(ch.clone())
        .register(v1::RegisterRequest {
            otp: otp.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reg.worker_id, id.to_string());
    // The one-time token cannot be replayed.
    let e = WorkerAgentServiceClient::new(ch.clone())
        .register(v1::RegisterRequest {
            otp,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let stream = WorkerAgentServiceClient::new(ch.clone())
        .worker_stream(with_token(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            &reg.session_token,
        ))
        .await
        .unwrap()
        .into_inner();
    (id, reg.session_token, stream, tx)
}

#[tokio::test]
async fn a_worker_cannot_complete_or_fail_another_workers_job_over_mtls() {
    let pki = Pki::new();
    pki.write_server(&leaf(&pki.ca, "server", true, 77, false));
    let t = tokens();
    let tls = ServerTls::load(pki.settings(&[])).unwrap();
    let cp = ControlPlane::builder().build();
    let server = TestServer::spawn_with(
        cp.clone(),
        ServerOptions::new().with_tls(tls).with_auth(t.auth.clone()),
    )
    .await
    .unwrap();
    let addr = server.grpc_addr();
    let cert_a = leaf(&pki.ca, "worker-a", false, 0xa, false);
    let cert_b = leaf(&pki.ca, "worker-b", false, 0xb, false);
    let ch_a = tls_channel(addr, client_tls(&pki.ca.pem, Some(&cert_a)))
        .await
        .unwrap();
    let ch_b = tls_channel(addr, client_tls(&pki.ca.pem, Some(&cert_b)))
        .await
        .unwrap();
    let (a, token_a, mut stream_a, _keep_a) = register_worker(&cp, &ch_a).await;
    let (b, token_b, _stream_b, _keep_b) = register_worker(&cp, &ch_b).await;

    let spec = JobSpec::new("isolated", CommandType::shell("true", [""; 0]));
    let job = cp.create_job(spec, None).await.unwrap();
    let job_id = job.id().to_string();
    // The operator assigns it to A (admin scope, through the same mTLS endpoint).
    JobExecutionServiceClient::new(ch_a.clone())
        .assign_job(with_token(
            v1::AssignJobRequest {
                job_id: job_id.clone(),
                worker_id: a.to_string(),
            },
            &t.admin,
        ))
        .await
        .unwrap();
    // A receives the command on its stream.
    let attempt = loop {
        let m = tokio::time::timeout(Duration::from_secs(5), stream_a.next())
            .await
            .expect("a command for worker A")
            .unwrap()
            .unwrap();
        if let Some(v1::server_message::Payload::RunJob(run)) = m.payload {
            assert_eq!(run.job_id, job_id);
            break run.attempt;
        }
    };

    let mut jobs_b = JobExecutionServiceClient::new(ch_b.clone());
    // B, with its own session, on A's job: refused.
    let e = jobs_b
        .complete_job(with_token(
            v1::CompleteJobRequest {
                job_id: job_id.clone(),
                worker_id: b.to_string(),
                attempt,
                exit_code: 0,
                ..Default::default()
            },
            &token_b,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = jobs_b
        .fail_job(with_token(
            v1::FailJobRequest {
                job_id: job_id.clone(),
                worker_id: b.to_string(),
                attempt,
                error: "sabotage".into(),
                ..Default::default()
            },
            &token_b,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // B claiming to be A with its own session: refused.
    let e = jobs_b
        .complete_job(with_token(
            v1::CompleteJobRequest {
                job_id: job_id.clone(),
                worker_id: a.to_string(),
                attempt,
                exit_code: 0,
                ..Default::default()
            },
            &token_b,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // An API token is no worker session.
    let e = jobs_b
        .complete_job(with_token(
            v1::CompleteJobRequest {
                job_id: job_id.clone(),
                worker_id: a.to_string(),
                attempt,
                exit_code: 0,
                ..Default::default()
            },
            &t.admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert_eq!(
        cp.get_job(job.id()).await.unwrap().state(),
        hodei_core::JobState::Scheduled,
        "the job is untouched"
    );

    // A itself may start and complete it.
    let mut jobs_a = JobExecutionServiceClient::new(ch_a.clone());
    jobs_a
        .start_job(with_token(
            v1::StartJobRequest {
                job_id: job_id.clone(),
                worker_id: a.to_string(),
                attempt,
            },
            &token_a,
        ))
        .await
        .unwrap();
    let done = jobs_a
        .complete_job(with_token(
            v1::CompleteJobRequest {
                job_id: job_id.clone(),
                worker_id: a.to_string(),
                attempt,
                exit_code: 0,
                ..Default::default()
            },
            &token_a,
        ))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(done.state, v1::JobState::Succeeded as i32);
}

#[tokio::test]
async fn a_serial_added_to_the_revocation_file_is_refused_without_a_restart() {
    let pki = Pki::new();
    pki.write_server(&leaf(&pki.ca, "server", true, 500, false));
    let worker = leaf(&pki.ca, "worker", false, 0x0abc_def0, false);
    let other = leaf(&pki.ca, "other", false, 0x0123, false);
    let revoked_file = pki.path("revoked.txt");
    write_atomic(&revoked_file, "# revoked worker certificates\n");
    let mut settings = pki.settings(&[]);
    settings.revoked_serials_file = Some(revoked_file.clone());
    let tls = ServerTls::load(settings).unwrap();
    let cp = ControlPlane::builder().build();
    let server = TestServer::spawn_with(cp.clone(), ServerOptions::new().with_tls(tls))
        .await
        .unwrap();
    let addr = server.grpc_addr();
    let ca_pem = pki.ca.pem.clone();
    call_over(addr, client_tls(&ca_pem, Some(&worker)))
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(20)).await;
    write_atomic(
        &revoked_file,
        &format!(
            "# revoked worker certificates\n{}  # lost laptop\n",
            worker.serial
        ),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while call_over(addr, client_tls(&ca_pem, Some(&worker)))
        .await
        .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revoked serial was still accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    call_over(addr, client_tls(&ca_pem, Some(&other)))
        .await
        .expect("other certificates are still accepted");
}

// ---------- live API tokens file, REST over TLS ----------

async fn status(http: &reqwest::Client, url: &str, token: &str) -> u16 {
    let r = http.get(url).bearer_auth(token).send().await.unwrap();
    r.status().as_u16()
}

/// Polls `GET url` with `token` until it answers `want` (the watcher re-reads
/// the file every 50 ms); returns how long that took.
async fn until_status(http: &reqwest::Client, url: &str, token: &str, want: u16) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let got = status(http, url, token).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still {got} instead of {want} after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tokens_added_to_or_removed_from_the_tokens_file_apply_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let (a, b) = (generate_token(), generate_token());
    let line = |name: &str, secret: &str| {
        ApiToken::from_secret(name, Scope::Submit, secret).config_line() + "\n"
    };
    write_atomic(&file, &format!("# operators\n{}", line("a", &a)));
    let auth = ApiAuth::from_lookup(|k| match k {
        "HODEI_API_TOKENS_FILE" => Some(file.display().to_string()),
        "HODEI_API_TOKENS_RELOAD_INTERVAL_SECS" => None,
        _ => None,
    })
    .unwrap()
    .unwrap()
    .with_poll_interval(Duration::from_millis(50));
    assert_eq!(auth.file(), Some(file.as_path()));
    let cp = ControlPlane::builder().build();
    let server = TestServer::spawn_with(cp.clone(), ServerOptions::new().with_auth(auth.clone()))
        .await
        .unwrap();
    let addr = server.http_addr();
    let url = format!("http://{addr}/api/v1/jobs");
    let http = reqwest::Client::new();

    assert_eq!(status(&http, &url, &a).await, 200);
    assert_eq!(status(&http, &url, &b).await, 401);

    // b added: accepted.
    write_atomic(&file, &format!("{}{}", line("a", &a), line("b", &b)));
    until_status(&http, &url, &b, 200).await;
    assert_eq!(auth.tokens().len(), 2);

    // A malformed file is refused: the previous tokens stay.
    write_atomic(&file, "b:submit:not-hex\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&http, &url, &a).await, 200);
    assert_eq!(status(&http, &url, &b).await, 200);

    // a removed: 401; b still works.
    write_atomic(&file, &line("b", &b));
    until_status(&http, &url, &a, 401).await;
    assert_eq!(status(&http, &url, &b).await, 200);

    // Every token removed: every call refused (not an open API).
    write_atomic(&file, "# nobody\n");
    until_status(&http, &url, &b, 401).await;
    assert!(auth.tokens().is_empty());
    let open = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
}

#[tokio::test]
async fn rest_over_tls_serves_https_with_the_server_certificate_and_refuses_plain_http() {
    let pki = Pki::new();
    pki.write_server(&leaf(&pki.ca, "localhost", true, 7, false));
    // The gRPC settings (with client CA and revocations), reused for REST.
    let tls = ServerTls::load(pki.settings(&["ab"]).for_rest()).unwrap();
    assert!(tls.settings().client_ca_path.is_none());
    let t = tokens();
    let cp = ControlPlane::builder().build();
    let server = TestServer::spawn_with(
        cp.clone(),
        ServerOptions::new().with_tls(tls).with_auth(t.auth.clone()),
    )
    .await
    .unwrap();
    let addr = server.http_addr();
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", addr.port());
    // No client certificate needed; API tokens still apply.
    let r = https.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = https
        .get(format!("{base}/api/v1/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = https
        .get(format!("{base}/metrics"))
        .bearer_auth(&t.submit)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("hodei_tls_certificate_days_to_expiry{certificate=\"server\"}")
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", addr.port()))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // A client that does not trust the CA is refused.
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );
}
