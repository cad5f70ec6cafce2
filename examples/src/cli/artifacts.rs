//! `hodei job artifacts <id>`: list a job's artifacts (name, size, sha256) and,
//! with `--download DIR`, save them under DIR, each checked against its SHA-256.

use std::path::{Path, PathBuf};

use hodei_core::artifacts::names;
use hodei_core::proto::v1;
use hodei_core::proto::v1::job_artifact_service_client::JobArtifactServiceClient;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::client::{self, CliError};
use super::output::{self, Format};

/// One artifact as printed.
#[derive(Debug, Serialize)]
struct ArtifactView {
    name: String,
    size: u64,
    sha256: String,
    /// Where it was saved, with `--download`.
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

/// Lists (and with `download`, saves) the artifacts of job `id`.
pub(crate) async fn run(
    server: &str,
    format: Format,
    id: String,
    download: Option<PathBuf>,
) -> Result<u8, CliError> {
    let channel = client::connect(server).await?;
    let mut api = JobArtifactServiceClient::new(channel);
    let list = api
        .list_job_artifacts(v1::ListJobArtifactsRequest { job_id: id.clone() })
        .await
        .map_err(|s| CliError::rpc(server, s))?
        .into_inner()
        .artifacts;
    let mut views = Vec::with_capacity(list.len());
    for a in list {
        let path = match &download {
            Some(dir) => Some(save(server, &mut api, &id, &a, dir).await?),
            None => None,
        };
        views.push(ArtifactView {
            name: a.name,
            size: a.size,
            sha256: a.sha256,
            path: path.map(|p| p.display().to_string()),
        });
    }
    match format {
        Format::Json => println!("{}", output::json(&views)),
        Format::Table => {
            let mut header = vec!["NAME", "SIZE", "SHA256"];
            if download.is_some() {
                header.push("SAVED AS");
            }
            let rows = views
                .into_iter()
                .map(|v| {
                    let mut row = vec![v.name, v.size.to_string(), v.sha256];
                    row.extend(v.path);
                    row
                })
                .collect();
            print!("{}", output::table(&header, rows));
        }
    }
    Ok(0)
}

/// Downloads one artifact to `dir/NAME`, refusing a name that would leave `dir`.
async fn save(
    server: &str,
    api: &mut JobArtifactServiceClient<client::Channel>,
    job: &str,
    a: &v1::ArtifactInfo,
    dir: &Path,
) -> Result<PathBuf, CliError> {
    names::check_name(&a.name)
        .map_err(|e| CliError::Io(format!("artifact {:?} not saved: {e}", a.name)))?;
    let target = dir.join(&a.name);
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| CliError::Io(format!("creating {}: {e}", parent.display())))?;
    }
    let mut stream = api
        .get_job_artifact(v1::GetJobArtifactRequest {
            job_id: job.to_owned(),
            name: a.name.clone(),
        })
        .await
        .map_err(|s| CliError::rpc(server, s))?
        .into_inner();
    let mut file = tokio::fs::File::create(&target)
        .await
        .map_err(|e| CliError::Io(format!("creating {}: {e}", target.display())))?;
    let mut hasher = Sha256::new();
    let mut expected = a.sha256.clone();
    while let Some(m) = stream
        .message()
        .await
        .map_err(|s| CliError::rpc(server, s))?
    {
        match m.part {
            Some(v1::download_artifact_response::Part::Info(i)) => expected = i.sha256,
            Some(v1::download_artifact_response::Part::Chunk(c)) => {
                hasher.update(&c);
                file.write_all(&c)
                    .await
                    .map_err(|e| CliError::Io(format!("writing {}: {e}", target.display())))?;
            }
            None => {}
        }
    }
    file.flush()
        .await
        .map_err(|e| CliError::Io(format!("writing {}: {e}", target.display())))?;
    let got = hex::encode(hasher.finalize());
    if got != expected {
        return Err(CliError::Io(format!(
            "{}: checksum mismatch (sha256 {got}, expected {expected})",
            a.name
        )));
    }
    Ok(target)
}
