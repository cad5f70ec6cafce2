//! Scheduling over the whole queue on Postgres: the shared settings
//! conformance, and no page-size starvation with 10 000 queued jobs behind
//! unplaceable heads (the same scenario as on the in-memory stores).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::TestDb;
use hodei_core::store::SchedulingStore;
use hodei_core::testing::{fairness, scheduling};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_scheduling_store_conformance() {
    if common::server_url("postgres_scheduling_store_conformance").is_none() {
        return;
    }
    let db = TestDb::create("scheduling").await.unwrap();
    let stores = db.stores().await;
    let pool = stores.pool().clone();
    scheduling::scheduling_store_conformance(|| {
        let pool = pool.clone();
        async move {
            sqlx::query("TRUNCATE scheduler_settings, concurrency_limits, concurrency_slots")
                .execute(&pool)
                .await
                .unwrap();
            Arc::new(hodei_store_postgres::PgSchedulingStore::new(pool)) as Arc<dyn SchedulingStore>
        }
    })
    .await;
    stores.pool().close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_no_page_size_starvation_on_postgres() {
    if common::server_url("ten_thousand_jobs_no_page_size_starvation_on_postgres").is_none() {
        return;
    }
    let db = TestDb::create("fairness").await.unwrap();
    let stores = db.stores().await;
    let report = fairness::no_page_size_starvation(stores.stores()).await;
    eprintln!("postgres: {report:?}");
    stores.pool().close().await;
    db.drop_db().await;
}
