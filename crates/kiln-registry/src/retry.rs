//! Retrying transient failures: capped exponential backoff with jitter, honouring a
//! registry's `Retry-After` (also capped, so a hostile registry cannot park kiln), within a
//! bounded total time.
//!
//! Defaults, per request (a blob download counts as one request however often it resumes):
//!
//! | what | default |
//! | --- | --- |
//! | tries, the first included | [`MAX_ATTEMPTS`] = 6 |
//! | first pause | 200 ms, doubling per try |
//! | longest pause | 10 s |
//! | jitter | each pause scaled by a random 50–100 % |
//! | `Retry-After` | honoured up to 30 s |
//! | retrying time | [`RETRY_TIME`] = 2 min from the first failure (`retry_time:` in kiln's config file) |
//!
//! A pause never runs past the retrying time: when it is used up, the last failure is the
//! error. A blob download that moved forward since its last failure starts its count of
//! tries and its retrying time afresh (its overall deadline still bounds it, see
//! `transport.rs`).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use super::{RegistryError, Result};

/// Tries per operation, the first included.
pub(super) const MAX_ATTEMPTS: u32 = 6;
const FIRST_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(10);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How long one request is retried, from its first failure, by default.
pub const RETRY_TIME: Duration = Duration::from_secs(120);

/// A failure that a retry may cure, with the delay the registry asked for, if any.
pub(super) struct Transient {
    pub retry_after: Option<Duration>,
}

/// The tries of one request: how many, and since when it has been failing.
pub(super) struct Retrying {
    budget: Duration,
    tries: u32,
    failing_since: Option<Instant>,
}

impl Retrying {
    /// A request that may be retried for `budget` after its first failure.
    pub fn new(budget: Duration) -> Retrying {
        Retrying {
            budget,
            tries: 0,
            failing_since: None,
        }
    }

    /// Counts a try that is about to start.
    pub fn start(&mut self) -> u32 {
        self.tries += 1;
        self.tries
    }

    /// The try moved the request forward (a blob download got more bytes): the count of
    /// tries and the retrying time start again.
    pub fn progressed(&mut self) {
        self.tries = 1;
        self.failing_since = None;
    }

    /// After a transient failure: the pause before the next try, or `None` when the tries
    /// or the retrying time are used up.
    pub fn pause(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.tries >= MAX_ATTEMPTS {
            return None;
        }
        let now = Instant::now();
        let since = *self.failing_since.get_or_insert(now);
        let left = self.budget.checked_sub(now - since)?;
        if left.is_zero() {
            return None;
        }
        Some(delay(self.tries, retry_after).min(left))
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the tries ([`MAX_ATTEMPTS`]) or
/// the retrying time (`budget`) are used up. A failure paired with `Some(Transient)` is
/// retried; one with `None` is final.
pub(super) async fn with_retries<T, F, Fut>(budget: Duration, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, (RegistryError, Option<Transient>)>>,
{
    let mut retrying = Retrying::new(budget);
    loop {
        let tries = retrying.start();
        match attempt().await {
            Ok(v) => return Ok(v),
            Err((e, Some(t))) => {
                let Some(pause) = retrying.pause(t.retry_after) else {
                    tracing::debug!(error = %e, tries, "transient registry failure; giving up");
                    return Err(e);
                };
                tracing::debug!(error = %e, tries, ?pause, "transient registry failure; retrying");
                tokio::time::sleep(pause).await;
            }
            Err((e, None)) => return Err(e),
        }
    }
}

/// The pause before try `tries + 1`: the registry's `Retry-After` when it sent one
/// (capped), else 200 ms doubling per try up to 10 s, scaled by a random 50–100 % so
/// that many clients do not retry in step.
pub(super) fn delay(tries: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(wait) = retry_after {
        return wait.min(MAX_RETRY_AFTER);
    }
    let exp = FIRST_DELAY.saturating_mul(1 << tries.saturating_sub(1).min(16));
    let capped = exp.min(MAX_DELAY);
    capped.mul_f64(0.5 + 0.5 * random_fraction())
}

/// `Retry-After` in seconds (the HTTP-date form is rare from registries and ignored).
pub(super) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A value in [0, 1) from the std hasher's random keys: enough for jitter.
fn random_fraction() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        for tries in 1..=MAX_ATTEMPTS + 10 {
            let d = delay(tries, None);
            assert!(d <= MAX_DELAY, "{d:?}");
            assert!(d >= FIRST_DELAY / 2, "{d:?}");
        }
        assert!(delay(5, None) >= Duration::from_millis(1600));
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        assert_eq!(delay(1, parse_retry_after(" 2 ")), Duration::from_secs(2));
        assert_eq!(delay(1, parse_retry_after("99999")), MAX_RETRY_AFTER);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn tries_and_retrying_time_are_bounded() {
        let mut r = Retrying::new(Duration::from_secs(3600));
        for _ in 1..MAX_ATTEMPTS {
            r.start();
            assert!(r.pause(None).is_some());
        }
        r.start();
        assert_eq!(r.pause(None), None);
        r.progressed();
        assert!(r.pause(None).is_some());
        // A Retry-After longer than the time left is cut to it.
        let mut r = Retrying::new(Duration::from_secs(2));
        r.start();
        assert!(r.pause(Some(Duration::from_secs(20))).unwrap() <= Duration::from_secs(2));
        let mut r = Retrying::new(Duration::ZERO);
        r.start();
        assert_eq!(r.pause(None), None);
    }

    #[test]
    fn with_retries_stops_after_the_retrying_time() {
        let runtime = crate::runtime().unwrap();
        let started = std::time::Instant::now();
        let mut tries = 0;
        let result: Result<()> = runtime.block_on(with_retries(Duration::from_millis(300), || {
            tries += 1;
            async {
                let e = RegistryError::Connect {
                    url: "http://reg.lan/".into(),
                    why: "reset".into(),
                };
                let asked = Some(Duration::from_secs(30));
                Err((e, Some(Transient { retry_after: asked })))
            }
        }));
        assert!(result.is_err());
        // The first pause is cut to the 300 ms left; the second try leaves none.
        assert_eq!(tries, 2);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
