//! The [`AuditLog`] conformance cases, part of
//! [`run_store_conformance`](super::stores::run_store_conformance): ids
//! increase, entries come back newest first with every field intact, each
//! filter narrows, `before` pages through the whole log without gaps or
//! repeats, and concurrent appends all land with distinct ids.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};

use crate::store::{AuditAction, AuditFilter, AuditLog, AuditOutcome, NewAuditEntry};

#[track_caller]
fn ok<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("store conformance: {what}: unexpected error {e:?}"),
    }
}

/// Every [`AuditLog`] case. `make` returns a fresh, empty log.
pub async fn audit_log_conformance<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn AuditLog>>,
{
    audit_round_trip(make().await).await;
    audit_filters(make().await).await;
    audit_paging(make().await).await;
    audit_concurrent_appends(make().await).await;
}

async fn audit_round_trip(log: Arc<dyn AuditLog>) {
    let c = "audit/round-trip";
    // Whole microseconds: what every backend keeps of a timestamp.
    let at = Utc.timestamp_opt(1_800_000_000, 123_456_000).unwrap();
    let first = ok(
        log.append(&NewAuditEntry::new("ci-bot", AuditAction::JobSubmit, "job:a").at(at))
            .await,
        c,
    );
    let failed = NewAuditEntry::new("alice", AuditAction::ProviderDelete, "provider:docker")
        .with_outcome(AuditOutcome::Failure, "provider docker not found")
        .at(at + Duration::seconds(1));
    let second = ok(log.append(&failed).await, c);
    assert!(second.id > first.id, "{c}: ids must increase");
    let all = ok(log.list(&AuditFilter::default()).await, c);
    assert_eq!(all.len(), 2, "{c}: both entries listed");
    assert_eq!(all[0].id, second.id, "{c}: newest first");
    assert_eq!(all[0].entry, failed, "{c}: every field kept");
    assert_eq!(all[1].entry.at, at, "{c}: time kept");
    assert_eq!(all[1].entry.actor, "ci-bot", "{c}: actor kept");
}

async fn audit_filters(log: Arc<dyn AuditLog>) {
    let c = "audit/filters";
    let t0 = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
    let rows = [
        ("alice", AuditAction::JobSubmit, "job:1", 0),
        ("alice", AuditAction::JobCancel, "job:1", 10),
        ("bob", AuditAction::JobSubmit, "job:2", 20),
        ("worker:w1", AuditAction::SecretInjected, "job:2", 30),
    ];
    for (actor, action, target, secs) in rows {
        ok(
            log.append(&NewAuditEntry::new(actor, action, target).at(t0 + Duration::seconds(secs)))
                .await,
            c,
        );
    }
    let count = |f: AuditFilter| {
        let log = log.clone();
        async move { ok(log.list(&f).await, c).len() }
    };
    let by_actor = AuditFilter {
        actor: Some("alice".into()),
        ..AuditFilter::default()
    };
    assert_eq!(count(by_actor).await, 2, "{c}: by actor");
    let by_action = AuditFilter {
        action: Some(AuditAction::JobSubmit),
        ..AuditFilter::default()
    };
    assert_eq!(count(by_action).await, 2, "{c}: by action");
    let by_target = AuditFilter {
        target: Some("job:2".into()),
        ..AuditFilter::default()
    };
    assert_eq!(count(by_target).await, 2, "{c}: by target");
    let since = AuditFilter {
        since: Some(t0 + Duration::seconds(20)),
        ..AuditFilter::default()
    };
    assert_eq!(count(since).await, 2, "{c}: since is inclusive");
    let all_of = AuditFilter {
        actor: Some("bob".into()),
        action: Some(AuditAction::JobSubmit),
        target: Some("job:2".into()),
        ..AuditFilter::default()
    };
    assert_eq!(count(all_of).await, 1, "{c}: conditions combine");
    let none = AuditFilter {
        actor: Some("mallory".into()),
        ..AuditFilter::default()
    };
    assert_eq!(count(none).await, 0, "{c}: unknown actor");
}

async fn audit_paging(log: Arc<dyn AuditLog>) {
    let c = "audit/paging";
    for i in 0..25 {
        ok(
            log.append(&NewAuditEntry::new(
                "pager",
                AuditAction::JobRetry,
                format!("job:{i}"),
            ))
            .await,
            c,
        );
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = ok(
            log.list(&AuditFilter {
                before,
                limit: Some(10),
                ..AuditFilter::default()
            })
            .await,
            c,
        );
        assert!(page.len() <= 10, "{c}: limit honoured");
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        seen.extend(page.iter().map(|e| e.entry.target.clone()));
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("job:{i}")).collect();
    assert_eq!(seen, expected, "{c}: every entry once, newest first");
}

async fn audit_concurrent_appends(log: Arc<dyn AuditLog>) {
    let c = "audit/concurrent";
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                log.append(&NewAuditEntry::new(
                    format!("t{i}"),
                    AuditAction::TemplateRun,
                    "template:x",
                ))
                .await
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for t in tasks {
        let e = ok(ok(t.await, c), c);
        assert!(ids.insert(e.id), "{c}: id {} given twice", e.id);
    }
    let all = ok(
        log.list(&AuditFilter {
            limit: Some(100),
            ..AuditFilter::default()
        })
        .await,
        c,
    );
    assert_eq!(all.len(), 20, "{c}: every append stored");
}
