//! A read kept between changes: the last result of a read, served again
//! while the [`ChangeFeed`] says nothing it depends on changed since the
//! read began, and never older than [`MAX_AGE`].

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hodei_core::store::StoreError;

use crate::change_feed::ChangeFeed;

/// The age past which a kept read is read again even with no change heard:
/// a bound on what a listener connection that stalls without failing
/// (notices silently stop) can cost.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(1);

/// The last result of one read, with the generation of its feed it was
/// taken at. Without a feed nothing is kept and every call reads.
#[derive(Debug)]
pub(crate) struct KeptRead<T> {
    feed: Option<Arc<ChangeFeed>>,
    kept: Mutex<Option<Kept<T>>>,
}

#[derive(Debug)]
struct Kept<T> {
    generation: u64,
    at: Instant,
    value: T,
}

impl<T> Default for KeptRead<T> {
    fn default() -> Self {
        Self {
            feed: None,
            kept: Mutex::new(None),
        }
    }
}

impl<T> KeptRead<T> {
    /// Keeps the read between the changes `feed` hears of.
    pub(crate) fn kept_by(feed: Arc<ChangeFeed>) -> Self {
        Self {
            feed: Some(feed),
            kept: Mutex::new(None),
        }
    }

    /// This replica wrote a change (after its write is done): every read
    /// kept by the same feed is stale.
    pub(crate) fn changed(&self) {
        if let Some(feed) = &self.feed {
            feed.changed();
        }
    }
}

impl<T: Clone> KeptRead<T> {
    /// The kept result if nothing changed since it was read, else `read`'s
    /// (kept for the next call when the feed is listening).
    pub(crate) async fn get<F, R>(&self, read: R) -> Result<T, StoreError>
    where
        R: FnOnce() -> F,
        F: Future<Output = Result<T, StoreError>>,
    {
        // Taken before the read: a change during it makes the result stale.
        let Some(generation) = self.feed.as_deref().and_then(ChangeFeed::generation) else {
            return read().await;
        };
        if let Some(value) = self.current(generation) {
            return Ok(value);
        }
        let began = Instant::now();
        let value = read().await?;
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        // A slower read begun earlier never replaces a later one.
        if kept.as_ref().is_none_or(|k| k.generation <= generation) {
            *kept = Some(Kept {
                generation,
                at: began,
                value: value.clone(),
            });
        }
        Ok(value)
    }

    fn current(&self, generation: u64) -> Option<T> {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.as_ref()
            .filter(|k| k.generation == generation && k.at.elapsed() < MAX_AGE)
            .map(|k| k.value.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use sqlx::postgres::PgPoolOptions;

    use super::*;

    fn feed() -> Arc<ChangeFeed> {
        let pool = PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:9/none")
            .expect("a lazy pool");
        Arc::new(ChangeFeed::vouching(pool))
    }

    /// Reads through `kept`, counting the reads that reach the "database".
    async fn get(kept: &KeptRead<u32>, reads: &AtomicU32) -> u32 {
        kept.get(|| async { Ok(reads.fetch_add(1, Ordering::SeqCst) + 1) })
            .await
            .expect("the read")
    }

    #[tokio::test]
    async fn a_read_is_kept_until_a_change() {
        let (kept, reads) = (KeptRead::kept_by(feed()), AtomicU32::new(0));
        assert_eq!(get(&kept, &reads).await, 1);
        assert_eq!(get(&kept, &reads).await, 1, "kept");
        kept.changed();
        assert_eq!(get(&kept, &reads).await, 2, "read again after a change");
        assert_eq!(get(&kept, &reads).await, 2);
    }

    #[tokio::test]
    async fn nothing_is_kept_without_a_listening_feed() {
        let (unkept, reads) = (KeptRead::default(), AtomicU32::new(0));
        assert_eq!(get(&unkept, &reads).await, 1);
        assert_eq!(get(&unkept, &reads).await, 2);
        let feed = feed();
        let kept = KeptRead::kept_by(feed.clone());
        assert_eq!(get(&kept, &reads).await, 3);
        feed.lose_connection();
        assert_eq!(
            get(&kept, &reads).await,
            4,
            "a deaf feed vouches for nothing"
        );
        assert_eq!(get(&kept, &reads).await, 5);
    }

    #[tokio::test]
    async fn a_change_during_the_read_leaves_nothing_kept() {
        let kept = KeptRead::<u32>::kept_by(feed());
        let first = kept
            .get(|| async {
                // Another write lands while this read is on its way.
                kept.changed();
                Ok(1)
            })
            .await
            .expect("the read");
        assert_eq!(first, 1);
        let second = kept.get(|| async { Ok(2) }).await;
        assert_eq!(
            second.expect("the read"),
            2,
            "the racing read was not served"
        );
    }

    #[tokio::test]
    async fn a_kept_read_expires() {
        let kept = KeptRead::<u32>::kept_by(feed());
        let _ = kept.get(|| async { Ok(1) }).await;
        if let Some(k) = kept.kept.lock().expect("lock").as_mut() {
            k.at -= MAX_AGE;
        }
        let again = kept.get(|| async { Ok(2) }).await;
        assert_eq!(again.expect("the read"), 2);
    }
}
