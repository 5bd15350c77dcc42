//! `kiln run -d`: the container runs under a monitor, kiln's own binary started again as
//! the hidden `container-monitor` command (conmon's role), and `kiln run` returns its ID.
//!
//! The monitor is given the very same command line and runs the very same `run` code as a
//! foreground `kiln run` (`run::run_container`), so a detached container is made exactly
//! like any other; only the [`Monitor`] runner differs. It starts in a session of its own
//! (`setsid`), so the caller's terminal, shell and their SIGHUP do not reach it, and it
//! never holds the caller's stdio: its stdin is `/dev/null`, and its stdout and stderr are
//! pipes to the `kiln run -d` that started it. Whatever it reports before the container
//! runs (notices, errors, 126/127 for a command that cannot run) comes through those pipes
//! and its exit code, synchronously; once the command runs it writes the ID on stdout,
//! points its stdio at `monitor.log` in the container's dir, and stays the container's
//! parent until it ends: it holds the container's lock, copies its output into the log,
//! answers `kiln stop`/`kill`/`wait`, and records the exit. If the monitor is killed, the
//! container dies with it (PR_SET_PDEATHSIG) and the next kiln command records its end.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use clap::Args;

use super::run::{run_container, RunArgs, Runner};
use super::{CmdResult, Failure, Globals, EXIT_NOT_STARTED};
use kiln_container::log::LogWriter;
use kiln_container::monitor::OutputLog;
use kiln_container::start::StartConfig;
use kiln_runtime::RunningContainer;
use kiln_store::ContainerDir;

/// The hidden command a detached container's monitor runs as.
pub const MONITOR_COMMAND: &str = "container-monitor";

/// `kiln container-monitor -- ARGS…`: ARGS are the whole command line of the `kiln run -d`
/// that started it.
#[derive(Args, Debug)]
pub struct MonitorArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub argv: Vec<OsString>,
}

/// `kiln run -d` and `kiln start`: starts a monitor with the command line `argv` and relays
/// what it says until the container runs; returns the container's ID then, or the exit
/// code of a monitor that could not start it (it said why on stderr).
pub fn start_monitor(argv: Vec<OsString>) -> Result<Result<String, i32>, Failure> {
    let mut monitor = Command::new("/proc/self/exe")
        .arg(MONITOR_COMMAND)
        .arg("--")
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::not_started(format!("start the container's monitor: {e}")))?;
    let mut errors = monitor.stderr.take().expect("piped");
    let relay = std::thread::spawn(move || {
        let _ = std::io::copy(&mut errors, &mut std::io::stderr());
    });
    let mut said = String::new();
    let _ = monitor
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut said);
    let _ = relay.join();
    match said.trim() {
        // The monitor goes on: it is not waited for (it is in its own session, and init
        // reaps it once this process has exited).
        id if id.len() == 64 => Ok(Ok(id.to_owned())),
        _ => match monitor.wait() {
            Ok(status) => Ok(Err(status.code().unwrap_or(EXIT_NOT_STARTED))),
            Err(e) => Err(Failure::not_started(format!(
                "the container's monitor: {e}"
            ))),
        },
    }
}

/// The `container-monitor` command: the `kiln run -d` again, as the container's monitor.
pub fn monitor(globals: &Globals, args: RunArgs) -> CmdResult {
    become_monitor();
    run_container(globals, args, &mut Monitor::default())
}

/// The `container-monitor` command for `kiln start`: the stopped container `key`, run by
/// this monitor.
pub fn monitor_start(globals: &Globals, key: &str) -> CmdResult {
    become_monitor();
    super::start::run_stopped(globals, key, &mut Monitor::default())
}

fn become_monitor() {
    // Its own session: no controlling terminal, so no SIGHUP when the caller's ends.
    let _ = nix::unistd::setsid();
    super::signals::ignore_hangup();
}

/// The detached runner: the log gets the output.
#[derive(Default)]
pub(super) struct Monitor {
    /// The ID was said and stdio points at `monitor.log`.
    left: bool,
}

impl Runner for Monitor {
    fn started(
        &mut self,
        running: &mut RunningContainer,
        dir: &ContainerDir,
        start: &StartConfig,
    ) -> Result<Option<OutputLog>, Failure> {
        let writer = LogWriter::open(dir.log_path(), start.log).map_err(Failure::not_started)?;
        let output = match (running.take_console(), running.take_output()) {
            (Some(master), _) => OutputLog::console(master, start.spec.interactive, writer)
                .map_err(Failure::not_started)?,
            (None, Some(pipes)) => OutputLog::pipes(pipes, writer),
            (None, None) => {
                return Err(Failure::not_started(
                    "the container's output pipes are missing",
                ))
            }
        };
        super::signals::forward_to(Some(running.pid()));
        if !self.left {
            leave_the_caller(dir).map_err(Failure::not_started)?;
            self.left = true;
        }
        Ok(Some(output))
    }

    fn is_monitor(&self) -> bool {
        true
    }
}

/// Points stderr at `monitor.log` in the container's dir, says the ID on stdout, then
/// points stdout there too: the `kiln run -d` sees the ID and then the end of both pipes.
fn leave_the_caller(dir: &ContainerDir) -> std::io::Result<()> {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.path.join("monitor.log"))?;
    // SAFETY: dup2 onto the process's own stdio fds.
    if unsafe { libc::dup2(log.as_raw_fd(), 2) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", dir.id)?;
    out.flush()?;
    // SAFETY: as above.
    if unsafe { libc::dup2(log.as_raw_fd(), 1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Nothing of the caller's working directory stays in use.
    std::env::set_current_dir("/")
}
