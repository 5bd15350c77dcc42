//! `kiln stop`, `kiln kill` and `kiln wait`: a running container's end, asked of the
//! process that runs it (a detached container's monitor or a foreground `kiln run`)
//! through `kiln_container::lifecycle`. Output and exit codes are docker's: each container
//! as it was named (stop, kill) or its exit code (wait), one per line; 1 when one of them
//! failed, after trying the others.

use std::time::Duration;

use clap::Args;
use nix::sys::signal::Signal;

use super::containers::{container_store, find};
use super::{CmdResult, Failure, Globals};
use kiln_container::{lifecycle, ContainerError};
use kiln_store::Store;

#[derive(Args, Debug)]
#[command(
    about = "Stop running containers: the image's stop signal (else SIGTERM), then SIGKILL after a grace time",
    after_help = "Examples:\n  kiln stop web\n  kiln stop -t 1 web db      # SIGKILL after 1 s\n  kiln stop -s SIGINT web"
)]
pub struct StopArgs {
    #[command(flatten)]
    grace: GraceTime,
    /// Signal to send first (instead of the image's StopSignal or SIGTERM)
    #[arg(short = 's', long, value_name = "SIGNAL")]
    signal: Option<String>,
    /// Container names or IDs (a unique ID prefix is enough)
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `-t SECONDS` of `stop` and `restart`.
#[derive(Args, Debug)]
pub struct GraceTime {
    /// Seconds to wait for the container to end before it is killed
    #[arg(
        short = 't',
        long = "time",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    time: u64,
}

impl GraceTime {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.time)
    }
}

#[derive(Args, Debug)]
#[command(
    about = "Send a signal to running containers (SIGKILL by default)",
    after_help = "Examples:\n  kiln kill web\n  kiln kill -s HUP web      # e.g. to reload its configuration\n  kiln kill -s 15 web"
)]
pub struct KillArgs {
    /// Signal: a name (KILL, SIGKILL) or a number
    #[arg(short = 's', long, value_name = "SIGNAL", default_value = "KILL")]
    signal: String,
    /// Container names or IDs (a unique ID prefix is enough)
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(Args, Debug)]
#[command(
    about = "Wait until containers end, then print their exit codes",
    after_help = "Examples:\n  kiln wait web\n  code=$(kiln wait job)"
)]
pub struct WaitArgs {
    /// Container names or IDs (a unique ID prefix is enough)
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `TERM`, `SIGTERM`, `sigterm` or `15`.
pub fn parse_signal(text: &str) -> Option<Signal> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let upper = text.to_ascii_uppercase();
    let name = match upper.starts_with("SIG") {
        true => upper,
        false => format!("SIG{upper}"),
    };
    name.parse().ok()
}

fn bad_signal(text: &str) -> Failure {
    Failure::user(format!("invalid signal {text:?}")).hint(Some(
        "give a name such as TERM, SIGKILL or HUP, or a number".into(),
    ))
}

fn library_failure(e: ContainerError) -> Failure {
    let hint = e.hint();
    Failure::user(e).hint(hint)
}

/// Runs `each` for every named container; prints failures and goes on; 1 if any failed.
pub(super) fn for_each(
    keys: &[String],
    mut each: impl FnMut(&str) -> Result<String, Failure>,
) -> CmdResult {
    let mut code = 0;
    for key in keys {
        match each(key) {
            Ok(line) => println!("{line}"),
            Err(f) => {
                super::output::print_failure(&f);
                code = super::EXIT_USER_ERROR;
            }
        }
    }
    Ok(code)
}

pub fn stop(globals: &Globals, args: StopArgs) -> CmdResult {
    let store = container_store(globals)?;
    let chosen = args
        .signal
        .as_deref()
        .map(|s| parse_signal(s).ok_or_else(|| bad_signal(s)))
        .transpose()?;
    for_each(&args.containers, |key| {
        stop_one(&store, key, chosen, args.grace.duration())
    })
}

/// Stops one container (`chosen`, else the image's stop signal, else SIGTERM; SIGKILL after
/// `grace`); returns the name to print.
pub(super) fn stop_one(
    store: &Store,
    key: &str,
    chosen: Option<Signal>,
    grace: Duration,
) -> Result<String, Failure> {
    let (dir, state) = find(store, key)?;
    let image_signal = state.stop_signal.as_deref().and_then(parse_signal);
    let signal = chosen.or(image_signal).unwrap_or(Signal::SIGTERM);
    lifecycle::stop(store, &dir, signal, grace).map_err(library_failure)?;
    Ok(key.to_owned())
}

pub fn kill(globals: &Globals, args: KillArgs) -> CmdResult {
    let store = container_store(globals)?;
    let signal = parse_signal(&args.signal).ok_or_else(|| bad_signal(&args.signal))?;
    for_each(&args.containers, |key| {
        let (dir, _) = find(&store, key)?;
        match lifecycle::kill(&dir, signal) {
            Ok(()) => Ok(key.to_owned()),
            Err(ContainerError::NotRunning(_)) => Err(Failure::user(format!(
                "cannot kill container {key}: it is not running"
            ))),
            Err(e) => Err(library_failure(e)),
        }
    })
}

pub fn wait(globals: &Globals, args: WaitArgs) -> CmdResult {
    let store = container_store(globals)?;
    for_each(&args.containers, |key| {
        let (dir, _) = find(&store, key)?;
        match lifecycle::wait(&store, &dir).map_err(library_failure)? {
            Some(code) => Ok(code.to_string()),
            None => Err(Failure::user(format!("container {key} has not started"))),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named_as_docker_names_them() {
        for text in ["TERM", "SIGTERM", "sigterm", "15"] {
            assert_eq!(parse_signal(text), Some(Signal::SIGTERM), "{text}");
        }
        assert_eq!(parse_signal("NOPE"), None);
        assert_eq!(parse_signal("99"), None);
    }
}
