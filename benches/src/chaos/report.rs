//! The summary table: one row per fault kind over every round that injected it.

use std::collections::BTreeMap;
use std::time::Duration;

use comfy_table::presets::ASCII_MARKDOWN;
use comfy_table::{Table, TableComponent};

use super::faults::Fault;
use super::invariants::RoundOutcome;

#[derive(Debug, Default)]
struct Totals {
    rounds: usize,
    injected: usize,
    jobs: usize,
    lost: usize,
    duplicated: usize,
    ran_after_cancel: usize,
    bad_logs: usize,
    secret_leaks: usize,
    orphans: usize,
    errors: usize,
    reruns: usize,
    recovery: Vec<Duration>,
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The table for `outcomes` (Markdown, so it pastes into docs/RELIABILITY.md).
pub fn table(outcomes: &[RoundOutcome]) -> Table {
    let mut by: BTreeMap<Fault, Totals> = BTreeMap::new();
    for o in outcomes {
        let t = by.entry(o.fault).or_default();
        t.rounds += 1;
        t.injected += o.injected;
        t.jobs += o.jobs;
        t.lost += o.lost;
        t.duplicated += o.duplicated;
        t.ran_after_cancel += o.ran_after_cancel;
        t.bad_logs += o.bad_logs;
        t.secret_leaks += o.secret_leaks;
        t.orphans += o.orphans;
        t.errors += o
            .violations
            .iter()
            .filter(|v| v.kind == super::invariants::Kind::Error)
            .count();
        t.reruns += o.reruns;
        t.recovery.extend(o.recovery.iter().copied());
    }
    let mut table = Table::new();
    table.load_preset(ASCII_MARKDOWN);
    table.remove_style(TableComponent::HorizontalLines);
    table.set_header(vec![
        "fault",
        "rounds",
        "faults",
        "jobs",
        "lost",
        "duplicated",
        "ran after cancel",
        "bad logs",
        "secret leaks",
        "orphans",
        "errors",
        "re-runs (allowed)",
        "recover p50",
        "recover max",
    ]);
    let mut total = Totals::default();
    for (fault, t) in &by {
        let mut rec = t.recovery.clone();
        rec.sort();
        let p50 = rec.get(rec.len() / 2).map_or("-".into(), |d| secs(*d));
        let max = rec.last().map_or("-".into(), |d| secs(*d));
        table.add_row(vec![
            fault.name().to_owned(),
            t.rounds.to_string(),
            t.injected.to_string(),
            t.jobs.to_string(),
            t.lost.to_string(),
            t.duplicated.to_string(),
            t.ran_after_cancel.to_string(),
            t.bad_logs.to_string(),
            t.secret_leaks.to_string(),
            t.orphans.to_string(),
            t.errors.to_string(),
            t.reruns.to_string(),
            p50,
            max,
        ]);
        total.rounds += t.rounds;
        total.injected += t.injected;
        total.jobs += t.jobs;
        total.lost += t.lost;
        total.duplicated += t.duplicated;
        total.ran_after_cancel += t.ran_after_cancel;
        total.bad_logs += t.bad_logs;
        total.secret_leaks += t.secret_leaks;
        total.orphans += t.orphans;
        total.errors += t.errors;
        total.reruns += t.reruns;
        total.recovery.extend(rec);
    }
    total.recovery.sort();
    table.add_row(vec![
        "**all**".to_owned(),
        total.rounds.to_string(),
        total.injected.to_string(),
        total.jobs.to_string(),
        total.lost.to_string(),
        total.duplicated.to_string(),
        total.ran_after_cancel.to_string(),
        total.bad_logs.to_string(),
        total.secret_leaks.to_string(),
        total.orphans.to_string(),
        total.errors.to_string(),
        total.reruns.to_string(),
        total
            .recovery
            .get(total.recovery.len() / 2)
            .map_or("-".into(), |d| secs(*d)),
        total.recovery.last().map_or("-".into(), |d| secs(*d)),
    ]);
    table
}
