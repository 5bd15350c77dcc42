//! `kiln exec`: run a command in a running container, docker's flags and exit codes.
//!
//! The command line's part only: flags into `kiln_container::exec::ExecSettings`, kiln's
//! environment for a bare `-e K`, signals forwarded to the process while it runs, and the
//! exit code (the command's own; 126/127 when it cannot run; 1 when the container is not
//! running). How the process joins the container is `kiln_runtime::exec_in_container`.

use clap::Args;

use super::containers::{container_store, find};
use super::{CmdResult, Failure, Globals, EXIT_NOT_STARTED};
use kiln_container::exec::{self, ExecSettings};
use kiln_container::health::ProbeCommand;
use kiln_container::ContainerError;
use kiln_runtime as runtime;

#[derive(Args, Debug)]
#[command(
    about = "Run a command in a running container",
    after_help = "The command joins every namespace and the cgroup of the container and gets its \
capabilities, no_new_privs, seccomp filter, user, environment and workdir, unless -u, -w, -e or \
--privileged say otherwise.\n\nExamples:\n  kiln exec web ps\n  kiln exec -it web sh\n  kiln exec -u nobody -w /tmp web id\n  kiln exec -e DEBUG=1 web printenv DEBUG\n  kiln exec -d web sh -c 'sleep 60'   # returns at once"
)]
pub struct ExecArgs {
    /// Keep stdin open
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a terminal (use with -i for a shell)
    #[arg(short = 't', long)]
    tty: bool,
    /// Run in the background: return at once; the output goes nowhere
    #[arg(short = 'd', long, conflicts_with_all = ["interactive", "tty"])]
    detach: bool,
    /// User: NAME, UID, NAME:GROUP or UID:GID (names from the container's /etc/passwd)
    #[arg(short = 'u', long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Set an environment variable over the container's (K=V, or K to take kiln's value)
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Read environment variables from a file: NAME=VALUE or NAME per line, # comments
    /// (before -e, which wins)
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container (must exist)
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// Give the command every capability, no seccomp filter and no_new_privs off
    #[arg(long)]
    privileged: bool,
    /// Container name or ID (a unique ID prefix is enough)
    container: String,
    /// Command and arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn exec(globals: &Globals, args: ExecArgs) -> CmdResult {
    let store = container_store(globals)?;
    let (dir, state) = find(&store, &args.container)?;
    if let Some(dir) = &args.workdir {
        if !dir.starts_with('/') {
            return Err(Failure::user(format!(
                "-w {dir}: the workdir must be an absolute path"
            )));
        }
    }
    let settings = ExecSettings {
        argv: args.command.clone(),
        env: super::env_args::environment(&args.env_file, &args.env)?,
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        privileged: args.privileged,
        tty: args.tty,
        interactive: args.interactive,
        detach: args.detach,
    };
    let spec = exec::prepare(&dir, &state, &settings).map_err(|e| failure(e, &args))?;
    super::signals::hold();
    let running = match runtime::exec_in_container(&spec) {
        Ok(running) => running,
        Err(e) => {
            super::signals::forward_to(None);
            return Err(runtime_failure(e, &args));
        }
    };
    if args.detach {
        super::signals::forward_to(None);
        running.detach();
        return Ok(0);
    }
    super::signals::forward_to(Some(running.pid()));
    let status = running.wait();
    super::signals::forward_to(None);
    let status = status.map_err(|e| Failure::user(format!("exec: {e}")))?;
    Ok(status.code())
}

fn not_running(name: &str) -> Failure {
    Failure::user(format!("container {name} is not running")).hint(Some(format!(
        "kiln ps -a shows its state; start a new one from its image with kiln run -d, or see \
         why it ended with kiln logs {name}"
    )))
}

fn failure(e: ContainerError, args: &ExecArgs) -> Failure {
    match e {
        ContainerError::NotRunning(_) => not_running(&args.container),
        ContainerError::User(ref user) => Failure::user(format!("-u: {user}")).hint(e.hint()),
        e => {
            let hint = e.hint();
            Failure::user(e).hint(hint)
        }
    }
}

/// 126/127 when the command cannot run or its workdir cannot be entered (docker's), 1 when
/// the container ended meanwhile, else 125 (the process could not be set up).
fn runtime_failure(e: runtime::RuntimeError, args: &ExecArgs) -> Failure {
    if let runtime::RuntimeError::ContainerGone(_) = e {
        return not_running(&args.container);
    }
    let code = e.exec_exit_code().unwrap_or(EXIT_NOT_STARTED);
    Failure {
        code,
        ..Failure::not_started(e)
    }
}

/// How a container's runner starts a healthcheck probe: `kiln exec` of the container in
/// the same store, so a probe gets exactly what any exec gets.
pub(super) fn probe_command(globals: &Globals, id: &str) -> ProbeCommand {
    let root = globals.root.clone();
    let id = id.to_owned();
    Box::new(move |argv: &[String]| {
        let mut command = std::process::Command::new("/proc/self/exe");
        command
            .arg("--root")
            .arg(&root)
            .arg("exec")
            .arg(&id)
            .args(argv);
        command
    })
}
