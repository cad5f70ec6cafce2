//! Fairness through the control plane on any [`Stores`] bundle: one
//! scheduling pass over a large queue must not stop at a page of jobs it
//! cannot place (the same scenario runs on memory and Postgres).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::hand_off::HandOffProvider;
use super::scheduling::{entry, now_ms, ok};
use crate::control::{ControlPlane, ControlPlaneConfig, PoolPolicy};
use crate::domain::ids::JobId;
use crate::domain::job::{Job, JobState};
use crate::domain::provider::ProviderCapabilities;
use crate::domain::spec::{CommandType, JobSpec};
use crate::scheduler::aged_rank;
use crate::store::Stores;

/// The image the provider's own eligibility check refuses.
const REFUSED_IMAGE: &str = "refused:latest";

fn caps() -> ProviderCapabilities {
    ProviderCapabilities {
        max_cpu_cores: 4.0,
        max_memory_mb: 8192,
        max_workers: 1000,
        supports_images: true,
        ..ProviderCapabilities::default()
    }
}

/// What [`no_page_size_starvation`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StarvationReport {
    /// Jobs queued.
    pub queued: usize,
    /// Jobs the one scheduling pass sent to a new worker.
    pub dispatched: usize,
    /// How long the pass took.
    pub pass: Duration,
}

/// 10 000 queued jobs of mixed priorities behind 320 unplaceable heads (160
/// asking more CPU than the provider has, 160 whose image the provider's own
/// eligibility check refuses), with room for `slots` new workers: one
/// scheduling pass must pass over the heads and dispatch, in aged order, an
/// old low-priority job and the best placeable jobs after it. `stores` must
/// be fresh and empty.
///
/// # Panics
/// On any deviation.
pub async fn no_page_size_starvation(stores: Stores) -> StarvationReport {
    const TOTAL: usize = 10_000;
    const HEADS: usize = 320;
    const SLOTS: u32 = 6;
    let c = "fairness/no-page-size-starvation";
    let now = now_ms();
    let mut placeable: Vec<(i64, JobId)> = Vec::new();
    let mut heads = Vec::new();
    let insert = |spec: JobSpec, priority: i32, at: DateTime<Utc>| {
        let mut spec = spec;
        spec.preferences.priority = priority;
        (Job::new(spec), priority, at)
    };
    let mut jobs = Vec::with_capacity(TOTAL);
    for i in 0..HEADS {
        let mut spec = JobSpec::new("head", CommandType::shell("true", [""; 0]));
        if i % 2 == 0 {
            spec.resources.cpu_cores = 64.0;
        } else {
            spec.image = Some(REFUSED_IMAGE.to_owned());
        }
        jobs.push(insert(spec, 1000, now));
    }
    // Just below the heads after aging (-1000 + 1999 = 999), above every other job.
    let old = insert(
        JobSpec::new("old-low", CommandType::shell("true", [""; 0])),
        -1000,
        now - TimeDelta::milliseconds(1999 * 6000),
    );
    let old_id = old.0.id();
    jobs.push(old);
    for i in 0..(TOTAL - HEADS - 1) {
        let prio = i32::try_from(i % 1999).unwrap_or(0) - 1000;
        let at = now - TimeDelta::milliseconds(i64::try_from(i % 977).unwrap_or(0));
        jobs.push(insert(
            JobSpec::new("filler", CommandType::shell("true", [""; 0])),
            prio,
            at,
        ));
    }
    for (job, priority, at) in &jobs {
        let stored = ok(stores.jobs.insert(job).await, c);
        ok(
            stores
                .queue
                .enqueue(entry(stored.id(), *priority, *at))
                .await,
            c,
        );
        if job.spec().name == "head" {
            heads.push(stored.id());
        } else {
            placeable.push((aged_rank(*priority, *at), stored.id()));
        }
    }
    // Stable: equal ranks keep enqueue order, as the stores do.
    placeable.sort_by_key(|p| std::cmp::Reverse(p.0));

    let config = ControlPlaneConfig {
        registration_timeout: Duration::from_secs(600),
        ..ControlPlaneConfig::default()
    };
    let cp = ControlPlane::builder()
        .config(config)
        .stores(stores.clone())
        .build();
    // Its workers never register (the specs are dropped): only what the
    // scheduler chose is looked at. It refuses `REFUSED_IMAGE` in its own
    // eligibility check.
    let (provider, _specs) = HandOffProvider::builder("fairness")
        .capabilities(caps())
        .refusing(|spec| {
            (spec.image.as_deref() == Some(REFUSED_IMAGE))
                .then(|| format!("image {REFUSED_IMAGE} not found"))
        })
        .build();
    ok(
        provider
            .register(&cp, PoolPolicy::default().max_workers(SLOTS))
            .await,
        c,
    );
    let started = std::time::Instant::now();
    ok(cp.reconcile().await, c);
    let pass = started.elapsed();

    let mut dispatched = Vec::new();
    for (_, id) in &placeable {
        let j = ok(stores.jobs.get(*id).await, c);
        if j.is_some_and(|j| j.state() != JobState::Pending) {
            dispatched.push(*id);
        }
    }
    let expected: Vec<JobId> = placeable
        .iter()
        .take(SLOTS as usize)
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(
        placeable.first().map(|p| p.1),
        Some(old_id),
        "{c}: the old low-priority job ranks first among placeable jobs"
    );
    assert_eq!(
        dispatched, expected,
        "{c}: the {SLOTS} best placeable jobs (in aged order) are dispatched past {HEADS} unplaceable heads"
    );
    for id in &heads {
        let j = ok(stores.jobs.get(*id).await, c);
        assert_eq!(
            j.map(|j| j.state()),
            Some(JobState::Pending),
            "{c}: an unplaceable head stays queued"
        );
    }
    let d = ok(cp.preview_decision(heads[1]).await, c);
    let why = format!("{:?}", d.action);
    assert!(
        why.contains(REFUSED_IMAGE),
        "{c}: the provider's own eligibility check is consulted: {why}"
    );
    cp.shutdown();
    StarvationReport {
        queued: TOTAL,
        dispatched: dispatched.len(),
        pass,
    }
}
