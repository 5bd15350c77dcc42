//! `kiln kill`, `stop` and `wait` on a container, whoever runs it (a foreground `kiln run`
//! or a detached container's monitor): requests over its control socket (`monitor`), and
//! the container's lock and state when no runner answers.
//!
//! Exists so that the command line only picks containers and prints, and so that "the
//! runner was killed" is handled in one place: a free lock means the container is gone,
//! and its end is recorded ([`settle_killed_runners`]) before it is reported.

use std::time::Duration;

use kiln_store::{ContainerDir, Store};
use nix::sys::signal::Signal;

use super::error::{ContainerError, Result};
use super::monitor::{request, Reply};

/// How long a runner that holds the lock may take to answer on its socket (it binds the
/// socket before it starts the container, so only a starting or ending one is silent).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// How long a runner may take to record an end after the container's PID 1 exited.
const RECORD_WITHIN: Duration = Duration::from_secs(30);

/// Settles what killed kiln processes left, so nothing shows as running that is not:
/// `--rm` containers are removed, containers whose runner died are recorded as exited,
/// and then, only when there were any, the cgroups of killed kilns are swept (a sweep
/// opens every kiln cgroup, running ones too, so it is no part of every command).
pub fn settle_killed_runners(store: &Store) -> Result<()> {
    let abandoned = store.remove_abandoned_containers()?;
    if abandoned + store.record_lost_containers()? > 0 {
        kiln_runtime::sweep_stale_cgroups(None);
    }
    Ok(())
}

/// Sends `signal` to the container's PID 1 (its init passes it to the command).
pub fn kill(dir: &ContainerDir, signal: Signal) -> Result<()> {
    let deadline = std::time::Instant::now() + ANSWER_WITHIN;
    while dir.is_locked() {
        match request(
            dir,
            &format!("signal {}", signal as i32),
            Some(ANSWER_WITHIN),
        )? {
            Some(Reply::Ok) => return Ok(()),
            Some(Reply::Restarting) => return Err(ContainerError::Restarting(dir.id.clone())),
            Some(Reply::Error(why)) => return Err(ContainerError::MonitorRefused(why)),
            _ if std::time::Instant::now() >= deadline => break,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Err(ContainerError::NotRunning(dir.id.clone()))
}

/// Stops a running container: `signal`, then SIGKILL after `timeout` (the runner keeps
/// that deadline). Returns its exit code, or `None` when it was not running.
pub fn stop(
    store: &Store,
    dir: &ContainerDir,
    signal: Signal,
    timeout: Duration,
) -> Result<Option<i32>> {
    if !dir.is_locked() {
        return Ok(None);
    }
    let line = format!("stop {} {}", signal as i32, timeout.as_secs());
    match request(dir, &line, Some(timeout + RECORD_WITHIN))? {
        Some(Reply::Exited(code)) => Ok(Some(runner_done(dir, code))),
        Some(Reply::Error(why)) => Err(ContainerError::MonitorRefused(why)),
        // Its runner ended meanwhile, or is only just starting: its lock tells.
        _ => wait_for_lock(store, dir, timeout + RECORD_WITHIN).map(Some),
    }
}

/// Waits until the container has ended and returns its exit code; `None` for a container
/// that never started.
pub fn wait(store: &Store, dir: &ContainerDir) -> Result<Option<i32>> {
    if dir.is_locked() {
        if let Some(Reply::Exited(code)) = request(dir, "wait", None)? {
            return Ok(Some(runner_done(dir, code)));
        }
        return wait_for_lock(store, dir, Duration::MAX).map(Some);
    }
    settle_killed_runners(store)?;
    Ok(dir.read_state().and_then(|s| s.exit_code))
}

/// Waits (briefly) until a runner that answered with the exit code has let go of the
/// container too, so that what the caller does next (`kiln rm`) finds it ended. A `--rm`
/// container's dir is gone by then.
fn runner_done(dir: &ContainerDir, code: i32) -> i32 {
    let _ = dir.lock_within(RECORD_WITHIN);
    code
}

/// Waits until the runner lets go of the lock, records a lost container's end, and reads
/// the exit code from the state (a `--rm` container that is gone: the lost code).
fn wait_for_lock(store: &Store, dir: &ContainerDir, timeout: Duration) -> Result<i32> {
    let timeout = timeout.min(Duration::from_secs(365 * 86_400));
    match dir.lock_within(timeout)? {
        None => Err(ContainerError::MonitorTimeout),
        Some(lock) => {
            drop(lock);
            settle_killed_runners(store)?;
            Ok(dir
                .read_state()
                .and_then(|s| s.exit_code)
                .unwrap_or(kiln_store::containers::LOST_EXIT_CODE))
        }
    }
}
