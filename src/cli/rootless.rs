//! An ordinary user's kiln: before a command touches the store, the process moves into a
//! user namespace of its own where the user is root and the user's subordinate ids
//! (`/etc/subuid`, `/etc/subgid`) are 1…65535 (`kiln_runtime::userns` says why the whole
//! process, and how). Without subordinate ids only the user exists inside; kiln says so
//! where it matters and `kiln check` says how to fix it.

use std::path::Path;

use kiln_runtime::idmap::subordinate_ranges;
use kiln_runtime::userns::{self, Mapping};

use super::{Command, Failure};

/// Where Debian's `uidmap` package puts the setuid helpers.
const NEWUIDMAP: &str = "/usr/bin/newuidmap";
const NEWGIDMAP: &str = "/usr/bin/newgidmap";

/// Commands that work as the user, outside any namespace: they read what the user owns
/// (`exec` joins the container's own namespace; `check` reports on the user's situation).
fn stays_outside(command: &Command) -> bool {
    matches!(
        command,
        Command::Exec(_) | Command::Debug(_) | Command::Login(_) | Command::Logout(_)
    )
}

/// Enters kiln's user namespace when the process is not root and `command` needs it.
/// Called while the process has one thread.
pub fn enter_if_needed(command: &Command, quiet: bool) -> Result<(), Failure> {
    let uid = nix::unistd::getuid();
    if uid.is_root() || nix::unistd::geteuid().is_root() || stays_outside(command) {
        return Ok(());
    }
    let mapping = mapping_for(uid.as_raw(), nix::unistd::getgid().as_raw());
    let helpers = helpers_present().then_some((NEWUIDMAP, NEWGIDMAP));
    userns::enter(&mapping, helpers).map_err(|e| Failure::user(&e).hint(e.hint()))?;
    if (mapping.is_single() || helpers.is_none()) && !quiet && warns_single_mapping(command) {
        eprintln!(
            "warning: {}: only your own id exists in containers (uid 0); a step or image that \
             uses another user or group fails. kiln check says how to fix it",
            why_single(helpers.is_some())
        );
    }
    Ok(())
}

/// The user's mapping: itself as 0, then its subordinate ranges.
fn mapping_for(uid: u32, gid: u32) -> Mapping {
    let name = nix::unistd::User::from_uid(uid.into())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let ranges = |file: &str| {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        subordinate_ranges(&text, &name, uid)
    };
    Mapping::rootless(uid, gid, &ranges("/etc/subuid"), &ranges("/etc/subgid"))
}

fn helpers_present() -> bool {
    Path::new(NEWUIDMAP).exists() && Path::new(NEWGIDMAP).exists()
}

fn why_single(helpers: bool) -> &'static str {
    match helpers {
        true => "no subordinate ids for you in /etc/subuid and /etc/subgid",
        false => "newuidmap/newgidmap are missing (apt-get install uidmap)",
    }
}

/// Where a single-id map changes what the command can do.
fn warns_single_mapping(command: &Command) -> bool {
    matches!(
        command,
        Command::Build(_) | Command::Run(_) | Command::Pull(_) | Command::Import(_)
    )
}
