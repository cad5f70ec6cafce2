//! `hodei-server --demo`: a few jobs submitted after start, their logs and results printed.

use std::time::Duration;

use anyhow::bail;
use hodei_core::control::ControlPlane;
use hodei_core::{CommandType, JobSpec};

/// Submits a few jobs, prints their logs and results.
pub(crate) async fn run_demo(cp: &ControlPlane) -> anyhow::Result<()> {
    let jobs = [
        JobSpec::new(
            "hello",
            CommandType::shell("echo", ["Hello from a Hodei worker"]),
        ),
        JobSpec::new(
            "script",
            CommandType::script(
                "bash",
                "echo \"running on $(hostname) as job $HODEI_JOB_ID\"\nfor i in 1 2 3; do echo \"step $i\"; sleep 0.2; done\necho done",
            ),
        ),
        JobSpec::new(
            "secret",
            CommandType::script(
                "bash",
                "secrets=$(cat); echo \"secrets on stdin (redacted in logs): $secrets\"",
            ),
        )
        .with_secret("API_TOKEN", "demo-s3cr3t-token"),
        JobSpec::new(
            "failing",
            CommandType::script("bash", "echo about to fail >&2; exit 3"),
        )
        .with_max_attempts(1),
    ];
    let mut events = cp.subscribe_job_events();
    let mut ids = Vec::new();
    for spec in jobs {
        let job = cp.create_job(spec, None).await?;
        println!("[demo] queued job {} ({})", job.id(), job.spec().name);
        ids.push(job.id());
    }
    let mut remaining: std::collections::HashSet<_> = ids.iter().copied().collect();
    while !remaining.is_empty() {
        match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
            Ok(Ok(ev)) if ev.to.is_terminal() && remaining.remove(&ev.job_id) => {}
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(_)) => break,
            Err(_) => bail!("demo jobs did not finish within 60 s"),
        }
    }
    for id in ids {
        let job = cp.get_job(id).await?;
        println!(
            "[demo] job {} '{}' → {} (exit code {:?})",
            id,
            job.spec().name,
            job.state(),
            job.execution_context().exit_code
        );
        let entries = cp
            .logs()
            .read(id, hodei_core::store::LogCursor::default(), 10_000)
            .await?;
        for e in entries {
            // An entry holds one or more lines.
            for line in String::from_utf8_lossy(&e.entry.data).split('\n') {
                println!("    | {line}");
            }
        }
    }
    println!(
        "[demo] done. Try: hodei job run -- echo hi   (the server keeps running; Ctrl-C stops it)"
    );
    Ok(())
}
