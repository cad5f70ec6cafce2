//! Client-side rate limit (token bucket) and retries with capped exponential
//! backoff for 429 / 5xx / connection errors, so a failing API server is
//! never hammered in a hot loop.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hodei_core::ProviderError;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::config::RetryConfig;

/// A token bucket: `qps` tokens per second, at most `burst` saved up.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    qps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub(crate) fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps: qps.max(0.001),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Waits for a token.
    pub(crate) async fn acquire(&self) {
        let wait = {
            let mut s = self.state.lock().await;
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.qps;
            s.0 = (s.0 + refill).min(self.burst);
            s.1 = now;
            s.0 -= 1.0;
            if s.0 >= 0.0 {
                Duration::ZERO
            } else {
                // In debt: this caller waits until its token has been refilled.
                Duration::from_secs_f64(-s.0 / self.qps)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Whether a failed call may succeed when repeated, and the server's hint.
pub(crate) fn retry_hint(e: &kube::Error) -> Option<Option<Duration>> {
    match e {
        kube::Error::Api(s) if matches!(s.code, 429 | 500 | 502 | 503 | 504) => Some(
            s.details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
        ),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            Some(None)
        }
        _ => None,
    }
}

/// The HTTP status of an API error.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// The pause before retry number `attempt` (0-based): `base · 2^attempt`,
/// with up to 25 % jitter, at least the server's hint, at most `max_delay`.
pub(crate) fn backoff_delay(cfg: &RetryConfig, attempt: u32, hint: Option<Duration>) -> Duration {
    let exp = cfg
        .base_delay
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
    let jitter_frac = f64::from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            % 1000,
    ) / 4000.0;
    let d = exp + exp.mul_f64(jitter_frac);
    d.max(hint.unwrap_or(Duration::ZERO)).min(cfg.max_delay)
}

/// Runs `call` under the rate limit, retrying retryable failures with backoff.
pub(crate) async fn with_retry<T, F, Fut>(
    limiter: &RateLimiter,
    cfg: &RetryConfig,
    what: &str,
    mut call: F,
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        limiter.acquire().await;
        match call().await {
            Err(e) if attempt < cfg.max_retries => match retry_hint(&e) {
                Some(hint) => {
                    let delay = backoff_delay(cfg, attempt, hint);
                    tracing::debug!(what, attempt, error = %e, delay_ms = delay.as_millis() as u64,
                        "kubernetes API call failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                None => return Err(e),
            },
            r => return r,
        }
    }
}

/// Maps a kube error to a provider error, saying what was attempted.
pub(crate) fn classify(e: kube::Error, what: &str) -> ProviderError {
    match e {
        kube::Error::Api(s) => {
            let msg = if s.message.is_empty() {
                s.reason.clone()
            } else {
                s.message.clone()
            };
            match s.code {
                401 | 403 => ProviderError::InvalidConfig(format!(
                    "kubernetes {what}: forbidden ({}): {msg}; check the RBAC of the server's service account (deploy/kubernetes/rbac.yaml)",
                    s.code
                )),
                429 => ProviderError::ResourceExhausted(format!(
                    "kubernetes {what}: API rate limit (429) after retries: {msg}"
                )),
                422 | 400 => ProviderError::InvalidConfig(format!(
                    "kubernetes {what}: rejected ({}): {msg}",
                    s.code
                )),
                c if c >= 500 => ProviderError::Unavailable(format!(
                    "kubernetes {what}: API server error ({c}) after retries: {msg}"
                )),
                c if msg.contains("exceeded quota") => ProviderError::ResourceExhausted(format!(
                    "kubernetes {what}: quota ({c}): {msg}"
                )),
                c => ProviderError::Internal(format!("kubernetes {what} failed ({c}): {msg}")),
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            ProviderError::Unavailable(format!("kubernetes API unreachable ({what}): {e}"))
        }
        other => ProviderError::Internal(format!("kubernetes {what}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = RetryConfig::default();
        let d0 = backoff_delay(&cfg, 0, None);
        let d3 = backoff_delay(&cfg, 3, None);
        assert!(d0 >= Duration::from_millis(200) && d0 <= Duration::from_millis(250));
        assert!(d3 >= Duration::from_millis(1600) && d3 <= Duration::from_millis(2000));
        assert_eq!(backoff_delay(&cfg, 40, None), cfg.max_delay);
        assert_eq!(
            backoff_delay(&cfg, 0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            backoff_delay(&cfg, 0, Some(Duration::from_secs(300))),
            cfg.max_delay
        );
    }

    #[tokio::test]
    async fn the_bucket_spaces_calls_beyond_the_burst() {
        let l = RateLimiter::new(50.0, 2);
        let t = Instant::now();
        for _ in 0..6 {
            l.acquire().await;
        }
        // Two from the burst, four more at 50/s: at least 80 ms.
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(75), "{took:?}");
        assert!(took <= Duration::from_secs(2), "{took:?}");
    }
}
