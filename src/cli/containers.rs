//! `kiln ps` and `kiln rm`: the containers in the store, running or kept after they ran.

use std::time::Duration;

use clap::Args;

use super::listing::{column, row, Listing};
use super::output::created_at_time;
use super::{CmdResult, Failure, Globals};
use kiln_container::health::HealthState;
use kiln_container::lifecycle;
use kiln_store::containers::Status;
use kiln_store::{ContainerDir, ContainerState, Store};

#[derive(Args, Debug)]
#[command(
    about = "List containers",
    after_help = "Examples:\n  kiln ps                          # running containers\n  kiln ps -a                       # also the exited ones\n  kiln ps -aq                      # only their IDs, one per line\n  kiln ps --filter status=exited   # those that exited\n  kiln ps --format '{{.Names}} {{.Status}}'\n  kiln ps -a --format 'table {{.ID}}\\t{{.Names}}\\t{{.State}}'\n  kiln ps -a --json\n\n--format fields (docker's): .ID .Names .Image .Command .CreatedAt .RunningFor .Ports .State .Status"
)]
pub struct PsArgs {
    /// Also list containers that are not running
    #[arg(short, long)]
    all: bool,
    /// Print a JSON array instead of a table
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Print each container through a Go-style template, e.g. '{{.Names}}'; `table …` adds
    /// a header and aligns the columns
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Only containers that match: status=created|running|restarting|exited,
    /// health=starting|healthy|unhealthy|none, name=TEXT (part of the name), id=PREFIX; a
    /// status filter lists not-running containers without -a
    #[arg(short, long, value_name = "KEY=VALUE")]
    filter: Vec<String>,
}

#[derive(Args, Debug)]
#[command(
    about = "Remove containers",
    after_help = "Examples:\n  kiln rm web\n  kiln rm 3f2a1c\n  kiln rm -f web   # also a running one (it is killed through its monitor)"
)]
pub struct RmArgs {
    /// Container names or IDs (a unique ID prefix is enough)
    #[arg(required = true)]
    containers: Vec<String>,
    /// Remove running containers too, killing them
    #[arg(short, long)]
    force: bool,
}

/// Opens the store for a container command: what killed kiln processes left is settled
/// first (`--rm` containers removed, containers whose runner died recorded as exited), so
/// nothing shows as running that is not.
pub(super) fn container_store(globals: &Globals) -> Result<Store, Failure> {
    let store = globals.store()?;
    kiln_container::lifecycle::settle_killed_runners(&store)
        .map_err(|e| Failure::user(&e).hint(e.hint()))?;
    Ok(store)
}

/// The container `key` names (name, ID or unique ID prefix), or docker's error.
pub(super) fn find(store: &Store, key: &str) -> Result<(ContainerDir, ContainerState), Failure> {
    store.find_container(key)?.ok_or_else(|| {
        Failure::user(format!("no such container: {key}")).hint(Some(
            "`kiln ps -a` lists the containers; a unique prefix of an ID is enough".into(),
        ))
    })
}

/// Which containers `kiln ps` shows.
struct Filters {
    all: bool,
    statuses: Vec<String>,
    names: Vec<String>,
    ids: Vec<String>,
    /// `starting`, `healthy`, `unhealthy` or `none` (no healthcheck).
    health: Vec<String>,
}

impl Filters {
    fn parse(args: &PsArgs) -> Result<Filters, Failure> {
        let mut f = Filters {
            all: args.all,
            statuses: Vec::new(),
            names: Vec::new(),
            ids: Vec::new(),
            health: Vec::new(),
        };
        for filter in &args.filter {
            let bad = || {
                Failure::user(format!("invalid filter {filter:?}")).hint(Some(
                    "kiln ps knows status=created|running|restarting|exited, \
                     health=starting|healthy|unhealthy|none, name=TEXT and id=PREFIX"
                        .into(),
                ))
            };
            match filter.split_once('=').ok_or_else(bad)? {
                ("status", v) if ["created", "running", "restarting", "exited"].contains(&v) => {
                    f.statuses.push(v.to_owned())
                }
                ("health", v) if ["starting", "healthy", "unhealthy", "none"].contains(&v) => {
                    f.health.push(v.to_owned())
                }
                ("name", v) => f.names.push(v.to_owned()),
                ("id", v) => f.ids.push(v.to_owned()),
                _ => return Err(bad()),
            }
        }
        Ok(f)
    }

    fn keeps(&self, dir: &ContainerDir, state: &ContainerState, status: Status) -> bool {
        let status_ok = match self.statuses.is_empty() {
            true => {
                self.all || matches!(status, Status::Running { .. } | Status::Restarting { .. })
            }
            false => self.statuses.iter().any(|s| s == status.word()),
        };
        status_ok
            && (self.names.is_empty() || self.names.iter().any(|n| state.name.contains(n)))
            && (self.ids.is_empty() || self.ids.iter().any(|i| dir.id.starts_with(i)))
            && (self.health.is_empty() || self.health.contains(&health_word(dir, status)))
    }
}

/// docker's health filter words: the running container's health, or `none`.
fn health_word(dir: &ContainerDir, status: Status) -> String {
    match (status, HealthState::read(dir)) {
        (Status::Running { .. }, Some(h)) => h.status.name().into(),
        _ => "none".into(),
    }
}

pub fn ps(globals: &Globals, args: PsArgs) -> CmdResult {
    let store = container_store(globals)?;
    let filters = Filters::parse(&args)?;
    let now = kiln_store::containers::now();
    let rows: Vec<(
        ContainerState,
        Status,
        String,
        Vec<kiln_network::PortMapping>,
    )> = store
        .containers()?
        .into_iter()
        .map(|(dir, state)| {
            let status = dir.status(&state);
            (dir, state, status)
        })
        .filter(|(dir, state, status)| filters.keeps(dir, state, *status))
        .map(|(dir, state, status)| {
            let text = status_text(status, now) + &health_suffix(&dir, status);
            let ports = super::port::published(&dir, &state);
            (state, status, text, ports)
        })
        .collect();
    if globals.quiet && !args.json {
        // docker's `ps -q`: only the container IDs.
        for (s, _, _, _) in &rows {
            println!("{}", &s.id[..12]);
        }
        return Ok(0);
    }
    if args.json {
        let json: Vec<_> = rows
            .iter()
            .map(|(s, status, text, ports)| {
                serde_json::json!({
                    "id": s.id, "name": s.name, "image": s.image, "command": s.command,
                    "created": s.created, "started": s.started, "finished": s.finished,
                    "state": status.word(), "status": text,
                    "exit_code": s.exit_code, "detached": s.detached,
                    "restart_count": s.restart_count, "ports": ports,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values serialise")
        );
        return Ok(0);
    }
    let fields: Vec<_> = rows
        .iter()
        .map(|(s, status, text, ports)| ps_fields(s, *status, text, ports, now))
        .collect();
    PS.print(args.format.as_deref(), &fields)
}

/// docker's `ps --format` fields, and its table.
const PS: Listing = Listing {
    default_format: "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}",
    columns: &[
    column("ID", "CONTAINER ID"),
    column("Image", "IMAGE"),
    column("Command", "COMMAND"),
    column("CreatedAt", "CREATED AT"),
    column("RunningFor", "CREATED"),
    column("Status", "STATUS"),
    column("State", "STATE"),
    column("Ports", "PORTS"),
    column("Names", "NAMES"),
],
};

/// A container's `--format` fields.
fn ps_fields(
    s: &ContainerState,
    status: Status,
    status_text: &str,
    ports: &[kiln_network::PortMapping],
    now: u64,
) -> serde_json::Value {
    let created = std::time::UNIX_EPOCH + Duration::from_secs(s.created);
    let running_for = human_duration(now.saturating_sub(s.created));
    row([
        ("ID", s.id[..12].to_owned()),
        ("Image", s.image.clone()),
        ("Command", quoted_command(&s.command)),
        ("CreatedAt", created_at_time(created)),
        ("RunningFor", format!("{running_for} ago")),
        ("Status", status_text.to_owned()),
        ("State", status.word().to_owned()),
        ("Ports", super::port::ps_column(ports)),
        ("Names", s.name.clone()),
    ])
}

/// ` (healthy)`, ` (unhealthy)` or ` (health: starting)` after a running container's
/// status when it has a healthcheck, as docker shows it.
fn health_suffix(dir: &ContainerDir, status: Status) -> String {
    match (status, HealthState::read(dir)) {
        (Status::Running { .. }, Some(health)) => format!(" ({})", health.status.word()),
        _ => String::new(),
    }
}

/// Docker's COMMAND column: the command line in quotes, cut at 20 characters.
fn quoted_command(command: &[String]) -> String {
    let mut text = command.join(" ");
    if text.chars().count() > 20 {
        text = text.chars().take(19).collect::<String>() + "…";
    }
    format!("\"{text}\"")
}

/// Docker's STATUS: `Up 3 minutes`, `Exited (0) 2 minutes ago`, `Restarting (1) 1 second
/// ago`, `Created`.
pub(super) fn status_text(status: Status, now: u64) -> String {
    match status {
        Status::Created => "Created".into(),
        Status::Running { since } => format!("Up {}", human_duration(now.saturating_sub(since))),
        Status::Restarting { code, at } => format!(
            "Restarting ({code}) {} ago",
            human_duration(now.saturating_sub(at))
        ),
        Status::Exited { code, at: 0 } => format!("Exited ({code})"),
        Status::Exited { code, at } => format!(
            "Exited ({code}) {} ago",
            human_duration(now.saturating_sub(at))
        ),
    }
}

/// Docker's (go-units') `HumanDuration` of a number of seconds.
pub(super) fn human_duration(seconds: u64) -> String {
    let minutes = seconds / 60;
    let hours = (seconds + 1800) / 3600;
    match seconds {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// How long `rm -f` waits for a killed container's runner to record its end.
const KILLED_WITHIN: Duration = Duration::from_secs(30);

pub fn rm(globals: &Globals, args: RmArgs) -> CmdResult {
    let store = container_store(globals)?;
    let mut code = 0;
    for key in &args.containers {
        match remove_one(&store, key, args.force) {
            Ok(name) => println!("{name}"),
            Err(f) => {
                super::output::print_failure(&f);
                code = super::EXIT_USER_ERROR;
            }
        }
    }
    Ok(code)
}

/// Removes one container (killing it first with `force`); returns the name to print.
fn remove_one(store: &Store, key: &str, force: bool) -> Result<String, Failure> {
    let (dir, state) = find(store, key)?;
    // A runner that recorded the end is about to let go (one that waits to restart the
    // container is not).
    let ending = match (state.exit_code, state.restarting) {
        (Some(_), false) => KILLED_WITHIN,
        _ => Duration::ZERO,
    };
    let _lock = match dir.lock_within(ending)? {
        Some(lock) => lock,
        None if !force => {
            return Err(
                Failure::user(format!("container {key} is running")).hint(Some(format!(
                    "kiln stop {key} stops it first; kiln rm -f {key} kills and removes it"
                ))),
            )
        }
        None => {
            // Its runner records the end (and removes a `--rm` container itself); a stop,
            // not a kill, so that no restart policy starts it again.
            let kill = nix::sys::signal::Signal::SIGKILL;
            let _ = lifecycle::stop(store, &dir, kill, Duration::ZERO);
            match dir.lock_within(KILLED_WITHIN) {
                Ok(Some(lock)) => lock,
                _ if !dir.path.exists() => return Ok(state.name),
                _ => {
                    return Err(Failure::user(format!(
                        "container {key} did not end within {} s of SIGKILL",
                        KILLED_WITHIN.as_secs()
                    )))
                }
            }
        }
    };
    kiln_container::rootless_network::end_left_pasta(&dir.path);
    store.remove_container(&dir)?;
    Ok(state.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_dockers() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(180), "3 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(5 * 3600), "5 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(
            status_text(Status::Exited { code: 0, at: 100 }, 220),
            "Exited (0) 2 minutes ago"
        );
        assert_eq!(
            status_text(Status::Running { since: 10 }, 190),
            "Up 3 minutes"
        );
    }
}
