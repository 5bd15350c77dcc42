//! What the clone child reads, and nothing that runs it: [`ChildPlan`] (built from a
//! [`Process`] by [`ChildPlan::build`]; a step's by `ChildPlan::new` in `sandbox`, a
//! container's in `container`), every string the child needs as C strings and pointer
//! arrays, built and checked before `clone`; [`ContainerPlan`], what a container adds;
//! [`ChildArgs`] and [`ChildFds`], what `clone` hands the child; and the reverse mapping
//! from a child's failure [`Report`] to a [`RuntimeError`] that names the path involved.
//!
//! The bottom of the clone path: `plan` uses none of `child`, `sandbox` and `container`;
//! `child` uses `plan`; `sandbox` and `container` use both.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::raw::c_char;
use std::path::Path;
use std::ptr;

use nix::errno::Errno;

use super::cgroups::{self, CgroupMode};
use super::confinement::{ConfinePlan, Confinement};
use super::container_mounts::{UserMount, MASKED_PATHS, READONLY_PATHS};
use super::error::{InvalidSandbox, Report, RuntimeError, Stage, NO_DETAIL};
use super::host_devices::PreparedDevice;
use super::overlay::{self, InitLayer, MountPlan, Overlay};
use super::process::{NetworkMode, Process};
use super::step_mounts::StepMountPlan;
use super::sysctls::PreparedSysctl;

/// The `$PATH` used when the step's environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host files bound read-only into steps with host networking: (host path, path in root).
pub(crate) const HOST_ETC_FILES: [(&str, &str); 2] = [
    ("/etc/hosts", "etc/hosts"),
    ("/etc/resolv.conf", "etc/resolv.conf"),
];

/// The longest hostname the kernel accepts.
const HOST_NAME_MAX: usize = 64;

/// `uid_t`/`gid_t` -1 means "leave unchanged" to the kernel, so it must never be asked for.
const UNCHANGED_ID: u32 = u32::MAX;

/// A NULL-terminated array of C strings, as `execve` wants it.
pub(crate) struct CStringArray {
    _strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl CStringArray {
    pub(crate) fn new(items: &[String], what: &str) -> Result<Self, RuntimeError> {
        let strings = items
            .iter()
            .map(|s| c_string(s, what))
            .collect::<Result<Vec<_>, _>>()?;
        // The pointers stay valid when the struct moves: they point into each CString's heap
        // buffer, which lives as long as `_strings`.
        let ptrs = strings
            .iter()
            .map(|s| s.as_ptr())
            .chain([ptr::null()])
            .collect();
        Ok(CStringArray {
            _strings: strings,
            ptrs,
        })
    }

    pub(crate) fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

/// All of a step's or container's data in the form the allocation-free child uses.
pub(crate) struct ChildPlan {
    pub mount: MountPlan,
    pub new_netns: bool,
    /// (host file, path inside the root) pairs to bind over the image's.
    pub etc_binds: Vec<(CString, CString)>,
    pub hostname: CString,
    /// Every ancestor of the workdir and the workdir itself, outermost first.
    pub workdir_prefixes: Vec<CString>,
    pub workdir: CString,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    pub argv: CStringArray,
    pub envp: CStringArray,
    /// Paths to try with `execve`, in order; one when argv[0] contains a `/`.
    pub exec_candidates: Vec<CString>,
    /// Whether argv[0] was looked up in `$PATH`.
    pub searches_path: bool,
    /// Capabilities, no_new_privs and seccomp: the same for steps and containers.
    pub confine: ConfinePlan,
    /// Enter a new cgroup namespace after joining the cgroup (cgroup v2 only).
    pub cgroup_namespace: bool,
    /// Run the built-in init as PID 1.
    pub init: bool,
    /// How `/dev` and `/sys` are made: as the host's root or in a user namespace.
    pub pseudo_fs: crate::devices::PseudoFs,
    /// Clone into a user namespace of the container's own, whose maps the parent writes
    /// before letting the child go on.
    pub user_namespace: bool,
    /// What `kiln run` adds to a build step's sandbox; `None` for build steps.
    pub container: Option<ContainerPlan>,
    /// A build step's cache mounts and secrets; `None` without any (and for containers).
    pub step_mounts: Option<StepMountPlan>,
    // Kept for error messages.
    argv0: String,
    path_var: String,
    cwd: String,
}

/// How a step or container is confined and what it runs beyond the command.
pub(crate) struct Sandbox {
    pub confine: ConfinePlan,
    pub cgroup_namespace: bool,
    pub init: bool,
    pub container: Option<ContainerPlan>,
}

impl Sandbox {
    /// The one way a step or a container gets its sandbox: `confinement` prepared for the
    /// child, and a cgroup namespace where the host's cgroups are v2.
    pub(crate) fn new(
        confinement: &Confinement,
        cgroup_root: &Path,
        init: bool,
        container: Option<ContainerPlan>,
    ) -> Result<Sandbox, RuntimeError> {
        Ok(Sandbox {
            confine: confinement.plan()?,
            cgroup_namespace: cgroups::detect(cgroup_root)? == CgroupMode::V2,
            init,
            container,
        })
    }
}

/// What the clone child of a container does beyond a build step's.
pub(crate) struct ContainerPlan {
    /// User mounts, parents before children.
    pub mounts: Vec<UserMount>,
    pub read_only_root: bool,
    pub tty: bool,
    /// The pty's initial size (kiln's terminal's, zero when it has none).
    pub winsize: libc::winsize,
    /// Keep the stdin kiln passed instead of replacing it with the container's `/dev/null`.
    pub keep_stdin: bool,
    /// The `size=` of `/dev/shm`.
    pub shm_size: CString,
    /// `--sysctl`s, written into the container's `/proc/sys`.
    pub sysctls: Vec<PreparedSysctl>,
    /// `--device` nodes, made in the container's `/dev`.
    pub devices: Vec<PreparedDevice>,
    /// Detached mounts the parent made for the child to attach: kiln's `/etc` files (the
    /// first [`CONTAINER_ETC_FILES`](crate::overlay::CONTAINER_ETC_FILES)), then `-v`
    /// binds, then the root of a container with a user namespace of its own. The child
    /// keeps them at fixed numbers ([`ChildPlan::kept_fds`]).
    pub trees: Vec<std::os::fd::OwnedFd>,
    /// The index in `trees` of the container's own root (user namespace of its own).
    pub own_root: Option<usize>,
}

impl ContainerPlan {
    /// The sysctl or device a failed stage was working on, for its message.
    pub(crate) fn item_for(&self, stage: Stage, index: usize) -> Option<String> {
        match stage {
            Stage::Sysctl => self.sysctls.get(index).map(|s| s.key.clone()),
            Stage::MakeDevice => self.devices.get(index).map(|d| d.path.clone()),
            _ => None,
        }
    }
}

/// Host fds the child turns into its stdio and error pipe. Optional ones are -1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildFds {
    /// The child's stdin until its own `/dev/null` exists (kept when
    /// `ContainerPlan::keep_stdin`); the host's `/dev/null` for build steps.
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// Write end of the close-on-exec error pipe.
    pub report: RawFd,
    /// A pidfd of the kiln process, to notice that it died before `PR_SET_PDEATHSIG` was set.
    pub parent: RawFd,
    /// Read end of the pipe on which the parent says "go" once the child is in its cgroup.
    pub sync: RawFd,
    /// Containers with an init: write end of the status pipe.
    pub status: RawFd,
    /// Containers with a tty: the unix socket on which the pty master goes to kiln.
    pub console: RawFd,
    /// The `tasks` files of the container's v1 cgroups (-1 for none), into which the child
    /// moves itself (see `Cgroup::self_join_files`); all -1 when the parent moves it.
    pub cgroup_tasks: [RawFd; MAX_CGROUP_TASKS],
}

/// The most cgroup v1 hierarchies a container joins by itself.
pub(crate) const MAX_CGROUP_TASKS: usize = 8;

/// The v1 `tasks` files a clone child (or `kiln exec`'s intermediate) moves itself into its
/// cgroups through ([`kiln_cgroups::Cgroup::self_join_files`]): none when the parent moves
/// it instead (v2, a user namespace of its own, more hierarchies than the child has room
/// for). Kept open until the child has its copies.
pub(crate) struct SelfJoin(Vec<std::fs::File>);

impl SelfJoin {
    pub fn new(files: Vec<std::fs::File>) -> SelfJoin {
        match files.len() <= MAX_CGROUP_TASKS {
            true => SelfJoin(files),
            false => SelfJoin(Vec::new()),
        }
    }

    /// Whether the child moves itself (else the parent must).
    pub fn by_child(&self) -> bool {
        !self.0.is_empty()
    }

    /// The fds as the child gets them, -1 for none.
    pub fn fds(&self) -> [RawFd; MAX_CGROUP_TASKS] {
        let mut fds = [-1; MAX_CGROUP_TASKS];
        for (slot, file) in fds.iter_mut().zip(&self.0) {
            *slot = std::os::fd::AsRawFd::as_raw_fd(file);
        }
        fds
    }
}

/// What `clone` hands the child: its plan and the host fds it starts from.
pub(crate) struct ChildArgs<'a> {
    pub plan: &'a ChildPlan,
    pub fds: ChildFds,
}

impl ChildPlan {
    /// Fds the child keeps open through its setup, moved to fixed numbers (see `child`).
    pub(crate) fn kept_fds(&self) -> &[std::os::fd::OwnedFd] {
        match (&self.step_mounts, &self.container) {
            (Some(step), _) => step.kept_fds(),
            (None, Some(container)) => &container.trees,
            (None, None) => &[],
        }
    }

    /// After the step: removes the mount points the child made for cache mounts and secrets
    /// from the upper dir.
    pub(crate) fn remove_mount_points(&self) -> Result<(), RuntimeError> {
        match &self.step_mounts {
            Some(step) => step.remove_mount_points(),
            None => Ok(()),
        }
    }

    /// Checks `process` and turns it into C strings, then prepares `overlay`; `init` decides
    /// the scaffold's init layer.
    pub(crate) fn build(
        overlay: &Overlay,
        process: &Process,
        init: InitLayer,
        etc_binds: Vec<(CString, CString)>,
        sandbox: Sandbox,
    ) -> Result<ChildPlan, RuntimeError> {
        let argv0 = match process.argv.first() {
            Some(a) if !a.is_empty() => a.clone(),
            _ => return Err(InvalidSandbox::EmptyCommand.into()),
        };
        check_ids(process.uid, process.gid, &process.groups)?;
        let (workdir_prefixes, cwd) = workdir_prefixes(&process.cwd)?;
        let ExecCandidates {
            paths: exec_candidates,
            searches_path,
            path_var,
        } = ExecCandidates::new(&argv0, &process.env)?;
        let hostname = check_hostname(&process.hostname)?;
        let workdir_prefixes = workdir_prefixes
            .iter()
            .map(|p| c_string(p, "workdir"))
            .collect::<Result<_, _>>()?;
        let argv = CStringArray::new(&process.argv, "command argument")?;
        let envp = CStringArray::new(&process.env, "environment variable")?;
        let workdir = c_string(&cwd, "workdir")?;
        // Last: preparing the overlay touches the disk.
        let mount = overlay.prepare(init)?;
        Ok(ChildPlan {
            mount,
            new_netns: process.network != NetworkMode::Host,
            etc_binds,
            hostname,
            workdir_prefixes,
            workdir,
            uid: process.uid,
            gid: process.gid,
            groups: process.groups.clone(),
            argv,
            envp,
            exec_candidates,
            searches_path,
            confine: sandbox.confine,
            cgroup_namespace: sandbox.cgroup_namespace,
            init: sandbox.init,
            pseudo_fs: crate::devices::PseudoFs::current(),
            user_namespace: false,
            container: sandbox.container,
            step_mounts: None,
            argv0,
            path_var,
            cwd,
        })
    }

    /// Names the failed stage with the path, name or id it was working on.
    pub(crate) fn error_for(&self, report: Report) -> RuntimeError {
        let errno = Errno::from_raw(report.errno);
        let item = |list: &[CString]| {
            list.get(report.detail as usize)
                .map(|c| c.to_string_lossy().into_owned())
        };
        let target = match report.stage {
            Stage::Exec if report.detail == NO_DETAIL && errno == Errno::ENOENT => {
                return RuntimeError::CommandNotFound {
                    command: self.argv0.clone(),
                    path: self.path_var.clone(),
                };
            }
            Stage::Exec => item(&self.exec_candidates).or_else(|| Some(self.argv0.clone())),
            Stage::Scaffold | Stage::ChdirLayers | Stage::MountOverlay => {
                return overlay::setup_error(&self.mount, report.stage, report.errno);
            }
            Stage::PivotRoot | Stage::OpenRoot => Some(self.mount.root_path.display().to_string()),
            Stage::MountProc => Some("/proc".into()),
            Stage::MountDev | Stage::PopulateDev => Some("/dev".into()),
            Stage::MountDevPts => Some("/dev/pts".into()),
            Stage::MountDevShm => Some("/dev/shm".into()),
            Stage::MountSys => Some("/sys".into()),
            Stage::BindEtcFile => self
                .etc_binds
                .get(report.detail as usize)
                .map(|(_, rel)| format!("/{}", rel.to_string_lossy())),
            Stage::MountTarget | Stage::BindMount | Stage::MountTmpfs => self
                .container
                .as_ref()
                .and_then(|c| c.mounts.get(report.detail as usize))
                .map(|m| m.target.clone()),
            Stage::MaskPath => Some(match MASKED_PATHS.get(report.detail as usize) {
                Some(rel) => format!("/{}", rel.to_string_lossy()),
                None => "/dev/null".into(),
            }),
            Stage::ReadonlyPath => READONLY_PATHS
                .get(report.detail as usize)
                .map(|rel| format!("/{}", rel.to_string_lossy())),
            Stage::OpenDevNull => Some("/dev/null".into()),
            Stage::Hostname => Some(self.hostname.to_string_lossy().into_owned()),
            Stage::MkdirWorkdir => item(&self.workdir_prefixes),
            Stage::ChdirWorkdir | Stage::CheckWorkdir => Some(self.cwd.clone()),
            Stage::SetGroups => Some(format!("{:?}", self.groups)),
            Stage::SetGid => Some(self.gid.to_string()),
            Stage::SetUid => Some(self.uid.to_string()),
            Stage::StepMountTarget
            | Stage::StepMountLog
            | Stage::CacheMount
            | Stage::SecretTmpfs
            | Stage::SecretFile
            | Stage::SecretMount => {
                return match &self.step_mounts {
                    Some(step) => step.error_for(report),
                    None => RuntimeError::MalformedReport,
                };
            }
            Stage::SetRlimit => self
                .confine
                .rlimits
                .get(report.detail as usize)
                .map(|l| l.name().to_owned()),
            Stage::Sysctl | Stage::MakeDevice => self
                .container
                .as_ref()
                .and_then(|c| c.item_for(report.stage, report.detail as usize)),
            Stage::Stdio
            | Stage::PrivateMounts
            | Stage::Loopback
            | Stage::CloseFds
            | Stage::CgroupNamespace
            | Stage::JoinCgroup
            | Stage::Session
            | Stage::ReadOnlyRoot
            | Stage::DropBounding
            | Stage::SetCapabilities
            | Stage::NoNewPrivs
            | Stage::Seccomp
            | Stage::StartInit
            | Stage::JoinNamespaces
            | Stage::ForkProcess => None,
        };
        RuntimeError::Setup {
            stage: report.stage.name(),
            target,
            errno,
        }
    }
}

/// Where `execve` looks for a command: the command itself when it has a `/`, else each
/// directory of the environment's `$PATH` (Docker's default without one), like `execvpe`.
pub(crate) struct ExecCandidates {
    pub paths: Vec<CString>,
    /// Whether the command was looked up in `$PATH`.
    pub searches_path: bool,
    /// The `$PATH` searched, for error messages.
    pub path_var: String,
}

impl ExecCandidates {
    pub(crate) fn new(argv0: &str, env: &[String]) -> Result<ExecCandidates, RuntimeError> {
        let path_var = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_owned();
        let searches_path = !argv0.contains('/');
        let paths = match searches_path {
            true => path_var
                .split(':')
                .filter(|dir| !dir.is_empty())
                .map(|dir| c_string(&format!("{}/{argv0}", dir.trim_end_matches('/')), "$PATH"))
                .collect::<Result<_, _>>()?,
            false => vec![c_string(argv0, "command")?],
        };
        Ok(ExecCandidates {
            paths,
            searches_path,
            path_var,
        })
    }
}

pub(crate) fn c_string(s: &str, what: &str) -> Result<CString, RuntimeError> {
    CString::new(s).map_err(|_| {
        InvalidSandbox::Nul {
            what: what.into(),
            value: s.into(),
        }
        .into()
    })
}

pub(crate) fn check_ids(uid: u32, gid: u32, groups: &[u32]) -> Result<(), RuntimeError> {
    let ids = [uid, gid].into_iter().chain(groups.iter().copied());
    if ids.into_iter().any(|id| id == UNCHANGED_ID) {
        return Err(InvalidSandbox::ReservedId(UNCHANGED_ID).into());
    }
    // SAFETY: sysconf has no preconditions.
    let max_groups = unsafe { libc::sysconf(libc::_SC_NGROUPS_MAX) };
    if groups.len() as i64 > max_groups as i64 {
        return Err(InvalidSandbox::TooManyGroups {
            count: groups.len(),
            max: max_groups as i64,
        }
        .into());
    }
    Ok(())
}

fn check_hostname(name: &str) -> Result<CString, RuntimeError> {
    if name.is_empty() || name.len() > HOST_NAME_MAX {
        return Err(InvalidSandbox::Hostname {
            name: name.into(),
            max: HOST_NAME_MAX,
        }
        .into());
    }
    c_string(name, "hostname")
}

/// Normalises an absolute workdir lexically (like Docker's `WORKDIR`) and lists the dirs to
/// create, outermost first. Returns (prefixes, normalised workdir).
fn workdir_prefixes(cwd: &str) -> Result<(Vec<String>, String), RuntimeError> {
    if !cwd.starts_with('/') {
        return Err(InvalidSandbox::RelativeWorkdir(cwd.into()).into());
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in cwd.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    let prefixes: Vec<String> = (1..=parts.len())
        .map(|n| format!("/{}", parts[..n].join("/")))
        .collect();
    let workdir = prefixes.last().cloned().unwrap_or_else(|| "/".into());
    Ok((prefixes, workdir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdir_is_normalised_and_every_ancestor_listed() {
        let (prefixes, dir) = workdir_prefixes("/srv//app/./x/../data/").unwrap();
        assert_eq!(prefixes, ["/srv", "/srv/app", "/srv/app/data"]);
        assert_eq!(dir, "/srv/app/data");
        assert_eq!(
            workdir_prefixes("/../..").unwrap(),
            (vec![], "/".to_string())
        );
        assert!(workdir_prefixes("srv").is_err());
    }

    #[test]
    fn hostnames_are_bounded() {
        assert!(check_hostname("").is_err());
        assert!(check_hostname(&"a".repeat(65)).is_err());
        assert!(check_hostname(&"a".repeat(64)).is_ok());
    }
}
