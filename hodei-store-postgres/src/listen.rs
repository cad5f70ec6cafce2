//! The LISTEN loop behind every notification channel of the store (the
//! queue's wake-ups, the log appends of other replicas, the changes to what
//! a dispatch pass reads): a dedicated connection, reconnected with backoff,
//! handing what it hears to a [`Hearing`].

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

/// What a LISTEN loop does with what it hears.
pub(crate) trait Hearing: Send + 'static {
    /// The loop is listening again, after its first connection or a lost
    /// one; `false` ends it.
    fn connected(&mut self) -> bool;
    /// A notice; `false` ends the loop.
    fn notice(&mut self, payload: &str) -> bool;
    /// The connection was lost: notices sent until the next
    /// [`Self::connected`] are missed.
    fn lost(&mut self) {}
}

/// Listens on `channel` and yields `parse(payload)` for every notice it
/// accepts, while the stream lives. `on_connect` (if any) is yielded after
/// every (re)connection, since notices sent meanwhile were lost. When the
/// consumer lags, items beyond `capacity` are dropped: subscribers of these
/// channels re-check on their own. `None` outside a tokio runtime.
pub(crate) fn notifications<T: Clone + Send + 'static>(
    pool: &PgPool,
    channel: &'static str,
    capacity: usize,
    on_connect: Option<T>,
    parse: impl Fn(&str) -> Option<T> + Send + 'static,
) -> Option<BoxStream<'static, T>> {
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let (tx, rx) = mpsc::channel::<T>(capacity);
    let closer = tx.clone();
    let forward = Forward {
        tx,
        on_connect,
        parse,
    };
    runtime.spawn(listen(pool.clone(), channel, forward, async move {
        closer.closed().await;
    }));
    Some(
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
            .boxed(),
    )
}

/// The [`Hearing`] of [`notifications`]: items into a bounded channel.
struct Forward<T, P> {
    tx: mpsc::Sender<T>,
    on_connect: Option<T>,
    parse: P,
}

impl<T, P> Forward<T, P> {
    /// Full: the item is dropped (or coalesced with the pending one).
    fn send(&self, item: T) -> bool {
        !matches!(
            self.tx.try_send(item),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    }
}

impl<T, P> Hearing for Forward<T, P>
where
    T: Clone + Send + 'static,
    P: Fn(&str) -> Option<T> + Send + 'static,
{
    fn connected(&mut self) -> bool {
        match self.on_connect.clone() {
            Some(item) => self.send(item),
            None => true,
        }
    }

    fn notice(&mut self, payload: &str) -> bool {
        match (self.parse)(payload) {
            Some(item) => self.send(item),
            None => true,
        }
    }
}

/// Listens on `channel` until `hearing` declines, `closed` completes or the
/// pool is closed.
pub(crate) async fn listen(
    pool: PgPool,
    channel: &'static str,
    mut hearing: impl Hearing,
    closed: impl Future<Output = ()>,
) {
    tokio::pin!(closed);
    let mut backoff = Duration::from_millis(100);
    loop {
        let connect = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(channel).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let listener = tokio::select! {
            r = connect => r,
            () = &mut closed => return,
        };
        match listener {
            Ok(mut l) => {
                backoff = Duration::from_millis(100);
                if !hearing.connected() {
                    return;
                }
                loop {
                    let next = tokio::select! {
                        r = l.try_recv() => r,
                        () = &mut closed => return,
                    };
                    match next {
                        Ok(Some(n)) => {
                            if !hearing.notice(n.payload()) {
                                return;
                            }
                        }
                        Ok(None) => {
                            tracing::warn!(channel, "listener lost its connection; reconnecting");
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(channel, error = %e, "listener failed; reconnecting");
                            break;
                        }
                    }
                }
                hearing.lost();
            }
            Err(e) => tracing::warn!(channel, error = %e, "cannot LISTEN; retrying"),
        }
        if pool.is_closed() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = &mut closed => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
