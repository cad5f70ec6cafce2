//! Queue order over the whole queue: aging as a time-invariant rank, and a
//! cursor to walk the queue page by page.
//!
//! A job's effective priority at `now` is `priority + waited_minutes ·
//! AGING_POINTS_PER_MINUTE`. Since `now` is the same for every job, ordering by
//! it is ordering by `priority · AGING_MS_PER_POINT − enqueued_at_ms`: a number
//! fixed when the job is queued. Stores keep it (an indexed column in
//! Postgres), so claim order is the aged order over every entry, not only
//! inside the first page.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AGING_POINTS_PER_MINUTE;
use super::strategy::Strategy;

/// Milliseconds of waiting worth one priority point (6000 at 10 points a minute).
pub const AGING_MS_PER_POINT: i64 = (60_000.0 / AGING_POINTS_PER_MINUTE) as i64;

/// The aged rank of a queue entry: higher is served first. Comparing two
/// ranks is comparing the entries' effective priorities at any common time.
#[must_use]
pub fn aged_rank(priority: i32, enqueued_at: DateTime<Utc>) -> i64 {
    i64::from(priority)
        .saturating_mul(AGING_MS_PER_POINT)
        .saturating_sub(enqueued_at.timestamp_millis())
}

/// In which order a queue is walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum QueueOrder {
    /// Highest [`aged_rank`] first (priority with aging), then enqueue order.
    #[default]
    Aged,
    /// Oldest `enqueued_at` first, then enqueue order.
    Fifo,
}

impl QueueOrder {
    /// The order a strategy serves the queue in.
    #[must_use]
    pub fn for_strategy(strategy: Strategy) -> Self {
        match strategy {
            Strategy::Fifo => QueueOrder::Fifo,
            _ => QueueOrder::Aged,
        }
    }
}

/// A position in a queue walk: the next page starts strictly after it.
///
/// `key` is the entry's sort key in the walk's [`QueueOrder`] (the negated
/// aged rank for `Aged`, `enqueued_at` in microseconds for `Fifo`, both
/// ascending) and `seq` the store's enqueue sequence (the tie-break).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueCursor {
    /// The sort key, ascending.
    pub key: i64,
    /// The enqueue sequence, ascending.
    pub seq: i64,
}

impl QueueCursor {
    /// A cursor at this key and sequence.
    #[must_use]
    pub fn new(key: i64, seq: i64) -> Self {
        Self { key, seq }
    }

    /// The ascending sort key of an entry in `order`.
    #[must_use]
    pub fn key_of(order: QueueOrder, priority: i32, enqueued_at: DateTime<Utc>) -> i64 {
        match order {
            QueueOrder::Aged => aged_rank(priority, enqueued_at).saturating_neg(),
            QueueOrder::Fifo => enqueued_at.timestamp_micros(),
        }
    }
}

/// One page of a queue walk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueuePage {
    /// Unclaimed entries, in walk order.
    pub entries: Vec<crate::store::QueueEntry>,
    /// Where the next page starts; `None` when this page reached the end.
    pub next: Option<QueueCursor>,
}

impl QueuePage {
    /// A page of entries and the cursor after them.
    #[must_use]
    pub fn new(entries: Vec<crate::store::QueueEntry>, next: Option<QueueCursor>) -> Self {
        Self { entries, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn rank_orders_like_effective_priority() {
        let now = Utc::now();
        let old_low = aged_rank(-1000, now - TimeDelta::minutes(201));
        let new_high = aged_rank(1000, now);
        assert!(
            old_low > new_high,
            "200 minutes of aging overtake 2000 points"
        );
        let a = aged_rank(0, now - TimeDelta::seconds(61));
        let b = aged_rank(10, now);
        assert!(a > b, "one minute is worth 10 points");
        assert!(aged_rank(5, now) > aged_rank(4, now));
        assert!(aged_rank(0, now - TimeDelta::seconds(1)) > aged_rank(0, now));
    }

    #[test]
    fn cursor_keys_ascend_in_walk_order() {
        let now = Utc::now();
        let hi = QueueCursor::key_of(QueueOrder::Aged, 10, now);
        let lo = QueueCursor::key_of(QueueOrder::Aged, 0, now);
        assert!(hi < lo, "higher rank walks first");
        let old = QueueCursor::key_of(QueueOrder::Fifo, 99, now - TimeDelta::seconds(1));
        let new = QueueCursor::key_of(QueueOrder::Fifo, -99, now);
        assert!(old < new, "fifo ignores priority");
        assert_eq!(QueueOrder::for_strategy(Strategy::Fifo), QueueOrder::Fifo);
        assert_eq!(
            QueueOrder::for_strategy(Strategy::CostAware),
            QueueOrder::Aged
        );
    }
}
