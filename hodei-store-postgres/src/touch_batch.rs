//! Heartbeats written in groups (group commit).
//!
//! With thousands of agents, heartbeats are most of the writes: 10,000
//! agents beating every 5 s are 2,000 statements a second, each a round
//! trip, a commit and a pool connection taken from the dispatch path. Here
//! the touches that arrive while one is being written wait for it and are
//! then written together, in one `UPDATE … FROM UNNEST(…)`: a lone heartbeat
//! is written at once (no timer, no added latency on a quiet server), and
//! under load the statements per second fall with the batch size.
//!
//! No background task: whoever holds the writer lock writes everything
//! queued and answers every waiter. A caller cancelled mid-write drops its
//! batch; the waiters see their answer channel closed and queue their touch
//! again (a touch is idempotent).

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use hodei_core::domain::ids::{JobId, WorkerId};
use hodei_core::domain::worker_stats::WorkerStats;
use hodei_core::store::StoreError;
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::error::{codec, map_err};

/// What a touch answers: the jobs of a live worker, `None` when it is gone
/// or unknown.
pub(crate) type TouchOutcome = Result<Option<Vec<JobId>>, StoreError>;

/// One heartbeat (or stats report) to record.
#[derive(Debug, Clone)]
pub(crate) struct Touch {
    pub(crate) worker: WorkerId,
    pub(crate) at: DateTime<Utc>,
    pub(crate) stats: Option<WorkerStats>,
}

struct Waiting {
    touch: Touch,
    reply: oneshot::Sender<TouchOutcome>,
}

/// Queues touches and writes them in groups (see the module docs).
#[derive(Default)]
pub(crate) struct TouchBatcher {
    queue: Mutex<Vec<Waiting>>,
    /// Held by the caller writing a group; the others wait here, and the
    /// next holder writes what queued up meanwhile.
    writer: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TouchBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TouchBatcher").finish_non_exhaustive()
    }
}

impl TouchBatcher {
    /// Records `touch`, in a group with whatever else is waiting.
    pub(crate) async fn touch(&self, pool: &PgPool, touch: Touch) -> TouchOutcome {
        loop {
            let (reply, mut answer) = oneshot::channel();
            self.queue_mut().push(Waiting {
                touch: touch.clone(),
                reply,
            });
            let _writing = self.writer.lock().await;
            match answer.try_recv() {
                // Written by the holder before us.
                Ok(outcome) => return outcome,
                // Taken by a holder that was cancelled: queue it again.
                Err(oneshot::error::TryRecvError::Closed) => continue,
                // Still queued (nobody takes from the queue without the
                // lock): write it, with everything queued since.
                Err(oneshot::error::TryRecvError::Empty) => {
                    let group = std::mem::take(&mut *self.queue_mut());
                    write_group(pool, group).await;
                    return answer.await.unwrap_or_else(|_| {
                        Err(StoreError::Backend(
                            "a heartbeat group lost its answer".into(),
                        ))
                    });
                }
            }
        }
    }

    fn queue_mut(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        // The queue is only pushed to and taken whole: a panic elsewhere
        // cannot leave it half-changed.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Writes a group and answers each waiter.
async fn write_group(pool: &PgPool, group: Vec<Waiting>) {
    let merged = merge(group.iter().map(|w| &w.touch));
    let outcome = write(pool, &merged).await;
    for waiting in group {
        let answer = match &outcome {
            Ok(jobs) => Ok(jobs.get(&waiting.touch.worker).cloned()),
            Err(e) => Err(e.clone()),
        };
        // A waiter that went away no longer needs its answer.
        let _ = waiting.reply.send(answer);
    }
}

/// One touch per worker, as if the group's touches were applied in order:
/// the last heartbeat time, and the newest stats (a touch never stores
/// stats older than the stored ones). Ordered by worker id, so two
/// replicas' groups lock rows in the same order.
fn merge<'a>(touches: impl Iterator<Item = &'a Touch>) -> BTreeMap<WorkerId, Touch> {
    let mut merged: BTreeMap<WorkerId, Touch> = BTreeMap::new();
    for t in touches {
        match merged.get_mut(&t.worker) {
            None => {
                merged.insert(t.worker, t.clone());
            }
            Some(m) => {
                m.at = t.at;
                if let Some(s) = &t.stats {
                    let newer = m
                        .stats
                        .as_ref()
                        .is_none_or(|old| old.sampled_at <= s.sampled_at);
                    if newer {
                        m.stats = Some(s.clone());
                    }
                }
            }
        }
    }
    merged
}

/// One statement for the whole group: the live workers' jobs, by worker.
async fn write(
    pool: &PgPool,
    touches: &BTreeMap<WorkerId, Touch>,
) -> Result<BTreeMap<WorkerId, Vec<JobId>>, StoreError> {
    let mut ids = Vec::with_capacity(touches.len());
    let mut ats = Vec::with_capacity(touches.len());
    let mut stats = Vec::with_capacity(touches.len());
    for t in touches.values() {
        ids.push(*t.worker.as_uuid());
        ats.push(serde_json::to_value(t.at).map_err(|e| codec("worker", e))?);
        stats.push(
            t.stats
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(|e| codec("worker", e))?,
        );
    }
    // The row is changed in place, as a single touch does: a concurrent
    // read-modify-write of a worker is never undone beyond its heartbeat
    // time, and stats older than the stored ones are ignored.
    let rows: Vec<(Uuid, serde_json::Value)> = sqlx::query_as(
        "UPDATE workers w SET data = CASE \
           WHEN t.stats IS NOT NULL AND (w.data->'stats' IS NULL \
                OR jsonb_typeof(w.data->'stats') = 'null' \
                OR (w.data->'stats'->>'sampled_at')::timestamptz <= (t.stats->>'sampled_at')::timestamptz) \
             THEN jsonb_set(jsonb_set(w.data, '{last_heartbeat}', t.at), '{stats}', t.stats) \
           ELSE jsonb_set(w.data, '{last_heartbeat}', t.at) END \
         FROM UNNEST($1::uuid[], $2::jsonb[], $3::jsonb[]) AS t(id, at, stats) \
         WHERE w.id = t.id AND w.state NOT IN ('terminating', 'terminated') \
         RETURNING w.id, w.data->'current_jobs'",
    )
    .bind(ids)
    .bind(ats)
    .bind(stats)
    .fetch_all(pool)
    .await
    .map_err(|e| map_err("worker", e))?;
    rows.into_iter()
        .map(|(id, jobs)| {
            let jobs = serde_json::from_value(jobs).map_err(|e| codec("worker", e))?;
            Ok((WorkerId::from(id), jobs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_at(at: DateTime<Utc>) -> WorkerStats {
        WorkerStats::new(0.0, 1, 0, at)
    }

    #[test]
    fn a_group_keeps_the_last_time_and_the_newest_stats_per_worker() {
        let (a, b) = (WorkerId::new(), WorkerId::new());
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(1);
        let t2 = t0 + chrono::Duration::seconds(2);
        let touches = [
            Touch {
                worker: a,
                at: t0,
                stats: Some(stats_at(t1)),
            },
            Touch {
                worker: b,
                at: t0,
                stats: None,
            },
            // Newer time, older stats: the time moves, the stats stay.
            Touch {
                worker: a,
                at: t2,
                stats: Some(stats_at(t0)),
            },
        ];
        let merged = merge(touches.iter());
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[&a].at, t2);
        assert_eq!(merged[&a].stats.as_ref().map(|s| s.sampled_at), Some(t1));
        assert!(merged[&b].stats.is_none());
        let order: Vec<_> = merged.keys().copied().collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted, "rows are locked in id order");
    }
}
