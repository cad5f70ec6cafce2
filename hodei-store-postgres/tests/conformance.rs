//! The foundation's store conformance suite, unchanged, against Postgres:
//! every case gets its own freshly created and migrated database.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use common::TestDb;
use hodei_core::testing::stores::run_store_conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_store_conformance_suite() {
    if common::server_url("postgres_passes_the_store_conformance_suite").is_none() {
        return;
    }
    let dbs: Arc<Mutex<Vec<(TestDb, hodei_store_postgres::PgStores)>>> = Arc::default();
    let factory = {
        let dbs = dbs.clone();
        move || {
            let dbs = dbs.clone();
            async move {
                let db = TestDb::create("conformance").await.unwrap();
                let stores = db.stores().await;
                let bundle = stores.stores();
                dbs.lock().unwrap().push((db, stores));
                bundle
            }
        }
    };
    run_store_conformance(factory).await;
    let all: Vec<_> = std::mem::take(&mut *dbs.lock().unwrap());
    assert!(all.len() >= 10, "a fresh database per case");
    for (db, stores) in all {
        stores.pool().close().await;
        db.drop_db().await;
    }
}
