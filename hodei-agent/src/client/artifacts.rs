//! A job's artifacts on the worker: inputs downloaded into its working directory
//! before the command starts, outputs found by glob and uploaded after it ends
//! (whatever the outcome), both over the server's ArtifactService with the
//! session token. Each step leaves a `system` log line saying what it did.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use hodei_core::artifacts::names::{self, ArtifactRef};
use hodei_core::proto::v1;
use hodei_core::proto::v1::artifact_service_client::ArtifactServiceClient;
use hodei_core::{ArtifactDest, ArtifactSource, JobId, LogStream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::Shared;
use crate::executor::{ExecutionOutcome, ExecutionRequest, ExecutionResult, LogLine};

/// Runs one attempt with its artifacts: inputs fetched into the working
/// directory (a failure means the command never starts), the command, then
/// the outputs uploaded whatever the outcome (a failure is added to the
/// result's error and logged). Without artifacts it is just the executor.
pub(super) async fn execute(
    shared: &Arc<Shared>,
    mut req: ExecutionRequest,
    inputs: &[ArtifactSource],
    outputs: &[ArtifactDest],
    logs: mpsc::Sender<LogLine>,
    cancel: tokio_util::sync::CancellationToken,
) -> ExecutionResult {
    if inputs.is_empty() && outputs.is_empty() {
        return shared.executor.execute(req, logs, cancel).await;
    }
    let started = std::time::Instant::now();
    let (job, attempt) = (req.job_id, req.attempt);
    let staging = match Staging::new(
        &shared.executor.config().work_root,
        job,
        attempt,
        req.working_dir.as_deref(),
    ) {
        Ok(s) => s,
        Err(e) => return not_started(format!("preparing the working directory: {e}"), started),
    };
    req.working_dir = Some(staging.dir().to_owned());
    let notes = logs.clone();
    let fetched = tokio::select! {
        r = fetch_inputs(shared, job, attempt, inputs, staging.dir(), &notes) => r,
        () = cancel.cancelled() => Err("cancelled while fetching inputs".into()),
    };
    if let Err(e) = fetched {
        note(&notes, format!("input error: {e}")).await;
        return not_started(e, started);
    }
    let mut result = shared.executor.execute(req, logs, cancel).await;
    if let Err(e) = upload_outputs(shared, job, attempt, outputs, staging.dir(), &notes).await {
        result.error = Some(match result.error.take() {
            Some(prev) => format!("{prev}; {e}"),
            None => e,
        });
    }
    result
}

fn not_started(error: String, started: std::time::Instant) -> ExecutionResult {
    ExecutionResult {
        outcome: ExecutionOutcome::StartFailed,
        exit_code: None,
        signal: None,
        duration: started.elapsed(),
        error: Some(error),
        secrets_injected: Vec::new(),
        log_bytes_dropped: 0,
    }
}

/// Bytes per upload message.
const UPLOAD_CHUNK_BYTES: usize = 256 * 1024;
/// Upload errors after which the remaining outputs are not tried.
const MAX_UPLOAD_ERRORS: usize = 10;

/// The working directory of a job with artifacts: the one its spec names, or a
/// private one made for it and removed when dropped.
pub(super) struct Staging {
    dir: PathBuf,
    owned: bool,
}

impl Staging {
    /// The spec's `working_dir`, or a new private directory under the work root.
    pub(super) fn new(
        work_root: &Path,
        job: JobId,
        attempt: u32,
        working_dir: Option<&Path>,
    ) -> std::io::Result<Self> {
        if let Some(dir) = working_dir {
            return Ok(Self {
                dir: dir.to_owned(),
                owned: false,
            });
        }
        use std::os::unix::fs::DirBuilderExt;
        let dir = work_root.join(format!("{job}-{attempt}-files"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(Self { dir, owned: true })
    }

    /// The directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let dir = std::mem::take(&mut self.dir);
        let remove = move || {
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "removing job directory failed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

async fn note(notes: &mpsc::Sender<LogLine>, text: String) {
    tracing::info!("{text}");
    let _ = notes.send(LogLine::new(LogStream::System, text)).await;
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// An ArtifactService client on the replica in use (or the next that answers).
async fn client(shared: &Shared) -> Result<ArtifactServiceClient<Channel>, String> {
    let mut errors = Vec::new();
    for url in shared.servers.in_turn_from_current() {
        let ep = shared.endpoint(url).map_err(|e| e.to_string())?;
        match ep.connect().await {
            Ok(ch) => return Ok(ArtifactServiceClient::new(ch)),
            Err(e) => errors.push(format!("{url}: {}", super::error_chain(&e))),
        }
    }
    Err(errors.join("; "))
}

/// Downloads every input into `dir`, checking size and SHA-256. The first
/// failure ends it: the command must not run without its inputs.
pub(super) async fn fetch_inputs(
    shared: &Arc<Shared>,
    job: JobId,
    attempt: u32,
    inputs: &[ArtifactSource],
    dir: &Path,
    notes: &mpsc::Sender<LogLine>,
) -> Result<(), String> {
    if inputs.is_empty() {
        return Ok(());
    }
    let mut client = client(shared).await?;
    for (i, input) in inputs.iter().enumerate() {
        let (size, sha) = fetch_one(shared, &mut client, job, attempt, input, dir)
            .await
            .map_err(|e| format!("inputs[{i}] ({}): {e}", input.url))?;
        note(
            notes,
            format!(
                "input {} -> {} ({size} bytes, sha256 {sha})",
                input.url, input.path
            ),
        )
        .await;
    }
    Ok(())
}

async fn fetch_one(
    shared: &Shared,
    client: &mut ArtifactServiceClient<Channel>,
    job: JobId,
    attempt: u32,
    input: &ArtifactSource,
    dir: &Path,
) -> Result<(u64, String), String> {
    use v1::download_artifact_response::Part;
    // Checked at submission too; the agent does not trust what it is sent.
    ArtifactRef::parse(&input.url)?;
    names::check_relative_path(&input.path)?;
    let target = dir.join(&input.path);
    let parent = target.parent().unwrap_or(dir);
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    // A symlink inside the directory must not carry the file outside it.
    let (real_parent, real_dir) = (
        tokio::fs::canonicalize(parent)
            .await
            .map_err(|e| e.to_string())?,
        tokio::fs::canonicalize(dir)
            .await
            .map_err(|e| e.to_string())?,
    );
    if !real_parent.starts_with(&real_dir) {
        return Err(format!(
            "{} leads outside the working directory",
            input.path
        ));
    }
    let req = shared.authorized(v1::DownloadArtifactRequest {
        job_id: job.to_string(),
        attempt,
        url: input.url.clone(),
    })?;
    let mut stream = client
        .download_artifact(req)
        .await
        .map_err(|s| status_text(&s))?
        .into_inner();
    let info = match stream.message().await.map_err(|s| status_text(&s))? {
        Some(v1::DownloadArtifactResponse {
            part: Some(Part::Info(info)),
        }) => info,
        _ => return Err("the server sent no artifact info".into()),
    };
    let part = target.with_extension(format!("hodei-part-{}", uuid::Uuid::new_v4()));
    let result = async {
        let mut file = tokio::fs::File::create(&part)
            .await
            .map_err(|e| format!("creating {}: {e}", input.path))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(m) = stream.message().await.map_err(|s| status_text(&s))? {
            if let Some(Part::Chunk(b)) = m.part {
                size += b.len() as u64;
                hasher.update(&b);
                file.write_all(&b).await.map_err(|e| e.to_string())?;
            }
        }
        file.flush().await.map_err(|e| e.to_string())?;
        let sha = hex::encode(hasher.finalize());
        if size != info.size || sha != info.sha256 {
            return Err(format!(
                "content does not match its checksum (got {size} bytes, sha256 {sha}; expected {} bytes, sha256 {})",
                info.size, info.sha256
            ));
        }
        tokio::fs::rename(&part, &target)
            .await
            .map_err(|e| format!("writing {}: {e}", input.path))?;
        Ok((size, sha))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    result
}

/// Files to upload as `(artifact name, file)`, and problems to report.
type Collected = (Vec<(String, PathBuf)>, Vec<String>);

/// The files to upload: `(artifact name, file)`, in a stable order. A literal
/// path must exist; a glob may match nothing (said in the log by the caller).
pub(crate) fn collect_outputs(dir: &Path, outputs: &[ArtifactDest]) -> Result<Collected, String> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let mut globs = Vec::new();
    for (i, o) in outputs.iter().enumerate() {
        names::check_name(&o.name).map_err(|e| format!("outputs[{i}].name: {e}"))?;
        names::check_output_glob(&o.path).map_err(|e| format!("outputs[{i}].path: {e}"))?;
        if names::is_glob(&o.path) {
            let m = globset::GlobBuilder::new(&o.path)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("outputs[{i}].path: {e}"))?
                .compile_matcher();
            globs.push((i, m, 0usize));
        } else {
            let p = dir.join(&o.path);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_file() => files.push((o.name.clone(), p)),
                Ok(_) => problems.push(format!("outputs[{i}]: {} is not a regular file", o.path)),
                Err(_) => problems.push(format!("outputs[{i}]: no file at {}", o.path)),
            }
        }
    }
    if !globs.is_empty() {
        for entry in walkdir::WalkDir::new(dir)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| format!("reading the working directory: {e}"))?;
            if !entry.file_type().is_file() {
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(dir) else {
                continue;
            };
            let Some(rel) = rel.to_str() else {
                continue;
            };
            for (i, m, hits) in &mut globs {
                if m.is_match(rel) {
                    *hits += 1;
                    files.push((
                        format!("{}/{rel}", outputs[*i].name),
                        entry.path().to_owned(),
                    ));
                }
            }
        }
        for (i, _, hits) in &globs {
            if *hits == 0 {
                problems.push(format!(
                    "outputs[{i}]: nothing matches {}",
                    outputs[*i].path
                ));
            }
        }
    }
    Ok((files, problems))
}

/// Uploads the outputs found in `dir`. Runs whatever the command's outcome.
/// `Err` sums up what could not be uploaded (each also in the log).
pub(super) async fn upload_outputs(
    shared: &Arc<Shared>,
    job: JobId,
    attempt: u32,
    outputs: &[ArtifactDest],
    dir: &Path,
    notes: &mpsc::Sender<LogLine>,
) -> Result<(), String> {
    if outputs.is_empty() {
        return Ok(());
    }
    let (dir_owned, outputs_owned) = (dir.to_owned(), outputs.to_vec());
    let (files, problems) =
        tokio::task::spawn_blocking(move || collect_outputs(&dir_owned, &outputs_owned))
            .await
            .map_err(|e| e.to_string())??;
    let mut errors = Vec::new();
    for p in problems {
        // A glob that matches nothing is said, not an error; a missing named file is.
        if p.contains("nothing matches") {
            note(notes, p).await;
        } else {
            note(notes, format!("output error: {p}")).await;
            errors.push(p);
        }
    }
    if files.is_empty() {
        return if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        };
    }
    let mut client = client(shared).await?;
    let total = files.len();
    for (k, (name, path)) in files.into_iter().enumerate() {
        match upload_one(shared, &mut client, job, attempt, &name, &path).await {
            Ok(info) => {
                note(
                    notes,
                    format!(
                        "output {name} uploaded ({} bytes, sha256 {})",
                        info.size, info.sha256
                    ),
                )
                .await;
            }
            Err(e) => {
                note(notes, format!("output {name} not uploaded: {e}")).await;
                errors.push(format!("{name}: {e}"));
                if errors.len() >= MAX_UPLOAD_ERRORS {
                    let left = total - k - 1;
                    if left > 0 {
                        note(
                            notes,
                            format!(
                                "{left} more outputs not tried after {MAX_UPLOAD_ERRORS} errors"
                            ),
                        )
                        .await;
                    }
                    break;
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("outputs not uploaded: {}", errors.join("; ")))
    }
}

async fn upload_one(
    shared: &Shared,
    client: &mut ArtifactServiceClient<Channel>,
    job: JobId,
    attempt: u32,
    name: &str,
    path: &Path,
) -> Result<v1::ArtifactInfo, String> {
    use v1::upload_artifact_request::Part;
    // First pass: size and checksum, announced so the server can check what arrives.
    let (size, sha256) = {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| e.to_string())?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; UPLOAD_CHUNK_BYTES];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        (size, hex::encode(hasher.finalize()))
    };
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| e.to_string())?;
    let header = v1::UploadArtifactRequest {
        part: Some(Part::Header(v1::ArtifactUploadHeader {
            job_id: job.to_string(),
            attempt,
            name: name.to_owned(),
            size,
            sha256,
        })),
    };
    let body = tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_CHUNK_BYTES)
        // A read error ends the stream early: the server sees a size mismatch.
        .take_while(|c| std::future::ready(c.is_ok()))
        .filter_map(|c| std::future::ready(c.ok()))
        .map(|b| v1::UploadArtifactRequest {
            part: Some(Part::Chunk(b)),
        });
    let stream = futures::stream::once(std::future::ready(header)).chain(body);
    let req = shared.authorized(stream)?;
    let resp = client
        .upload_artifact(req)
        .await
        .map_err(|s| status_text(&s))?
        .into_inner();
    resp.artifact
        .ok_or_else(|| "the server sent no artifact info".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(name: &str, path: &str) -> ArtifactDest {
        ArtifactDest {
            name: name.into(),
            path: path.into(),
            url: String::new(),
        }
    }

    #[test]
    fn outputs_are_collected_by_file_and_glob() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("out/sub")).unwrap();
        std::fs::write(d.join("out/a.txt"), "a").unwrap();
        std::fs::write(d.join("out/b.log"), "b").unwrap();
        std::fs::write(d.join("out/sub/c.txt"), "c").unwrap();
        std::fs::write(d.join("report.json"), "{}").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.join("out/link.txt")).unwrap();
        let (files, problems) = collect_outputs(
            d,
            &[
                dest("report", "report.json"),
                dest("txt", "out/*.txt"),
                dest("all", "out/**/*.txt"),
                dest("none", "*.bin"),
                dest("missing", "nope.txt"),
            ],
        )
        .unwrap();
        let names: Vec<_> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "report",
                "txt/out/a.txt",
                "all/out/a.txt",
                "all/out/sub/c.txt"
            ]
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("outputs[4]"), "{problems:?}");
        assert!(problems[1].contains("outputs[3]"), "{problems:?}");
    }

    #[test]
    fn unsafe_outputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(collect_outputs(dir.path(), &[dest("x", "../*.txt")]).is_err());
        assert!(collect_outputs(dir.path(), &[dest("/x", "a.txt")]).is_err());
    }
}
