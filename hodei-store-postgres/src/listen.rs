//! One LISTEN loop for every notification channel of the store (the queue's
//! wake-ups, the log appends of other replicas): a dedicated connection,
//! reconnected with backoff, forwarding what it hears into a bounded channel.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;

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
    runtime.spawn(forward(pool.clone(), channel, tx, on_connect, parse));
    Some(
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
            .boxed(),
    )
}

/// The loop behind [`notifications`]; ends when the receiver is dropped or
/// the pool is closed.
async fn forward<T: Clone>(
    pool: PgPool,
    channel: &'static str,
    tx: mpsc::Sender<T>,
    on_connect: Option<T>,
    parse: impl Fn(&str) -> Option<T>,
) {
    // Full: the item is dropped (or coalesced with the pending one).
    let send = |item: T| !matches!(tx.try_send(item), Err(mpsc::error::TrySendError::Closed(_)));
    let mut backoff = Duration::from_millis(100);
    loop {
        let connect = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(channel).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let listener = tokio::select! {
            r = connect => r,
            () = tx.closed() => return,
        };
        match listener {
            Ok(mut l) => {
                backoff = Duration::from_millis(100);
                if let Some(item) = on_connect.clone()
                    && !send(item)
                {
                    return;
                }
                loop {
                    let next = tokio::select! {
                        r = l.try_recv() => r,
                        () = tx.closed() => return,
                    };
                    match next {
                        Ok(Some(n)) => {
                            if let Some(item) = parse(n.payload())
                                && !send(item)
                            {
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
            }
            Err(e) => tracing::warn!(channel, error = %e, "cannot LISTEN; retrying"),
        }
        if pool.is_closed() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = tx.closed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
