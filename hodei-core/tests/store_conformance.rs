//! The store conformance suite against the in-memory stores.

use std::sync::Arc;

use hodei_core::store::memory::{
    InMemoryJobQueue, InMemoryJobRepository, InMemoryLogStore, InMemoryOtpTokenStore,
    InMemoryProviderConfigRepository, InMemoryWorkerRegistry,
};
use hodei_core::store::{
    JobQueue, JobRepository, LogStore, OtpTokenStore, ProviderConfigRepository, Stores,
    WorkerRegistry,
};
use hodei_core::testing::stores;

#[tokio::test]
async fn in_memory_stores_pass_the_whole_suite() {
    stores::run_store_conformance(|| async { Stores::in_memory() }).await;
}

#[tokio::test]
async fn in_memory_job_repository() {
    stores::job_repository_conformance(|| async {
        Arc::new(InMemoryJobRepository::new()) as Arc<dyn JobRepository>
    })
    .await;
}

#[tokio::test]
async fn in_memory_job_queue() {
    stores::job_queue_conformance(|| async {
        Arc::new(InMemoryJobQueue::new()) as Arc<dyn JobQueue>
    })
    .await;
}

#[tokio::test]
async fn in_memory_worker_registry() {
    stores::worker_registry_conformance(|| async {
        Arc::new(InMemoryWorkerRegistry::new()) as Arc<dyn WorkerRegistry>
    })
    .await;
}

#[tokio::test]
async fn in_memory_provider_repository() {
    stores::provider_repository_conformance(|| async {
        Arc::new(InMemoryProviderConfigRepository::new()) as Arc<dyn ProviderConfigRepository>
    })
    .await;
}

#[tokio::test]
async fn in_memory_log_store() {
    stores::log_store_conformance(|| async {
        Arc::new(InMemoryLogStore::new()) as Arc<dyn LogStore>
    })
    .await;
}

#[tokio::test]
async fn in_memory_otp_store() {
    stores::otp_store_conformance(|| async {
        Arc::new(InMemoryOtpTokenStore::new()) as Arc<dyn OtpTokenStore>
    })
    .await;
}

#[tokio::test]
async fn in_memory_template_store() {
    hodei_core::testing::templates::template_store_conformance(|| async {
        Arc::new(hodei_core::store::InMemoryTemplateStore::new())
            as Arc<dyn hodei_core::store::TemplateStore>
    })
    .await;
}

/// The suite really detects a broken store: a queue that ignores priorities fails it.
#[tokio::test]
async fn the_suite_catches_a_broken_queue() {
    use std::time::Duration;

    use async_trait::async_trait;
    use chrono::{DateTime, Utc};
    use hodei_core::JobId;
    use hodei_core::store::{Lease, QueueEntry, StoreError};

    /// Claims newest first: wrong.
    #[derive(Default)]
    struct Lifo(InMemoryJobQueue);

    #[async_trait]
    impl JobQueue for Lifo {
        async fn enqueue(&self, entry: QueueEntry) -> Result<(), StoreError> {
            self.0.enqueue(entry).await
        }
        async fn claim(&self, limit: usize, lease_for: Duration) -> Result<Vec<Lease>, StoreError> {
            self.0.claim(limit, lease_for).await
        }
        async fn claim_job(&self, id: JobId, d: Duration) -> Result<Option<Lease>, StoreError> {
            self.0.claim_job(id, d).await
        }
        async fn peek(&self, limit: usize) -> Result<Vec<QueueEntry>, StoreError> {
            let mut all = self.0.peek(usize::MAX).await?;
            all.reverse();
            all.truncate(limit);
            Ok(all)
        }
        async fn scan(
            &self,
            order: hodei_core::store::QueueOrder,
            after: Option<hodei_core::store::QueueCursor>,
            limit: usize,
        ) -> Result<hodei_core::store::QueuePage, StoreError> {
            self.0.scan(order, after, limit).await
        }
        async fn complete(&self, lease: &Lease) -> Result<(), StoreError> {
            self.0.complete(lease).await
        }
        async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
            self.0.release(lease).await
        }
        async fn renew(&self, lease: &Lease, d: Duration) -> Result<Lease, StoreError> {
            self.0.renew(lease, d).await
        }
        async fn queued(
            &self,
            ids: &[JobId],
        ) -> Result<std::collections::HashSet<JobId>, StoreError> {
            self.0.queued(ids).await
        }
        async fn remove(&self, id: JobId) -> Result<bool, StoreError> {
            self.0.remove(id).await
        }
        async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<Vec<JobId>, StoreError> {
            self.0.rescue_expired(now).await
        }
        async fn len(&self) -> Result<usize, StoreError> {
            self.0.len().await
        }
    }

    let outcome = tokio::spawn(stores::job_queue_conformance(|| async {
        Arc::new(Lifo::default()) as Arc<dyn JobQueue>
    }))
    .await;
    let panic = outcome.expect_err("a LIFO queue must fail the suite");
    let message = panic
        .into_panic()
        .downcast::<String>()
        .map(|s| *s)
        .unwrap_or_default();
    assert!(
        message.contains("queue/ordering"),
        "message names the case: {message}"
    );
}
