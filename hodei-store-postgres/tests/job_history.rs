//! The job history cases of the store conformance suite against Postgres
//! (each case on a fresh database), and a history that survives a new pool
//! (a restarted control plane) and a second replica's records.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::TestDb;
use hodei_core::JobId;
use hodei_core::domain::job::JobState;
use hodei_core::store::{JobHistoryStore, JobTransitionRecord};
use hodei_core::testing::stores::job_history_conformance;
use hodei_store_postgres::PgJobHistoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_job_history_passes_the_suite() {
    if common::server_url("postgres_job_history_passes_the_suite").is_none() {
        return;
    }
    let dbs: Arc<Mutex<Vec<TestDb>>> = Arc::default();
    let factory = {
        let dbs = dbs.clone();
        move || {
            let dbs = dbs.clone();
            async move {
                let db = TestDb::create("history").await.unwrap();
                let store = db.stores().await.stores().job_history;
                dbs.lock().unwrap().push(db);
                store
            }
        }
    };
    job_history_conformance(factory).await;
    let all: Vec<_> = std::mem::take(&mut *dbs.lock().unwrap());
    assert_eq!(all.len(), 3, "a fresh database per case");
    for db in all {
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_is_shared_by_replicas_and_kept_across_restarts() {
    if common::server_url("a_history_is_shared_by_replicas_and_kept_across_restarts").is_none() {
        return;
    }
    let db = TestDb::create("history_shared").await.unwrap();
    db.stores().await; // migrations
    let a = PgJobHistoryStore::new(db.pool(2).await);
    let b = PgJobHistoryStore::new(db.pool(2).await);
    let job = JobId::new();
    let t = chrono::Utc::now();
    a.record(&JobTransitionRecord::new(
        job,
        None,
        JobState::Pending,
        t,
        0,
    ))
    .await
    .unwrap();
    b.record(
        &JobTransitionRecord::new(job, Some(JobState::Pending), JobState::Cancelled, t, 0)
            .with_reason("from replica b"),
    )
    .await
    .unwrap();
    let restarted = PgJobHistoryStore::new(db.pool(1).await);
    let got = restarted.history(job).await.unwrap();
    let steps: Vec<_> = got
        .iter()
        .map(|r| (r.from, r.to, r.reason.as_str()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (None, JobState::Pending, ""),
            (
                Some(JobState::Pending),
                JobState::Cancelled,
                "from replica b"
            ),
        ]
    );
    // Postgres keeps microseconds: the time comes back as stored, to the microsecond.
    assert_eq!(
        got[0].at.timestamp_micros(),
        t.timestamp_micros(),
        "the time is kept"
    );
    db.drop_db().await;
}
