//! Healthchecks: the image's `HEALTHCHECK` (or `kiln run --health-cmd`), run in the
//! container by its runner, and the verdict `kiln ps` and `kiln inspect` show.
//!
//! Docker's rules, so that an image behaves the same under kiln: the first probe runs one
//! interval after the command started, then every interval; a probe that exits 0 makes the
//! container `healthy`, and `retries` failures in a row (a non-zero exit, or a probe that
//! outlives its timeout and is killed) make it `unhealthy`. Failures during the start
//! period do not count, until a first success ends that period. The last five results are
//! kept with the first 4 KiB of each probe's output.
//!
//! A probe is a `kiln exec` of the container (the caller says how to start one): it gets
//! exactly what any exec gets — the container's namespaces, cgroup, user, capabilities and
//! seccomp filter — and the runner stays a small process that only polls. The verdict is
//! written to `health.json` in the container's dir after each probe.

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use kiln_store::{ContainerDir, Store};
use serde::{Deserialize, Serialize};

use super::error::{ContainerError, Result};

/// The file in a container's dir that holds its [`HealthState`].
const HEALTH_FILE: &str = "health.json";
/// Results kept.
const KEPT_RESULTS: usize = 5;
/// Output kept of each probe.
const KEPT_OUTPUT: usize = 4096;
/// Docker's defaults.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 3;
/// The least time between the end of a probe and the start of the next. Each probe is a
/// `kiln exec` whose setup runs on the host, outside the container's cgroup: an image whose
/// healthcheck says `interval: 1ms` and never answers quickly must not keep a host CPU busy.
const MIN_GAP: Duration = Duration::from_millis(100);

/// How a container's health is probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// The probe's command and arguments, run in the container.
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub retries: u32,
}

impl HealthConfig {
    /// The probe a Docker `Healthcheck` describes; `None` for `NONE` or no test. Zero
    /// durations and retries mean Docker's defaults.
    pub fn from_image(check: &kiln_image::Healthcheck) -> Option<HealthConfig> {
        let argv = match check.test.split_first() {
            Some((kind, args)) if kind == "CMD" && !args.is_empty() => args.to_vec(),
            Some((kind, [shell])) if kind == "CMD-SHELL" => {
                vec!["/bin/sh".into(), "-c".into(), shell.clone()]
            }
            _ => return None,
        };
        let nanos = |n: Option<u64>, default| match n {
            Some(n) if n > 0 => Duration::from_nanos(n),
            _ => default,
        };
        Some(HealthConfig {
            argv,
            interval: nanos(check.interval, DEFAULT_INTERVAL),
            timeout: nanos(check.timeout, DEFAULT_TIMEOUT),
            start_period: nanos(check.start_period, Duration::ZERO),
            retries: check.retries.filter(|&r| r > 0).unwrap_or(DEFAULT_RETRIES),
        })
    }
}

/// `starting`, `healthy` or `unhealthy`: docker's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

impl Health {
    /// docker's word: `starting`, `healthy`, `unhealthy`.
    pub fn name(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }

    /// As `ps` shows it after the status: `health: starting`, `healthy`, `unhealthy`.
    pub fn word(self) -> &'static str {
        match self {
            Health::Starting => "health: starting",
            other => other.name(),
        }
    }
}

/// One probe's result, as docker's `inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProbeResult {
    /// RFC 3339.
    pub start: String,
    pub end: String,
    /// -1 when the probe could not run or was killed at its timeout.
    pub exit_code: i32,
    pub output: String,
}

/// What `health.json` holds: docker's `State.Health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthState {
    pub status: Health,
    pub failing_streak: u32,
    pub log: Vec<ProbeResult>,
}

impl HealthState {
    fn starting() -> HealthState {
        HealthState {
            status: Health::Starting,
            failing_streak: 0,
            log: Vec::new(),
        }
    }

    /// The container's health as its runner last wrote it; `None` without a healthcheck.
    pub fn read(dir: &ContainerDir) -> Option<HealthState> {
        serde_json::from_slice(&dir.read_file(HEALTH_FILE)?).ok()
    }

    /// Takes in one result; `in_start_period` says the container is still starting.
    fn record(&mut self, result: ProbeResult, retries: u32, in_start_period: bool) {
        if result.exit_code == 0 {
            self.status = Health::Healthy;
            self.failing_streak = 0;
        } else if !(in_start_period && self.status == Health::Starting) {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = Health::Unhealthy;
            }
        }
        self.log.push(result);
        let extra = self.log.len().saturating_sub(KEPT_RESULTS);
        self.log.drain(..extra);
    }
}

/// Makes the command that runs a probe's argv in the container (a `kiln exec`): only the
/// command line knows how kiln is started.
pub type ProbeCommand = Box<dyn FnMut(&[String]) -> Command>;

/// A probe that runs now.
struct Probe {
    child: Child,
    pidfd: OwnedFd,
    /// The read end of its stdout and stderr.
    output: OwnedFd,
    kept: Vec<u8>,
    started: SystemTime,
    deadline: Instant,
    timed_out: bool,
}

/// Runs a container's healthcheck from its runner's poll loop: [`fds`](Self::fds) to poll,
/// [`due_in`](Self::due_in) for the poll's timeout, [`advance`](Self::advance) after each
/// poll.
pub struct HealthProbe {
    config: HealthConfig,
    command: ProbeCommand,
    store: Store,
    dir: ContainerDir,
    state: HealthState,
    started: Instant,
    next: Instant,
    probe: Option<Probe>,
}

impl HealthProbe {
    pub fn new(
        config: HealthConfig,
        command: ProbeCommand,
        store: Store,
        dir: ContainerDir,
    ) -> HealthProbe {
        let now = Instant::now();
        HealthProbe {
            next: now + config.interval,
            config,
            command,
            store,
            dir,
            state: HealthState::starting(),
            started: now,
            probe: None,
        }
    }

    /// The container's command (re)started: its health starts over.
    pub fn restart(&mut self) -> Result<()> {
        self.end_probe();
        self.started = Instant::now();
        self.next = self.started + self.config.interval;
        self.state = HealthState::starting();
        self.write()
    }

    /// The running probe's pidfd and output pipe, or -1s.
    pub fn fds(&self) -> [RawFd; 2] {
        match &self.probe {
            Some(p) => [p.pidfd.as_raw_fd(), p.output.as_raw_fd()],
            None => [-1, -1],
        }
    }

    /// Time until the next probe starts or the running one times out.
    pub fn due_in(&self) -> Duration {
        let at = match &self.probe {
            Some(p) if !p.timed_out => p.deadline,
            // Killed: its pidfd says when it is gone.
            Some(_) => return Duration::MAX,
            None => self.next,
        };
        at.saturating_duration_since(Instant::now())
    }

    /// Reads the probe's output, records it once it ended, kills it at its timeout, and
    /// starts the next one when due; whether a probe ended. Errors are the health file's
    /// (a full disk).
    pub fn advance(&mut self) -> Result<bool> {
        let mut ended = false;
        let now = Instant::now();
        if let Some(probe) = &mut self.probe {
            probe.read_output();
            if probe.deadline <= now && !probe.timed_out {
                probe.timed_out = true;
                let _ = probe.child.kill();
            }
            if has_exited(&probe.pidfd) {
                self.finish_probe()?;
                self.next = next_start(self.next, Instant::now());
                ended = true;
            }
        }
        if self.probe.is_none() && self.next <= now {
            self.next = now + self.config.interval;
            self.start_probe()?;
        }
        Ok(ended)
    }

    fn start_probe(&mut self) -> Result<()> {
        let started = SystemTime::now();
        match self.spawn() {
            Ok(probe) => {
                self.probe = Some(probe);
                Ok(())
            }
            Err(e) => {
                let result = ProbeResult {
                    start: rfc3339(started),
                    end: rfc3339(SystemTime::now()),
                    exit_code: -1,
                    output: format!("the probe could not start: {e}"),
                };
                self.take_result(result)
            }
        }
    }

    fn spawn(&mut self) -> std::io::Result<Probe> {
        let (read, write) = nix::unistd::pipe()?;
        nix::fcntl::fcntl(
            &read,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        let mut command = (self.command)(&self.config.argv);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(write.try_clone()?))
            .stderr(Stdio::from(write));
        let child = command.spawn()?;
        let pidfd = kiln_runtime::pidfd_of_child(child.id() as i32)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Probe {
            child,
            pidfd,
            output: read,
            kept: Vec::new(),
            started: SystemTime::now(),
            deadline: Instant::now() + self.config.timeout,
            timed_out: false,
        })
    }

    fn finish_probe(&mut self) -> Result<()> {
        let Some(mut probe) = self.probe.take() else {
            return Ok(());
        };
        let status = probe.child.wait().ok();
        probe.read_output();
        let mut output = String::from_utf8_lossy(&probe.kept).into_owned();
        let exit_code = match (probe.timed_out, status.and_then(|s| s.code())) {
            (true, _) => {
                output = format!(
                    "Health check exceeded timeout ({})",
                    humantime::format_duration(self.config.timeout)
                );
                -1
            }
            (false, Some(code)) => code,
            (false, None) => -1,
        };
        let result = ProbeResult {
            start: rfc3339(probe.started),
            end: rfc3339(SystemTime::now()),
            exit_code,
            output,
        };
        self.take_result(result)
    }

    fn take_result(&mut self, result: ProbeResult) -> Result<()> {
        let in_start_period = self.started.elapsed() < self.config.start_period;
        self.state
            .record(result, self.config.retries, in_start_period);
        self.write()
    }

    /// Kills a running probe (the container ended) without recording it.
    pub fn end_probe(&mut self) {
        if let Some(mut probe) = self.probe.take() {
            let _ = probe.child.kill();
            let _ = probe.child.wait();
        }
    }

    fn write(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.state).expect("health state serialises");
        self.dir
            .write_file(&self.store, HEALTH_FILE, &json)
            .map_err(ContainerError::from)
    }
}

impl Drop for HealthProbe {
    fn drop(&mut self) {
        self.end_probe();
    }
}

impl Probe {
    /// Keeps the first [`KEPT_OUTPUT`] bytes and drains the rest, so the probe never
    /// blocks on a full pipe.
    fn read_output(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: the buffer is valid for its length; the fd is the probe's pipe, which
            // is non-blocking.
            let n =
                unsafe { libc::read(self.output.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                0 => return,
                n if n > 0 => {
                    let room = KEPT_OUTPUT.saturating_sub(self.kept.len());
                    self.kept.extend_from_slice(&buf[..(n as usize).min(room)]);
                }
                _ if std::io::Error::last_os_error().kind() == ErrorKind::Interrupted => {}
                _ => return,
            }
        }
    }
}

/// When the next probe may start: at its interval, but not within [`MIN_GAP`] of the end of
/// the last one.
fn next_start(due: Instant, last_ended: Instant) -> Instant {
    due.max(last_ended + MIN_GAP)
}

fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd record; a zero timeout does not block.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) > 0 }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: i32) -> ProbeResult {
        ProbeResult {
            start: String::new(),
            end: String::new(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn retries_failures_in_a_row_make_it_unhealthy_and_a_success_heals() {
        let mut state = HealthState::starting();
        state.record(result(1), 3, false);
        state.record(result(1), 3, false);
        assert_eq!(state.status, Health::Starting);
        state.record(result(1), 3, false);
        assert_eq!((state.status, state.failing_streak), (Health::Unhealthy, 3));
        state.record(result(0), 3, false);
        assert_eq!((state.status, state.failing_streak), (Health::Healthy, 0));
    }

    #[test]
    fn failures_in_the_start_period_count_only_after_a_first_success() {
        let mut state = HealthState::starting();
        for _ in 0..5 {
            state.record(result(1), 1, true);
        }
        assert_eq!((state.status, state.failing_streak), (Health::Starting, 0));
        state.record(result(0), 1, true);
        state.record(result(1), 1, true);
        assert_eq!(state.status, Health::Unhealthy);
    }

    #[test]
    fn probes_are_spaced_even_when_their_interval_is_shorter_than_they_take() {
        let t0 = Instant::now();
        let due = t0 + Duration::from_millis(1);
        let ended = t0 + Duration::from_millis(40);
        assert_eq!(next_start(due, ended), ended + MIN_GAP);
        let later = t0 + Duration::from_secs(30);
        assert_eq!(next_start(later, ended), later);
    }

    #[test]
    fn the_last_five_results_are_kept() {
        let mut state = HealthState::starting();
        for code in 0..8 {
            state.record(result(code), 3, false);
        }
        let codes: Vec<i32> = state.log.iter().map(|r| r.exit_code).collect();
        assert_eq!(codes, [3, 4, 5, 6, 7]);
    }

    #[test]
    fn docker_test_forms_become_a_command() {
        let check = |test: &[&str]| kiln_image::Healthcheck {
            test: test.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let shell = HealthConfig::from_image(&check(&["CMD-SHELL", "wget -q localhost"])).unwrap();
        assert_eq!(shell.argv, ["/bin/sh", "-c", "wget -q localhost"]);
        assert_eq!(
            (shell.interval, shell.timeout, shell.retries),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, DEFAULT_RETRIES)
        );
        let cmd = HealthConfig::from_image(&check(&["CMD", "true"])).unwrap();
        assert_eq!(cmd.argv, ["true"]);
        assert!(HealthConfig::from_image(&check(&["NONE"])).is_none());
        assert!(HealthConfig::from_image(&check(&[])).is_none());
        assert!(HealthConfig::from_image(&check(&["CMD"])).is_none());
    }
}
