//! Errors of the runtime, and the fixed-size report a sandbox child sends before exec.
//!
//! The child of `clone` must not allocate, so it cannot build a `RuntimeError`; it sends a
//! [`Report`] (stage code, errno, detail index) over a pipe and the parent turns it into a
//! [`RuntimeError::Setup`] with the path or name the stage was working on.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

impl From<InvalidSandbox> for RuntimeError {
    fn from(e: InvalidSandbox) -> Self {
        RuntimeError::Invalid(Box::new(e))
    }
}

/// Why a sandbox description cannot be run; found before anything is started.
#[derive(Debug, thiserror::Error)]
pub enum InvalidSandbox {
    #[error("the command is empty")]
    EmptyCommand,
    #[error("{what} {value:?} contains a NUL byte")]
    Nul { what: String, value: String },
    #[error("path {} contains a NUL byte", .0.display())]
    NulPath(PathBuf),
    #[error("a string contains a NUL byte")]
    NulString,
    #[error("bind mount source {0:?} contains a NUL byte")]
    NulBindSource(PathBuf),
    #[error("the upper dir path contains a NUL byte")]
    NulUpperDir,
    #[error("overlay paths must not contain NUL bytes")]
    NulOverlayPath,
    #[error("overlay options contain a NUL byte")]
    NulOverlayOptions,
    #[error("state dir path {} is not UTF-8", .0.display())]
    StateDirNotUtf8(PathBuf),
    #[error("user or group id {0} is not allowed")]
    ReservedId(u32),
    #[error("{count} supplementary groups, the kernel allows {max}")]
    TooManyGroups { count: usize, max: i64 },
    #[error("hostname {name:?} must be 1 to {max} bytes long")]
    Hostname { name: String, max: usize },
    #[error("workdir {0:?} must be an absolute path")]
    RelativeWorkdir(String),
    #[error("a step may have at most {max} cache mounts and secrets, not {count}")]
    TooManyStepMounts { max: usize, count: usize },
    /// `kind` is the mount's (`cache mount`, `secret`).
    #[error("{kind} {target:?} has more than {max} components")]
    DeepMountTarget {
        kind: &'static str,
        target: String,
        max: usize,
    },
    #[error("{inner_kind} {inner:?} {} {outer_kind} {outer:?}: cache mounts and secrets must not nest", if *same { "is the same as" } else { "is inside" })]
    NestedStepMounts {
        inner_kind: &'static str,
        inner: String,
        outer_kind: &'static str,
        outer: String,
        /// Both have the same target (rather than one inside the other).
        same: bool,
    },
    #[error("the secret for {target:?} is {len} bytes, more than the {max_kib} KiB kiln allows")]
    SecretTooLarge {
        target: String,
        len: usize,
        max_kib: usize,
    },
    #[error("cache mount source {} is a symbolic link", .0.display())]
    CacheSourceSymlink(PathBuf),
    #[error("cache mount source {} must be owned by root, not by uid {uid}", path.display())]
    CacheSourceOwner { path: PathBuf, uid: u32 },
    #[error("cache mount source {} is not a directory", .0.display())]
    CacheSourceNotDir(PathBuf),
    #[error("the overlay upper dir cannot be /")]
    UpperIsRoot,
    #[error("lower layer name {0:?} must be a plain dir name without ',', ':' or '\\'")]
    LowerName(String),
    #[error("the overlay {what} path {} must not contain ',', ':' or '\\'", path.display())]
    OptionPath { what: String, path: PathBuf },
    #[error("{what} {} is not a directory", path.display())]
    NotADirectory { what: &'static str, path: PathBuf },
    #[error("the image has {layers} layers, more than the {max} overlayfs can stack in one mount{}", if *beside_init { " beside kiln's own init layer" } else { "" })]
    TooManyLayers {
        layers: usize,
        max: usize,
        /// kiln's init layer takes one of the places.
        beside_init: bool,
    },
    #[error("too many bind mounts: at most {max}")]
    TooManyMounts { max: usize },
    #[error("the size of /dev/shm must be more than 0 bytes")]
    ZeroShmSize,
    #[error("sysctl {0:?} is not a sysctl name")]
    SysctlKey(String),
    #[error("device {0:?} cannot be made in the container's /dev (given twice, or kiln's own)")]
    DevicePath(String),
    #[error("the OCI configuration is malformed: {0}")]
    OciConfig(#[source] serde_json::Error),
}

/// Why a mount target is not one kiln mounts on.
#[derive(Debug, thiserror::Error)]
pub enum MountTargetError {
    #[error("mount target {0:?} must be an absolute path")]
    NotAbsolute(String),
    #[error("cannot mount over the root ({0:?})")]
    Root(String),
    #[error("mount target {0:?} contains a NUL byte")]
    Nul(String),
}

/// The stage name the parent gives to a failed `execve`.
pub const EXEC_STAGE: &str = "exec";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Limits were asked for where kiln may not make cgroups (an ordinary user's kiln
    /// without a delegated cgroup v2 subtree).
    #[error("cannot apply the {} limit{}: {reason}", .limits.join(", "), if .limits.len() == 1 { "" } else { "s" })]
    LimitsNeedCgroups {
        limits: Vec<&'static str>,
        reason: String,
    },
    /// Every slot of host ids for `--userns=auto` is held by a running container.
    #[error("no free range of host ids for a user namespace: all {slots} slots of the pool are in use (their locks are in {})", .dir.display())]
    NoFreeIds {
        slots: usize,
        dir: std::path::PathBuf,
    },
    /// A container with a user namespace of its own was asked of a kiln that cannot give
    /// one (an ordinary user's, or a kernel without what it needs).
    #[error("{0}")]
    UsernsUnsupported(&'static str),
    /// The caller could not give the container its network (see
    /// `start_container_attached`).
    #[error("connect the container to its network: {0}")]
    Attach(String),
    /// The sandbox description cannot be run (found before anything was started).
    #[error("invalid sandbox: {0}")]
    Invalid(#[source] Box<InvalidSandbox>),
    /// A seccomp profile (kiln's or a `--security-opt seccomp=FILE` one) that cannot be
    /// compiled or converted.
    #[error("invalid sandbox: {0}")]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// A mount target that cannot be one; `kind` is the step mount's (`cache`, `secret`),
    /// `None` for a container's `-v`/`--tmpfs`.
    #[error("invalid sandbox: {}{source}", kind.map(|k| format!("{k} ")).unwrap_or_default())]
    BadMountTarget {
        kind: Option<&'static str>,
        source: MountTargetError,
    },
    #[error("layer directory {0} does not exist or is not a directory")]
    MissingLayer(PathBuf),
    #[error(
        "the overlay mount options for {layers} layers are {len} bytes, over the kernel's limit \
         of {max}: the image has too many layers for one overlay mount"
    )]
    OverlayOptionsTooLong {
        layers: usize,
        len: usize,
        max: usize,
    },
    /// Preparing host-side directories failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A system call made by kiln itself (not by the sandboxed child) failed.
    #[error("{call}: {}", .errno.desc())]
    Sys { call: &'static str, errno: Errno },
    /// Setting up the sandbox failed, including the final `execve` of the command.
    #[error("{stage}{}: {}", quoted(target), .errno.desc())]
    Setup {
        stage: &'static str,
        target: Option<String>,
        errno: Errno,
    },
    /// The command has no `/` and no directory of the step's `$PATH` holds it.
    #[error("exec {command:?}: executable file not found in $PATH ({path})")]
    CommandNotFound { command: String, path: String },
    #[error(transparent)]
    Cgroup(#[from] super::cgroups::CgroupError),
    /// A cache mount or secret could not be placed at its target inside the step's root.
    #[error("{kind} {target:?}: {}", target_reason(*.errno))]
    MountTarget {
        /// "cache mount target" or "secret target".
        kind: &'static str,
        target: String,
        errno: Errno,
    },
    /// The container to exec in has no live first process in its cgroup any more.
    #[error("container {0} is not running")]
    ContainerGone(String),
    /// The sandbox child broke the report protocol (a short or unknown report).
    #[error("the sandbox setup process sent a malformed error report")]
    MalformedReport,
}

fn quoted(target: &Option<String>) -> String {
    target
        .as_ref()
        .map(|t| format!(" {t:?}"))
        .unwrap_or_default()
}

/// Why a step mount's target could not be used, in words for the errno values that
/// resolution inside the root gives.
fn target_reason(errno: Errno) -> String {
    match errno {
        Errno::EXDEV => "the path leads into another mount (/proc, /dev, /sys, a host file, or \
                         another cache or secret mount)"
            .into(),
        Errno::ELOOP => "too many levels of symbolic links, or a /proc magic link".into(),
        Errno::ENAMETOOLONG => "the path inside the root is too long".into(),
        // Missing components are created, so only a dangling symlink leaves ENOENT.
        Errno::ENOENT => "a symbolic link on the path leads nowhere".into(),
        Errno::EISDIR => "is a directory, a secret needs a file".into(),
        other => other.desc().into(),
    }
}

impl RuntimeError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| RuntimeError::Io { what, path, source }
    }

    pub(crate) fn sys(call: &'static str) -> impl FnOnce(Errno) -> Self {
        move |errno| RuntimeError::Sys { call, errno }
    }

    /// The exit code a shell would give for this failure to start the command: 127 when the
    /// command does not exist, 126 when it exists but cannot be executed, `None` when the
    /// sandbox itself failed (callers usually map that to 125, like docker).
    pub fn command_exit_code(&self) -> Option<i32> {
        match self {
            RuntimeError::CommandNotFound { .. } => Some(127),
            RuntimeError::Setup { stage, errno, .. } if *stage == EXEC_STAGE => match errno {
                Errno::ENOENT | Errno::ENOTDIR => Some(127),
                _ => Some(126),
            },
            _ => None,
        }
    }

    /// The exit code of a `kiln exec` that failed to start its command: as
    /// [`RuntimeError::command_exit_code`], and 126 for a workdir it cannot enter (docker's:
    /// unlike `run`, exec does not create the workdir, so a missing one is the user's).
    pub fn exec_exit_code(&self) -> Option<i32> {
        match self {
            RuntimeError::Setup { stage, .. }
                if [Stage::ChdirWorkdir.name(), Stage::CheckWorkdir.name()].contains(stage) =>
            {
                Some(126)
            }
            _ => self.command_exit_code(),
        }
    }

    /// True when the command could not be found (exit code 127 semantics).
    pub fn is_command_not_found(&self) -> bool {
        self.command_exit_code() == Some(127)
    }
}

/// What the child was doing when it failed; sent as a number, named by the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Stage {
    Stdio = 1,
    PrivateMounts,
    Loopback,
    Scaffold,
    ChdirLayers,
    MountOverlay,
    OpenRoot,
    MountProc,
    MountDev,
    PopulateDev,
    MountDevPts,
    MountDevShm,
    MountSys,
    BindEtcFile,
    PivotRoot,
    OpenDevNull,
    Hostname,
    MkdirWorkdir,
    ChdirWorkdir,
    CheckWorkdir,
    SetGroups,
    SetGid,
    SetUid,
    CloseFds,
    Exec,
    CgroupNamespace,
    Session,
    MountTarget,
    BindMount,
    MountTmpfs,
    MaskPath,
    ReadonlyPath,
    ReadOnlyRoot,
    DropBounding,
    SetCapabilities,
    NoNewPrivs,
    Seccomp,
    StartInit,
    StepMountTarget,
    StepMountLog,
    CacheMount,
    SecretTmpfs,
    SecretFile,
    SecretMount,
    JoinNamespaces,
    ForkProcess,
    SetRlimit,
    Sysctl,
    MakeDevice,
    JoinCgroup,
}

impl Stage {
    const ALL: [Stage; 50] = [
        Stage::Stdio,
        Stage::PrivateMounts,
        Stage::Loopback,
        Stage::Scaffold,
        Stage::ChdirLayers,
        Stage::MountOverlay,
        Stage::OpenRoot,
        Stage::MountProc,
        Stage::MountDev,
        Stage::PopulateDev,
        Stage::MountDevPts,
        Stage::MountDevShm,
        Stage::MountSys,
        Stage::BindEtcFile,
        Stage::PivotRoot,
        Stage::OpenDevNull,
        Stage::Hostname,
        Stage::MkdirWorkdir,
        Stage::ChdirWorkdir,
        Stage::CheckWorkdir,
        Stage::SetGroups,
        Stage::SetGid,
        Stage::SetUid,
        Stage::CloseFds,
        Stage::Exec,
        Stage::CgroupNamespace,
        Stage::Session,
        Stage::MountTarget,
        Stage::BindMount,
        Stage::MountTmpfs,
        Stage::MaskPath,
        Stage::ReadonlyPath,
        Stage::ReadOnlyRoot,
        Stage::DropBounding,
        Stage::SetCapabilities,
        Stage::NoNewPrivs,
        Stage::Seccomp,
        Stage::StartInit,
        Stage::StepMountTarget,
        Stage::StepMountLog,
        Stage::CacheMount,
        Stage::SecretTmpfs,
        Stage::SecretFile,
        Stage::SecretMount,
        Stage::JoinNamespaces,
        Stage::ForkProcess,
        Stage::SetRlimit,
        Stage::Sysctl,
        Stage::MakeDevice,
        Stage::JoinCgroup,
    ];

    fn from_code(code: u32) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u32 == code)
    }

    /// The verb shown to users; the parent adds the quoted target.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stage::Stdio => "set up stdin/stdout/stderr",
            Stage::PrivateMounts => "make mounts private",
            Stage::Loopback => "bring up the loopback interface",
            Stage::Scaffold => "mount scaffold tmpfs on",
            Stage::ChdirLayers | Stage::ChdirWorkdir => "chdir",
            Stage::MountOverlay => "mount overlay on",
            Stage::OpenRoot => "open root",
            Stage::MountProc
            | Stage::MountDev
            | Stage::MountDevPts
            | Stage::MountDevShm
            | Stage::MountSys => "mount",
            Stage::PopulateDev => "populate",
            Stage::BindEtcFile => "bind mount host file onto",
            Stage::PivotRoot => "pivot_root into",
            Stage::OpenDevNull => "open stdin",
            Stage::Hostname => "set hostname",
            Stage::MkdirWorkdir => "create workdir",
            Stage::CheckWorkdir => "verify workdir is inside the root",
            Stage::SetGroups => "setgroups",
            Stage::SetGid => "setgid",
            Stage::SetUid => "setuid",
            Stage::CloseFds => "close inherited file descriptors",
            Stage::Exec => EXEC_STAGE,
            Stage::CgroupNamespace => "create the cgroup namespace",
            Stage::Session => "start a session with its controlling terminal",
            Stage::MountTarget => "create mount target",
            Stage::BindMount => "bind mount onto",
            Stage::MountTmpfs => "mount tmpfs on",
            Stage::MaskPath => "mask",
            Stage::ReadonlyPath => "make read-only",
            Stage::ReadOnlyRoot => "make the root filesystem read-only",
            Stage::DropBounding => "drop capabilities from the bounding set",
            Stage::SetCapabilities => "set capabilities",
            Stage::NoNewPrivs => "set no_new_privs",
            Stage::Seccomp => "install the seccomp filter",
            Stage::StartInit => "start the command under the init process",
            Stage::StepMountTarget => "create mount target",
            Stage::StepMountLog => "record the mount points kiln creates in",
            Stage::CacheMount => "mount the cache directory onto",
            Stage::SecretTmpfs => "mount the secrets tmpfs on",
            Stage::SecretFile => "write the secret for",
            Stage::SecretMount => "bind mount the secret onto",
            Stage::JoinNamespaces => "join the container's namespaces",
            Stage::ForkProcess => "fork the process in the container's PID namespace",
            Stage::SetRlimit => "set ulimit",
            Stage::Sysctl => "write sysctl",
            Stage::MakeDevice => "create device",
            Stage::JoinCgroup => "join the container's cgroup",
        }
    }
}

/// Detail value meaning "no particular item" (e.g. exec after a `$PATH` search found nothing).
pub(crate) const NO_DETAIL: u32 = u32::MAX;

/// The child's failure report: three native-endian 32-bit words on the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Report {
    pub stage: Stage,
    pub errno: i32,
    /// Index of the item the stage was working on (workdir prefix, exec candidate …).
    pub detail: u32,
}

pub(crate) const REPORT_LEN: usize = 12;

impl Report {
    pub(crate) fn to_bytes(self) -> [u8; REPORT_LEN] {
        let mut out = [0u8; REPORT_LEN];
        let words = [self.stage as u32, self.errno as u32, self.detail];
        for (chunk, word) in out.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_ne_bytes());
        }
        out
    }

    pub(crate) fn from_bytes(bytes: &[u8; REPORT_LEN]) -> Result<Report, RuntimeError> {
        let word =
            |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let stage = Stage::from_code(word(0)).ok_or(RuntimeError::MalformedReport)?;
        Ok(Report {
            stage,
            errno: word(4) as i32,
            detail: word(8),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_and_rejects_unknown_stages() {
        let r = Report {
            stage: Stage::Exec,
            errno: libc::EACCES,
            detail: 7,
        };
        assert_eq!(Report::from_bytes(&r.to_bytes()).unwrap(), r);
        let mut bad = r.to_bytes();
        bad[..4].copy_from_slice(&999u32.to_ne_bytes());
        assert!(matches!(
            Report::from_bytes(&bad),
            Err(RuntimeError::MalformedReport)
        ));
    }

    #[test]
    fn exec_errors_carry_shell_exit_codes() {
        let setup = |stage, errno| RuntimeError::Setup {
            stage,
            target: Some("/usr/bin/foo".into()),
            errno,
        };
        let not_found = setup(EXEC_STAGE, Errno::ENOENT);
        assert_eq!(
            not_found.to_string(),
            r#"exec "/usr/bin/foo": No such file or directory"#
        );
        assert_eq!(not_found.command_exit_code(), Some(127));
        assert_eq!(
            setup(EXEC_STAGE, Errno::EACCES).command_exit_code(),
            Some(126)
        );
        assert_eq!(
            setup(EXEC_STAGE, Errno::ENOEXEC).command_exit_code(),
            Some(126)
        );
        assert_eq!(
            setup("pivot_root into", Errno::EINVAL).command_exit_code(),
            None
        );
        let path = RuntimeError::CommandNotFound {
            command: "foo".into(),
            path: "/bin".into(),
        };
        assert!(path.is_command_not_found());
    }
}
