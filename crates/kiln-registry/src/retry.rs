//! Retrying transient failures: capped exponential backoff with jitter, honouring a
//! registry's `Retry-After` (also capped, so a hostile registry cannot park kiln).

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::{RegistryError, Result};

/// Tries per operation, the first included.
pub(super) const MAX_ATTEMPTS: u32 = 6;
const FIRST_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(10);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A failure that a retry may cure, with the delay the registry asked for, if any.
pub(super) struct Transient {
    pub retry_after: Option<Duration>,
}

/// Runs `attempt` until it succeeds, fails for good, or [`MAX_ATTEMPTS`] are used up.
/// A failure paired with `Some(Transient)` is retried; one with `None` is final.
pub(super) async fn with_retries<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, (RegistryError, Option<Transient>)>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(v) => return Ok(v),
            Err((e, Some(t))) if tries < MAX_ATTEMPTS => {
                let pause = delay(tries, t.retry_after);
                tracing::debug!(error = %e, tries, ?pause, "transient registry failure; retrying");
                tokio::time::sleep(pause).await;
            }
            Err((e, _)) => return Err(e),
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
}
