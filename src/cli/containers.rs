//! `kiln ps` and `kiln rm`: containers kept after they ran (without `--rm`).

use clap::Args;

use super::{CmdResult, Failure, Globals};
use kiln_store::ContainerState;

#[derive(Args, Debug)]
#[command(
    about = "List containers",
    after_help = "Examples:\n  kiln ps          # running containers\n  kiln ps -a       # also the exited ones\n  kiln ps -aq      # only their IDs, one per line\n  kiln ps -a --json"
)]
pub struct PsArgs {
    /// Also list containers that have exited
    #[arg(short, long)]
    all: bool,
    /// Print a JSON array instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(
    about = "Remove containers",
    after_help = "Examples:\n  kiln rm web\n  kiln rm 3f2a1c\n  kiln rm -f web   # also a running one (it is killed)"
)]
pub struct RmArgs {
    /// Container names or IDs (a unique ID prefix is enough)
    #[arg(required = true)]
    containers: Vec<String>,
    /// Remove running containers too, killing them
    #[arg(short, long)]
    force: bool,
}

pub fn ps(globals: &Globals, args: PsArgs) -> CmdResult {
    let store = globals.store()?;
    store.remove_abandoned_containers()?;
    let rows: Vec<ContainerState> = store
        .containers()?
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| args.all || s.is_running())
        .collect();
    if globals.quiet && !args.json {
        // docker's `ps -q`: only the container IDs.
        for s in &rows {
            println!("{}", &s.id[..12]);
        }
        return Ok(0);
    }
    if args.json {
        let json: Vec<_> = rows
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id, "name": s.name, "image": s.image, "command": s.command,
                    "created": s.created, "status": s.status(), "exit_code": s.exit_code,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values serialise")
        );
        return Ok(0);
    }
    println!(
        "{:<14} {:<30} {:<24} {:<14} NAME",
        "CONTAINER ID", "IMAGE", "COMMAND", "STATUS"
    );
    for s in rows {
        let mut command = s.command.join(" ");
        if command.chars().count() > 22 {
            command = command.chars().take(21).collect::<String>() + "…";
        }
        println!(
            "{:<14} {:<30} {:<24} {:<14} {}",
            &s.id[..12],
            s.image,
            command,
            s.status(),
            s.name
        );
    }
    Ok(0)
}

pub fn rm(globals: &Globals, args: RmArgs) -> CmdResult {
    let store = globals.store()?;
    let mut code = 0;
    for key in &args.containers {
        let failure = match store.find_container(key)? {
            None => Some(Failure::user(format!("no such container: {key}"))),
            Some((_, state)) if state.is_running() && !args.force => Some(
                Failure::user(format!("container {key} is running")).hint(Some(format!(
                    "kiln rm -f {key} kills and removes it; or end the kiln run that runs it"
                ))),
            ),
            Some((dir, state)) => {
                if let Some(pid) = state.pid.filter(|_| state.is_running()) {
                    // The container dies with the kiln process that runs it.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                store.remove_container(&dir)?;
                println!("{}", state.name);
                None
            }
        };
        if let Some(f) = failure {
            super::output::print_failure(&f);
            code = super::EXIT_USER_ERROR;
        }
    }
    Ok(code)
}
