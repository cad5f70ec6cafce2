//! The pod watcher: a `kube::runtime::watcher` on this provider's pods
//! (by label), turned into [`WorkerEvent`]s, so a deleted, evicted or
//! crashed pod is noticed at once rather than at heartbeat timeout.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use hodei_core::WorkerId;
use hodei_core::provider::WorkerEvent;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::objects::{LABEL_WORKER_ID, scope_selector};
use super::state::{is_running, pod_age, pod_exit, pod_problem};
use super::{Shared, Stage, lock};

/// The worker a pod belongs to, from its label.
pub(crate) fn pod_worker(pod: &Pod) -> Option<WorkerId> {
    pod.metadata
        .labels
        .as_ref()?
        .get(LABEL_WORKER_ID)
        .and_then(|w| WorkerId::parse(w).ok())
}

/// Follows this provider's pods until the provider is dropped. The watcher
/// re-lists after a desync and its stream is wrapped in kube's default
/// backoff, so a failing API server is retried with growing pauses, never in a hot loop.
pub(crate) async fn follow_pods(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &shared.config.namespace);
    let cfg = watcher::Config::default().labels(&scope_selector(&shared.config, Some(shared.id)));
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    let mut last_error: Option<String> = None;
    // Workers listed by the current (re-)list: a pod known before a watch
    // desync that is absent from the new list was deleted in the gap.
    let mut listed: Option<HashSet<WorkerId>> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(watcher::Event::Apply(pod)) => {
                last_error = None;
                on_apply(&shared, &pod);
            }
            Ok(watcher::Event::InitApply(pod)) => {
                if let (Some(seen), Some(w)) = (listed.as_mut(), pod_worker(&pod)) {
                    seen.insert(w);
                }
                on_apply(&shared, &pod);
            }
            Ok(watcher::Event::Delete(pod)) => {
                last_error = None;
                on_delete(&shared, &pod);
            }
            Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
            Ok(watcher::Event::InitDone) => {
                last_error = None;
                let seen = listed.take().unwrap_or_default();
                let vanished: Vec<WorkerId> = lock(&shared.stages)
                    .keys()
                    .filter(|w| !seen.contains(w))
                    .copied()
                    .collect();
                for worker_id in vanished {
                    gone(
                        &shared,
                        worker_id,
                        &super::objects::pod_name(worker_id),
                        None,
                    );
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, namespace = %shared.config.namespace,
                        "kubernetes pod watch failed; retrying with backoff");
                    last_error = Some(msg);
                }
            }
        }
    }
}

/// A pod was added or changed.
pub(crate) fn on_apply(shared: &Arc<Shared>, pod: &Pod) {
    let Some(worker_id) = pod_worker(pod) else {
        return;
    };
    let mut out = Vec::new();
    {
        let mut stages = lock(&shared.stages);
        let stage = stages.entry(worker_id).or_insert_with(|| {
            out.push(WorkerEvent::Created { worker_id });
            Stage::Created
        });
        if *stage < Stage::Started && is_running(pod) {
            *stage = Stage::Started;
            out.push(WorkerEvent::Started { worker_id });
            if let Some(t) = lock(&shared.created_at).remove(&worker_id) {
                shared.record_startup(t.elapsed());
            }
        }
        if *stage < Stage::Exited {
            let destroying = lock(&shared.destroying).contains(&worker_id);
            let exit = pod_exit(pod)
                .or_else(|| {
                    pod.metadata.deletion_timestamp.as_ref().map(|_| {
                        (
                            None,
                            format!(
                                "pod {} is being deleted outside hodei (evicted, drained or deleted by hand)",
                                pod.metadata.name.as_deref().unwrap_or("?")
                            ),
                        )
                    })
                })
                .or_else(|| stuck_past_grace(shared, worker_id, pod).map(|why| (None, why)));
            if let Some((exit_code, reason)) = exit {
                *stage = Stage::Exited;
                lock(&shared.live).remove(&worker_id);
                if !destroying {
                    tracing::warn!(%worker_id, ?exit_code, %reason, "worker pod ended on its own");
                    out.push(WorkerEvent::Exited {
                        worker_id,
                        exit_code,
                        reason,
                    });
                }
            }
        }
    }
    for e in out {
        let _ = shared.events.send(e);
    }
}

/// A pod that will not start on its own (image pull, scheduling, container
/// config) and has been so for `failure_grace`: why, in the words of the
/// error `get_worker_status` gives. Within the grace, it is looked at again
/// when the grace ends, since a stuck pod may see no further change.
fn stuck_past_grace(shared: &Arc<Shared>, worker_id: WorkerId, pod: &Pod) -> Option<String> {
    let Some(problem) = pod_problem(pod) else {
        lock(&shared.stuck).remove(&worker_id);
        return None;
    };
    let grace = shared.config.failure_grace;
    let age = pod_age(pod, k8s_openapi::jiff::Timestamp::now());
    if age >= grace {
        lock(&shared.stuck).remove(&worker_id);
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        return Some(problem.into_error(name, age).to_string());
    }
    let first = lock(&shared.stuck).insert(worker_id, pod.clone()).is_none();
    if first && let Ok(handle) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(shared);
        handle.spawn(async move {
            tokio::time::sleep(grace - age).await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            let latest = lock(&shared.stuck).remove(&worker_id);
            if let Some(pod) = latest {
                on_apply(&shared, &pod);
            }
        });
    }
    None
}

/// A pod is gone from the API.
pub(crate) fn on_delete(shared: &Shared, pod: &Pod) {
    let Some(worker_id) = pod_worker(pod) else {
        return;
    };
    gone(
        shared,
        worker_id,
        pod.metadata.name.as_deref().unwrap_or("?"),
        pod_exit(pod).and_then(|(c, _)| c),
    );
}

/// A worker's pod no longer exists: `Exited` unless it was destroyed on
/// request or already reported, then `Destroyed`.
fn gone(shared: &Shared, worker_id: WorkerId, name: &str, exit_code: Option<i32>) {
    let stage = lock(&shared.stages).remove(&worker_id);
    lock(&shared.stuck).remove(&worker_id);
    lock(&shared.live).remove(&worker_id);
    lock(&shared.created_at).remove(&worker_id);
    let requested = lock(&shared.destroying).remove(&worker_id);
    if !requested && stage != Some(Stage::Exited) {
        let reason =
            format!("pod {name} was deleted outside hodei (evicted, drained or deleted by hand)");
        tracing::warn!(%worker_id, %reason, "worker pod vanished");
        let _ = shared.events.send(WorkerEvent::Exited {
            worker_id,
            exit_code,
            reason,
        });
    }
    let _ = shared.events.send(WorkerEvent::Destroyed { worker_id });
}
