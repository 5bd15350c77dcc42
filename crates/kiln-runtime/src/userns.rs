//! Rootless kiln: the user namespace an ordinary user's kiln runs in.
//!
//! Why one namespace for the whole process, entered once at start (buildah's and podman's
//! design), rather than one per container: everything kiln does to the store — applying a
//! layer that chowns a file to uid 1000, removing a step's upper dir that holds such files,
//! mounting an overlay — needs to be "root" over the ids the images use. Inside a namespace
//! that maps the user to 0 and a subordinate range to 1…65536, all of kiln's code runs as
//! it does as root, files land on disk owned by the user's subordinate ids, and what kiln
//! reads back (for a layer tar) is the in-container owner — so a rootless layer is
//! bit-identical to root's.
//!
//! Entering happens in the process itself (no re-exec): a helper is forked *before*
//! `unshare(CLONE_NEWUSER)`, since the setuid `newuidmap` must run outside the new
//! namespace, where its owner (the host's root) is mapped; the helper writes the maps for
//! the parent and exits, and the parent keeps the full capabilities `unshare` gave it in
//! its namespace. Without subordinate ids (or without `newuidmap`) the process maps only
//! itself (`0 UID 1`), which it may do alone.
//!
//! The namespace is the process's and its children's: containers are cloned inside it.
//! Another kiln process (`kiln exec`) joins a container's namespaces through the
//! container's own user namespace ([`join_for_exec`] in the exec path), since it was made
//! by another process.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::OnceLock;

use nix::sched::CloneFlags;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};

use crate::idmap::IdRange;

/// The ids a rootless container has: 0 (the user) and 1…65535 from subordinate ranges,
/// the range images assume (podman's default size too).
pub const CONTAINER_IDS: u32 = 65_536;

/// One line of a `uid_map`/`gid_map`: `count` ids from `inside` map to `outside` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMap {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The uid and gid maps of a rootless kiln's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub uids: Vec<IdMap>,
    pub gids: Vec<IdMap>,
}

impl Mapping {
    /// The user as 0, then ids 1… from the subordinate ranges, up to [`CONTAINER_IDS`];
    /// only the user itself when there are no ranges (for uids or for gids).
    pub fn rootless(uid: u32, gid: u32, subuids: &[IdRange], subgids: &[IdRange]) -> Mapping {
        Mapping {
            uids: ranges_after_self(uid, subuids),
            gids: ranges_after_self(gid, subgids),
        }
    }

    /// Whether only the user's own id is mapped: no second user exists in containers.
    pub fn is_single(&self) -> bool {
        self.uids.len() == 1 || self.gids.len() == 1
    }
}

fn ranges_after_self(id: u32, ranges: &[IdRange]) -> Vec<IdMap> {
    let mut maps = vec![IdMap {
        inside: 0,
        outside: id,
        count: 1,
    }];
    let mut next = 1u32;
    for range in ranges {
        if next >= CONTAINER_IDS {
            break;
        }
        let count = range.count.min(CONTAINER_IDS - next);
        maps.push(IdMap {
            inside: next,
            outside: range.start,
            count,
        });
        next += count;
    }
    maps
}

/// Why kiln could not make its user namespace.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("cannot create a user namespace: {0}")]
    Unshare(nix::errno::Errno),
    #[error("{tool} failed: {message}")]
    MapHelper { tool: &'static str, message: String },
    #[error("cannot write {file}: {source}")]
    WriteMap {
        file: &'static str,
        source: io::Error,
    },
    #[error("cannot start the id-mapping helper: {0}")]
    Fork(nix::errno::Errno),
}

impl UsernsError {
    pub fn hint(&self) -> Option<String> {
        match self {
            UsernsError::Unshare(_) => Some(
                "user namespaces may be disabled: sysctl -w user.max_user_namespaces=15000 \
                 (and kernel.unprivileged_userns_clone=1 where it exists); kiln check says more"
                    .into(),
            ),
            UsernsError::MapHelper { .. } => Some(
                "the ranges in /etc/subuid and /etc/subgid must be the user's and newuidmap/newgidmap \
                 setuid root (apt-get install uidmap); kiln check says which is wrong"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// Moves this process into a new user namespace with `mapping`, as its root. Must be
/// called while the process has one thread (`unshare(CLONE_NEWUSER)` refuses otherwise).
/// `helpers` are the `newuidmap` and `newgidmap` to use for a mapping of more than the
/// user's own ids.
pub fn enter(mapping: &Mapping, helpers: Option<(&str, &str)>) -> Result<(), UsernsError> {
    match helpers {
        Some(helpers) if !mapping.is_single() => enter_through_helpers(mapping, helpers)?,
        _ => enter_alone(mapping)?,
    }
    // Supplementary groups of the host show as the overflow gid inside; drop them where
    // setgroups is allowed (it is denied with a single-id map).
    if !mapping.is_single() {
        let _ = nix::unistd::setgroups(&[]);
    }
    let _ = nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0));
    let _ = nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0));
    // The credential change made the process non-dumpable, and so its clones: then no
    // other process of the user (pasta, `kiln exec`) may open a step's or container's
    // `/proc/PID/ns/*` in the window before its command runs. kiln as root never changes
    // credentials and stays dumpable; so does this kiln now.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    // A mount namespace of the user namespace's own: the one place this kiln may mount
    // on its own paths (a step's network namespace bound to a file for pasta). Mounts of
    // the host still reach it (as a slave), none of it reaches the host.
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(UsernsError::Unshare)?;
    Ok(())
}

/// A single-id map: the process writes it itself (allowed for its own ids, after denying
/// setgroups).
fn enter_alone(mapping: &Mapping) -> Result<(), UsernsError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER).map_err(UsernsError::Unshare)?;
    let write = |file: &'static str, text: String| {
        fs::write(file, text).map_err(|source| UsernsError::WriteMap { file, source })
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", map_text(&mapping.uids[..1]))?;
    write("/proc/self/gid_map", map_text(&mapping.gids[..1]))
}

/// A full map: a helper forked before `unshare` runs `newuidmap`/`newgidmap` on this
/// process once it is in its namespace.
fn enter_through_helpers(
    mapping: &Mapping,
    (newuidmap, newgidmap): (&str, &str),
) -> Result<(), UsernsError> {
    let parent = nix::unistd::getpid();
    let (go_read, go_write) = pipe()?;
    let (result_read, result_write) = pipe()?;
    // SAFETY: called with one thread (see `enter`), so the child may allocate and spawn.
    match unsafe { fork() }.map_err(UsernsError::Fork)? {
        ForkResult::Child => {
            drop((go_write, result_read));
            let message = match wait_for_go(go_read) {
                true => write_maps(parent, mapping, newuidmap, newgidmap).err(),
                false => Some(String::new()), // the parent gave up; it reports why
            };
            let mut out = fs::File::from(result_write);
            let _ = out.write_all(message.unwrap_or_default().as_bytes());
            // SAFETY: _exit skips the parent's atexit handlers and buffers, as a forked
            // child must.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop((go_read, result_write));
            let unshared = nix::sched::unshare(CloneFlags::CLONE_NEWUSER);
            let mut go = fs::File::from(go_write);
            if unshared.is_ok() {
                let _ = go.write_all(&[1]);
            }
            drop(go);
            let mut message = String::new();
            let _ = fs::File::from(result_read).read_to_string(&mut message);
            reap(child);
            unshared.map_err(UsernsError::Unshare)?;
            match message.is_empty() {
                true => Ok(()),
                false => Err(helper_error(message)),
            }
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), UsernsError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(UsernsError::Fork)
}

fn wait_for_go(go: OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    matches!(fs::File::from(go).read(&mut byte), Ok(1))
}

fn reap(child: Pid) {
    while let Ok(status) = waitpid(child, None) {
        if matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
            break;
        }
    }
}

/// `TOOL: message` from the helper, back into the error it stands for.
fn helper_error(message: String) -> UsernsError {
    let (tool, message) = match message.split_once(": ") {
        Some(("newgidmap", rest)) => ("newgidmap", rest.to_owned()),
        Some(("newuidmap", rest)) => ("newuidmap", rest.to_owned()),
        _ => ("newuidmap", message),
    };
    UsernsError::MapHelper { tool, message }
}

/// Runs both helpers on `pid`, at once (each is a setuid exec of a few hundred
/// microseconds, and rootless start time is mostly theirs); the error is
/// `TOOL: what it said`.
fn write_maps(pid: Pid, mapping: &Mapping, newuidmap: &str, newgidmap: &str) -> Result<(), String> {
    let mut running = Vec::new();
    for (tool, name, maps) in [
        (newuidmap, "newuidmap", &mapping.uids),
        (newgidmap, "newgidmap", &mapping.gids),
    ] {
        let mut command = Command::new(tool);
        command
            .arg(pid.to_string())
            .stderr(std::process::Stdio::piped());
        for map in maps {
            command.args([map.inside, map.outside, map.count].map(|n| n.to_string()));
        }
        let child = command
            .spawn()
            .map_err(|e| format!("{name}: cannot run {tool}: {e}"))?;
        running.push((name, child));
    }
    let mut first_error = None;
    for (name, child) in running {
        let result = match child.wait_with_output() {
            Ok(output) if output.status.success() => continue,
            Ok(output) => {
                let said = String::from_utf8_lossy(&output.stderr);
                format!("{name}: {} ({})", said.trim(), output.status)
            }
            Err(e) => format!("{name}: {e}"),
        };
        first_error.get_or_insert(result);
    }
    first_error.map_or(Ok(()), Err)
}

fn map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count))
        .collect()
}

/// What the process's user namespace is, read once: the init namespace maps every id to
/// itself (`0 0 4294967295`); any other map means kiln is "root" only inside a user
/// namespace, where overlayfs takes `user.*` xattrs, device nodes cannot be made, and
/// cgroups are not the process's to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserNamespace {
    /// Not the host's namespace.
    pub nested: bool,
    /// How many uids the namespace maps (1 with a single-id map).
    pub mapped_uids: u64,
    /// Whether root in it is the host's root (the outside id of uid 0 is 0).
    pub root_is_host_root: bool,
}

/// Whether this process is an ordinary user's kiln: not root, or root only in a user
/// namespace whose root is not the host's (the one kiln made at start, or one it was
/// started in, as in a rootless podman container). Such a kiln keeps its store in the
/// user's home and makes no bridge.
pub fn rootless() -> bool {
    !nix::unistd::geteuid().is_root() || !current().root_is_host_root
}

/// The process's [`UserNamespace`].
pub fn current() -> UserNamespace {
    static CURRENT: OnceLock<UserNamespace> = OnceLock::new();
    *CURRENT.get_or_init(|| {
        parse_uid_map(&fs::read_to_string("/proc/self/uid_map").unwrap_or_default())
    })
}

fn parse_uid_map(text: &str) -> UserNamespace {
    let maps: Vec<(u64, u64, u64)> = text
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace().map(|n| n.parse::<u64>().ok());
            Some((f.next()??, f.next()??, f.next()??))
        })
        .collect();
    UserNamespace {
        nested: maps != [(0, 0, u64::from(u32::MAX))],
        mapped_uids: maps.iter().map(|m| m.2).sum(),
        root_is_host_root: maps.iter().any(|m| m.0 == 0 && m.1 == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_is_root_and_subordinate_ids_follow_up_to_65536() {
        let subs = [
            IdRange {
                start: 100_000,
                count: 1000,
            },
            IdRange {
                start: 300_000,
                count: 100_000,
            },
        ];
        let mapping = Mapping::rootless(1000, 1001, &subs, &subs[..1]);
        assert_eq!(
            mapping.uids,
            [
                IdMap {
                    inside: 0,
                    outside: 1000,
                    count: 1
                },
                IdMap {
                    inside: 1,
                    outside: 100_000,
                    count: 1000
                },
                IdMap {
                    inside: 1001,
                    outside: 300_000,
                    count: 64_535
                },
            ]
        );
        assert_eq!(
            mapping.gids[0],
            IdMap {
                inside: 0,
                outside: 1001,
                count: 1
            }
        );
        assert!(!mapping.is_single());
        assert!(Mapping::rootless(1000, 1000, &[], &subs).is_single());
        assert_eq!(map_text(&mapping.uids[..2]), "0 1000 1\n1 100000 1000\n");
    }

    #[test]
    fn the_host_namespace_is_told_from_a_nested_one() {
        assert_eq!(
            parse_uid_map("         0          0 4294967295\n"),
            UserNamespace {
                nested: false,
                mapped_uids: 4_294_967_295,
                root_is_host_root: true,
            }
        );
        assert_eq!(
            parse_uid_map("0 1000 1\n1 100000 65535\n"),
            UserNamespace {
                nested: true,
                mapped_uids: 65_536,
                root_is_host_root: false,
            }
        );
    }
}
