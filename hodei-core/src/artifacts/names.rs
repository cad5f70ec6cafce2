//! What an artifact may be called and where a job may read or write one: names,
//! paths relative to the job's working directory, output globs and the
//! `artifact://JOB_ID/NAME` source URL. Checked at the edge (job submission) and
//! again by every store, so a name can never leave the store's directory.

use crate::domain::ids::JobId;

/// Longest artifact name or relative path, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Scheme of an input taken from another job's artifacts: `artifact://JOB_ID/NAME`.
pub const ARTIFACT_SCHEME: &str = "artifact://";

/// Checks an artifact name: 1 to [`MAX_NAME_BYTES`] bytes of `/`-separated
/// components, none empty, `.` or `..`; no leading `/`, no backslash, no control
/// character. `Err` holds why, for a field error.
pub fn check_name(name: &str) -> Result<(), String> {
    check_relative(name, "name")
}

/// Checks a path relative to the job's working directory (an input's `path`, an
/// output's glob): the same rules as [`check_name`], so it cannot point outside.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    check_relative(path, "path")
}

fn check_relative(s: &str, what: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("the {what} must not be empty"));
    }
    if s.len() > MAX_NAME_BYTES {
        return Err(format!("the {what} is longer than {MAX_NAME_BYTES} bytes"));
    }
    if s.starts_with('/') {
        return Err(format!("the {what} must be relative (it starts with '/')"));
    }
    if s.contains('\\') || s.chars().any(char::is_control) {
        return Err(format!(
            "the {what} must not hold a backslash or a control character"
        ));
    }
    for part in s.split('/') {
        match part {
            "" => {
                return Err(format!(
                    "the {what} has an empty component ('//' or a trailing '/')"
                ));
            }
            "." | ".." => {
                return Err(format!("the {what} must not hold a '.' or '..' component"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether an output path is a glob (holds `*`, `?`, `[` or `{`) rather than one file.
#[must_use]
pub fn is_glob(path: &str) -> bool {
    path.contains(['*', '?', '[', '{'])
}

/// Checks an output path: a safe relative path whose glob syntax compiles.
pub fn check_output_glob(path: &str) -> Result<(), String> {
    check_relative_path(path)?;
    globset::Glob::new(path)
        .map(drop)
        .map_err(|e| format!("not a valid glob: {e}"))
}

/// An input taken from another job's artifacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRef {
    /// The job that produced it.
    pub job_id: JobId,
    /// Its name in that job.
    pub name: String,
}

impl ArtifactRef {
    /// Parses `artifact://JOB_ID/NAME`. `Err` says why, for a field error.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix(ARTIFACT_SCHEME).ok_or_else(|| {
            format!(
                "only artifact://JOB_ID/NAME sources (an artifact of another job) are supported, not {url:?}"
            )
        })?;
        let (job, name) = rest
            .split_once('/')
            .ok_or_else(|| "must be artifact://JOB_ID/NAME".to_owned())?;
        let job_id = job
            .parse()
            .map_err(|_| format!("{job:?} is not a valid job id (UUID)"))?;
        check_name(name)?;
        Ok(Self {
            job_id,
            name: name.to_owned(),
        })
    }

    /// The URL form, `artifact://JOB_ID/NAME`.
    #[must_use]
    pub fn to_url(&self) -> String {
        format!("{ARTIFACT_SCHEME}{}/{}", self.job_id, self.name)
    }
}

/// Most entries in a spec's `inputs` or `outputs`.
pub const MAX_SPEC_ENTRIES: usize = 1000;

/// Checks a spec's inputs and outputs, reporting each fault with its field
/// (`inputs[0].url`, `outputs[1].path`, …) through `err`.
pub(crate) fn check_spec(
    inputs: &[crate::domain::spec::ArtifactSource],
    outputs: &[crate::domain::spec::ArtifactDest],
    err: &mut impl FnMut(String, &str),
) {
    if inputs.len() > MAX_SPEC_ENTRIES {
        err("inputs".into(), "more than 1000 entries");
    }
    if outputs.len() > MAX_SPEC_ENTRIES {
        err("outputs".into(), "more than 1000 entries");
    }
    let mut targets = std::collections::HashSet::new();
    for (i, input) in inputs.iter().enumerate() {
        if let Err(m) = ArtifactRef::parse(&input.url) {
            err(format!("inputs[{i}].url"), &m);
        }
        if let Err(m) = check_relative_path(&input.path) {
            err(format!("inputs[{i}].path"), &m);
        } else if !targets.insert(input.path.as_str()) {
            err(
                format!("inputs[{i}].path"),
                "another input is written to this path",
            );
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, output) in outputs.iter().enumerate() {
        if !output.url.is_empty() {
            err(
                format!("outputs[{i}].url"),
                crate::domain::spec::OUTPUT_URL_NOT_SUPPORTED,
            );
        }
        if let Err(m) = check_name(&output.name) {
            err(format!("outputs[{i}].name"), &m);
        } else if !names.insert(output.name.as_str()) {
            err(format!("outputs[{i}].name"), "another output has this name");
        }
        if let Err(m) = check_output_glob(&output.path) {
            err(format!("outputs[{i}].path"), &m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_absolute_names_are_refused() {
        for bad in [
            "",
            "../x",
            "a/../b",
            "/etc/passwd",
            "a//b",
            "a/",
            ".",
            "./a",
            "a\\b",
            "a\nb",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
            assert!(check_relative_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name(&"x".repeat(MAX_NAME_BYTES + 1)).is_err());
        for good in ["report.txt", "out/a/b.bin", "..hidden", "a..b"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn globs_are_checked() {
        assert!(is_glob("out/*.txt"));
        assert!(!is_glob("out/report.txt"));
        check_output_glob("out/**/*.txt").unwrap();
        assert!(check_output_glob("out/[a").is_err());
        assert!(check_output_glob("../*.txt").is_err());
    }

    #[test]
    fn artifact_refs_parse() {
        let id = JobId::new();
        let r = ArtifactRef::parse(&format!("artifact://{id}/out/a.txt")).unwrap();
        assert_eq!(r.job_id, id);
        assert_eq!(r.name, "out/a.txt");
        assert_eq!(ArtifactRef::parse(&r.to_url()).unwrap(), r);
        assert!(ArtifactRef::parse("http://example.com/a").is_err());
        assert!(ArtifactRef::parse("artifact://nope/a").is_err());
        assert!(ArtifactRef::parse(&format!("artifact://{id}/../a")).is_err());
        assert!(ArtifactRef::parse(&format!("artifact://{id}")).is_err());
    }
}
