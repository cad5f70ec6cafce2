//! An expiring lease in the database that elects one leader per name among
//! several control-plane replicas.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;

use crate::error::map_err;
use hodei_core::store::{LeaderElection, StoreError};

/// One leader among replicas sharing a database, for work that must run in
/// one place (the rescuer, pruning, timeouts).
///
/// One row per lease name holds the holder and an expiry, judged by the
/// database clock. [`PgLeaderLease::try_acquire_or_renew`] takes the lease
/// when it is free or expired, and extends it when this holder has it; the
/// leader calls it well within `ttl` (e.g. every `ttl / 3`). When the leader
/// dies, another replica's next call after the expiry takes over.
#[derive(Debug, Clone)]
pub struct PgLeaderLease {
    pool: PgPool,
    name: String,
    holder_id: String,
    ttl: Duration,
}

impl PgLeaderLease {
    /// A lease called `name`, held as `holder_id` (unique per replica) for `ttl` per renewal.
    #[must_use]
    pub fn new(
        pool: PgPool,
        name: impl Into<String>,
        holder_id: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            pool,
            name: name.into(),
            holder_id: holder_id.into(),
            ttl,
        }
    }

    /// The lease name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This holder's id.
    #[must_use]
    pub fn holder_id(&self) -> &str {
        &self.holder_id
    }

    /// The time one acquisition or renewal lasts.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lease if it is free or expired, or renews it if this holder
    /// has it. Returns whether this holder leads until `now + ttl`.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, StoreError> {
        let ttl_us = i64::try_from(self.ttl.as_micros()).unwrap_or(i64::MAX / 2);
        let row: Option<String> = sqlx::query_scalar(
            "INSERT INTO leader_leases (name, holder, expires_at) \
             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3::double precision / 1000000)) \
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
             WHERE leader_leases.holder = EXCLUDED.holder OR leader_leases.expires_at < clock_timestamp() \
             RETURNING holder",
        )
        .bind(&self.name)
        .bind(&self.holder_id)
        .bind(ttl_us)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| map_err("lease", e))?;
        Ok(row.is_some())
    }

    /// Gives the lease up if this holder has it, so another replica can take
    /// over at once. Returns whether it was held.
    pub async fn release(&self) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM leader_leases WHERE name = $1 AND holder = $2")
            .bind(&self.name)
            .bind(&self.holder_id)
            .execute(&self.pool)
            .await
            .map_err(|e| map_err("lease", e))?
            .rows_affected();
        Ok(n > 0)
    }

    /// The current holder, if the lease is held and not expired.
    pub async fn current_holder(&self) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT holder FROM leader_leases WHERE name = $1 AND expires_at >= clock_timestamp()",
        )
        .bind(&self.name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| map_err("lease", e))
    }
}

/// [`PgLeaderLease`] as the control plane's [`LeaderElection`]: each
/// [`is_leader`](LeaderElection::is_leader) call takes or renews the lease.
///
/// A failed database check counts as not leading (logged as a warning), and
/// every change of leadership is logged (`maintenance leadership changed`).
///
/// ```no_run
/// # async fn f(stores: hodei_store_postgres::PgStores) {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use hodei_store_postgres::{PgLeaderElection, replica_holder_id};
///
/// let lease = stores.leader_lease("hodei-maintenance", replica_holder_id(), Duration::from_secs(15));
/// let election = Arc::new(PgLeaderElection::new(lease));
/// // ControlPlane::builder().leader_election(election) …
/// # let _ = election;
/// # }
/// ```
#[derive(Debug)]
pub struct PgLeaderElection {
    lease: PgLeaderLease,
    leading: AtomicBool,
}

impl PgLeaderElection {
    /// Elects through `lease`; this replica starts as not leading.
    #[must_use]
    pub fn new(lease: PgLeaderLease) -> Self {
        Self {
            lease,
            leading: AtomicBool::new(false),
        }
    }

    /// The lease this election renews.
    #[must_use]
    pub fn lease(&self) -> &PgLeaderLease {
        &self.lease
    }
}

#[async_trait::async_trait]
impl LeaderElection for PgLeaderElection {
    async fn is_leader(&self) -> bool {
        let now = match self.lease.try_acquire_or_renew().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "leader lease check failed");
                false
            }
        };
        let before = self.leading.swap(now, Ordering::Relaxed);
        if before != now {
            tracing::info!(leading = now, "maintenance leadership changed");
        }
        now
    }
}

/// A lease holder id unique to this process: the host name
/// (`/proc/sys/kernel/hostname`, `hodei` when unreadable) and a random UUID.
#[must_use]
pub fn replica_holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "hodei".into());
    format!("{host}-{}", uuid::Uuid::new_v4())
}
