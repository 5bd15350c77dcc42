//! `--restart`: whether a container that ended is started again, and after how long.
//!
//! Docker's rules, which its users rely on: `no` (the default), `on-failure[:N]` (a non-zero
//! exit, at most N restarts), `always`, `unless-stopped`. A container stopped through kiln
//! (`kiln stop`, `kiln rm -f`, or Ctrl-C to a foreground `kiln run`) is never restarted; one
//! ended by `kiln kill` is restarted by `always` and `on-failure` but not by
//! `unless-stopped` (docker's "manually stopped"). The delay before a restart starts at
//! 100 ms and doubles each time up to a minute; a run that lasted 10 s or more resets it.

use std::time::Duration;

pub use kiln_spec::RestartPolicy;

/// The first delay before a restart.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the delay to [`FIRST_DELAY`].
const STEADY_RUN: Duration = Duration::from_secs(10);

/// Whether a container that ended with `code` after `restarts` restarts so far starts
/// again under `policy`; `ended_by` says whether kiln ended it.
pub fn restarts(
    policy: RestartPolicy,
    code: i32,
    restarts: u32,
    ended_by: Option<EndedBy>,
) -> bool {
    match (policy, ended_by) {
        (_, Some(EndedBy::Stop)) | (RestartPolicy::No, _) => false,
        (RestartPolicy::OnFailure { max }, _) => code != 0 && max.is_none_or(|max| restarts < max),
        (RestartPolicy::Always, _) => true,
        (RestartPolicy::UnlessStopped, killed) => killed.is_none(),
    }
}

/// How a request through kiln ended a container's run, which its restart policy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// `kiln kill`: only `unless-stopped` is not restarted (docker's rule).
    Kill,
    /// `kiln stop`, `kiln rm -f`, Ctrl-C to a foreground `kiln run`: never restarted.
    Stop,
}

/// The delay before each restart.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_DELAY }
    }
}

impl Backoff {
    /// How long to wait before starting again a container whose run lasted `ran`.
    pub fn delay_after(&mut self, ran: Duration) -> Duration {
        if ran >= STEADY_RUN {
            self.next = FIRST_DELAY;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_DELAY);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_words_parse_and_print_back() {
        for text in [
            "no",
            "always",
            "unless-stopped",
            "on-failure",
            "on-failure:3",
        ] {
            assert_eq!(policy(text).to_string(), text);
        }
        assert_eq!(
            policy("on-failure:0"),
            RestartPolicy::OnFailure { max: None }
        );
        for bad in ["sometimes", "always:3", "on-failure:x", "on-failure:-1", ""] {
            assert!(kiln_spec::values::restart_policy(bad).is_err(), "{bad}");
        }
    }

    fn policy(text: &str) -> RestartPolicy {
        kiln_spec::values::restart_policy(text).unwrap()
    }

    #[test]
    fn on_failure_restarts_failures_up_to_its_count() {
        let on_failure = policy("on-failure:3");
        assert!(restarts(on_failure, 1, 0, None));
        assert!(restarts(on_failure, 1, 2, None));
        assert!(!restarts(on_failure, 1, 3, None));
        assert!(!restarts(on_failure, 0, 0, None));
        let endless = policy("on-failure");
        assert!(restarts(endless, 137, 1000, Some(EndedBy::Kill)));
    }

    #[test]
    fn a_stop_through_kiln_ends_every_policy_and_a_kill_ends_unless_stopped() {
        for policy in [RestartPolicy::Always, RestartPolicy::UnlessStopped] {
            assert!(restarts(policy, 0, 50, None));
            assert!(!restarts(policy, 0, 0, Some(EndedBy::Stop)));
        }
        assert!(restarts(RestartPolicy::Always, 137, 0, Some(EndedBy::Kill)));
        assert!(!restarts(
            RestartPolicy::UnlessStopped,
            137,
            0,
            Some(EndedBy::Kill)
        ));
        assert!(!restarts(RestartPolicy::No, 1, 0, None));
    }

    #[test]
    fn the_delay_doubles_to_a_minute_and_resets_after_a_steady_run() {
        let mut backoff = Backoff::default();
        let quick = Duration::from_millis(50);
        let delays: Vec<u128> = (0..5)
            .map(|_| backoff.delay_after(quick).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600]);
        for _ in 0..20 {
            backoff.delay_after(quick);
        }
        assert_eq!(backoff.delay_after(quick), MAX_DELAY);
        assert_eq!(
            backoff.delay_after(Duration::from_secs(10)),
            Duration::from_millis(100)
        );
    }
}
