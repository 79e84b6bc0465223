//! Retry policy: exponential backoff with full jitter, bounded in attempts.

use std::time::Duration;

/// How a step is retried on transient errors. Attempts count within one process: a resumed
/// run gets a fresh budget, because the crash that stopped it was not the step's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Per-attempt time limit; exceeding it counts as a transient error. 0 = none.
    pub attempt_timeout_secs: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay_ms: 500,
            max_delay_ms: 30_000,
            attempt_timeout_secs: 0,
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry` (1 = after the first failure): uniformly random in
    /// `[0, min(max, base * 2^(retry-1))]` ("full jitter"), so many clients retrying the same
    /// throttled API do not retry in lockstep.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay_ms
            .saturating_mul(1u64 << retry.saturating_sub(1).min(30));
        let cap = exp.min(self.max_delay_ms);
        Duration::from_millis(rand::random_range(0..=cap))
    }

    pub fn attempt_timeout(&self) -> Option<Duration> {
        (self.attempt_timeout_secs > 0).then(|| Duration::from_secs(self.attempt_timeout_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay_ms: 100,
            max_delay_ms: 1_000,
            attempt_timeout_secs: 0,
        };
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(100));
            assert!(p.backoff(3) <= Duration::from_millis(400));
            assert!(p.backoff(40) <= Duration::from_millis(1_000));
        }
        // With full jitter the mean of retry 4 (cap 800 ms) is far above retry 1's (cap 100 ms).
        let mean = |r| (0..400).map(|_| p.backoff(r).as_millis()).sum::<u128>() / 400;
        assert!(mean(4) > 2 * mean(1), "{} vs {}", mean(4), mean(1));
    }
}
