//! [`FsArtifactStore`]: artifacts as files on the server's disk.
//!
//! Layout: `ROOT/JOB_ID/index.json` (name → size, sha256, time) and
//! `ROOT/JOB_ID/blobs/HEX`, where `HEX` is the SHA-256 of the artifact's *name*:
//! the user's name never becomes a path, so `a` and `a/b` cannot collide and no
//! name can reach outside `ROOT`. An upload is written to a temporary file and
//! renamed into place only once its size, checksum and the job's limits check
//! out; the index is replaced atomically (write + rename).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    Announced, ArtifactError, ArtifactLimits, ArtifactMeta, ArtifactStore, ArtifactStream, names,
};
use crate::domain::ids::JobId;

const INDEX: &str = "index.json";
const BLOBS: &str = "blobs";
/// Read size when serving an artifact.
const CHUNK_BYTES: usize = 64 * 1024;

/// Artifacts in a local directory. The embedded default of the reference server.
#[derive(Debug)]
pub struct FsArtifactStore {
    root: PathBuf,
    limits: ArtifactLimits,
    /// Serialises index updates (the check of the job's limits and the commit).
    commit: tokio::sync::Mutex<()>,
}

impl FsArtifactStore {
    /// A store under `root` (created when missing, mode 0700) with these limits.
    pub fn new(root: impl Into<PathBuf>, limits: ArtifactLimits) -> std::io::Result<Self> {
        let root = root.into();
        create_private_dir(&root)?;
        Ok(Self {
            root,
            limits,
            commit: tokio::sync::Mutex::new(()),
        })
    }

    /// The directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn job_dir(&self, job: JobId) -> PathBuf {
        self.root.join(job.to_string())
    }

    fn blob(&self, job: JobId, name: &str) -> PathBuf {
        self.job_dir(job)
            .join(BLOBS)
            .join(hex::encode(Sha256::digest(name.as_bytes())))
    }

    async fn read_index(
        &self,
        job: JobId,
    ) -> Result<BTreeMap<String, ArtifactMeta>, ArtifactError> {
        match tokio::fs::read(self.job_dir(job).join(INDEX)).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ArtifactError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e.into()),
        }
    }

    async fn write_index(
        &self,
        job: JobId,
        index: &BTreeMap<String, ArtifactMeta>,
    ) -> Result<(), ArtifactError> {
        let dir = self.job_dir(job);
        let tmp = dir.join(format!("{INDEX}.{}", uuid::Uuid::new_v4()));
        let body =
            serde_json::to_vec(index).map_err(|e| ArtifactError::Io(std::io::Error::other(e)))?;
        tokio::fs::write(&tmp, body).await?;
        tokio::fs::rename(&tmp, dir.join(INDEX)).await?;
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn invalid(name: &str, reason: String) -> ArtifactError {
    ArtifactError::InvalidName {
        name: name.to_owned(),
        reason,
    }
}

/// Removes a temporary file unless it was committed.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[async_trait::async_trait]
impl ArtifactStore for FsArtifactStore {
    fn limits(&self) -> ArtifactLimits {
        self.limits
    }

    async fn put(
        &self,
        job: JobId,
        name: &str,
        announced: Announced,
        mut data: ArtifactStream<'_>,
    ) -> Result<ArtifactMeta, ArtifactError> {
        names::check_name(name).map_err(|r| invalid(name, r))?;
        let limit = self.limits.max_file_bytes;
        let too_large = || ArtifactError::FileTooLarge {
            name: name.to_owned(),
            limit,
        };
        if announced.size.is_some_and(|s| s > limit) {
            return Err(too_large());
        }
        let blobs = self.job_dir(job).join(BLOBS);
        create_private_dir(&blobs)?;
        let tmp_path = self
            .job_dir(job)
            .join(format!("upload.{}", uuid::Uuid::new_v4()));
        let mut tmp = TempFile(Some(tmp_path.clone()));
        let mut file = tokio::fs::File::create(&tmp_path).await?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large());
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        drop(file);
        let sha256 = hex::encode(hasher.finalize());
        if let Some(expected) = announced.size.filter(|s| *s != size) {
            return Err(ArtifactError::Mismatch {
                name: name.to_owned(),
                what: "size",
                expected: expected.to_string(),
                actual: size.to_string(),
            });
        }
        if let Some(expected) = announced
            .sha256
            .filter(|s| !s.eq_ignore_ascii_case(&sha256))
        {
            return Err(ArtifactError::Mismatch {
                name: name.to_owned(),
                what: "sha256",
                expected,
                actual: sha256,
            });
        }

        let _guard = self.commit.lock().await;
        let mut index = self.read_index(job).await?;
        // A re-upload (a retried attempt) replaces the artifact of that name.
        let replaced = index.get(name).map_or(0, |m| m.size);
        if !index.contains_key(name) && index.len() >= self.limits.max_files as usize {
            return Err(ArtifactError::TooManyFiles {
                job,
                name: name.to_owned(),
                limit: self.limits.max_files,
            });
        }
        let total: u64 = index.values().map(|m| m.size).sum::<u64>() - replaced + size;
        if total > self.limits.max_job_bytes {
            return Err(ArtifactError::JobTooLarge {
                job,
                name: name.to_owned(),
                limit: self.limits.max_job_bytes,
            });
        }
        tokio::fs::rename(&tmp_path, self.blob(job, name)).await?;
        tmp.0 = None;
        let meta = ArtifactMeta {
            name: name.to_owned(),
            size,
            sha256,
            created_at: chrono::Utc::now(),
        };
        index.insert(name.to_owned(), meta.clone());
        self.write_index(job, &index).await?;
        Ok(meta)
    }

    async fn list(&self, job: JobId) -> Result<Vec<ArtifactMeta>, ArtifactError> {
        Ok(self.read_index(job).await?.into_values().collect())
    }

    async fn open(
        &self,
        job: JobId,
        name: &str,
    ) -> Result<(ArtifactMeta, ArtifactStream<'static>), ArtifactError> {
        names::check_name(name).map_err(|r| invalid(name, r))?;
        let not_found = || ArtifactError::NotFound {
            job,
            name: name.to_owned(),
        };
        let meta = self
            .read_index(job)
            .await?
            .remove(name)
            .ok_or_else(not_found)?;
        let file = match tokio::fs::File::open(self.blob(job, name)).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        let stream = futures::stream::try_unfold(file, |mut file| async move {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = file.read(&mut buf).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            Ok(Some((bytes::Bytes::from(buf), file)))
        });
        Ok((meta, stream.boxed()))
    }

    async fn delete_job(&self, job: JobId) -> Result<u64, ArtifactError> {
        let _guard = self.commit.lock().await;
        let count = self.read_index(job).await?.len() as u64;
        match tokio::fs::remove_dir_all(self.job_dir(job)).await {
            Ok(()) => Ok(count),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    async fn jobs(&self) -> Result<Vec<JobId>, ArtifactError> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.root).await?;
        while let Some(entry) = dir.next_entry().await? {
            if let Some(id) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                out.push(id);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn body(parts: &[&'static [u8]]) -> ArtifactStream<'static> {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
        .boxed()
    }

    fn store(dir: &Path, limits: ArtifactLimits) -> FsArtifactStore {
        FsArtifactStore::new(dir.join("artifacts"), limits).unwrap()
    }

    async fn read_all(s: &FsArtifactStore, job: JobId, name: &str) -> (ArtifactMeta, Vec<u8>) {
        let (meta, mut stream) = s.open(job, name).await.unwrap();
        let mut out = Vec::new();
        while let Some(c) = stream.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        (meta, out)
    }

    #[tokio::test]
    async fn put_list_open_with_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), ArtifactLimits::default());
        let job = JobId::new();
        let meta = s
            .put(
                job,
                "out/report.txt",
                Announced::default(),
                body(&[b"hello ", b"world"]),
            )
            .await
            .unwrap();
        // sha256("hello world")
        let expected = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
        assert_eq!(meta.sha256, expected);
        assert_eq!(meta.size, 11);
        let (m, content) = read_all(&s, job, "out/report.txt").await;
        assert_eq!(content, b"hello world");
        assert_eq!(m, meta);
        assert_eq!(s.list(job).await.unwrap(), vec![meta]);
        assert!(s.list(JobId::new()).await.unwrap().is_empty());
        assert!(matches!(
            s.open(job, "missing").await.err(),
            Some(ArtifactError::NotFound { .. })
        ));
        // A wrong announced checksum or size is refused and nothing is kept.
        let e = s
            .put(
                job,
                "b",
                Announced::new(11, "00".repeat(32)),
                body(&[b"hello world"]),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, ArtifactError::Mismatch { what: "sha256", .. }),
            "{e}"
        );
        let e = s
            .put(
                job,
                "b",
                Announced::new(3, expected),
                body(&[b"hello world"]),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, ArtifactError::Mismatch { what: "size", .. }),
            "{e}"
        );
        s.put(
            job,
            "b",
            Announced::new(11, expected),
            body(&[b"hello world"]),
        )
        .await
        .unwrap();
        assert_eq!(s.list(job).await.unwrap().len(), 2);
        // Only the index and blobs remain: no temporary files left behind.
        let left: Vec<_> = std::fs::read_dir(s.job_dir(job)).unwrap().collect();
        assert_eq!(left.len(), 2);
    }

    #[tokio::test]
    async fn limits_are_enforced_with_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ArtifactLimits::default()
            .with_max_file_bytes(10)
            .with_max_job_bytes(15)
            .with_max_files(2);
        let s = store(dir.path(), limits);
        let job = JobId::new();
        let e = s
            .put(
                job,
                "big",
                Announced::default(),
                body(&[b"0123456", b"89abc"]),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, ArtifactError::FileTooLarge { limit: 10, .. }),
            "{e}"
        );
        assert!(e.is_limit());
        s.put(job, "a", Announced::default(), body(&[b"12345678"]))
            .await
            .unwrap();
        let e = s
            .put(job, "b", Announced::default(), body(&[b"12345678"]))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ArtifactError::JobTooLarge { limit: 15, .. }),
            "{e}"
        );
        s.put(job, "b", Announced::default(), body(&[b"1"]))
            .await
            .unwrap();
        let e = s
            .put(job, "c", Announced::default(), body(&[b"1"]))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ArtifactError::TooManyFiles { limit: 2, .. }),
            "{e}"
        );
        // Replacing an artifact counts only the new size.
        s.put(job, "a", Announced::default(), body(&[b"1234567"]))
            .await
            .unwrap();
        assert_eq!(s.list(job).await.unwrap().len(), 2);
        // Refused uploads left nothing behind.
        let (_, content) = read_all(&s, job, "a").await;
        assert_eq!(content, b"1234567");
    }

    #[tokio::test]
    async fn traversal_names_are_refused_and_nothing_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), ArtifactLimits::default());
        let job = JobId::new();
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            let e = s
                .put(job, bad, Announced::default(), body(&[b"x"]))
                .await
                .unwrap_err();
            assert!(e.is_invalid_input(), "{bad:?}: {e}");
            assert!(s.open(job, bad).await.err().unwrap().is_invalid_input());
        }
        assert!(!dir.path().join("x").exists());
    }

    #[tokio::test]
    async fn delete_job_and_list_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), ArtifactLimits::default());
        let (a, b) = (JobId::new(), JobId::new());
        s.put(a, "x", Announced::default(), body(&[b"1"]))
            .await
            .unwrap();
        s.put(a, "y", Announced::default(), body(&[b"2"]))
            .await
            .unwrap();
        s.put(b, "x", Announced::default(), body(&[b"3"]))
            .await
            .unwrap();
        let mut jobs = s.jobs().await.unwrap();
        jobs.sort();
        let mut want = vec![a, b];
        want.sort();
        assert_eq!(jobs, want);
        assert_eq!(s.delete_job(a).await.unwrap(), 2);
        assert!(s.list(a).await.unwrap().is_empty());
        assert_eq!(s.jobs().await.unwrap(), vec![b]);
        assert_eq!(s.delete_job(a).await.unwrap(), 0);
    }
}
