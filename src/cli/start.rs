//! `kiln start` and `kiln restart`: a container made earlier runs again, with docker's
//! flags and exit codes.
//!
//! A stopped container starts again from what was kept when it was made
//! (`kiln_container::start::StartConfig`: same rootfs upper dir, same confinement and
//! limits), under a monitor like `kiln run -d`'s (the same hidden command, given `start ID`
//! instead of a `run` command line), or in the foreground with `-a`. `restart` is `stop`
//! then `start`.

use std::ffi::OsString;
use std::time::Duration;

use clap::Args;

use super::containers::{container_store, find};
use super::lifecycle::for_each;
use super::run::{run_to_end, Foreground, Runner};
use super::{CmdResult, Failure, Globals};
use kiln_container::start::StartConfig;
use kiln_store::{ContainerDir, ContainerState, Store};

#[derive(Args, Debug)]
#[command(
    about = "Start stopped containers again (same filesystem, same settings)",
    after_help = "Examples:\n  kiln start web                 # in the background, like kiln run -d\n  kiln start -a job              # in the foreground: its output here, its exit code\n  kiln start -ai box             # and stdin, e.g. a shell made with kiln run -it"
)]
pub struct StartArgs {
    /// Run in the foreground: print its output and exit with its code
    #[arg(short = 'a', long)]
    attach: bool,
    /// Pass stdin to it (with -a)
    #[arg(short = 'i', long, requires = "attach")]
    interactive: bool,
    /// Container names or IDs (a unique ID prefix is enough)
    #[arg(required = true)]
    pub(super) containers: Vec<String>,
}

#[derive(Args, Debug)]
#[command(
    about = "Stop containers (if running) and start them again in the background",
    after_help = "Examples:\n  kiln restart web\n  kiln restart -t 2 web db      # SIGKILL after 2 s"
)]
pub struct RestartArgs {
    #[command(flatten)]
    grace: super::lifecycle::GraceTime,
    /// Container names or IDs (a unique ID prefix is enough)
    #[arg(required = true)]
    containers: Vec<String>,
}

pub fn start(globals: &Globals, args: StartArgs) -> CmdResult {
    if args.attach {
        if args.containers.len() > 1 {
            return Err(
                Failure::user("kiln start -a takes one container").hint(Some(
                    "start the others without -a; follow them with kiln logs -f".into(),
                )),
            );
        }
        return run_stopped_attached(globals, &args.containers[0], args.interactive);
    }
    let store = container_store(globals)?;
    for_each(&args.containers, |key| start_detached(globals, &store, key))
}

pub fn restart(globals: &Globals, args: RestartArgs) -> CmdResult {
    let store = container_store(globals)?;
    for_each(&args.containers, |key| {
        super::lifecycle::stop_one(&store, key, None, args.grace.duration())?;
        start_detached(globals, &store, key)
    })
}

/// Starts the container under a monitor; a running one is left as it is (docker's).
fn start_detached(globals: &Globals, store: &Store, key: &str) -> Result<String, Failure> {
    let (dir, state) = find(store, key)?;
    if dir.is_locked() {
        return Ok(key.to_owned());
    }
    check_startable(&dir, &state, key)?;
    let argv: Vec<OsString> = vec![
        "--root".into(),
        globals.root.clone().into_os_string(),
        "start".into(),
        dir.id.clone().into(),
    ];
    match super::detach::start_monitor(argv)? {
        Ok(_) => Ok(key.to_owned()),
        Err(code) => Err(Failure {
            code,
            ..Failure::user(format!("container {key} did not start"))
        }),
    }
}

/// Refuses what cannot start again, with the reason, before a monitor is made for it.
fn check_startable(dir: &ContainerDir, state: &ContainerState, key: &str) -> Result<(), Failure> {
    if state.auto_remove {
        return Err(Failure::user(format!(
            "container {key} was made with --rm: it is removed when it ends, not started again"
        )));
    }
    StartConfig::read(dir).map_err(|e| Failure::user(&e).hint(e.hint()))?;
    Ok(())
}

/// `kiln start -a`: the container runs in the foreground of this kiln.
fn run_stopped_attached(globals: &Globals, key: &str, interactive: bool) -> CmdResult {
    let mut runner = Foreground;
    run_stopped_with(globals, key, &mut runner, Some(interactive))
}

/// The monitor's side of `kiln start`: runs the stopped container `key` with `runner`.
pub(super) fn run_stopped(globals: &Globals, key: &str, runner: &mut dyn Runner) -> CmdResult {
    run_stopped_with(globals, key, runner, None)
}

/// Takes the container's lock, makes its kept spec fit the runner (`attached`: in the
/// foreground, with stdin or not; `None`: under a monitor, output to the log) and runs it
/// to its end.
fn run_stopped_with(
    globals: &Globals,
    key: &str,
    runner: &mut dyn Runner,
    attached: Option<bool>,
) -> CmdResult {
    let store = container_store(globals)?;
    let (dir, _) = find(&store, key)?;
    let Some(_lock) = dir.lock_within(Duration::ZERO)? else {
        return Err(Failure::user(format!("container {key} is already running")));
    };
    // Read under the lock: whoever ran it last has recorded its end.
    let mut state = dir
        .read_state()
        .ok_or_else(|| Failure::user(format!("container {key} was removed")))?;
    check_startable(&dir, &state, key)?;
    let mut start = StartConfig::read(&dir).map_err(|e| Failure::user(&e).hint(e.hint()))?;
    match attached {
        Some(interactive) => {
            start.spec.interactive = interactive;
            start.spec.capture_output = false;
            start.spec.tty = start.spec.tty && interactive;
        }
        // Its monitor keeps its terminal and stdin, as `run -dit` does, for `kiln attach`.
        None => start.spec.capture_output = true,
    }
    state.detached |= attached.is_none();
    state.restart_count = 0;
    state.restarting = false;
    state.pid = Some(std::process::id() as i32);
    run_to_end(globals, &store, &dir, (&start, &mut state), runner)
}
