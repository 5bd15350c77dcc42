//! `--restart`: whether a container that ended is started again, and after how long.
//!
//! Docker's rules, which its users rely on: `no` (the default), `on-failure[:N]` (a non-zero
//! exit, at most N restarts), `always`, `unless-stopped`. A container stopped through kiln
//! (`kiln stop`, `kiln rm -f`, or Ctrl-C to a foreground `kiln run`) is never restarted; one
//! ended by `kiln kill` is restarted by `always` and `on-failure` but not by
//! `unless-stopped` (docker's "manually stopped"). The delay before a restart starts at
//! 100 ms and doubles each time up to a minute; a run that lasted 10 s or more resets it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The first delay before a restart.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the delay to [`FIRST_DELAY`].
const STEADY_RUN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    /// A non-zero exit, at most `max` times (`None`: without end).
    OnFailure {
        max: Option<u32>,
    },
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    /// Whether a container that ended with `code` after `restarts` restarts so far starts
    /// again; `ended_by` says whether kiln ended it.
    pub fn restarts(self, code: i32, restarts: u32, ended_by: Option<EndedBy>) -> bool {
        match (self, ended_by) {
            (_, Some(EndedBy::Stop)) | (RestartPolicy::No, _) => false,
            (RestartPolicy::OnFailure { max }, _) => {
                code != 0 && max.is_none_or(|max| restarts < max)
            }
            (RestartPolicy::Always, _) => true,
            (RestartPolicy::UnlessStopped, killed) => killed.is_none(),
        }
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

/// A `--restart` value kiln does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRestartPolicy(String);

impl FromStr for RestartPolicy {
    type Err = BadRestartPolicy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, count) = match text.split_once(':') {
            Some((name, count)) => (name, Some(count)),
            None => (text, None),
        };
        let policy = match name {
            "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => {
                let max = count.map(|c| {
                    c.parse::<u32>().map_err(|_| {
                        BadRestartPolicy(format!(
                            "on-failure:{c}: the most restarts must be a number (e.g. on-failure:3)"
                        ))
                    })
                });
                // docker: on-failure:0 means "no limit".
                return Ok(RestartPolicy::OnFailure {
                    max: max.transpose()?.filter(|&n| n > 0),
                });
            }
            _ => {
                return Err(BadRestartPolicy(format!(
                "unknown restart policy {text:?}: use no, on-failure[:N], always or unless-stopped"
            )))
            }
        };
        match count {
            Some(_) => Err(BadRestartPolicy(format!(
                "{text:?}: only on-failure takes a most number of restarts"
            ))),
            None => Ok(policy),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure { max: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max: Some(n) } => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
        }
    }
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
            assert_eq!(text.parse::<RestartPolicy>().unwrap().to_string(), text);
        }
        assert_eq!(
            "on-failure:0".parse::<RestartPolicy>().unwrap(),
            RestartPolicy::OnFailure { max: None }
        );
        for bad in ["sometimes", "always:3", "on-failure:x", "on-failure:-1", ""] {
            assert!(bad.parse::<RestartPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn on_failure_restarts_failures_up_to_its_count() {
        let policy: RestartPolicy = "on-failure:3".parse().unwrap();
        assert!(policy.restarts(1, 0, None));
        assert!(policy.restarts(1, 2, None));
        assert!(!policy.restarts(1, 3, None));
        assert!(!policy.restarts(0, 0, None));
        let endless: RestartPolicy = "on-failure".parse().unwrap();
        assert!(endless.restarts(137, 1000, Some(EndedBy::Kill)));
    }

    #[test]
    fn a_stop_through_kiln_ends_every_policy_and_a_kill_ends_unless_stopped() {
        for policy in [RestartPolicy::Always, RestartPolicy::UnlessStopped] {
            assert!(policy.restarts(0, 50, None));
            assert!(!policy.restarts(0, 0, Some(EndedBy::Stop)));
        }
        assert!(RestartPolicy::Always.restarts(137, 0, Some(EndedBy::Kill)));
        assert!(!RestartPolicy::UnlessStopped.restarts(137, 0, Some(EndedBy::Kill)));
        assert!(!RestartPolicy::No.restarts(1, 0, None));
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
