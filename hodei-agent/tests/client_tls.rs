//! CertificateManager against real certificates generated with rcgen.
#![allow(clippy::unwrap_used)] // test helpers

use std::path::Path;
use std::time::Duration;

use chrono::{Datelike, Utc};
use hodei_agent::tls::{CertificateManager, CertificatePaths, TlsError, TlsSettings};
use rcgen::{CertificateParams, KeyPair, date_time_ymd};

/// A self-signed certificate valid for `days` more days, as (cert PEM, key PEM).
fn cert_valid_for(days: i64, cn: &str) -> (String, String) {
    let end = Utc::now() + chrono::Duration::days(days) + chrono::Duration::hours(12);
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(
        end.year(),
        u8::try_from(end.month()).unwrap(),
        u8::try_from(end.day()).unwrap(),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write_set(dir: &Path, days: i64, cn: &str) -> CertificatePaths {
    let (cert, key) = cert_valid_for(days, cn);
    let (ca, _) = cert_valid_for(3650, "test-ca");
    let paths = CertificatePaths {
        client_cert_path: dir.join("client.crt"),
        client_key_path: dir.join("client.key"),
        ca_cert_path: dir.join("ca.crt"),
    };
    std::fs::write(&paths.client_cert_path, cert).unwrap();
    std::fs::write(&paths.client_key_path, key).unwrap();
    std::fs::write(&paths.ca_cert_path, ca).unwrap();
    paths
}

#[test]
fn expiry_is_computed_from_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), 40, "worker-a");
    let m = CertificateManager::load(paths, TlsSettings::default()).unwrap();
    // The end date is rounded to midnight, so allow a day either way.
    let days = m.days_to_expiry();
    assert!((39..=41).contains(&days), "days_to_expiry = {days}");
    assert_eq!(m.expiry_warning(), None);
    assert!(m.certificate_info().subject.contains("worker-a"));

    let paths = write_set(dir.path(), 20, "worker-b");
    let m = CertificateManager::load(paths, TlsSettings::default()).unwrap();
    assert_eq!(m.expiry_warning(), Some(30));

    let paths = write_set(dir.path(), 3, "worker-c");
    let m = CertificateManager::load(paths, TlsSettings::default()).unwrap();
    assert_eq!(m.expiry_warning(), Some(7));
}

#[tokio::test]
async fn watcher_reloads_a_rotated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), 40, "before-rotation");
    let mut settings = TlsSettings::default();
    settings.poll_interval = Duration::from_millis(50);
    let m = CertificateManager::load(paths.clone(), settings).unwrap();
    assert!(m.certificate_info().subject.contains("before-rotation"));
    // Unchanged files: no reload.
    assert!(!m.reload_if_changed().unwrap());

    let cancel = tokio_util::sync::CancellationToken::new();
    let watcher = m.spawn_watcher(cancel.clone());
    // Make sure the modification time moves even on coarse-grained filesystems.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (cert, key) = cert_valid_for(200, "after-rotation");
    std::fs::write(&paths.client_key_path, key).unwrap();
    std::fs::write(&paths.client_cert_path, cert).unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(&paths.client_cert_path)
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !m.certificate_info().subject.contains("after-rotation") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "watcher did not reload the rotated certificate"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(m.days_to_expiry() >= 199);
    cancel.cancel();
    watcher.await.unwrap();
}

#[test]
fn bad_pem_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), 40, "x");
    std::fs::write(&paths.client_cert_path, "this is not a certificate").unwrap();
    let err = CertificateManager::load(paths.clone(), TlsSettings::default()).unwrap_err();
    assert!(matches!(err, TlsError::InvalidPem { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("client.crt") && msg.contains("not valid PEM"),
        "{msg}"
    );

    // A key file where the certificate should be.
    let key = std::fs::read_to_string(&paths.client_key_path).unwrap();
    std::fs::write(&paths.client_cert_path, &key).unwrap();
    let err = CertificateManager::load(paths.clone(), TlsSettings::default()).unwrap_err();
    assert!(err.to_string().contains("expected CERTIFICATE"), "{err}");

    // A missing file names the path.
    std::fs::remove_file(&paths.ca_cert_path).unwrap();
    let err = CertificateManager::load(paths, TlsSettings::default()).unwrap_err();
    assert!(matches!(err, TlsError::Io { .. }));
    assert!(err.to_string().contains("ca.crt"), "{err}");
}

#[test]
fn a_failed_reload_keeps_the_previous_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_set(dir.path(), 40, "good");
    let m = CertificateManager::load(paths.clone(), TlsSettings::default()).unwrap();
    std::fs::write(&paths.client_cert_path, "garbage").unwrap();
    assert!(m.reload().is_err());
    assert!(m.certificate_info().subject.contains("good"));
}

mod mtls {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use hodei_agent::client::{AgentError, CancellationToken, WorkerClient};
    use hodei_agent::config::{AgentConfig, BackoffConfig, ServerAddresses};
    use hodei_agent::tls::CertificatePaths;
    use hodei_core::proto::v1;
    use hodei_core::proto::v1::worker_agent_service_server::{
        WorkerAgentService, WorkerAgentServiceServer,
    };
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
    use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
    use tonic::{Request, Response, Status, Streaming};

    /// Answers Register with UNAUTHENTICATED: enough to prove the TLS handshake succeeded.
    #[derive(Clone, Default)]
    struct RefusingServer(Arc<AtomicU32>);

    #[tonic::async_trait]
    impl WorkerAgentService for RefusingServer {
        async fn register(
            &self,
            _r: Request<v1::RegisterRequest>,
        ) -> Result<Response<v1::RegisterResponse>, Status> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(Status::unauthenticated("invalid one-time token"))
        }
        type WorkerStreamStream = ReceiverStream<Result<v1::ServerMessage, Status>>;
        async fn worker_stream(
            &self,
            _r: Request<Streaming<v1::WorkerMessage>>,
        ) -> Result<Response<Self::WorkerStreamStream>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn update_worker_status(
            &self,
            _r: Request<v1::UpdateWorkerStatusRequest>,
        ) -> Result<Response<v1::UpdateWorkerStatusResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
        async fn unregister_worker(
            &self,
            _r: Request<v1::UnregisterWorkerRequest>,
        ) -> Result<Response<v1::UnregisterWorkerResponse>, Status> {
            Err(Status::unimplemented("test"))
        }
    }

    struct Pki {
        ca_pem: String,
        server: (String, String),
        client: (String, String),
        /// A client certificate from a CA the server does not trust.
        rogue_client: (String, String),
    }

    fn leaf(
        issuer: &Issuer<'_, KeyPair>,
        san: &str,
        eku: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let mut p = CertificateParams::new(vec![san.to_owned()]).unwrap();
        p.extended_key_usages = vec![eku];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), Issuer::new(p, key))
    }

    fn pki() -> Pki {
        let (ca_pem, issuer) = ca("hodei test ca");
        let (_, rogue) = ca("rogue ca");
        Pki {
            ca_pem,
            server: leaf(&issuer, "localhost", ExtendedKeyUsagePurpose::ServerAuth),
            client: leaf(&issuer, "worker", ExtendedKeyUsagePurpose::ClientAuth),
            rogue_client: leaf(&rogue, "worker", ExtendedKeyUsagePurpose::ClientAuth),
        }
    }

    /// Serves the fake [`RefusingServer`] with tonic's own TLS (not
    /// `hodei_core::testing::TestServer`: the tests count the RPCs it sees).
    async fn serve_mtls(pki: &Pki, svc: RefusingServer) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&pki.server.0, &pki.server.1))
            .client_ca_root(Certificate::from_pem(&pki.ca_pem));
        let router = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(WorkerAgentServiceServer::new(svc));
        tokio::spawn(async move {
            router
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        port
    }

    fn write(dir: &std::path::Path, pki: &Pki, client: &(String, String)) -> CertificatePaths {
        let paths = CertificatePaths {
            client_cert_path: dir.join("client.crt"),
            client_key_path: dir.join("client.key"),
            ca_cert_path: dir.join("ca.crt"),
        };
        std::fs::write(&paths.client_cert_path, &client.0).unwrap();
        std::fs::write(&paths.client_key_path, &client.1).unwrap();
        std::fs::write(&paths.ca_cert_path, &pki.ca_pem).unwrap();
        paths
    }

    fn config(port: u16, paths: CertificatePaths) -> AgentConfig {
        let mut c = AgentConfig::new(
            ServerAddresses::new([format!("https://localhost:{port}")]).unwrap(),
            "otp",
        );
        c.tls = Some(paths);
        c.backoff = BackoffConfig::new(Duration::from_millis(50), Duration::from_millis(200));
        c
    }

    #[tokio::test]
    async fn registers_over_mutual_tls() {
        let pki = pki();
        let svc = RefusingServer::default();
        let port = serve_mtls(&pki, svc.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let client = WorkerClient::builder(config(port, write(dir.path(), &pki, &pki.client)))
            .build()
            .unwrap();
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            client.run(CancellationToken::new()),
        )
        .await
        .expect("run did not return");
        // The handshake worked: the RPC reached the server and its answer came back.
        assert!(matches!(res, Err(AgentError::InvalidOtp(_))), "{res:?}");
        assert_eq!(svc.0.load(Ordering::SeqCst), 1);
    }

    /// The server's certificate names `localhost` only. Given `https://127.0.0.1:…` first and
    /// `https://localhost:…` second (the same server), the agent fails to verify the first,
    /// moves on, and verifies the second against its own host: the name to verify follows
    /// the address dialled. With `tls_domain` set, that name is verified on every address.
    #[tokio::test]
    async fn the_verified_server_name_follows_the_address_dialled() {
        let pki = pki();
        let svc = RefusingServer::default();
        let port = serve_mtls(&pki, svc.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let paths = write(dir.path(), &pki, &pki.client);
        let servers = ServerAddresses::new([
            format!("https://127.0.0.1:{port}"),
            format!("https://localhost:{port}"),
        ])
        .unwrap();

        let mut c = config(port, paths.clone());
        c.servers = servers.clone();
        let client = WorkerClient::builder(c).build().unwrap();
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            client.run(CancellationToken::new()),
        )
        .await
        .expect("run did not return");
        assert!(matches!(res, Err(AgentError::InvalidOtp(_))), "{res:?}");
        assert_eq!(svc.0.load(Ordering::SeqCst), 1);

        // Only the first address, verified as 127.0.0.1: never gets through.
        let mut c = config(port, paths.clone());
        c.servers = ServerAddresses::new([format!("https://127.0.0.1:{port}")]).unwrap();
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(
            WorkerClient::builder(c)
                .build()
                .unwrap()
                .run(shutdown.clone()),
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!agent.is_finished());
        assert_eq!(svc.0.load(Ordering::SeqCst), 1, "no RPC got through");
        shutdown.cancel();
        let res = tokio::time::timeout(Duration::from_secs(10), agent)
            .await
            .unwrap()
            .unwrap();
        assert!(res.is_ok(), "{res:?}");

        // HODEI_TLS_DOMAIN=localhost: the first address verifies too.
        let mut c = config(port, paths);
        c.servers = ServerAddresses::new([format!("https://127.0.0.1:{port}")]).unwrap();
        c.tls_domain = Some("localhost".into());
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            WorkerClient::builder(c)
                .build()
                .unwrap()
                .run(CancellationToken::new()),
        )
        .await
        .expect("run did not return");
        assert!(matches!(res, Err(AgentError::InvalidOtp(_))), "{res:?}");
        assert_eq!(svc.0.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_client_certificate_from_another_ca_is_rejected() {
        let pki = pki();
        let svc = RefusingServer::default();
        let port = serve_mtls(&pki, svc.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let client =
            WorkerClient::builder(config(port, write(dir.path(), &pki, &pki.rogue_client)))
                .build()
                .unwrap();
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(client.run(shutdown.clone()));
        // The agent keeps retrying (a handshake failure looks like an unreachable server);
        // the server never sees an RPC.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!agent.is_finished());
        assert_eq!(svc.0.load(Ordering::SeqCst), 0);
        shutdown.cancel();
        let res = tokio::time::timeout(Duration::from_secs(10), agent)
            .await
            .unwrap()
            .unwrap();
        assert!(res.is_ok(), "{res:?}");
    }

    /// The real control plane over mTLS (hodei-core's `ServerTls`) and a real
    /// agent: the agent's heartbeats carry its certificate's days to expiry and
    /// the server exports them per worker.
    #[tokio::test]
    async fn heartbeats_report_the_client_certificate_days_to_expiry_to_the_server() {
        use hodei_core::cert_expiry;
        use hodei_core::control::{ControlPlane, ControlPlaneConfig};
        use hodei_core::{ProviderId, Worker, WorkerHandle, WorkerId};

        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let (crt, key, ca) = (
            dir.path().join("server.crt"),
            dir.path().join("server.key"),
            dir.path().join("ca.crt"),
        );
        std::fs::write(&crt, &pki.server.0).unwrap();
        std::fs::write(&key, &pki.server.1).unwrap();
        std::fs::write(&ca, &pki.ca_pem).unwrap();
        let tls = hodei_core::tls::ServerTls::load(
            hodei_core::tls::ServerTlsSettings::new(&crt, &key).with_client_ca(&ca),
        )
        .unwrap();
        let mut cp_config = ControlPlaneConfig::default();
        cp_config.heartbeat_interval = Duration::from_millis(100);
        let cp = ControlPlane::builder().config(cp_config).build();
        let server = hodei_core::testing::TestServer::spawn_with(
            cp.clone(),
            hodei_core::server::ServerOptions::new().with_tls(tls),
        )
        .await
        .unwrap();
        let addr = server.grpc_addr();

        // A worker the control plane expects, with its one-time token.
        let id = WorkerId::new();
        let provider = ProviderId::new();
        let mut worker = Worker::new(id, provider);
        worker
            .created(WorkerHandle::new(id, provider, "tls-worker"))
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

        let agent_dir = tempfile::tempdir().unwrap();
        let mut c = config(addr.port(), write(agent_dir.path(), &pki, &pki.client));
        c.otp = otp;
        c.worker_id = id;
        let client = WorkerClient::builder(c).build().unwrap();
        let expected = client.certificates().unwrap().days_to_expiry();
        assert!(expected > 300, "rcgen's default validity: {expected}");
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(client.run(shutdown.clone()));

        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(days) = cert_expiry::recorded_workers().get(&id.to_string()) {
                assert_eq!(*days, expected);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no heartbeat with the certificate's days to expiry"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut metrics = String::new();
        cert_expiry::write_prometheus(&mut metrics);
        assert!(
            metrics.contains(&format!(
                "hodei_tls_certificate_days_to_expiry{{certificate=\"worker\",worker_id=\"{id}\"}} {expected}"
            )),
            "{metrics}"
        );
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    }
}
