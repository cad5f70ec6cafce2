//! Many concurrent changes to one worker through two control-plane replicas
//! on Postgres: versioned worker updates keep every one (the same scenario
//! as on the in-memory stores).
#![allow(clippy::unwrap_used)]

mod common;

use common::TestDb;
use hodei_core::testing::worker_races;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_worker_changes_are_kept_on_postgres() {
    if common::server_url("concurrent_worker_changes_are_kept_on_postgres").is_none() {
        return;
    }
    let db = TestDb::create("worker_races").await.unwrap();
    let stores = db.stores().await;
    let report = worker_races::concurrent_worker_changes_are_kept(stores.stores(), 12).await;
    eprintln!("postgres: {report:?}");
    assert!(report.conflicts > 0, "the updates raced: {report:?}");
    stores.pool().close().await;
    db.drop_db().await;
}
