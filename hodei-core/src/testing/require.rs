//! One rule for a test whose outside dependency (Postgres, Docker, QEMU, a
//! browser, a validator …) is missing, the same as `scripts/test`: under
//! `CI=true` that is a failure, anywhere else the test says loudly that it
//! did not run and passes.
//!
//! ```no_run
//! use hodei_core::testing::require;
//!
//! let Some(url) = require::require_env("HODEI_TEST_DATABASE_URL", "the Postgres store tests") else {
//!     return;
//! };
//! # let _ = url;
//! ```

/// The environment variable that makes a missing dependency fatal.
pub const CI_VAR: &str = "CI";

/// Whether a missing dependency fails, given the value of `CI`: only the
/// exact value `true` does (as in `scripts/test`), not `1` or `TRUE`.
#[must_use]
pub fn ci_is_strict(value: Option<&str>) -> bool {
    value == Some("true")
}

/// Whether this process runs under `CI=true`.
#[must_use]
pub fn strict() -> bool {
    ci_is_strict(std::env::var(CI_VAR).ok().as_deref())
}

/// Says that `what` is missing: panics with `FATAL (CI=true): <what>` under
/// `CI=true`, otherwise prints `SKIPPED: <what>` to stderr and returns, so
/// the caller returns without testing.
///
/// # Panics
///
/// Under `CI=true`, always.
pub fn missing_dependency(what: &str) {
    assert!(!strict(), "FATAL (CI=true): {what}");
    eprintln!("\n*** SKIPPED: {what} ***\n");
}

/// The value of the environment variable `var` when it is set and not blank;
/// otherwise [`missing_dependency`] (`<var> is not set: <why> did not run`)
/// and `None`.
///
/// # Panics
///
/// Under `CI=true` when `var` is unset or blank.
#[must_use]
pub fn require_env(var: &str, why: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            missing_dependency(&format!("{var} is not set: {why} did not run"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Output};

    /// Set in the child process only: which helper the child test calls.
    const CHILD: &str = "HODEI_REQUIRE_TEST_CHILD";
    const CHILD_TEST: &str = "testing::require::tests::child";

    #[test]
    fn only_the_exact_value_true_is_strict() {
        assert!(ci_is_strict(Some("true")));
        for lenient in [
            None,
            Some(""),
            Some("false"),
            Some("1"),
            Some("TRUE"),
            Some("true "),
        ] {
            assert!(!ci_is_strict(lenient), "{lenient:?}");
        }
    }

    /// Runs [`child`] in a fresh process of this test binary with `CI` set to
    /// `ci` (or removed), so no test mutates this process's environment.
    fn run_child(helper: &str, ci: Option<&str>) -> Output {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([CHILD_TEST, "--exact", "--ignored", "--nocapture"])
            .env(CHILD, helper)
            .env_remove("HODEI_REQUIRE_TEST_VAR");
        match ci {
            Some(v) => cmd.env(CI_VAR, v),
            None => cmd.env_remove(CI_VAR),
        };
        cmd.output().unwrap()
    }

    /// The child side of the process tests; does nothing unless started by them.
    #[test]
    #[ignore = "run as a child process by the missing_dependency tests"]
    fn child() {
        match std::env::var(CHILD).as_deref() {
            Ok("missing") => missing_dependency("the frobnicator"),
            Ok("env") => {
                let got = require_env("HODEI_REQUIRE_TEST_VAR", "the frobnicator tests");
                assert_eq!(got, None);
            }
            _ => {}
        }
    }

    #[test]
    fn missing_dependency_fails_under_ci_true() {
        for helper in ["missing", "env"] {
            let out = run_child(helper, Some("true"));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{helper}: {stderr}");
            assert!(stderr.contains("FATAL (CI=true): "), "{helper}: {stderr}");
            assert!(!stderr.contains("SKIPPED"), "{helper}: {stderr}");
        }
        let stderr = String::from_utf8_lossy(&run_child("env", Some("true")).stderr).into_owned();
        assert!(
            stderr.contains(
                "FATAL (CI=true): HODEI_REQUIRE_TEST_VAR is not set: the frobnicator tests did not run"
            ),
            "{stderr}"
        );
    }

    #[test]
    fn missing_dependency_skips_loudly_otherwise() {
        for ci in [None, Some("false"), Some("1")] {
            let out = run_child("missing", ci);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "CI={ci:?}: {stderr}");
            assert!(stderr.contains("SKIPPED: the frobnicator"), "{stderr}");
        }
    }

    #[test]
    fn require_env_returns_a_set_value() {
        // PATH is set in every test environment; nothing is mutated.
        let path = require_env("PATH", "this test");
        assert_eq!(path, std::env::var("PATH").ok());
        assert!(path.is_some_and(|p| !p.is_empty()));
    }
}
