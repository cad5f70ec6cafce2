//! The reads every dispatch pass makes (providers, alive workers per
//! provider, strategy) are kept between changes: a change written through
//! one replica reaches another's kept read through the `NOTIFY` of the
//! tables' triggers, and a replica sees its own writes at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::TestDb;
use hodei_core::domain::ids::{ProviderId, WorkerId};
use hodei_core::domain::provider::{Provider, ProviderCapabilities, ProviderConfig};
use hodei_core::domain::worker::Worker;
use hodei_core::scheduler::Strategy;
use hodei_core::store::Stores;

fn provider(name: &str) -> Provider {
    Provider::new(
        ProviderId::new(),
        name,
        ProviderConfig::Custom {
            settings: Default::default(),
        },
        ProviderCapabilities::default(),
    )
}

async fn names(stores: &Stores) -> Vec<String> {
    let list = stores.providers.list().await.unwrap();
    list.iter().map(|p| p.name().to_owned()).collect()
}

/// Reads with `read` until it gives `want`; fails after 10 s.
async fn until<T: PartialEq + std::fmt::Debug, F: Future<Output = T>>(
    what: &str,
    want: T,
    mut read: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = read().await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_replica_reaches_the_kept_reads_of_another() {
    if common::server_url("a_change_on_one_replica_reaches_the_kept_reads_of_another").is_none() {
        return;
    }
    let db = TestDb::create("kept_reads").await.unwrap();
    let (one, other) = (db.stores().await, db.stores().await);
    let (a, b) = (one.stores(), other.stores());

    // Providers: b keeps its (empty) list, a adds one, b hears of it.
    assert!(names(&b).await.is_empty());
    let p = provider("kept");
    a.providers.save(&p).await.unwrap();
    assert_eq!(
        names(&a).await,
        ["kept"],
        "a replica sees its own write at once"
    );
    until(
        "the other replica's providers",
        vec!["kept".to_owned()],
        || names(&b),
    )
    .await;

    // Alive workers: a registers a worker of the provider, b hears of it;
    // the worker's end is heard too.
    assert_eq!(
        b.workers
            .count_alive_by_provider()
            .await
            .unwrap()
            .get(&p.id()),
        None
    );
    let worker = a
        .workers
        .register(&Worker::new(WorkerId::new(), p.id()))
        .await
        .unwrap();
    let provider_id = p.id();
    let alive = |stores: Stores| async move {
        let counts = stores.workers.count_alive_by_provider().await.unwrap();
        counts.get(&provider_id).copied()
    };
    assert_eq!(alive(a.clone()).await, Some(1));
    until("the other replica's alive count", Some(1), || {
        alive(b.clone())
    })
    .await;
    let mut gone = worker.clone();
    gone.terminating().unwrap();
    a.workers.update(&gone).await.unwrap();
    assert_eq!(
        alive(a.clone()).await,
        None,
        "a worker's end is seen at once"
    );
    until("the other replica's alive count", None, || alive(b.clone())).await;

    // The strategy.
    let strategy = |stores: Stores| async move { stores.scheduling.strategy().await.unwrap() };
    assert_eq!(strategy(b.clone()).await, None);
    a.scheduling
        .set_strategy(Strategy::LeastLoaded)
        .await
        .unwrap();
    assert_eq!(strategy(a.clone()).await, Some(Strategy::LeastLoaded));
    until(
        "the other replica's strategy",
        Some(Strategy::LeastLoaded),
        || strategy(b.clone()),
    )
    .await;

    one.pool().close().await;
    other.pool().close().await;
    db.drop_db().await;
}

/// A read is served from what is kept: a row written behind the triggers'
/// back (no notice) is not seen until a change is announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_read_is_served_until_a_change_is_announced() {
    if common::server_url("a_kept_read_is_served_until_a_change_is_announced").is_none() {
        return;
    }
    let db = TestDb::create("kept_reads_served").await.unwrap();
    let pg = db.stores().await;
    let stores = pg.stores();
    let pool = pg.pool().clone();
    let silent = sqlx::query("ALTER TABLE providers DISABLE TRIGGER providers_changed");
    silent.execute(&pool).await.unwrap();
    // The feed starts listening on its first use: until then every read
    // goes to the database, so the first attempts may see the row.
    let mut kept_once = false;
    for attempt in 0..20 {
        names(&stores).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = names(&stores).await;
        let began = Instant::now();
        sqlx::query("INSERT INTO providers (id, name, data) VALUES ($1, $2, $3)")
            .bind(uuid::Uuid::new_v4())
            .bind(format!("unannounced-{attempt}"))
            .bind(serde_json::to_value(provider(&format!("unannounced-{attempt}"))).unwrap())
            .execute(&pool)
            .await
            .unwrap();
        let after = names(&stores).await;
        // Kept reads are read again after a second: only a quick pair counts.
        if after == before && began.elapsed() < Duration::from_millis(300) {
            kept_once = true;
            break;
        }
    }
    assert!(
        kept_once,
        "no read of the list was served from what was kept"
    );
    let loud = sqlx::query("ALTER TABLE providers ENABLE TRIGGER providers_changed");
    loud.execute(&pool).await.unwrap();
    // A change announced by another writer makes the list read again.
    let other = db.pool(1).await;
    sqlx::query("UPDATE providers SET name = name")
        .execute(&other)
        .await
        .unwrap();
    until("the list after an announced change", true, || async {
        names(&stores)
            .await
            .iter()
            .any(|n| n.starts_with("unannounced-"))
    })
    .await;
    other.close().await;
    pool.close().await;
    db.drop_db().await;
}
