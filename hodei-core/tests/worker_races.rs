//! Many concurrent changes to one worker through two control-plane replicas
//! on the in-memory stores: versioned worker updates keep every one.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use hodei_core::store::Stores;
use hodei_core::testing::worker_races;

#[tokio::test]
async fn concurrent_worker_changes_are_kept_in_memory() {
    let report = worker_races::concurrent_worker_changes_are_kept(Stores::in_memory(), 12).await;
    eprintln!("in memory: {report:?}");
    assert!(report.conflicts > 0, "the updates raced: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_worker_changes_are_kept_in_memory_on_two_threads() {
    let report = worker_races::concurrent_worker_changes_are_kept(Stores::in_memory(), 12).await;
    eprintln!("in memory, two threads: {report:?}");
}
