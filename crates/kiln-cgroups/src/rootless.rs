//! Where an ordinary user's kiln may make its cgroups: the subtree systemd delegated to the
//! user, found from the process's own cgroup.
//!
//! Exists because a rootless kiln cannot use the cgroupfs root the way root does. Only a
//! pure cgroup v2 host lets a user have cgroups at all, and only below a directory chowned
//! to them: systemd does that for `user@UID.service` when the unit has `Delegate=`, and the
//! controllers it delegates are those listed in that dir's `cgroup.controllers`. On v1 (or
//! systemd's hybrid layout) every hierarchy belongs to root, so no limit can be applied
//! without root, and kiln must say so rather than drop the limit.
//!
//! The directory found must satisfy two kernel rules, or [`crate::Cgroup::create`] fails
//! half-way: the user can write it (the dir, its `cgroup.procs` and `cgroup.subtree_control`
//! are chowned to the user, which is exactly what delegation does), and it holds no
//! processes, since v2 refuses to enable controllers in the `subtree_control` of a cgroup
//! with member processes (the "no internal processes" rule; only the root cgroup is exempt).
//! The process's own leaf cgroup holds the process itself, so it is never chosen.
//!
//! Everything here is a function of its arguments (the cgroupfs mount, the text of
//! `/proc/self/cgroup`, the uid) and of reads below the mount, so it is tested against
//! imitation trees chowned to a fake uid.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{detect, read_file, v1, CgroupError, CgroupMode};

/// The controllers kiln's limits need: `memory` (`--memory`), `cpu` (`--cpus`), `pids` (the
/// default pids limit every container gets).
pub const REQUIRED_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
/// Controllers kiln uses when they are there (`io`: block I/O accounting and throttles,
/// `cpuset`: `--cpuset-cpus`); their absence only fails a limit that needs them.
pub const OPTIONAL_CONTROLLERS: [&str; 2] = ["io", "cpuset"];
/// On v1 a container without the `devices` controller cannot be confined, so root needs it
/// there too (see the crate docs).
const REQUIRED_V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "pids", "devices"];

/// The drop-in that makes systemd delegate every controller kiln uses to each user.
const DELEGATE_FIX: &str = "as root: mkdir -p /etc/systemd/system/user@.service.d && printf '[Service]\\nDelegate=cpu cpuset io memory pids\\n' > /etc/systemd/system/user@.service.d/delegate.conf && systemctl daemon-reload; then log out and in again";

/// Why an ordinary user's kiln has no cgroup subtree to make its cgroups in.
#[derive(Debug, thiserror::Error)]
pub enum DelegationError {
    #[error("no cgroup filesystem found at {0}")]
    NotMounted(PathBuf),
    #[error("this host uses cgroup {}: an ordinary user cannot be given cgroups there, so resource limits need root", if *.hybrid { "v1 (systemd's hybrid layout: v1 controllers, an empty v2 hierarchy)" } else { "v1" })]
    V1 { hybrid: bool },
    #[error("the process's cgroup membership has no cgroup v2 entry (a `0::/PATH` line): {0:?}")]
    NoV2Membership(String),
    #[error("the process's cgroup {0} is not under the cgroup filesystem (it may belong to another cgroup namespace)")]
    OwnCgroupMissing(PathBuf),
    #[error("the process's cgroup {cgroup} is not in a systemd user session (user@{uid}.service), so no cgroup is delegated to uid {uid}")]
    NotInUserSession { cgroup: PathBuf, uid: u32 },
    #[error("{dir} is not delegated to uid {uid}: it, its cgroup.procs or its cgroup.subtree_control is not owned and writable by the user")]
    NotDelegated { dir: PathBuf, uid: u32 },
    #[error("every cgroup delegated to uid {uid} below {top} holds processes, and cgroup v2 enables no controllers for the children of a cgroup with processes")]
    NoFreeCgroup { top: PathBuf, uid: u32 },
    #[error("{dir} is delegated but lacks the {} controller{}", .missing.join(", "), if .missing.len() == 1 { "" } else { "s" })]
    ControllersMissing {
        dir: PathBuf,
        missing: Vec<&'static str>,
    },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl DelegationError {
    /// The fix, in commands for a Debian host.
    pub fn hint(&self) -> Option<String> {
        match self {
            DelegationError::NotMounted(_) => {
                Some("mount cgroup2 at /sys/fs/cgroup (systemd does this at boot)".to_owned())
            }
            DelegationError::V1 { .. } => Some(
                "boot with cgroup v2: add systemd.unified_cgroup_hierarchy=1 to \
                 GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub and reboot; \
                 until then run limited containers as root"
                    .to_owned(),
            ),
            DelegationError::NoV2Membership(_) | DelegationError::OwnCgroupMissing(_) => Some(
                "run kiln in the host's cgroup namespace, with cgroup2 mounted at \
                 /sys/fs/cgroup"
                    .to_owned(),
            ),
            DelegationError::NotInUserSession { .. } => Some(
                "run kiln from a login session (ssh or a console login, not su or sudo), \
                 or start it in the user's manager with `systemd-run --user --scope kiln …`; \
                 for a user without logins, `loginctl enable-linger USER` as root"
                    .to_owned(),
            ),
            DelegationError::NotDelegated { .. } | DelegationError::ControllersMissing { .. } => {
                Some(DELEGATE_FIX.to_owned())
            }
            DelegationError::NoFreeCgroup { .. } => Some(
                "start kiln in a scope of its own: `systemd-run --user --scope kiln …`".to_owned(),
            ),
            DelegationError::Io { .. } => None,
        }
    }
}

/// The directory under which a kiln running as `uid` may make its `kiln/` parent cgroup:
/// the highest ancestor of the process's own cgroup (`self_cgroup` is the text of
/// `/proc/self/cgroup`) that is delegated to `uid` and holds no processes, normally
/// `user.slice/user-UID.slice/user@UID.service`, and only if it offers every controller in
/// [`REQUIRED_CONTROLLERS`].
pub fn delegated_root(
    cgroupfs: &Path,
    self_cgroup: &str,
    uid: u32,
) -> Result<PathBuf, DelegationError> {
    let dir = delegated_dir(cgroupfs, self_cgroup, uid)?;
    let offered = offered_controllers(&dir)?;
    let missing = absent(&REQUIRED_CONTROLLERS, &offered);
    if missing.is_empty() {
        Ok(dir)
    } else {
        Err(DelegationError::ControllersMissing { dir, missing })
    }
}

/// What `kiln check` reports about cgroups for a user: the layout, where kiln's cgroups
/// would go, which of kiln's controllers are there and which are not.
#[derive(Debug)]
pub struct CgroupReport {
    /// `None` when no cgroup filesystem is mounted.
    pub mode: Option<CgroupMode>,
    /// Where kiln makes its `kiln/` parent: the cgroupfs root as root, the delegated dir
    /// otherwise; `None` when there is none.
    pub dir: Option<PathBuf>,
    /// The controllers kiln uses that are available there.
    pub present: Vec<&'static str>,
    /// The required controllers that are not.
    pub missing: Vec<&'static str>,
    /// Why kiln cannot apply limits as this user; `None` when it can.
    pub problem: Option<DelegationError>,
}

/// The [`CgroupReport`] for a kiln running as `uid` in the cgroup `self_cgroup` describes.
/// Root uses the cgroupfs root in either version; any other user needs delegation.
pub fn describe(cgroupfs: &Path, self_cgroup: &str, uid: u32) -> CgroupReport {
    let mode = detect(cgroupfs).ok();
    let mut report = CgroupReport {
        mode,
        dir: None,
        present: Vec::new(),
        missing: Vec::new(),
        problem: None,
    };
    let found = match (mode, uid) {
        (None, _) => Err(DelegationError::NotMounted(cgroupfs.to_path_buf())),
        (Some(CgroupMode::V1 | CgroupMode::Hybrid), 0) => {
            let offered: Vec<String> = v1::available_controllers(cgroupfs)
                .into_iter()
                .map(|(c, _)| c.to_owned())
                .collect();
            report.dir = Some(cgroupfs.to_path_buf());
            report.present = kiln_controllers(&offered);
            report.missing = absent(&REQUIRED_V1_CONTROLLERS, &offered);
            return report;
        }
        (Some(CgroupMode::V2), 0) => Ok(cgroupfs.to_path_buf()),
        (Some(_), _) => delegated_dir(cgroupfs, self_cgroup, uid),
    };
    let offered = found.and_then(|dir| {
        let offered = offered_controllers(&dir)?;
        report.dir = Some(dir);
        Ok(offered)
    });
    match offered {
        Ok(offered) => {
            report.present = kiln_controllers(&offered);
            report.missing = absent(&REQUIRED_CONTROLLERS, &offered);
            if !report.missing.is_empty() && uid != 0 {
                report.problem = Some(DelegationError::ControllersMissing {
                    dir: report.dir.clone().unwrap_or_default(),
                    missing: report.missing.clone(),
                });
            }
        }
        Err(e) => report.problem = Some(e),
    }
    report
}

/// [`delegated_root`] without the controller check.
fn delegated_dir(cgroupfs: &Path, self_cgroup: &str, uid: u32) -> Result<PathBuf, DelegationError> {
    match detect(cgroupfs) {
        Ok(CgroupMode::V2) => {}
        Ok(mode) => {
            return Err(DelegationError::V1 {
                hybrid: mode == CgroupMode::Hybrid,
            })
        }
        Err(CgroupError::NotMounted(_)) => {
            return Err(DelegationError::NotMounted(cgroupfs.to_path_buf()))
        }
        Err(e) => return Err(cgroup_io("detect cgroups at", cgroupfs, e)),
    }
    let components = membership(self_cgroup)?;
    // The cgroupfs root, then each ancestor of the process's cgroup, then the cgroup itself.
    let chain: Vec<PathBuf> = std::iter::once(cgroupfs.to_path_buf())
        .chain((1..=components.len()).map(|n| cgroupfs.join(components[..n].join("/"))))
        .collect();
    let leaf = chain.last().expect("the chain holds the root");
    if !leaf.is_dir() {
        return Err(DelegationError::OwnCgroupMissing(leaf.clone()));
    }
    let top = highest_owned(&chain, uid)?
        .ok_or_else(|| not_delegated(cgroupfs, &components, leaf, uid))?;
    for dir in &chain[top..] {
        if !holds_processes(dir, dir == cgroupfs)? {
            return Ok(dir.clone());
        }
    }
    Err(DelegationError::NoFreeCgroup {
        top: chain[top].clone(),
        uid,
    })
}

/// The path components of the process's v2 cgroup, from the `0::/PATH` line.
fn membership(self_cgroup: &str) -> Result<Vec<&str>, DelegationError> {
    let bad = || DelegationError::NoV2Membership(self_cgroup.trim().to_owned());
    let path = self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(bad)?;
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // The kernel never writes these; a text that has them names no cgroup.
    if !path.starts_with('/') || components.iter().any(|c| *c == "." || *c == "..") {
        return Err(bad());
    }
    Ok(components)
}

/// The index in `chain` of the highest dir from which every dir down to the last one is
/// owned and writable by `uid`; `None` when the last one is not.
fn highest_owned(chain: &[PathBuf], uid: u32) -> Result<Option<usize>, DelegationError> {
    let mut top = None;
    for (i, dir) in chain.iter().enumerate().rev() {
        if !writable_by(dir, uid)? {
            break;
        }
        top = Some(i);
    }
    Ok(top)
}

/// What delegation looks like: the dir and the two files kiln writes (`cgroup.procs` to
/// join, `cgroup.subtree_control` to enable controllers) are the user's and writable by
/// their owner. Mode bits alone would not do: cgroupfs lets only the owner write.
fn writable_by(dir: &Path, uid: u32) -> Result<bool, DelegationError> {
    for path in [
        dir.to_path_buf(),
        dir.join("cgroup.procs"),
        dir.join("cgroup.subtree_control"),
    ] {
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(DelegationError::Io {
                    what: "inspect",
                    path,
                    source,
                })
            }
        };
        if meta.file_type().is_symlink() || meta.uid() != uid || meta.mode() & 0o200 == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether a cgroup has member processes, which keeps controllers from being enabled for its
/// children. The root cgroup (the cgroupfs mount of the host's namespace, the one cgroup
/// without `cgroup.type`) is exempt from that rule.
fn holds_processes(dir: &Path, is_mount: bool) -> Result<bool, DelegationError> {
    if is_mount && !dir.join("cgroup.type").exists() {
        return Ok(false);
    }
    let procs = dir.join("cgroup.procs");
    let text = read_file(&procs).map_err(|e| cgroup_io("read", &procs, e))?;
    Ok(text.lines().any(|l| !l.trim().is_empty()))
}

/// The error for a process whose own cgroup is not the user's: outside a user session, or
/// in one whose manager has no delegation.
fn not_delegated(cgroupfs: &Path, components: &[&str], leaf: &Path, uid: u32) -> DelegationError {
    let service = format!("user@{uid}.service");
    match components.iter().position(|c| *c == service) {
        Some(i) => DelegationError::NotDelegated {
            dir: cgroupfs.join(components[..=i].join("/")),
            uid,
        },
        None => DelegationError::NotInUserSession {
            cgroup: leaf.to_path_buf(),
            uid,
        },
    }
}

/// The controllers a v2 cgroup's children may use.
fn offered_controllers(dir: &Path) -> Result<Vec<String>, DelegationError> {
    let path = dir.join("cgroup.controllers");
    let text = read_file(&path).map_err(|e| cgroup_io("read", &path, e))?;
    Ok(text.split_whitespace().map(str::to_owned).collect())
}

/// Kiln's controllers (required, then optional, then v1's `devices` and `blkio`) among
/// `offered`.
fn kiln_controllers(offered: &[String]) -> Vec<&'static str> {
    REQUIRED_CONTROLLERS
        .iter()
        .chain(&OPTIONAL_CONTROLLERS)
        .chain(&["devices", "blkio"])
        .copied()
        .filter(|c| offered.iter().any(|o| o == c))
        .collect()
}

fn absent(wanted: &[&'static str], offered: &[String]) -> Vec<&'static str> {
    wanted
        .iter()
        .copied()
        .filter(|c| !offered.iter().any(|o| o == c))
        .collect()
}

/// A [`CgroupError`] from the crate's readers, as a delegation error about `path`.
fn cgroup_io(what: &'static str, path: &Path, e: CgroupError) -> DelegationError {
    match e {
        CgroupError::Io { path, source, .. } => DelegationError::Io { what, path, source },
        other => DelegationError::Io {
            what,
            path: path.to_path_buf(),
            source: io::Error::other(other.to_string()),
        },
    }
}
