use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeDelta, Utc};

use super::*;
use crate::domain::provider::{ProviderCapabilities, ProviderStatus};
use crate::domain::spec::{CommandType, Constraint, ConstraintOp};
use crate::domain::worker::WorkerState;

fn spec() -> JobSpec {
    let mut s = JobSpec::new("t", CommandType::shell("true", [""; 0]));
    s.resources.cpu_cores = 1.0;
    s.resources.memory_mb = 512;
    s
}

fn caps(cpu: f64, mem: u64) -> ProviderCapabilities {
    ProviderCapabilities {
        max_cpu_cores: cpu,
        max_memory_mb: mem,
        architectures: Vec::new(),
        ..ProviderCapabilities::default()
    }
}

fn provider(name: &str) -> ProviderView {
    ProviderView::new(ProviderId::new(), name, caps(8.0, 16_384)).with_workers(0, 10)
}

fn worker(p: &ProviderView, state: WorkerState, free: u32) -> WorkerView {
    WorkerView::new(WorkerId::new(), p.id, state, free)
}

fn snap(workers: Vec<WorkerView>, providers: Vec<ProviderView>) -> SchedulingSnapshot {
    SchedulingSnapshot::new(workers, providers)
}

// ---- filtering -------------------------------------------------------------

#[test]
fn no_providers_waits() {
    for s in Strategy::ALL {
        assert_eq!(
            decide(s, &spec(), &snap(vec![], vec![])),
            Decision::Wait(WaitReason::NoProviders)
        );
    }
}

#[test]
fn idle_worker_is_preferred_over_provisioning() {
    let p = provider("p");
    let w = worker(&p, WorkerState::Ready, 1);
    for s in Strategy::ALL {
        assert_eq!(
            decide(s, &spec(), &snap(vec![w.clone()], vec![p.clone()])),
            Decision::AssignWorker(w.id),
            "{s}"
        );
    }
}

#[test]
fn workers_that_cannot_take_jobs_are_skipped() {
    let p = provider("p");
    let full = worker(&p, WorkerState::Busy, 0);
    let connecting = worker(&p, WorkerState::Connecting, 1);
    let draining = worker(&p, WorkerState::Draining, 1);
    let busy_with_room = worker(&p, WorkerState::Busy, 1);
    let snapshot = snap(
        vec![full, connecting, draining, busy_with_room.clone()],
        vec![p.clone()],
    );
    assert_eq!(
        decide(Strategy::Priority, &spec(), &snapshot),
        Decision::AssignWorker(busy_with_room.id)
    );
    let snapshot = snap(vec![worker(&p, WorkerState::Busy, 0)], vec![p.clone()]);
    assert_eq!(
        decide(Strategy::Priority, &spec(), &snapshot),
        Decision::Provision(p.id)
    );
}

#[test]
fn preferred_provider_is_required_by_name_or_id() {
    let a = provider("a");
    let b = provider("b");
    let wa = worker(&a, WorkerState::Ready, 1);
    let snapshot = snap(vec![wa], vec![a.clone(), b.clone()]);
    let by_name = spec().with_provider("b");
    assert_eq!(
        decide(Strategy::Priority, &by_name, &snapshot),
        Decision::Provision(b.id),
        "the idle worker of another provider is not used"
    );
    let by_id = spec().with_provider(b.id.to_string());
    assert_eq!(
        decide(Strategy::CostAware, &by_id, &snapshot),
        Decision::Provision(b.id)
    );
    let missing = spec().with_provider("docker");
    assert_eq!(
        decide(Strategy::Priority, &missing, &snapshot),
        Decision::Wait(WaitReason::PreferredProviderNotFound {
            preferred: "docker".into()
        })
    );
}

#[test]
fn ineligible_providers_are_filtered_with_reasons() {
    let small = ProviderView::new(ProviderId::new(), "small", caps(1.0, 1024));
    let big = ProviderView::new(ProviderId::new(), "big", caps(16.0, 65_536));
    let mut s = spec();
    s.resources.cpu_cores = 4.0;
    let ws = worker(&small, WorkerState::Ready, 1);
    let snapshot = snap(vec![ws], vec![small.clone(), big.clone()]);
    assert_eq!(
        decide(Strategy::Priority, &s, &snapshot),
        Decision::Provision(big.id),
        "the idle worker of an ineligible provider is skipped"
    );
    s.resources.cpu_cores = 32.0;
    match decide(Strategy::Priority, &s, &snapshot) {
        Decision::Wait(WaitReason::NoEligibleProvider { reasons }) => {
            assert_eq!(reasons.len(), 2);
            assert!(reasons[0].starts_with("small: needs 32 cpu"), "{reasons:?}");
        }
        other => panic!("expected NoEligibleProvider, got {other:?}"),
    }
    let mut gpu = spec();
    gpu.resources.gpu_required = true;
    assert!(matches!(
        decide(Strategy::Priority, &gpu, &snapshot),
        Decision::Wait(WaitReason::NoEligibleProvider { .. })
    ));
}

#[test]
fn unavailable_providers_are_filtered() {
    let sick = provider("sick").with_status(ProviderStatus::Unhealthy);
    let paused = provider("paused").with_status(ProviderStatus::Maintenance);
    let w = worker(&sick, WorkerState::Ready, 1);
    let snapshot = snap(vec![w], vec![sick.clone(), paused.clone()]);
    match decide(Strategy::Priority, &spec(), &snapshot) {
        Decision::Wait(WaitReason::NoAvailableProvider { statuses }) => {
            assert_eq!(statuses, vec!["sick: unhealthy", "paused: maintenance"]);
        }
        other => panic!("expected NoAvailableProvider, got {other:?}"),
    }
    let ok = provider("ok");
    let snapshot = snap(vec![], vec![sick, ok.clone()]);
    assert_eq!(
        decide(Strategy::Priority, &spec(), &snapshot),
        Decision::Provision(ok.id)
    );
}

#[test]
fn providers_at_their_worker_limit_are_not_provisioned() {
    let full = provider("full").with_workers(10, 10);
    let snapshot = snap(vec![], vec![full.clone()]);
    assert_eq!(
        decide(Strategy::LeastLoaded, &spec(), &snapshot),
        Decision::Wait(WaitReason::AtCapacity)
    );
    // An idle worker of a full provider still takes the job.
    let w = worker(&full, WorkerState::Ready, 1);
    let snapshot = snap(vec![w.clone()], vec![full]);
    assert_eq!(
        decide(Strategy::LeastLoaded, &spec(), &snapshot),
        Decision::AssignWorker(w.id)
    );
}

#[test]
fn constraints_filter_providers_and_workers() {
    let mut c = caps(8.0, 16_384);
    c.labels.insert("zone".into(), "a".into());
    let zone_a = ProviderView::new(ProviderId::new(), "zone-a", c).with_workers(0, 4);
    let plain = provider("plain");
    let mut s = spec();
    s.constraints.push(Constraint {
        key: "zone".into(),
        op: ConstraintOp::Eq,
        values: vec!["a".into()],
    });
    let mut labels = BTreeMap::new();
    labels.insert("zone".into(), "b".into());
    let w_b = worker(&zone_a, WorkerState::Ready, 1).with_labels(labels);
    let w_plain = worker(&plain, WorkerState::Ready, 1);
    let snapshot = snap(vec![w_b, w_plain], vec![plain, zone_a.clone()]);
    assert_eq!(
        decide(Strategy::Priority, &s, &snapshot),
        Decision::Provision(zone_a.id),
        "a worker whose own label contradicts the constraint is skipped"
    );
}

#[test]
fn worker_resources_must_fit() {
    let p = provider("p");
    let tiny = worker(&p, WorkerState::Ready, 1).with_resources(WorkerResources::new(0.5, 256));
    let snapshot = snap(vec![tiny], vec![p.clone()]);
    assert_eq!(
        decide(Strategy::BinPacking, &spec(), &snapshot),
        Decision::Provision(p.id)
    );
}

// ---- strategies -----------------------------------------------------------

#[test]
fn least_loaded_picks_most_free_capacity() {
    let p = provider("p");
    let w1 = worker(&p, WorkerState::Busy, 1);
    let w3 = worker(&p, WorkerState::Busy, 3);
    let w2 = worker(&p, WorkerState::Ready, 2);
    let snapshot = snap(vec![w1, w3.clone(), w2], vec![p.clone()]);
    assert_eq!(
        decide(Strategy::LeastLoaded, &spec(), &snapshot),
        Decision::AssignWorker(w3.id)
    );

    let busy = provider("busy").with_workers(8, 10);
    let quiet = provider("quiet").with_workers(1, 4);
    let snapshot = snap(vec![], vec![busy, quiet.clone()]);
    assert_eq!(
        decide(Strategy::LeastLoaded, &spec(), &snapshot),
        Decision::Provision(quiet.id),
        "75% free beats 20% free"
    );
}

#[test]
fn bin_packing_picks_tightest_fit() {
    let p = provider("p");
    let roomy = worker(&p, WorkerState::Ready, 1).with_resources(WorkerResources::new(8.0, 8192));
    let snug = worker(&p, WorkerState::Busy, 1).with_resources(WorkerResources::new(1.5, 768));
    let too_small =
        worker(&p, WorkerState::Ready, 1).with_resources(WorkerResources::new(0.5, 8192));
    let snapshot = snap(vec![roomy, snug.clone(), too_small], vec![p.clone()]);
    assert_eq!(
        decide(Strategy::BinPacking, &spec(), &snapshot),
        Decision::AssignWorker(snug.id)
    );

    let large = ProviderView::new(ProviderId::new(), "large", caps(64.0, 262_144));
    let medium = ProviderView::new(ProviderId::new(), "medium", caps(2.0, 2048));
    let small = ProviderView::new(ProviderId::new(), "small", caps(0.5, 256));
    let snapshot = snap(vec![], vec![large, medium.clone(), small]);
    assert_eq!(
        decide(Strategy::BinPacking, &spec(), &snapshot),
        Decision::Provision(medium.id)
    );
}

#[test]
fn cost_aware_picks_cheapest() {
    let dear = provider("dear").with_cost_per_hour(3.0);
    let cheap = provider("cheap").with_cost_per_hour(0.2);
    let mid = provider("mid").with_cost_per_hour(1.0);
    let snapshot = snap(vec![], vec![dear.clone(), cheap.clone(), mid.clone()]);
    assert_eq!(
        decide(Strategy::CostAware, &spec(), &snapshot),
        Decision::Provision(cheap.id)
    );
    let wd = worker(&dear, WorkerState::Ready, 1);
    let wm = worker(&mid, WorkerState::Ready, 1);
    let snapshot = snap(vec![wd, wm.clone()], vec![dear, cheap, mid]);
    assert_eq!(
        decide(Strategy::CostAware, &spec(), &snapshot),
        Decision::AssignWorker(wm.id),
        "an existing worker first, the cheapest provider's"
    );
}

#[test]
fn fastest_startup_picks_shortest_and_idle_counts_as_zero() {
    let slow = provider("slow").with_estimated_startup(Duration::from_secs(30));
    let fast = provider("fast").with_estimated_startup(Duration::from_millis(200));
    let snapshot = snap(vec![], vec![slow.clone(), fast.clone()]);
    assert_eq!(
        decide(Strategy::FastestStartup, &spec(), &snapshot),
        Decision::Provision(fast.id)
    );
    let w = worker(&slow, WorkerState::Ready, 1);
    let snapshot = snap(vec![w.clone()], vec![slow, fast]);
    assert_eq!(
        decide(Strategy::FastestStartup, &spec(), &snapshot),
        Decision::AssignWorker(w.id)
    );
}

#[test]
fn fifo_and_priority_take_the_first_idle_worker_then_the_first_provider() {
    let a = provider("a");
    let b = provider("b");
    let busy = worker(&a, WorkerState::Busy, 2);
    let idle = worker(&b, WorkerState::Ready, 1);
    let snapshot = snap(vec![busy, idle.clone()], vec![a.clone(), b.clone()]);
    for s in [Strategy::Fifo, Strategy::Priority] {
        assert_eq!(
            decide(s, &spec(), &snapshot),
            Decision::AssignWorker(idle.id)
        );
        assert_eq!(
            decide(s, &spec(), &snap(vec![], vec![a.clone(), b.clone()])),
            Decision::Provision(a.id)
        );
    }
}

// ---- queue order ----------------------------------------------------------

#[test]
fn fifo_orders_by_enqueue_time() {
    let now = Utc::now();
    let old = QueueView::new(JobId::new(), -100, now - TimeDelta::seconds(30));
    let new = QueueView::new(JobId::new(), 100, now);
    let mid = QueueView::new(JobId::new(), 0, now - TimeDelta::seconds(10));
    assert_eq!(
        order_queue(Strategy::Fifo, &[new, old, mid], now),
        vec![old.job_id, mid.job_id, new.job_id]
    );
}

#[test]
fn priority_orders_by_priority_then_age() {
    let now = Utc::now();
    let t = now - TimeDelta::seconds(1);
    let low = QueueView::new(JobId::new(), 0, t);
    let high = QueueView::new(JobId::new(), 50, t);
    let high_older = QueueView::new(JobId::new(), 50, t - TimeDelta::milliseconds(1));
    assert_eq!(
        order_queue(Strategy::Priority, &[low, high, high_older], now),
        vec![high_older.job_id, high.job_id, low.job_id]
    );
}

#[test]
fn priority_aging_prevents_starvation() {
    let now = Utc::now();
    // 200 points below, waiting 21 minutes: 210 points of aging.
    let starving = QueueView::new(JobId::new(), -100, now - TimeDelta::minutes(21));
    let fresh = QueueView::new(JobId::new(), 100, now);
    assert_eq!(
        order_queue(Strategy::Priority, &[fresh, starving], now),
        vec![starving.job_id, fresh.job_id]
    );
    // After only 19 minutes it still waits.
    let waiting = QueueView::new(JobId::new(), -100, now - TimeDelta::minutes(19));
    assert_eq!(
        order_queue(Strategy::Priority, &[waiting, fresh], now),
        vec![fresh.job_id, waiting.job_id]
    );
    let e = effective_priority(&waiting, now);
    assert!((e - (-100.0 + 190.0)).abs() < 1e-6, "{e}");
    // A job enqueued "in the future" (clock skew) gets no negative aging.
    let skewed = QueueView::new(JobId::new(), 5, now + TimeDelta::minutes(5));
    assert!((effective_priority(&skewed, now) - 5.0).abs() < 1e-9);
}

#[test]
fn strategies_parse_and_print() {
    for s in Strategy::ALL {
        assert_eq!(s.to_string().parse::<Strategy>(), Ok(s));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<Strategy>(&json).unwrap(), s);
    }
    assert_eq!(
        "Least-Loaded".parse::<Strategy>(),
        Ok(Strategy::LeastLoaded)
    );
    assert_eq!(
        " BIN_PACKING ".parse::<Strategy>(),
        Ok(Strategy::BinPacking)
    );
    let err = "random".parse::<Strategy>().unwrap_err();
    assert!(err.to_string().contains("random"));
    assert_eq!(Strategy::default(), Strategy::Priority);
}

#[test]
fn views_from_aggregates() {
    use crate::domain::provider::{Provider, ProviderConfig};
    use crate::domain::worker::{Worker, WorkerHandle};
    let p = Provider::new(
        ProviderId::new(),
        "process",
        ProviderConfig::Custom {
            settings: BTreeMap::new(),
        },
        caps(4.0, 4096),
    );
    let pv = ProviderView::from_provider(&p);
    assert_eq!(pv.name, "process");
    assert!(pv.is_available());
    let mut w = Worker::new(WorkerId::new(), p.id()).with_limits(2, Some(1));
    let wv = WorkerView::from_worker(&w);
    assert!(!wv.takes_jobs(), "a creating worker takes no jobs");
    w.created(WorkerHandle::new(w.id(), p.id(), "x")).unwrap();
    w.registered().unwrap();
    let wv = WorkerView::from_worker(&w);
    assert_eq!(wv.free_slots, 1, "bounded by the lifetime budget");
    w.assign(JobId::new()).unwrap();
    assert_eq!(WorkerView::from_worker(&w).free_slots, 0);
}

// ---- region preference -------------------------------------------------------

fn in_region(name: &str, region: &str) -> ProviderView {
    let mut c = caps(8.0, 16_384);
    c.regions = vec![region.to_owned()];
    ProviderView::new(ProviderId::new(), name, c).with_workers(0, 10)
}

#[test]
fn a_preferred_region_is_tried_first_and_only_preferred() {
    let eu = in_region("eu", "eu-west");
    let us = in_region("us", "us-east");
    let us_idle = worker(&us, WorkerState::Ready, 1);
    let mut s = spec();
    s.preferences.preferred_region = Some("eu-west".into());
    for strategy in Strategy::ALL {
        // Provisioning in the region beats an idle worker elsewhere.
        assert_eq!(
            decide(
                strategy,
                &s,
                &snap(vec![us_idle.clone()], vec![us.clone(), eu.clone()])
            ),
            Decision::Provision(eu.id),
            "{strategy}"
        );
        // A worker in the region beats provisioning there.
        let eu_idle = worker(&eu, WorkerState::Ready, 1);
        assert_eq!(
            decide(
                strategy,
                &s,
                &snap(
                    vec![us_idle.clone(), eu_idle.clone()],
                    vec![us.clone(), eu.clone()]
                )
            ),
            Decision::AssignWorker(eu_idle.id),
            "{strategy}"
        );
        // The region full: elsewhere rather than waiting.
        let eu_full = eu.clone().with_workers(10, 10);
        assert_eq!(
            decide(
                strategy,
                &s,
                &snap(vec![us_idle.clone()], vec![us.clone(), eu_full])
            ),
            Decision::AssignWorker(us_idle.id),
            "{strategy}"
        );
        // An unknown region is only a preference.
        let mut mars = spec();
        mars.preferences.preferred_region = Some("mars-1".into());
        assert_eq!(
            decide(strategy, &mars, &snap(vec![], vec![us.clone()])),
            Decision::Provision(us.id),
            "{strategy}"
        );
    }
}

// ---- take_slot -------------------------------------------------------------

#[test]
fn take_slot_follows_the_workers_even_when_they_change_under_it() {
    let p = provider("p");
    let (a, b) = (
        worker(&p, WorkerState::Ready, 2),
        worker(&p, WorkerState::Busy, 1),
    );
    let mut s = snap(vec![a.clone(), b.clone()], vec![p.clone()]);
    s.take_slot(b.id);
    s.take_slot(a.id);
    s.take_slot(WorkerId::new()); // unknown: nothing changes
    assert_eq!(s.workers[0].free_slots, 1);
    assert_eq!(s.workers[1].free_slots, 0);
    // The public list is reordered and grown: the positions are rebuilt.
    let c = worker(&p, WorkerState::Ready, 3);
    s.workers.reverse();
    s.workers.push(c.clone());
    s.take_slot(a.id);
    s.take_slot(c.id);
    assert_eq!(s.workers[1].id, a.id);
    assert_eq!(s.workers[1].free_slots, 0);
    assert_eq!(s.workers[2].free_slots, 2);
    // Replaced in place, same length.
    let d = worker(&p, WorkerState::Ready, 5);
    s.workers[0] = d.clone();
    s.take_slot(d.id);
    s.take_slot(c.id);
    assert_eq!(s.workers[0].free_slots, 4);
    assert_eq!(s.workers[2].free_slots, 1);
    // The positions are not part of the snapshot's value.
    assert_eq!(
        s.clone(),
        SchedulingSnapshot::new(s.workers.clone(), s.providers.clone())
    );
}

#[test]
fn first_idle_strategies_pick_the_first_idle_worker_after_busy_ones() {
    let p = provider("p");
    let busy = worker(&p, WorkerState::Busy, 1);
    let full = worker(&p, WorkerState::Ready, 0);
    let idle = worker(&p, WorkerState::Ready, 1);
    let idle2 = worker(&p, WorkerState::Ready, 1);
    let s = snap(
        vec![busy.clone(), full, idle.clone(), idle2],
        vec![p.clone()],
    );
    for st in [Strategy::Fifo, Strategy::Priority, Strategy::FastestStartup] {
        assert_eq!(
            decide(st, &spec(), &s),
            Decision::AssignWorker(idle.id),
            "{st}"
        );
    }
    let only_busy = snap(vec![busy.clone()], vec![p]);
    assert_eq!(
        decide(Strategy::Priority, &spec(), &only_busy),
        Decision::AssignWorker(busy.id)
    );
}

#[test]
fn capacity_counts_only_workers_a_job_could_be_placed_on() {
    let mut p = provider("p").with_workers(1, 1);
    let free = worker(&p, WorkerState::Ready, 1);
    assert!(snap(vec![free.clone()], vec![p.clone()]).has_capacity());
    // The provider's stored load says it is full, a release not yet
    // counted: the worker's free slot, not that count, decides. The job goes
    // to it at once rather than after the recount.
    p.status = ProviderStatus::Overloaded;
    let overloaded = snap(vec![free.clone()], vec![p.clone()]);
    assert!(overloaded.has_capacity());
    for s in Strategy::ALL {
        assert_eq!(
            decide(s, &spec(), &overloaded),
            Decision::AssignWorker(free.id),
            "{s}"
        );
    }
    // Its slot taken, nothing is left: the limit holds through the slots.
    let mut full = overloaded.clone();
    full.take_slot(free.id);
    assert!(!full.has_capacity());
    // An unhealthy provider's free worker takes no job, and a pass must not
    // read the whole queue to find that out.
    p.status = ProviderStatus::Unhealthy;
    let unhealthy = snap(vec![free.clone()], vec![p.clone()]);
    assert!(!unhealthy.has_capacity());
    for s in Strategy::ALL {
        assert!(matches!(decide(s, &spec(), &unhealthy), Decision::Wait(_)));
    }
    // A worker of a provider this snapshot does not hold.
    let elsewhere = provider("elsewhere").with_workers(1, 1);
    let stranger = worker(&elsewhere, WorkerState::Ready, 1);
    p.status = ProviderStatus::Active;
    assert!(!snap(vec![stranger], vec![p]).has_capacity());
}

#[test]
fn free_capacity_counts_slots_and_room_up_to_the_cap() {
    let p = provider("p").with_workers(2, 5); // room for 3 more workers
    let idle = worker(&p, WorkerState::Ready, 2);
    let full = worker(&p, WorkerState::Busy, 0);
    let s = snap(vec![idle.clone(), full], vec![p.clone()]);
    assert_eq!(s.free_capacity(100), 5, "2 free slots + room for 3 workers");
    assert_eq!(s.free_capacity(4), 4, "stops at the cap");
    let mut taken = s.clone();
    taken.take_slot(idle.id);
    assert_eq!(taken.free_capacity(100), 4, "a taken slot no longer counts");
    // Workers of an unavailable provider, or of one the snapshot lacks, count nothing.
    let mut down = p.clone().with_workers(5, 5);
    down.status = ProviderStatus::Unhealthy;
    assert_eq!(snap(vec![idle.clone()], vec![down]).free_capacity(100), 0);
    let elsewhere = provider("elsewhere").with_workers(1, 1);
    let stranger = worker(&elsewhere, WorkerState::Ready, 1);
    assert_eq!(
        snap(vec![stranger], vec![p.with_workers(5, 5)]).free_capacity(100),
        0
    );
}
