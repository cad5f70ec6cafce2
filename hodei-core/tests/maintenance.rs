//! The leader's housekeeping through the control plane, on the in-memory
//! stores: finished jobs past the retention are pruned with their logs, and
//! expired one-time tokens are purged, at most once a minute.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use hodei_core::control::{ControlPlane, ControlPlaneConfig};
use hodei_core::otp::{generate_token, hash_token};
use hodei_core::store::{LeaderElection, LogCursor, Stores};
use hodei_core::{
    CommandType, Job, JobId, JobSpec, JobState, LogEntry, LogStream, ProviderId, Worker,
    WorkerHandle, WorkerId,
};

fn spec(name: &str) -> JobSpec {
    JobSpec::new(name, CommandType::shell("true", Vec::<String>::new()))
}

fn control_plane(stores: &Stores, retention: Option<Duration>) -> ControlPlane {
    let mut config = ControlPlaneConfig::default();
    config.retention = retention;
    ControlPlane::builder()
        .stores(stores.clone())
        .config(config)
        .build()
}

async fn log_line(cp: &ControlPlane, job: JobId) {
    cp.logs()
        .append(job, 1, vec![LogEntry::new(1, LogStream::Stdout, "line")])
        .await
        .unwrap();
}

async fn stored_lines(stores: &Stores, job: JobId) -> usize {
    stores
        .logs
        .read(job, LogCursor::default(), 100)
        .await
        .unwrap()
        .len()
}

/// A finished job with a log line.
async fn finished_job(cp: &ControlPlane, name: &str) -> JobId {
    let job = cp.create_job(spec(name), None).await.unwrap().id();
    log_line(cp, job).await;
    cp.cancel_job(job, "done").await.unwrap();
    job
}

#[tokio::test]
async fn finished_jobs_past_the_retention_are_pruned_with_their_logs() {
    let retention = Duration::from_millis(300);
    let stores = Stores::in_memory();
    let cp = control_plane(&stores, Some(retention));

    let old = finished_job(&cp, "old").await;
    tokio::time::sleep(retention + Duration::from_millis(200)).await;
    let recent = finished_job(&cp, "recent").await;

    // A job running on a live worker, started before the retention: never pruned.
    let mut worker = stores
        .workers
        .register(&Worker::new(WorkerId::new(), ProviderId::new()))
        .await
        .unwrap();
    let mut running = stores
        .jobs
        .insert(&Job::new(spec("running")))
        .await
        .unwrap();
    running
        .submit_to_provider(worker.provider_id(), Some(worker.id()))
        .unwrap();
    running.mark_running().unwrap();
    let running = stores.jobs.update(&running).await.unwrap();
    worker
        .created(WorkerHandle::new(
            worker.id(),
            worker.provider_id(),
            "pid-1",
        ))
        .unwrap();
    worker.registered().unwrap();
    worker.assign(running.id()).unwrap();
    stores.workers.update(&worker).await.unwrap();
    log_line(&cp, running.id()).await;
    assert_eq!(stored_lines(&stores, old).await, 1);

    cp.reconcile().await.unwrap();

    assert!(
        stores.jobs.get(old).await.unwrap().is_none(),
        "old job pruned"
    );
    assert_eq!(stored_lines(&stores, old).await, 0, "with its logs");
    let kept = stores.jobs.get(recent).await.unwrap().unwrap();
    assert_eq!(kept.state(), JobState::Cancelled);
    assert_eq!(stored_lines(&stores, recent).await, 1);
    let kept = stores.jobs.get(running.id()).await.unwrap().unwrap();
    assert_eq!(kept.state(), JobState::Running);
    assert_eq!(stored_lines(&stores, running.id()).await, 1);
}

#[tokio::test]
async fn without_a_retention_nothing_is_pruned() {
    let stores = Stores::in_memory();
    let cp = control_plane(&stores, None);
    let job = finished_job(&cp, "kept").await;
    let report = cp.housekeep().await.unwrap();
    assert_eq!(report.pruned_jobs, 0, "{report:?}");
    assert!(stores.jobs.get(job).await.unwrap().is_some());
    assert_eq!(stored_lines(&stores, job).await, 1);
}

async fn insert_otp(stores: &Stores, expires_in: chrono::Duration) -> String {
    let token = generate_token();
    stores
        .otps
        .insert(
            &hash_token(&token),
            WorkerId::new(),
            Utc::now() + expires_in,
        )
        .await
        .unwrap();
    token
}

#[tokio::test]
async fn expired_otps_are_purged_by_the_leader_at_most_once_a_minute() {
    let stores = Stores::in_memory();
    let cp = control_plane(&stores, None);
    insert_otp(&stores, chrono::Duration::seconds(-1)).await;
    let live = insert_otp(&stores, chrono::Duration::minutes(5)).await;

    cp.reconcile().await.unwrap();
    assert_eq!(
        stores.otps.purge_expired(Utc::now()).await.unwrap(),
        0,
        "the first pass purged the expired token"
    );
    stores
        .otps
        .consume(&hash_token(&live), Utc::now())
        .await
        .expect("a live token is kept");

    // A second pass within the minute does not purge again.
    insert_otp(&stores, chrono::Duration::seconds(-1)).await;
    cp.reconcile().await.unwrap();
    assert_eq!(stores.otps.purge_expired(Utc::now()).await.unwrap(), 1);
}

struct Follower;

#[async_trait]
impl LeaderElection for Follower {
    async fn is_leader(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn a_replica_that_does_not_lead_leaves_housekeeping_to_the_leader() {
    let stores = Stores::in_memory();
    let cp = ControlPlane::builder()
        .stores(stores.clone())
        .leader_election(Arc::new(Follower))
        .build();
    insert_otp(&stores, chrono::Duration::seconds(-1)).await;
    cp.reconcile().await.unwrap();
    assert_eq!(stores.otps.purge_expired(Utc::now()).await.unwrap(), 1);
}
