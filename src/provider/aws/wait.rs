//! Waiting on EC2: polling with exponential backoff, and riding out eventual consistency.
//!
//! EC2 is eventually consistent: a resource just created can be `*.NotFound` for a few seconds,
//! and a terminated instance keeps its network interface (so `DependencyViolation` on the
//! security group) for a while. Both are waited out here with bounded backoff instead of fixed
//! sleeps, so the common case (moto, or a fast EC2) costs one round trip.

use std::future::Future;
use std::time::{Duration, Instant};

use super::error::AwsError;

/// The `code` of the transient error returned when a wait runs out of time (not an EC2 code).
pub const WAIT_TIMEOUT: &str = "dbctl.WaitTimeout";

/// How long and how often to poll.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub first: Duration,
    pub max_delay: Duration,
    pub max_total: Duration,
}

impl Backoff {
    /// Waiting for a state change (instance running/terminated, volume attached): EC2 takes
    /// tens of seconds, up to a few minutes for a cold instance.
    pub const STATE: Backoff = Backoff {
        first: Duration::from_millis(250),
        max_delay: Duration::from_secs(10),
        max_total: Duration::from_secs(600),
    };

    /// Eventual consistency right after a create or delete: seconds, rarely a minute.
    pub const CONSISTENCY: Backoff = Backoff {
        first: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
        max_total: Duration::from_secs(60),
    };

    fn delay(&self, attempt: u32) -> Duration {
        let exp = self.first.saturating_mul(1u32 << attempt.min(16));
        exp.min(self.max_delay)
    }
}

/// Calls `check` until it returns `Ok(Some(value))`, sleeping with exponential backoff between
/// attempts.
///
/// Guarantees: returns the first `Some`; returns the first `Err` unchanged (the caller's check
/// decides what is fatal); after `backoff.max_total` returns a `Transient` error naming `op` and
/// `resource`, so the saga can retry the step (the resource is not lost, only slow).
pub(crate) async fn poll_until<T, F, Fut>(
    op: &str,
    resource: &str,
    backoff: Backoff,
    mut check: F,
) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, AwsError>>,
{
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        let delay = backoff.delay(attempt);
        if start.elapsed() + delay > backoff.max_total {
            return Err(AwsError::Transient {
                op: op.to_string(),
                resource: resource.to_string(),
                message: format!(
                    "still not in the expected state after {:?}",
                    start.elapsed()
                ),
                code: Some(WAIT_TIMEOUT.to_string()),
            });
        }
        tracing::debug!(op, resource, ?delay, "waiting");
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// Runs `call` again while it fails with one of `codes` (e.g. `*.NotFound` right after the
/// resource was created, or `DependencyViolation` right after an instance terminated).
///
/// Guarantees: bounded by [`Backoff::CONSISTENCY`]; any other error is returned at once; when
/// time runs out the last error is returned as it was classified.
pub(crate) async fn retry_codes<T, F, Fut>(codes: &[&str], mut call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let backoff = Backoff::CONSISTENCY;
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) if matches_codes(&e, codes) && start.elapsed() < backoff.max_total => {
                tracing::debug!(error = %e, "eventual consistency, retrying");
                tokio::time::sleep(backoff.delay(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Retries while the error is any `*.NotFound`: for calls on a resource created moments ago.
pub(crate) async fn retry_not_found<T, F, Fut>(call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    retry_codes(&["*.NotFound"], call).await
}

fn matches_codes(e: &AwsError, codes: &[&str]) -> bool {
    codes.iter().any(|c| match *c {
        "*.NotFound" => e.is_not_found(),
        c => e.code() == Some(c),
    })
}

/// Treats "already gone" as success: the journal may replay a delete whose effect already
/// happened.
pub(crate) fn ignore_not_found(r: Result<(), AwsError>) -> Result<(), AwsError> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff::STATE;
        assert_eq!(b.delay(0), Duration::from_millis(250));
        assert_eq!(b.delay(1), Duration::from_millis(500));
        assert_eq!(b.delay(30), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn poll_gives_up_transient() {
        let b = Backoff {
            first: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_total: Duration::from_millis(20),
        };
        let r: Result<(), _> = poll_until("Op", "thing", b, || async { Ok(None) }).await;
        assert!(r.unwrap_err().is_transient());
    }
}
