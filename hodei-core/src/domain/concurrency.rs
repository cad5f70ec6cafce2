//! Concurrency keys: jobs that name the same `concurrency_key` share one
//! limit on how many of them are scheduled or running at once (a deploy
//! target, a licence pool, a rate-limited API). The limit itself is set by an
//! operator per key (`PUT /api/v1/concurrency-limits/{key}`, `hodei limit set`)
//! and kept in the shared store, so every replica enforces the same number.

/// Longest accepted key, in bytes.
pub const MAX_CONCURRENCY_KEY_LEN: usize = 128;

/// Why a concurrency key is refused, or `None` when it is valid: 1 to
/// [`MAX_CONCURRENCY_KEY_LEN`] bytes of ASCII letters, digits and `. _ - : /`.
#[must_use]
pub fn concurrency_key_problem(key: &str) -> Option<String> {
    if key.is_empty() {
        return Some("must not be empty".to_owned());
    }
    if key.len() > MAX_CONCURRENCY_KEY_LEN {
        return Some(format!(
            "must be at most {MAX_CONCURRENCY_KEY_LEN} bytes, got {}",
            key.len()
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/')))
    {
        return Some(format!(
            "may contain only ASCII letters, digits and . _ - : /, found {c:?}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(concurrency_key_problem("deploy/prod:eu-1"), None);
        assert!(concurrency_key_problem("").is_some());
        assert!(concurrency_key_problem("a b").is_some());
        assert!(concurrency_key_problem(&"k".repeat(129)).is_some());
        assert_eq!(concurrency_key_problem(&"k".repeat(128)), None);
    }
}
