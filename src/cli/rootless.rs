//! An ordinary user's kiln: before a command touches the store, the process moves into a
//! user namespace of its own where the user is root and the user's subordinate ids
//! (`/etc/subuid`, `/etc/subgid`) are 1…65535 (`kiln_runtime::userns` says why the whole
//! process, and how). Without subordinate ids only the user exists inside; kiln says so
//! where it matters and `kiln check` says how to fix it.

use std::path::Path;
use std::sync::OnceLock;

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
        Command::Exec(_)
            | Command::Debug(_)
            | Command::Login(_)
            | Command::Logout(_)
            | Command::Check(_)
            | Command::Completions(_)
            | Command::Man(_)
    )
}

/// Enters kiln's user namespace when the process is not root and `command` needs it.
/// Called while the process has one thread.
pub fn enter_if_needed(command: &Command) -> Result<(), Failure> {
    let uid = nix::unistd::getuid();
    if uid.is_root() || nix::unistd::geteuid().is_root() || stays_outside(command) {
        return Ok(());
    }
    let mapping = mapping_for(uid.as_raw(), nix::unistd::getgid().as_raw());
    let helpers = helpers_present().then_some((NEWUIDMAP, NEWGIDMAP));
    userns::enter(&mapping, helpers).map_err(|e| Failure::user(&e).hint(e.hint()))?;
    if may_need_other_ids(command) {
        let limit = match mapping.is_single() || helpers.is_none() {
            true => IdLimit::Single(why_single(helpers.is_some())),
            false => IdLimit::Below65536,
        };
        let _ = ID_LIMIT.set(limit);
    }
    Ok(())
}

/// Which ids exist in kiln's user namespace, for a command where a missing one may be why
/// it failed.
enum IdLimit {
    /// Only the user's own (uid 0 inside), and why.
    Single(&'static str),
    /// 0…65535: the user and its subordinate ids.
    Below65536,
}

static ID_LIMIT: OnceLock<IdLimit> = OnceLock::new();

/// Said under a failure of a command that ran with a single-id map when the failure is
/// the kernel's `EINVAL` (what chown and setuid give for an id the map does not hold) or
/// a build step's failed command (whose own chown may have met it): said only then, since
/// a warning on every build would be noise for the many images that need no other id.
///
/// With the full map, only `EINVAL` itself: an id above 65535 (podman's "insufficient
/// UIDs") is then the likely cause.
pub fn unmapped_id_note(failure: &Failure) -> Option<String> {
    let said = |what: &str| {
        std::iter::once(&failure.message)
            .chain(&failure.more)
            .any(|m| m.contains(what))
    };
    match ID_LIMIT.get()? {
        IdLimit::Single(why) if said("Invalid argument") || said(") failed: exit code ") => {
            Some(format!(
                "note: {why}, so containers have only uid 0: an image or step that uses \
                 another user or group (chown, USER) fails. kiln check says how to fix it"
            ))
        }
        IdLimit::Below65536 if said("Invalid argument") => Some(
            "note: an ordinary user's containers have uids and gids 0…65535 (you and your \
             subordinate ids): an image or step that uses a higher id (a chown, a file's \
             owner, USER) fails with Invalid argument; such an image needs root's kiln"
                .to_owned(),
        ),
        _ => None,
    }
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
fn may_need_other_ids(command: &Command) -> bool {
    matches!(
        command,
        Command::Build(_) | Command::Run(_) | Command::Pull(_) | Command::Import(_)
    )
}
