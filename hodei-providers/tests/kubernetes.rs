//! The Kubernetes provider against kube's mock service (tower-test): no
//! cluster can run on these machines, so a task plays the API server.
//!
//! - Scripted tests assert the exact requests (method, path, query, body) of
//!   each trait method and answer with responses shaped like the Kubernetes
//!   API reference's (201 Created, 404 NotFound and 409 AlreadyExists
//!   `Status` objects, 429 TooManyRequests, watch event lines).
//! - A small stateful fake API server (pods, secrets, a kubelet that starts
//!   pods, watch streams) runs the provider conformance kit.
//! - The Pod and Secret the provider builds, and every manifest in
//!   `deploy/kubernetes`, are validated offline against the Kubernetes 1.37
//!   schemas with `kubernetes-validate` (PyPI). Without it the test prints a
//!   loud SKIP, unless `CI=true`, where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hodei_core::provider::*;
use hodei_core::testing::require;
use hodei_core::*;
use hodei_providers::kubernetes::{
    DEFAULT_STARTUP, KubernetesProvider, KubernetesProviderConfig, LABEL_MANAGED,
    LABEL_PROVIDER_ID, LABEL_WORKER_ID, RetryConfig, Toleration, build_pod, build_secret, pod_name,
    secret_name,
};
use http::{Request, Response};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower_test::mock::SendResponse;

const NS: &str = "hodei-workers";

// ---------------------------------------------------------------------------
// The scripted API server
// ---------------------------------------------------------------------------

/// One request the provider made, waiting for the test's answer.
struct Call {
    method: String,
    uri: String,
    content_type: Option<String>,
    body: Value,
    send: SendResponse<Response<Body>>,
}

impl Call {
    fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    fn query(&self) -> HashMap<String, String> {
        self.uri
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or_default()
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_owned(), decode(v))
            })
            .collect()
    }

    fn respond(self, status: u16, body: Value) {
        self.send.send_response(json_response(status, &body));
    }

    fn respond_text(self, status: u16, text: &str) {
        let r = Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Body::from(text.as_bytes().to_vec()))
            .unwrap();
        self.send.send_response(r);
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

/// A `Status` as the API server sends it with an error.
fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn not_found(kind: &str, name: &str) -> Value {
    status(404, "NotFound", &format!("{kind} \"{name}\" not found"))
}

/// Whether a request is the provider's pod watcher (list or watch by provider label).
fn is_watcher(method: &str, uri: &str) -> bool {
    method == "GET"
        && uri.starts_with(&format!("/api/v1/namespaces/{NS}/pods?"))
        && decode(uri).contains(LABEL_PROVIDER_ID)
}

fn watch_body(events: &[Value]) -> Response<Body> {
    let mut text = String::new();
    for e in events {
        text.push_str(&serde_json::to_string(e).unwrap());
        text.push('\n');
    }
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(text.into_bytes()))
        .unwrap()
}

/// The test's side of the mock: calls to answer, and a way to push watch events.
struct MockApi {
    calls: mpsc::UnboundedReceiver<Call>,
    watch: mpsc::UnboundedSender<Value>,
}

impl MockApi {
    /// A kube client over tower-test's mock service, and the scripted server.
    /// The provider's watcher is answered here (empty list, then the pushed
    /// events); every other request goes to the test.
    fn start() -> (kube::Client, MockApi) {
        let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let (watch, mut watch_rx) = mpsc::unbounded_channel::<Value>();
        tokio::spawn(async move {
            let mut pending: Option<SendResponse<Response<Body>>> = None;
            let mut queued: Vec<Value> = Vec::new();
            loop {
                tokio::select! {
                    req = handle.next_request() => {
                        let Some((req, send)) = req else { break };
                        let method = req.method().to_string();
                        let uri = req.uri().to_string();
                        if is_watcher(&method, &uri) {
                            if uri.contains("watch=") {
                                if queued.is_empty() {
                                    pending = Some(send);
                                } else {
                                    send.send_response(watch_body(&std::mem::take(&mut queued)));
                                }
                            } else {
                                send.send_response(json_response(200, &json!({
                                    "kind": "PodList", "apiVersion": "v1",
                                    "metadata": {"resourceVersion": "1"}, "items": []
                                })));
                            }
                            continue;
                        }
                        let content_type = req
                            .headers()
                            .get("content-type")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let bytes = req.into_body().collect_bytes().await.unwrap();
                        let body = if bytes.is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_slice(&bytes).unwrap()
                        };
                        if calls_tx.send(Call { method, uri, content_type, body, send }).is_err() {
                            break;
                        }
                    }
                    ev = watch_rx.recv() => {
                        let Some(ev) = ev else { break };
                        match pending.take() {
                            Some(send) => send.send_response(watch_body(&[ev])),
                            None => queued.push(ev),
                        }
                    }
                }
            }
        });
        (kube::Client::new(svc, "default"), MockApi { calls, watch })
    }

    async fn next(&mut self) -> Call {
        tokio::time::timeout(Duration::from_secs(10), self.calls.recv())
            .await
            .expect("the provider made no further request within 10 s")
            .expect("mock closed")
    }

    /// The next request, which must be `method path`.
    async fn expect(&mut self, method: &str, path: &str) -> Call {
        let c = self.next().await;
        assert_eq!(
            (c.method.as_str(), c.path()),
            (method, path),
            "unexpected request {} {}",
            c.method,
            c.uri
        );
        c
    }

    /// Asserts the provider makes no request for `d`.
    async fn expect_silence(&mut self, d: Duration) {
        if let Ok(Some(c)) = tokio::time::timeout(d, self.calls.recv()).await {
            panic!("unexpected request {} {}", c.method, c.uri);
        }
    }

    fn push_watch(&self, type_: &str, pod: Value) {
        self.watch
            .send(json!({"type": type_, "object": pod}))
            .unwrap();
    }
}

fn test_config() -> KubernetesProviderConfig {
    let mut retry = RetryConfig::default();
    retry.base_delay = Duration::from_millis(20);
    retry.max_delay = Duration::from_millis(200);
    retry.max_retries = 3;
    KubernetesProviderConfig::default()
        .with_namespace(NS)
        .with_image("registry.example.com/hodei-worker:1.0")
        .with_retry(retry)
        .with_rate_limit(1000.0, 1000)
}

fn provider(config: KubernetesProviderConfig) -> (Arc<KubernetesProvider>, MockApi) {
    let (client, api) = MockApi::start();
    let p = KubernetesProvider::with_client(ProviderId::new(), config, client).unwrap();
    (Arc::new(p), api)
}

fn rfc3339(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second()).unwrap().to_string()
}

fn ago(secs: i64) -> String {
    rfc3339(Timestamp::from_second(Timestamp::now().as_second() - secs).unwrap())
}

/// A pod as the API returns it, with a phase and an agent container state.
fn pod_json(
    worker: WorkerId,
    provider: ProviderId,
    created: &str,
    phase: &str,
    container_state: Option<Value>,
) -> Value {
    let mut status = json!({"phase": phase});
    if let Some(state) = container_state {
        status["containerStatuses"] = json!([{
            "name": "agent", "image": "registry.example.com/hodei-worker:1.0",
            "imageID": "", "ready": state.get("running").is_some(), "restartCount": 0,
            "state": state
        }]);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name(worker), "namespace": NS,
            "uid": format!("uid-{worker}"), "resourceVersion": "7",
            "creationTimestamp": created,
            "labels": {
                LABEL_WORKER_ID: worker.to_string(),
                LABEL_PROVIDER_ID: provider.to_string(),
                LABEL_MANAGED: "true"
            }
        },
        "spec": {"containers": [{"name": "agent", "image": "registry.example.com/hodei-worker:1.0"}]},
        "status": status
    })
}

fn handle(p: &KubernetesProvider, worker: WorkerId) -> WorkerHandle {
    WorkerHandle::new(worker, p.id(), pod_name(worker))
}

fn spec_for(p: &KubernetesProvider) -> WorkerSpec {
    let mut s = WorkerSpec::new(
        WorkerId::new(),
        p.id(),
        "http://hodei-server.hodei.svc:50051",
        "otp-VERY-SECRET-123",
    );
    s.resources.cpu_cores = 0.5;
    s.resources.memory_mb = 256;
    s.resources.storage_mb = 1024;
    s
}

// ---------------------------------------------------------------------------
// create / status / destroy / logs / health / orphans / metrics, scripted
// ---------------------------------------------------------------------------

#[tokio::test]
async fn create_posts_the_secret_then_the_pod_then_makes_the_pod_own_the_secret() {
    let (p, mut api) = provider(test_config());
    let spec = spec_for(&p);
    let worker = spec.worker_id;
    let task = {
        let p = p.clone();
        let spec = spec.clone();
        tokio::spawn(async move { p.create_worker(&spec).await })
    };

    let c = api
        .expect("POST", &format!("/api/v1/namespaces/{NS}/secrets"))
        .await;
    assert_eq!(c.body["kind"], "Secret");
    assert_eq!(c.body["metadata"]["name"], secret_name(worker));
    assert_eq!(c.body["immutable"], true);
    // base64("otp-VERY-SECRET-123")
    assert_eq!(c.body["data"]["otp"], "b3RwLVZFUlktU0VDUkVULTEyMw==");
    assert_eq!(c.body["metadata"]["labels"][LABEL_MANAGED], "true");
    assert_eq!(
        c.body["metadata"]["labels"][LABEL_WORKER_ID],
        worker.to_string()
    );
    let mut created = c.body.clone();
    created["metadata"]["uid"] = json!("secret-uid");
    c.respond(201, created);

    let c = api
        .expect("POST", &format!("/api/v1/namespaces/{NS}/pods"))
        .await;
    let pod = c.body.clone();
    let text = serde_json::to_string(&pod).unwrap();
    assert!(
        !text.contains("otp-VERY-SECRET-123"),
        "the token must not be a literal in the pod: {text}"
    );
    assert_eq!(pod["metadata"]["name"], pod_name(worker));
    assert_eq!(
        pod["metadata"]["labels"][LABEL_PROVIDER_ID],
        p.id().to_string()
    );
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 40);
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    let ctr = &pod["spec"]["containers"][0];
    assert_eq!(ctr["image"], "registry.example.com/hodei-worker:1.0");
    assert_eq!(ctr["resources"]["limits"]["cpu"], "500m");
    assert_eq!(ctr["resources"]["requests"]["memory"], "256Mi");
    assert_eq!(ctr["resources"]["limits"]["ephemeral-storage"], "1024Mi");
    assert_eq!(ctr["securityContext"]["runAsNonRoot"], true);
    assert_eq!(ctr["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(ctr["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        ctr["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    let env = ctr["env"].as_array().unwrap();
    let otp = env.iter().find(|e| e["name"] == "HODEI_OTP").unwrap();
    assert_eq!(
        otp["valueFrom"]["secretKeyRef"],
        json!({"name": secret_name(worker), "key": "otp", "optional": false})
    );
    let server = env.iter().find(|e| e["name"] == "HODEI_SERVER").unwrap();
    assert_eq!(server["value"], "http://hodei-server.hodei.svc:50051");
    let mut created = pod.clone();
    created["metadata"]["uid"] = json!("pod-uid-1");
    created["metadata"]["creationTimestamp"] = json!(ago(0));
    created["status"] = json!({"phase": "Pending"});
    c.respond(201, created);

    let c = api
        .expect(
            "PATCH",
            &format!("/api/v1/namespaces/{NS}/secrets/{}", secret_name(worker)),
        )
        .await;
    assert_eq!(
        c.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        c.body,
        json!({"metadata": {"ownerReferences": [{
            "apiVersion": "v1", "kind": "Pod", "name": pod_name(worker),
            "uid": "pod-uid-1", "controller": true, "blockOwnerDeletion": false
        }]}})
    );
    c.respond(
        200,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name(worker)}}),
    );

    let h = task.await.unwrap().unwrap();
    assert_eq!(h.worker_id, worker);
    assert_eq!(h.provider_id, p.id());
    assert_eq!(h.external_id, pod_name(worker));
    assert_eq!(h.metadata["pod_uid"], "pod-uid-1");
    assert_eq!(p.live_workers(), 1);
}

#[tokio::test]
async fn create_409_adopts_our_own_pod_and_refuses_a_foreign_one() {
    let (p, mut api) = provider(test_config());
    // Ours: a retried create whose first answer was lost.
    let spec = spec_for(&p);
    let worker = spec.worker_id;
    let task = {
        let (p, spec) = (p.clone(), spec.clone());
        tokio::spawn(async move { p.create_worker(&spec).await })
    };
    let c = api
        .expect("POST", &format!("/api/v1/namespaces/{NS}/secrets"))
        .await;
    let b = c.body.clone();
    c.respond(201, b);
    let c = api
        .expect("POST", &format!("/api/v1/namespaces/{NS}/pods"))
        .await;
    c.respond(
        409,
        status(
            409,
            "AlreadyExists",
            &format!("pods \"{}\" already exists", pod_name(worker)),
        ),
    );
    let c = api
        .expect(
            "GET",
            &format!("/api/v1/namespaces/{NS}/pods/{}", pod_name(worker)),
        )
        .await;
    c.respond(200, pod_json(worker, p.id(), &ago(1), "Pending", None));
    let c = api
        .expect(
            "PATCH",
            &format!("/api/v1/namespaces/{NS}/secrets/{}", secret_name(worker)),
        )
        .await;
    assert_eq!(
        c.body["metadata"]["ownerReferences"][0]["uid"],
        format!("uid-{worker}")
    );
    c.respond(
        200,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}}),
    );
    assert_eq!(task.await.unwrap().unwrap().external_id, pod_name(worker));

    // Foreign: same name, another provider's labels → an error, and our secret is removed.
    let spec = spec_for(&p);
    let worker = spec.worker_id;
    let task = {
        let (p, spec) = (p.clone(), spec.clone());
        tokio::spawn(async move { p.create_worker(&spec).await })
    };
    // A leftover secret of the same name: deleted and created again.
    let c = api
        .expect("POST", &format!("/api/v1/namespaces/{NS}/secrets"))
        .await;
    c.respond(
        409,
        status(409, "AlreadyExists", "secrets \"x\" already exists"),
    );
    let c = api
        .expect(
            "DELETE",
            &format!("/api/v1/namespaces/{NS}/secrets/{}", secret_name(worker)),
        )
        .await;
    c.respond(200, status(200, "", ""));
    let c = api
        .expect("POST", &format!("/api/v1/namespaces/{NS}/secrets"))
        .await;
    let b = c.body.clone();
    c.respond(201, b);
    let c = api
        .expect("POST", &format!("/api/v1/namespaces/{NS}/pods"))
        .await;
    c.respond(409, status(409, "AlreadyExists", "pods already exists"));
    let c = api
        .expect(
            "GET",
            &format!("/api/v1/namespaces/{NS}/pods/{}", pod_name(worker)),
        )
        .await;
    c.respond(
        200,
        pod_json(worker, ProviderId::new(), &ago(1), "Running", None),
    );
    let c = api
        .expect(
            "DELETE",
            &format!("/api/v1/namespaces/{NS}/secrets/{}", secret_name(worker)),
        )
        .await;
    c.respond(
        200,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}}),
    );
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ProviderError::Internal(m) if m.contains("already exists")),
        "{err}"
    );
    assert_eq!(p.live_workers(), 1, "the failed create released its slot");
}

#[tokio::test]
async fn a_missing_namespace_is_a_configuration_error() {
    let (p, mut api) = provider(test_config());
    let spec = spec_for(&p);
    let task = {
        let (p, spec) = (p.clone(), spec.clone());
        tokio::spawn(async move { p.create_worker(&spec).await })
    };
    let c = api
        .expect("POST", &format!("/api/v1/namespaces/{NS}/secrets"))
        .await;
    c.respond(
        404,
        status(404, "NotFound", &format!("namespaces \"{NS}\" not found")),
    );
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ProviderError::InvalidConfig(m) if m.contains("namespace.yaml")),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn status_follows_pod_phase_and_container_state() {
    let (p, mut api) = provider(test_config());
    let worker = WorkerId::new();
    let h = handle(&p, worker);
    let path = format!("/api/v1/namespaces/{NS}/pods/{}", pod_name(worker));
    let cases = [
        (
            pod_json(
                worker,
                p.id(),
                &ago(2),
                "Pending",
                Some(json!({"waiting": {"reason": "ContainerCreating"}})),
            ),
            WorkerState::Creating,
        ),
        (
            pod_json(
                worker,
                p.id(),
                &ago(5),
                "Running",
                Some(json!({"running": {"startedAt": ago(1)}})),
            ),
            WorkerState::Ready,
        ),
        (
            pod_json(
                worker,
                p.id(),
                &ago(50),
                "Succeeded",
                Some(json!({"terminated": {"exitCode": 0, "reason": "Completed"}})),
            ),
            WorkerState::Terminated,
        ),
        (
            pod_json(
                worker,
                p.id(),
                &ago(50),
                "Failed",
                Some(json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})),
            ),
            WorkerState::Terminated,
        ),
    ];
    for (pod, want) in cases {
        let task = {
            let (p, h) = (p.clone(), h.clone());
            tokio::spawn(async move { p.get_worker_status(&h).await })
        };
        api.expect("GET", &path).await.respond(200, pod);
        assert_eq!(task.await.unwrap().unwrap(), want);
    }
    let mut terminating = pod_json(worker, p.id(), &ago(5), "Running", None);
    terminating["metadata"]["deletionTimestamp"] = json!(ago(0));
    let task = {
        let (p, h) = (p.clone(), h.clone());
        tokio::spawn(async move { p.get_worker_status(&h).await })
    };
    api.expect("GET", &path).await.respond(200, terminating);
    assert_eq!(task.await.unwrap().unwrap(), WorkerState::Terminating);

    let task = {
        let (p, h) = (p.clone(), h.clone());
        tokio::spawn(async move { p.get_worker_status(&h).await })
    };
    api.expect("GET", &path)
        .await
        .respond(404, not_found("pods", &pod_name(worker)));
    assert!(matches!(
        task.await.unwrap(),
        Err(ProviderError::WorkerNotFound(w)) if w == worker
    ));
}

#[tokio::test]
async fn image_pull_backoff_becomes_a_clear_error_after_the_grace() {
    let (p, mut api) = provider(test_config().with_failure_grace(Duration::from_secs(60)));
    let worker = WorkerId::new();
    let h = handle(&p, worker);
    let path = format!("/api/v1/namespaces/{NS}/pods/{}", pod_name(worker));
    let backoff = json!({"waiting": {
        "reason": "ImagePullBackOff",
        "message": "Back-off pulling image \"registry.example.com/hodei-worker:1.0\": ErrImagePull: pull access denied"
    }});
    // Within the grace: still creating (the kubelet keeps retrying).
    let task = {
        let (p, h) = (p.clone(), h.clone());
        tokio::spawn(async move { p.get_worker_status(&h).await })
    };
    api.expect("GET", &path).await.respond(
        200,
        pod_json(worker, p.id(), &ago(10), "Pending", Some(backoff.clone())),
    );
    assert_eq!(task.await.unwrap().unwrap(), WorkerState::Creating);
    // Past it: an error naming the image, the reason and what to do.
    let task = {
        let (p, h) = (p.clone(), h.clone());
        tokio::spawn(async move { p.get_worker_status(&h).await })
    };
    api.expect("GET", &path).await.respond(
        200,
        pod_json(worker, p.id(), &ago(600), "Pending", Some(backoff)),
    );
    match task.await.unwrap() {
        Err(ProviderError::ImageNotFound { image, hint }) => {
            assert_eq!(image, "registry.example.com/hodei-worker:1.0");
            assert!(hint.contains("ImagePullBackOff"), "{hint}");
            assert!(hint.contains("pull access denied"), "{hint}");
            assert!(hint.contains("kind load"), "{hint}");
        }
        other => panic!("expected ImageNotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unschedulable_pod_becomes_resource_exhausted_after_the_grace() {
    let (p, mut api) = provider(test_config().with_failure_grace(Duration::from_secs(60)));
    let worker = WorkerId::new();
    let h = handle(&p, worker);
    let mut pod = pod_json(worker, p.id(), &ago(300), "Pending", None);
    pod["status"]["conditions"] = json!([{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "lastTransitionTime": ago(299),
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    }]);
    let task = {
        let (p, h) = (p.clone(), h.clone());
        tokio::spawn(async move { p.get_worker_status(&h).await })
    };
    api.expect(
        "GET",
        &format!("/api/v1/namespaces/{NS}/pods/{}", pod_name(worker)),
    )
    .await
    .respond(200, pod);
    match task.await.unwrap() {
        Err(ProviderError::ResourceExhausted(m)) => {
            assert!(
                m.contains("unschedulable") && m.contains("Insufficient nvidia.com/gpu"),
                "{m}"
            );
        }
        other => panic!("expected ResourceExhausted, got {other:?}"),
    }
}

#[tokio::test]
async fn destroy_deletes_with_grace_and_404_is_success() {
    let (p, mut api) = provider(test_config());
    let worker = WorkerId::new();
    let h = handle(&p, worker);
    for pod_answer in [200u16, 404] {
        let task = {
            let (p, h) = (p.clone(), h.clone());
            tokio::spawn(async move { p.destroy_worker(&h).await })
        };
        let c = api
            .expect(
                "DELETE",
                &format!("/api/v1/namespaces/{NS}/pods/{}", pod_name(worker)),
            )
            .await;
        assert_eq!(
            c.body,
            json!({"gracePeriodSeconds": 40, "propagationPolicy": "Background"})
        );
        if pod_answer == 200 {
            let mut pod = pod_json(worker, p.id(), &ago(30), "Running", None);
            pod["metadata"]["deletionTimestamp"] = json!(ago(0));
            c.respond(200, pod);
        } else {
            c.respond(404, not_found("pods", &pod_name(worker)));
        }
        let c = api
            .expect(
                "DELETE",
                &format!("/api/v1/namespaces/{NS}/secrets/{}", secret_name(worker)),
            )
            .await;
        c.respond(404, not_found("secrets", &secret_name(worker)));
        task.await.unwrap().expect("destroy is idempotent");
    }
}

#[tokio::test]
async fn a_429_then_a_503_are_retried_with_backoff_and_never_hot_looped() {
    let (p, mut api) = provider(test_config());
    let worker = WorkerId::new();
    let h = handle(&p, worker);
    let path = format!("/api/v1/namespaces/{NS}/pods/{}", pod_name(worker));
    let task = {
        let (p, h) = (p.clone(), h.clone());
        tokio::spawn(async move { p.get_worker_status(&h).await })
    };
    let mut too_many = status(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.",
    );
    too_many["details"] = json!({"retryAfterSeconds": 0});
    let t0 = Instant::now();
    api.expect("GET", &path)
        .await
        .respond(429, too_many.clone());
    let c = api.expect("GET", &path).await;
    let first_gap = t0.elapsed();
    c.respond(
        503,
        status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
    );
    api.expect("GET", &path).await.respond(
        200,
        pod_json(
            worker,
            p.id(),
            &ago(3),
            "Running",
            Some(json!({"running": {"startedAt": ago(1)}})),
        ),
    );
    assert_eq!(task.await.unwrap().unwrap(), WorkerState::Ready);
    assert!(
        first_gap >= Duration::from_millis(20),
        "the retry came after {first_gap:?}, before the 20 ms backoff"
    );

    // A server that keeps answering 429: max_retries (3) retries, then a clear error.
    let task = {
        let (p, h) = (p.clone(), h.clone());
        tokio::spawn(async move { p.get_worker_status(&h).await })
    };
    let t0 = Instant::now();
    for _ in 0..4 {
        api.expect("GET", &path)
            .await
            .respond(429, too_many.clone());
    }
    let err = task.await.unwrap().unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(&err, ProviderError::ResourceExhausted(m) if m.contains("429")),
        "{err}"
    );
    // 20 + 40 + 80 ms of backoff at least.
    assert!(took >= Duration::from_millis(140), "gave up after {took:?}");
    api.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn logs_ask_the_agent_container_with_a_tail() {
    let (p, mut api) = provider(test_config());
    let worker = WorkerId::new();
    let h = handle(&p, worker);
    let task = {
        let (p, h) = (p.clone(), h.clone());
        tokio::spawn(async move { p.worker_logs(&h, Some(2)).await })
    };
    let c = api
        .expect(
            "GET",
            &format!("/api/v1/namespaces/{NS}/pods/{}/log", pod_name(worker)),
        )
        .await;
    let q = c.query();
    assert_eq!(q.get("container").map(String::as_str), Some("agent"));
    assert_eq!(q.get("tailLines").map(String::as_str), Some("2"));
    c.respond_text(200, "registered as worker\nwaiting for jobs\n");
    assert_eq!(
        task.await.unwrap().unwrap(),
        vec!["registered as worker", "waiting for jobs"]
    );

    // Not started yet: the API answers 400; that is "no logs yet".
    let task = {
        let (p, h) = (p.clone(), h.clone());
        tokio::spawn(async move { p.worker_logs(&h, None).await })
    };
    let c = api
        .expect(
            "GET",
            &format!("/api/v1/namespaces/{NS}/pods/{}/log", pod_name(worker)),
        )
        .await;
    assert!(!c.query().contains_key("tailLines"));
    c.respond(
        400,
        status(
            400,
            "BadRequest",
            &format!(
                "container \"agent\" in pod \"{}\" is waiting to start: ContainerCreating",
                pod_name(worker)
            ),
        ),
    );
    assert!(task.await.unwrap().unwrap().is_empty());

    let task = {
        let (p, h) = (p.clone(), h.clone());
        tokio::spawn(async move { p.worker_logs(&h, None).await })
    };
    api.expect(
        "GET",
        &format!("/api/v1/namespaces/{NS}/pods/{}/log", pod_name(worker)),
    )
    .await
    .respond(404, not_found("pods", &pod_name(worker)));
    assert!(matches!(
        task.await.unwrap(),
        Err(ProviderError::WorkerNotFound(_))
    ));
}

fn version_json() -> Value {
    json!({
        "major": "1", "minor": "37", "gitVersion": "v1.37.0", "gitCommit": "abc",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25", "compiler": "gc", "platform": "linux/amd64"
    })
}

#[tokio::test]
async fn health_checks_the_api_and_every_permission_in_the_namespace() {
    for denied in [None, Some(("create", "secrets"))] {
        let (p, mut api) = provider(test_config());
        let task = {
            let p = p.clone();
            tokio::spawn(async move { p.health_check().await })
        };
        api.expect("GET", "/version")
            .await
            .respond(200, version_json());
        let mut asked = HashSet::new();
        for _ in 0..9 {
            let c = api
                .expect(
                    "POST",
                    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                )
                .await;
            let attrs = c.body["spec"]["resourceAttributes"].clone();
            assert_eq!(attrs["namespace"], NS);
            let verb = attrs["verb"].as_str().unwrap().to_owned();
            let resource = attrs["resource"].as_str().unwrap().to_owned();
            let sub = attrs["subresource"].as_str().unwrap_or("").to_owned();
            let allowed = denied != Some((verb.as_str(), resource.as_str()));
            asked.insert(format!(
                "{verb} {resource}{}",
                if sub.is_empty() {
                    String::new()
                } else {
                    format!("/{sub}")
                }
            ));
            let mut answer = c.body.clone();
            answer["status"] = json!({"allowed": allowed});
            c.respond(201, answer);
        }
        for need in [
            "create pods",
            "delete pods",
            "watch pods",
            "get pods/log",
            "create secrets",
            "patch secrets",
        ] {
            assert!(asked.contains(need), "{need} not checked: {asked:?}");
        }
        let h = task.await.unwrap().unwrap();
        match denied {
            None => {
                assert!(h.healthy, "{h:?}");
                assert!(h.message.contains("v1.37.0"), "{h:?}");
            }
            Some(_) => {
                assert!(!h.healthy, "{h:?}");
                assert!(
                    h.message.contains("create secrets") && h.message.contains("rbac.yaml"),
                    "{h:?}"
                );
            }
        }
    }
    // An unreachable API server (500s until the retries are spent) is unhealthy, not an error.
    let (p, mut api) = provider(test_config());
    let task = {
        let p = p.clone();
        tokio::spawn(async move { p.health_check().await })
    };
    for _ in 0..4 {
        api.expect("GET", "/version").await.respond(
            500,
            status(500, "InternalError", "etcdserver: request timed out"),
        );
    }
    let h = task.await.unwrap().unwrap();
    assert!(!h.healthy && h.message.contains("etcdserver"), "{h:?}");
}

#[tokio::test]
async fn orphans_are_deleted_after_the_grace_and_known_workers_kept() {
    let (p, mut api) = provider(test_config().with_orphan_grace(Duration::from_secs(120)));
    let known = WorkerId::new();
    let orphan = WorkerId::new();
    let young = WorkerId::new();
    let other_server = ProviderId::new();
    let task = {
        let p = p.clone();
        tokio::spawn(async move { p.cleanup_orphans(&HashSet::from([known])).await })
    };
    let c = api
        .expect("GET", &format!("/api/v1/namespaces/{NS}/pods"))
        .await;
    assert_eq!(
        c.query().get("labelSelector").map(String::as_str),
        Some("hodei.managed=true")
    );
    c.respond(
        200,
        json!({
            "apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "10"},
            "items": [
                pod_json(known, p.id(), &ago(3600), "Running", None),
                pod_json(orphan, other_server, &ago(3600), "Running", None),
                pod_json(young, p.id(), &ago(5), "Pending", None),
            ]
        }),
    );
    let c = api
        .expect(
            "DELETE",
            &format!("/api/v1/namespaces/{NS}/pods/{}", pod_name(orphan)),
        )
        .await;
    c.respond(404, not_found("pods", &pod_name(orphan)));
    let c = api
        .expect("GET", &format!("/api/v1/namespaces/{NS}/secrets"))
        .await;
    c.respond(
        200,
        json!({
            "apiVersion": "v1", "kind": "SecretList", "metadata": {"resourceVersion": "10"},
            "items": [{
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": secret_name(orphan), "namespace": NS,
                    "creationTimestamp": ago(3600),
                    "labels": {LABEL_WORKER_ID: orphan.to_string(), LABEL_MANAGED: "true"}}
            }, {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": secret_name(known), "namespace": NS,
                    "creationTimestamp": ago(3600),
                    "labels": {LABEL_WORKER_ID: known.to_string(), LABEL_MANAGED: "true"}}
            }]
        }),
    );
    api.expect(
        "DELETE",
        &format!("/api/v1/namespaces/{NS}/secrets/{}", secret_name(orphan)),
    )
    .await
    .respond(
        200,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}}),
    );
    let removed = task.await.unwrap().unwrap();
    assert_eq!(removed, vec![pod_name(orphan), secret_name(orphan)]);
}

#[tokio::test]
async fn metrics_come_from_the_metrics_api_or_say_it_is_missing() {
    let (p, mut api) = provider(test_config());
    let worker = WorkerId::new();
    let h = handle(&p, worker);
    let path = format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{NS}/pods/{}",
        pod_name(worker)
    );
    let task = {
        let (p, h) = (p.clone(), h.clone());
        tokio::spawn(async move { p.worker_metrics(&h).await })
    };
    api.expect("GET", &path).await.respond(
        200,
        json!({
            "kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {"name": pod_name(worker), "namespace": NS},
            "timestamp": ago(1), "window": "15s",
            "containers": [{"name": "agent", "usage": {"cpu": "250000000n", "memory": "20480Ki"}}]
        }),
    );
    let u = task.await.unwrap().unwrap();
    assert!((u.cpu_percent - 25.0).abs() < 1e-6, "{u:?}");
    assert_eq!(u.memory_bytes, 20 * 1024 * 1024);

    let task = {
        let (p, h) = (p.clone(), h.clone());
        tokio::spawn(async move { p.worker_metrics(&h).await })
    };
    api.expect("GET", &path).await.respond(
        404,
        status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    );
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, ProviderError::Unavailable(m) if m.contains("metrics-server")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// The watcher
// ---------------------------------------------------------------------------

async fn next_event(events: &mut futures::stream::BoxStream<'static, WorkerEvent>) -> WorkerEvent {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("no worker event within 10 s")
        .expect("event stream ended")
}

#[tokio::test]
async fn the_watch_reports_a_pod_deleted_mid_job_at_once() {
    let (p, api) = provider(test_config());
    let mut events = p.events();
    let worker = WorkerId::new();
    assert_eq!(p.startup_estimate(), DEFAULT_STARTUP);

    api.push_watch("ADDED", pod_json(worker, p.id(), &ago(0), "Pending", None));
    assert_eq!(
        next_event(&mut events).await,
        WorkerEvent::Created { worker_id: worker }
    );
    api.push_watch(
        "MODIFIED",
        pod_json(
            worker,
            p.id(),
            &ago(0),
            "Running",
            Some(json!({"running": {"startedAt": ago(0)}})),
        ),
    );
    assert_eq!(
        next_event(&mut events).await,
        WorkerEvent::Started { worker_id: worker }
    );
    // Someone runs `kubectl delete pod` (or a node drain) while the job runs.
    let mut deleting = pod_json(
        worker,
        p.id(),
        &ago(0),
        "Running",
        Some(json!({"running": {"startedAt": ago(0)}})),
    );
    deleting["metadata"]["deletionTimestamp"] = json!(ago(0));
    deleting["metadata"]["deletionGracePeriodSeconds"] = json!(30);
    api.push_watch("MODIFIED", deleting);
    match next_event(&mut events).await {
        WorkerEvent::Exited {
            worker_id, reason, ..
        } => {
            assert_eq!(worker_id, worker);
            assert!(reason.contains("deleted outside hodei"), "{reason}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    let mut gone = pod_json(
        worker,
        p.id(),
        &ago(0),
        "Failed",
        Some(json!({"terminated": {"exitCode": 143, "reason": "Error"}})),
    );
    gone["metadata"]["deletionTimestamp"] = json!(ago(0));
    api.push_watch("DELETED", gone);
    assert_eq!(
        next_event(&mut events).await,
        WorkerEvent::Destroyed { worker_id: worker }
    );
}

/// A pod that will not start is an `Exited` event with the typed reason once
/// it has been stuck for the failure grace: at once when it already has, and
/// when the grace runs out for one that sees no further change. A pod that
/// recovers within the grace is not reported. (Provisioning ends on the event.)
#[tokio::test]
async fn a_stuck_pod_is_an_exited_event_once_the_grace_has_passed() {
    let grace = Duration::from_secs(2);
    let (p, api) = provider(test_config().with_failure_grace(grace));
    let mut events = p.events();
    let backoff = json!({"waiting": {
        "reason": "ImagePullBackOff",
        "message": "Back-off pulling image: pull access denied"
    }});
    let exited = |e: WorkerEvent, want: WorkerId| match e {
        WorkerEvent::Exited {
            worker_id, reason, ..
        } if worker_id == want => reason,
        other => panic!("expected Exited of {want}, got {other:?}"),
    };

    // Stuck for ten minutes already (e.g. seen after a restart): reported at once.
    let old = WorkerId::new();
    api.push_watch(
        "ADDED",
        pod_json(old, p.id(), &ago(600), "Pending", Some(backoff.clone())),
    );
    assert_eq!(
        next_event(&mut events).await,
        WorkerEvent::Created { worker_id: old }
    );
    let reason = exited(next_event(&mut events).await, old);
    assert!(
        reason.contains("ImagePullBackOff") && reason.contains("pull access denied"),
        "{reason}"
    );

    // Unschedulable and young, then nothing changes: reported when the grace ends.
    let young = WorkerId::new();
    let mut pod = pod_json(young, p.id(), &ago(0), "Pending", None);
    pod["status"]["conditions"] = json!([{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "lastTransitionTime": ago(0),
        "message": "0/3 nodes are available: 3 Insufficient memory."
    }]);
    let seen = Instant::now();
    api.push_watch("ADDED", pod);
    assert_eq!(
        next_event(&mut events).await,
        WorkerEvent::Created { worker_id: young }
    );
    let reason = exited(next_event(&mut events).await, young);
    assert!(
        seen.elapsed() >= grace - Duration::from_millis(1100),
        "reported before the grace: {:?}",
        seen.elapsed()
    );
    assert!(
        reason.contains("unschedulable") && reason.contains("Insufficient memory"),
        "{reason}"
    );

    // Stuck for a moment, then the image is pulled: no Exited.
    let recovers = WorkerId::new();
    api.push_watch(
        "ADDED",
        pod_json(recovers, p.id(), &ago(0), "Pending", Some(backoff)),
    );
    api.push_watch(
        "MODIFIED",
        pod_json(
            recovers,
            p.id(),
            &ago(0),
            "Running",
            Some(json!({"running": {"startedAt": ago(0)}})),
        ),
    );
    assert_eq!(
        next_event(&mut events).await,
        WorkerEvent::Created {
            worker_id: recovers
        }
    );
    assert_eq!(
        next_event(&mut events).await,
        WorkerEvent::Started {
            worker_id: recovers
        }
    );
    let later = tokio::time::timeout(grace + Duration::from_secs(1), events.next()).await;
    assert!(later.is_err(), "a recovered pod was reported: {later:?}");
}

#[tokio::test]
async fn a_pod_deleted_during_a_watch_desync_is_noticed_at_the_relist() {
    let (p, api) = provider(test_config());
    let mut events = p.events();
    let worker = WorkerId::new();
    api.push_watch("ADDED", pod_json(worker, p.id(), &ago(0), "Pending", None));
    assert_eq!(
        next_event(&mut events).await,
        WorkerEvent::Created { worker_id: worker }
    );
    // The watch expires (410 Gone) and the pod is deleted before the re-list,
    // so no DELETED event ever comes: the re-list (empty) must reveal it.
    api.push_watch(
        "ERROR",
        status(410, "Expired", "too old resource version: 7 (4242)"),
    );
    match next_event(&mut events).await {
        WorkerEvent::Exited {
            worker_id, reason, ..
        } => {
            assert_eq!(worker_id, worker);
            assert!(reason.contains("deleted outside hodei"), "{reason}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert_eq!(
        next_event(&mut events).await,
        WorkerEvent::Destroyed { worker_id: worker }
    );
}

#[tokio::test]
async fn the_watch_reports_evictions_and_measures_startup() {
    let (p, mut api) = provider(test_config());
    let mut events = p.events();
    // Create through the provider so the start-up time is measured.
    let spec = spec_for(&p);
    let worker = spec.worker_id;
    let task = {
        let (p, spec) = (p.clone(), spec.clone());
        tokio::spawn(async move { p.create_worker(&spec).await })
    };
    let c = api
        .expect("POST", &format!("/api/v1/namespaces/{NS}/secrets"))
        .await;
    let b = c.body.clone();
    c.respond(201, b);
    let c = api
        .expect("POST", &format!("/api/v1/namespaces/{NS}/pods"))
        .await;
    c.respond(201, pod_json(worker, p.id(), &ago(0), "Pending", None));
    api.expect(
        "PATCH",
        &format!("/api/v1/namespaces/{NS}/secrets/{}", secret_name(worker)),
    )
    .await
    .respond(
        200,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}}),
    );
    task.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    api.push_watch(
        "MODIFIED",
        pod_json(
            worker,
            p.id(),
            &ago(0),
            "Running",
            Some(json!({"running": {"startedAt": ago(0)}})),
        ),
    );
    assert_eq!(
        next_event(&mut events).await,
        WorkerEvent::Created { worker_id: worker }
    );
    assert_eq!(
        next_event(&mut events).await,
        WorkerEvent::Started { worker_id: worker }
    );
    let startup = p.startup_estimate();
    assert!(
        startup >= Duration::from_millis(50) && startup < DEFAULT_STARTUP,
        "measured start-up {startup:?}"
    );

    let mut evicted = pod_json(
        worker,
        p.id(),
        &ago(0),
        "Failed",
        Some(json!({"terminated": {"exitCode": 137, "reason": "Error"}})),
    );
    evicted["status"]["reason"] = json!("Evicted");
    evicted["status"]["message"] = json!("The node was low on resource: ephemeral-storage.");
    api.push_watch("MODIFIED", evicted);
    match next_event(&mut events).await {
        WorkerEvent::Exited {
            worker_id,
            exit_code,
            reason,
        } => {
            assert_eq!(worker_id, worker);
            assert_eq!(exit_code, Some(137));
            assert!(
                reason.contains("evicted") && reason.contains("ephemeral-storage"),
                "{reason}"
            );
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    assert_eq!(p.live_workers(), 0, "an ended pod frees its slot");
}

// ---------------------------------------------------------------------------
// The conformance kit against a small stateful fake API server
// ---------------------------------------------------------------------------

#[derive(Default)]
struct FakeCluster {
    pods: BTreeMap<String, Value>,
    secrets: BTreeMap<String, Value>,
    rv: u64,
    /// Every pod watch event, with its resource version.
    log: Vec<(u64, Value)>,
    /// Held watch requests: (from resource version, responder).
    watchers: Vec<(u64, SendResponse<Response<Body>>)>,
    started: HashMap<String, Instant>,
    /// When set, the kubelet runs this agent binary as the pod's container.
    agent: Option<PathBuf>,
    /// Running containers: pod name → (process, its log file, its `/tmp`).
    procs: HashMap<String, (std::process::Child, PathBuf, tempfile::TempDir)>,
    /// Containers of deleted pods, stopping (SIGTERM sent).
    stopping: Vec<std::process::Child>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        for (_, (mut c, _, _)) in self.procs.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for mut c in self.stopping.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl FakeCluster {
    /// The container's environment as the kubelet resolves it: literals, and
    /// `secretKeyRef`s read from the Secrets (`Err` names a missing one).
    /// `/tmp` is the pod's emptyDir, here a temporary directory.
    fn resolve_env(
        &self,
        pod: &Value,
        tmp: &std::path::Path,
    ) -> Result<Vec<(String, String)>, String> {
        use base64::Engine;
        let mut out = Vec::new();
        for e in pod["spec"]["containers"][0]["env"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = if let Some(v) = e["value"].as_str() {
                match v.strip_prefix("/tmp") {
                    Some(rest) => format!("{}{rest}", tmp.display()),
                    None => v.to_owned(),
                }
            } else {
                let r = &e["valueFrom"]["secretKeyRef"];
                let sname = r["name"].as_str().unwrap();
                let key = r["key"].as_str().unwrap();
                let data = self
                    .secrets
                    .get(sname)
                    .and_then(|s| s["data"][key].as_str())
                    .ok_or_else(|| format!("secret \"{sname}\" not found"))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap();
                String::from_utf8(bytes).unwrap()
            };
            out.push((name, value));
        }
        Ok(out)
    }

    /// Starts the agent for a pod, or says why it cannot.
    fn run_container(&mut self, name: &str, pod: &Value) -> Result<(), String> {
        let Some(agent) = self.agent.clone() else {
            return Ok(());
        };
        let tmp = tempfile::tempdir().unwrap();
        let env = self.resolve_env(pod, tmp.path())?;
        let log = tmp.path().join("container.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(agent)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(env)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start the agent: {e}"))?;
        self.procs.insert(name.to_owned(), (child, log, tmp));
        Ok(())
    }

    /// The kubelet noticing containers that exited on their own.
    fn reap(&mut self) {
        let exited: Vec<(String, i32)> = self
            .procs
            .iter_mut()
            .filter_map(|(n, (c, _, _))| {
                c.try_wait()
                    .ok()
                    .flatten()
                    .map(|st| (n.clone(), st.code().unwrap_or(137)))
            })
            .collect();
        for (name, code) in exited {
            let Some(mut pod) = self.pods.get(&name).cloned() else {
                continue;
            };
            pod["status"]["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
            pod["status"]["containerStatuses"][0]["ready"] = json!(false);
            pod["status"]["containerStatuses"][0]["state"] = json!({"terminated": {
                "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": ago(1), "finishedAt": ago(0)}});
            self.bump(&mut pod);
            self.pods.insert(name, pod.clone());
            self.emit("MODIFIED", &pod);
        }
        self.stopping
            .retain_mut(|c| c.try_wait().ok().flatten().is_none());
    }

    fn bump(&mut self, obj: &mut Value) {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
    }

    fn emit(&mut self, type_: &str, pod: &Value) {
        self.log
            .push((self.rv, json!({"type": type_, "object": pod})));
        self.flush();
    }

    fn flush(&mut self) {
        let mut still = Vec::new();
        for (from, send) in self.watchers.drain(..) {
            let evs: Vec<Value> = self
                .log
                .iter()
                .filter(|(rv, _)| *rv > from)
                .map(|(_, e)| e.clone())
                .collect();
            if evs.is_empty() {
                still.push((from, send));
            } else {
                send.send_response(watch_body(&evs));
            }
        }
        self.watchers = still;
    }

    /// The kubelet: pods pending for 100 ms start running.
    fn tick(&mut self) {
        let due: Vec<String> = self
            .started
            .iter()
            .filter(|(_, t)| t.elapsed() >= Duration::from_millis(100))
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.started.remove(&name);
            let Some(mut pod) = self.pods.get(&name).cloned() else {
                continue;
            };
            if let Err(why) = self.run_container(&name, &pod) {
                // As the kubelet does: the container waits, and is retried.
                pod["status"]["containerStatuses"][0]["state"] = json!({"waiting": {
                    "reason": "CreateContainerConfigError", "message": why}});
                self.started.insert(name, Instant::now());
                continue;
            }
            pod["status"] = json!({
                "phase": "Running", "podIP": "10.244.0.7", "startTime": ago(0),
                "containerStatuses": [{"name": "agent", "ready": true, "restartCount": 0,
                    "image": pod["spec"]["containers"][0]["image"], "imageID": "sha256:1",
                    "state": {"running": {"startedAt": ago(0)}}}]
            });
            self.bump(&mut pod);
            self.pods.insert(name, pod.clone());
            self.emit("MODIFIED", &pod);
        }
        self.reap();
    }

    /// Deletes a pod (its container gets SIGTERM, its owned Secret is
    /// garbage-collected, watchers see DELETED), as the API server and kubelet do.
    fn delete_pod(&mut self, name: &str) -> Option<Value> {
        let mut pod = self.pods.remove(name)?;
        self.started.remove(name);
        if let Some((child, _, _)) = self.procs.remove(name) {
            // The kubelet's SIGTERM; SIGKILL when the fake is dropped.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            self.stopping.push(child);
        }
        pod["metadata"]["deletionTimestamp"] = json!(ago(0));
        self.bump(&mut pod);
        let uid = pod["metadata"]["uid"].clone();
        self.secrets
            .retain(|_, s| s["metadata"]["ownerReferences"][0]["uid"] != uid);
        self.emit("DELETED", &pod);
        Some(pod)
    }

    fn handle(&mut self, method: &str, uri: &str, body: Value, send: SendResponse<Response<Body>>) {
        let path = uri.split('?').next().unwrap_or_default().to_owned();
        let pods = format!("/api/v1/namespaces/{NS}/pods");
        let secrets = format!("/api/v1/namespaces/{NS}/secrets");
        let reply = |send: SendResponse<Response<Body>>, code: u16, v: Value| {
            send.send_response(json_response(code, &v));
        };
        match (method, path.as_str()) {
            ("GET", "/version") => reply(send, 200, version_json()),
            ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews") => {
                let mut b = body;
                b["status"] = json!({"allowed": true});
                reply(send, 201, b);
            }
            ("POST", p) if p == secrets => {
                let name = body["metadata"]["name"].as_str().unwrap().to_owned();
                if self.secrets.contains_key(&name) {
                    return reply(send, 409, status(409, "AlreadyExists", "exists"));
                }
                let mut s = body;
                s["metadata"]["uid"] = json!(format!("uid-{name}"));
                s["metadata"]["creationTimestamp"] = json!(ago(0));
                self.bump(&mut s);
                self.secrets.insert(name, s.clone());
                reply(send, 201, s);
            }
            ("PATCH", p) if p.starts_with(&format!("{secrets}/")) => {
                let name = p.rsplit('/').next().unwrap();
                match self.secrets.get_mut(name) {
                    Some(s) => {
                        s["metadata"]["ownerReferences"] =
                            body["metadata"]["ownerReferences"].clone();
                        let s = s.clone();
                        reply(send, 200, s);
                    }
                    None => reply(send, 404, not_found("secrets", name)),
                }
            }
            ("DELETE", p) if p.starts_with(&format!("{secrets}/")) => {
                let name = p.rsplit('/').next().unwrap();
                match self.secrets.remove(name) {
                    Some(s) => reply(send, 200, s),
                    None => reply(send, 404, not_found("secrets", name)),
                }
            }
            ("POST", p) if p == pods => {
                let name = body["metadata"]["name"].as_str().unwrap().to_owned();
                if self.pods.contains_key(&name) {
                    return reply(send, 409, status(409, "AlreadyExists", "exists"));
                }
                let mut pod = body;
                pod["metadata"]["uid"] = json!(format!("uid-{name}"));
                pod["metadata"]["creationTimestamp"] = json!(ago(0));
                pod["status"] = json!({"phase": "Pending", "containerStatuses": [{
                    "name": "agent", "ready": false, "restartCount": 0, "image": pod["spec"]["containers"][0]["image"],
                    "imageID": "", "state": {"waiting": {"reason": "ContainerCreating"}}}]});
                self.bump(&mut pod);
                self.pods.insert(name.clone(), pod.clone());
                self.started.insert(name, Instant::now());
                self.emit("ADDED", &pod);
                reply(send, 201, pod);
            }
            ("GET", p) if p == pods => {
                if uri.contains("watch=") {
                    let q: HashMap<String, String> = uri
                        .split_once('?')
                        .map(|(_, q)| q)
                        .unwrap_or_default()
                        .split('&')
                        .filter_map(|kv| {
                            kv.split_once('=')
                                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        })
                        .collect();
                    let from = q
                        .get("resourceVersion")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    self.watchers.push((from, send));
                    self.flush();
                } else {
                    let items: Vec<Value> = self.pods.values().cloned().collect();
                    reply(
                        send,
                        200,
                        json!({"apiVersion": "v1", "kind": "PodList",
                        "metadata": {"resourceVersion": self.rv.to_string()}, "items": items}),
                    );
                }
            }
            ("GET", p) if p.starts_with(&format!("{pods}/")) && p.ends_with("/log") => {
                let name = p.trim_end_matches("/log").rsplit('/').next().unwrap();
                if !self.pods.contains_key(name) {
                    return reply(send, 404, not_found("pods", name));
                }
                let text = match self.procs.get(name) {
                    Some((_, log, _)) => std::fs::read_to_string(log).unwrap_or_default(),
                    None => {
                        "hodei-worker starting\nregistering with the control plane\n".to_owned()
                    }
                };
                let tail: Option<usize> = uri
                    .split(['?', '&'])
                    .find_map(|kv| kv.strip_prefix("tailLines="))
                    .and_then(|n| n.parse().ok());
                let lines: Vec<&str> = text.lines().collect();
                let from = tail.map_or(0, |n| lines.len().saturating_sub(n));
                let mut body = lines[from..].join("\n");
                body.push('\n');
                let r = Response::builder()
                    .status(200)
                    .header("content-type", "text/plain")
                    .body(Body::from(body.into_bytes()))
                    .unwrap();
                send.send_response(r);
            }
            ("GET", p) if p.starts_with(&format!("{pods}/")) => {
                let name = p.rsplit('/').next().unwrap();
                match self.pods.get(name) {
                    Some(pod) => reply(send, 200, pod.clone()),
                    None => reply(send, 404, not_found("pods", name)),
                }
            }
            ("DELETE", p) if p.starts_with(&format!("{pods}/")) => {
                let name = p.rsplit('/').next().unwrap().to_owned();
                match self.delete_pod(&name) {
                    Some(pod) => reply(send, 200, pod),
                    None => reply(send, 404, not_found("pods", &name)),
                }
            }
            _ => reply(
                send,
                404,
                status(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            ),
        }
    }
}

type Cluster = Arc<std::sync::Mutex<FakeCluster>>;

/// A kube client over tower-test's mock, answered by a [`FakeCluster`]
/// (whose kubelet runs `agent` as the container when given).
fn fake_cluster(agent: Option<PathBuf>) -> (kube::Client, Cluster, tokio::task::JoinHandle<()>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mut fake = FakeCluster::default();
    fake.agent = agent;
    let cluster = Arc::new(std::sync::Mutex::new(fake));
    let server = {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    req = handle.next_request() => {
                        let Some((req, send)) = req else { break };
                        let method = req.method().to_string();
                        let uri = req.uri().to_string();
                        let bytes = req.into_body().collect_bytes().await.unwrap();
                        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
                        cluster.lock().unwrap().handle(&method, &uri, body, send);
                    }
                    _ = tick.tick() => cluster.lock().unwrap().tick(),
                }
            }
        })
    };
    (kube::Client::new(svc, "default"), cluster, server)
}

#[tokio::test]
async fn passes_the_provider_conformance_kit_against_a_fake_api_server() {
    use hodei_core::testing::provider::{ConformanceOptions, provider_conformance};
    let (client, cluster, server) = fake_cluster(None);
    let provider = Arc::new(
        KubernetesProvider::with_client(ProviderId::new(), test_config(), client).unwrap(),
    );
    let id = provider.id();
    let p: Arc<dyn WorkerProvider> = provider.clone();
    let report = provider_conformance(
        p,
        move || {
            WorkerSpec::new(
                WorkerId::new(),
                id,
                "http://hodei-server:50051",
                "conformance-otp",
            )
        },
        ConformanceOptions::default()
            .with_ready_timeout(Duration::from_secs(10))
            .with_terminate_timeout(Duration::from_secs(10))
            .with_event_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap_or_else(|f| panic!("kubernetes provider fails the kit: {f}"));
    assert_eq!(report.running_state, WorkerState::Ready);
    assert!(
        report
            .states_before_running
            .contains(&WorkerState::Creating),
        "{report:?}"
    );
    assert_eq!(
        report.log_lines.as_ref().map(Vec::len),
        Some(2),
        "{report:?}"
    );
    assert!(report.health.healthy && report.health.message.contains("v1.37.0"));
    assert!(
        report
            .metrics
            .as_ref()
            .is_err_and(|e| e.contains("metrics-server")),
        "{:?}",
        report.metrics
    );
    for want in ["Created", "Started", "Destroyed"] {
        assert!(
            report
                .events
                .iter()
                .any(|e| format!("{e:?}").starts_with(want)),
            "no {want} in {:?}",
            report.events
        );
    }
    assert!(
        !report
            .events
            .iter()
            .any(|e| matches!(e, WorkerEvent::Exited { .. })),
        "destroyed on purpose is not an exit: {:?}",
        report.events
    );
    // Nothing left behind: the pod is gone and its owned secret collected.
    {
        let c = cluster.lock().unwrap();
        assert!(c.pods.is_empty(), "{:?}", c.pods.keys());
        assert!(c.secrets.is_empty(), "{:?}", c.secrets.keys());
    }
    let startup = provider.startup_estimate();
    assert!(
        startup < DEFAULT_STARTUP && startup >= Duration::from_millis(90),
        "{startup:?}"
    );
    drop(provider);
    server.abort();
}

// ---------------------------------------------------------------------------
// Offline schema validation (kubernetes-validate)
// ---------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `kubernetes-validate` command, or a loud skip (a failure under CI=true).
fn validator() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("kubernetes-validate"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        require::missing_dependency(
            "kubernetes-validate not found on PATH (pip install kubernetes-validate): \
             the Kubernetes schema validation did not run",
        );
    }
    found
}

fn validate(files: &[PathBuf]) {
    let Some(bin) = validator() else { return };
    let out = std::process::Command::new(bin)
        .args(["--strict", "-k", "1.37.0"])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubernetes-validate failed:\n{stdout}\n{stderr}"
    );
    for f in files {
        assert!(
            stdout.contains(&*f.to_string_lossy()) || files.len() == 1,
            "no verdict for {}: {stdout}",
            f.display()
        );
    }
    assert!(!stdout.to_lowercase().contains("error"), "{stdout}");
}

#[test]
fn the_pod_and_secret_validate_against_the_kubernetes_schemas() {
    let config = KubernetesProviderConfig::default()
        .with_label("team", "build")
        .with_node_selector("pool", "ci")
        .with_toleration(Toleration::equal("dedicated", "ci", Some("NoSchedule")))
        .with_toleration(Toleration::exists("spot", None));
    let pid = ProviderId::new();
    let mut spec = WorkerSpec::new(WorkerId::new(), pid, "http://hodei-server:50051", "otp");
    spec.resources.cpu_cores = 2.0;
    spec.resources.memory_mb = 4096;
    spec.resources.gpu_required = true;
    spec.resources.architecture = Some("aarch64".into());
    spec.env
        .insert("HODEI_JOB_TIMEOUT_SECS".into(), "600".into());
    let dir = tempfile::tempdir().unwrap();
    let pod = build_pod(&config, pid, &spec, "hodei-worker:latest");
    let secret = build_secret(&config, pid, &spec);
    let pod_json = serde_json::to_value(&pod).unwrap();
    assert_eq!(pod_json["apiVersion"], "v1");
    assert_eq!(pod_json["kind"], "Pod");
    assert_eq!(pod_json["spec"]["activeDeadlineSeconds"], 600 + 300 + 40);
    let files = [
        (
            dir.path().join("pod.json"),
            serde_json::to_vec_pretty(&pod).unwrap(),
        ),
        (
            dir.path().join("secret.json"),
            serde_json::to_vec_pretty(&secret).unwrap(),
        ),
    ];
    for (path, bytes) in &files {
        std::fs::write(path, bytes).unwrap();
    }
    validate(&files.map(|(p, _)| p));
}

#[test]
fn the_deploy_manifests_validate_against_the_kubernetes_schemas() {
    let dir = repo_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "namespace.yaml",
        "server.yaml",
        "rbac.yaml",
        "networkpolicy.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    // The RBAC grants only namespaced pods, pods/log and secrets: nothing cluster-wide.
    let rbac = std::fs::read_to_string(dir.join("rbac.yaml")).unwrap();
    let kinds: Vec<&str> = rbac
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    assert_eq!(
        kinds,
        ["ServiceAccount", "Role", "RoleBinding"],
        "no cluster-wide grants"
    );
    assert!(rbac.contains("namespace: hodei-workers"));
    assert!(
        !rbac.contains("\"*\"") && !rbac.contains("'*'"),
        "no wildcards"
    );
    validate(&files);
}

// ---------------------------------------------------------------------------
// End to end: the control plane runs jobs in "pods" whose container is the
// real agent, started by the fake kubelet with the env it resolves (the OTP
// from the Secret), while the provider only speaks to the fake API.
// ---------------------------------------------------------------------------

/// The agent binary next to this test binary (target/debug/hodei-worker), built when missing.
fn agent_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent()?
    } else {
        dir
    };
    let p = dir.join("hodei-worker");
    if p.is_file() {
        return Some(p);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .current_dir(repo_root())
        .args([
            "build",
            "-q",
            "-p",
            "hodei-examples",
            "--bin",
            "hodei-worker",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if built && p.is_file() {
        return Some(p);
    }
    require::missing_dependency(
        "the hodei-worker binary is missing and `cargo build -p hodei-examples --bin hodei-worker` \
         failed: the Kubernetes end-to-end test did not run",
    );
    None
}

async fn wait_job(
    cp: &hodei_core::control::ControlPlane,
    id: JobId,
    within: Duration,
    want: JobState,
) -> Job {
    let deadline = Instant::now() + within;
    loop {
        let job = cp.get_job(id).await.unwrap();
        if job.state() == want {
            return job;
        }
        assert!(
            !job.state().is_terminal(),
            "job {id} ended {:?}, not {want:?}: {:?}",
            job.state(),
            job.execution_context()
        );
        assert!(
            Instant::now() < deadline,
            "job {id} is {:?}, not {want:?}, after {within:?}",
            job.state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn job_output(cp: &hodei_core::control::ControlPlane, id: JobId) -> String {
    let entries = cp
        .logs()
        .read(id, hodei_core::store::LogCursor::default(), 10_000)
        .await
        .unwrap();
    entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.entry.data).into_owned())
        .collect::<Vec<_>>()
        .join("")
}

#[tokio::test]
async fn the_control_plane_runs_jobs_in_pods_and_survives_a_pod_deleted_mid_job() {
    use hodei_core::control::{ControlPlane, ControlPlaneConfig, PoolPolicy};
    let Some(agent) = agent_binary() else { return };
    let (client, cluster, server) = fake_cluster(Some(agent));
    let (listener, addr) = hodei_core::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = ControlPlaneConfig::default();
    config.worker_server_address = format!("http://{addr}");
    config.heartbeat_interval = Duration::from_secs(1);
    let cp = ControlPlane::builder().config(config).build();
    let kconfig = test_config();
    let provider = Arc::new(
        KubernetesProvider::with_client(ProviderId::new(), kconfig.clone(), client).unwrap(),
    );
    cp.register_provider(
        provider.clone(),
        kconfig.to_provider_config(),
        PoolPolicy::default(),
    )
    .await
    .unwrap();
    tokio::spawn(cp.clone().run());
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(hodei_core::server::serve_grpc(
        cp.clone(),
        listener,
        None,
        async move {
            let _ = stop_rx.changed().await;
        },
    ));

    // A job runs in a pod; the agent got its token from the Secret.
    let echo = JobSpec::new(
        "echo",
        CommandType::shell("echo", ["hello", "from", "a", "pod"]),
    )
    .with_provider("kubernetes");
    let job = cp.create_job(echo, None).await.unwrap();
    let done = wait_job(&cp, job.id(), Duration::from_secs(60), JobState::Succeeded).await;
    assert_eq!(done.attempts(), 1);
    let out = job_output(&cp, job.id()).await;
    assert!(out.contains("hello from a pod"), "{out:?}");
    {
        let c = cluster.lock().unwrap();
        assert_eq!(c.pods.len(), 1, "one worker pod");
        let pod = c.pods.values().next().unwrap();
        let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
        let otp = env.iter().find(|e| e["name"] == "HODEI_OTP").unwrap();
        assert!(otp.get("value").is_none(), "{otp}");
        assert!(otp["valueFrom"]["secretKeyRef"].is_object(), "{otp}");
        assert_eq!(c.secrets.len(), 1, "its token secret");
        let secret = c.secrets.values().next().unwrap();
        assert_eq!(
            secret["metadata"]["ownerReferences"][0]["uid"],
            pod["metadata"]["uid"]
        );
    }

    // `kubectl delete pod` while a job runs: the watcher reports it at once,
    // the job is retried on a new worker (pod) and succeeds.
    let slow = JobSpec::new(
        "slow",
        CommandType::script("bash", "echo started\nsleep 2\necho finished\n"),
    )
    .with_provider("kubernetes")
    .with_max_attempts(2);
    let job = cp.create_job(slow, None).await.unwrap();
    let running = wait_job(&cp, job.id(), Duration::from_secs(60), JobState::Running).await;
    let first = running.worker_id().unwrap();
    let deleted_at = Instant::now();
    assert!(
        cluster
            .lock()
            .unwrap()
            .delete_pod(&pod_name(first))
            .is_some(),
        "the running job's pod exists"
    );
    let done = wait_job(&cp, job.id(), Duration::from_secs(60), JobState::Succeeded).await;
    eprintln!(
        "pod deleted mid-job; retried and succeeded after {:?}",
        deleted_at.elapsed()
    );
    assert_eq!(done.attempts(), 2);
    assert_ne!(done.worker_id(), Some(first));
    assert!(job_output(&cp, job.id()).await.contains("finished"));

    // Retiring the workers deletes their pods; the owned secrets go with them.
    tokio::time::timeout(Duration::from_secs(30), cp.retire_all_workers("test done"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (pods, secrets) = {
            let c = cluster.lock().unwrap();
            (c.pods.len(), c.secrets.len())
        };
        if pods == 0 && secrets == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pods} pods, {secrets} secrets left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cp.shutdown();
    let _ = stop.send(true);
    drop(provider);
    server.abort();
}
