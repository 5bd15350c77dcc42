//! `kiln run`'s runtime: [`ContainerSpec`], [`run_container`] and [`start_container`].
//!
//! A container is a build step's sandbox (overlay root, mount/pid/uts/ipc/net namespaces,
//! fresh `/proc`, `/dev`, read-only `/sys`, pivot_root, workdir checked inside the root)
//! plus what `kiln run` needs on top: a cgroup with limits, joined before the command
//! runs; kiln's own `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`; `-v` binds and
//! `--tmpfs` mounts; masked and read-only paths; an optional read-only root; exact
//! capability sets, `no_new_privs` and a seccomp filter; the built-in init as PID 1; and a
//! pty for `-t`.
//!
//! The parent prepares everything (C strings, capability masks, the BPF program), creates
//! the cgroup, clones the child, moves it into the cgroup and only then lets it continue
//! (a byte on the *sync socket*). The error pipe tells whether the command's `execve`
//! succeeded. After the container's PID 1 exits, kiln reads whether the OOM killer struck
//! and removes the cgroup. Mounts live only in the container's mount namespace and vanish
//! with it.
//!
//! Build steps (`sandbox`) start through the same `start()`; the parent side of `clone`
//! (`spawn`, `read_report`, `wait_for`) and [`ExitStatus`] are here for both.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libc::c_int;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, pthread_sigmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{getpid, pipe2, read, Pid};

use super::cgroups::{self, Cgroup, Resources, DEFAULT_CGROUP_ROOT};
use super::child::child_main;
use super::child::MAX_KEPT_FDS;
use super::confinement::Confinement;
use super::container_mounts::{self, MountSource, UserMount};
use super::container_userns::{self, IdMapping, OwnUserns, UsernsMode};
use super::devices::PseudoFs;
use super::devices::DEFAULT_SHM_SIZE;
use super::error::{InvalidSandbox, Report, RuntimeError, Stage, REPORT_LEN};
use super::host_devices::{self, DeviceNode};
use super::init::STATUS_LEN;
use super::overlay::{InitLayer, Overlay, CONTAINER_ETC_FILES};
use super::plan::{c_string, ChildArgs, ChildFds, ChildPlan, ContainerPlan, Sandbox, SelfJoin};
use super::process::Process;
use super::pty::{initial_window_size, TtySession};
use super::relay::{OutputPipes, StdioRelay};
use super::sys;
use super::sysctls;

/// A `-v SRC:DST[:ro]` bind mount.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    /// Host path; must exist. Its mounts below are included (a recursive bind).
    pub source: PathBuf,
    /// Absolute path in the container; resolved inside the root (image symlinks are
    /// followed as if the root were `/`), created when missing like Docker does.
    pub target: String,
    pub readonly: bool,
}

/// Everything needed to run a container.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ContainerSpec {
    /// The image's layers and the container's own upper and work dirs.
    pub overlay: Overlay,
    /// Mount the root read-only (tmpfs mounts and binds keep their own mode).
    pub read_only: bool,
    /// The command and the user, hostname and network it runs with.
    pub process: Process,
    pub mounts: Vec<BindMount>,
    /// `--tmpfs` targets (mode 1777, `nosuid,nodev,noexec`).
    pub tmpfs: Vec<String>,
    /// The size of `/dev/shm` in bytes; `None` is Docker's 64 MiB.
    pub shm_size: Option<u64>,
    /// `--sysctl`s of the container's own namespaces (which keys may be set is the
    /// caller's decision), written before the command runs.
    pub sysctls: Vec<(String, String)>,
    /// `--device`s: made in the container's `/dev` and allowed in its cgroup beside the
    /// confinement's device policy.
    pub devices: Vec<DeviceNode>,
    /// Contents of the container's `/etc/hosts`.
    pub etc_hosts: String,
    /// Contents of the container's `/etc/resolv.conf`.
    pub etc_resolv_conf: String,
    /// Capabilities, no_new_privs, seccomp and cgroup limits: the same description a build
    /// step gets.
    pub confinement: Confinement,
    /// Run the built-in init as PID 1 (see `init`).
    pub init: bool,
    /// Give the container a pseudo-terminal as stdin, stdout and stderr.
    pub tty: bool,
    /// Pass kiln's stdin to the container (`-i`); otherwise stdin is `/dev/null`. The
    /// container never holds kiln's own stdio: without `tty` it writes into pipes that kiln
    /// copies to its stdout and stderr (and copies kiln's stdin into a pipe with `-i`).
    pub interactive: bool,
    /// Keep the container's stdio for the caller instead of copying it to and from kiln's
    /// own: its pipes ([`RunningContainer::take_output`]), or with `tty` its pty's master
    /// ([`RunningContainer::take_console`]). A detached container's monitor writes the
    /// output to its log and relays `kiln attach`.
    pub capture_output: bool,
    /// Container id: names the cgroup `kiln-<id>` (letters, digits, `_-.`).
    pub id: String,
    /// A kiln-owned dir where the runtime writes the `/etc` files it binds.
    pub state_dir: PathBuf,
    /// Where cgroupfs is; `None` means `/sys/fs/cgroup`.
    pub cgroup_root: Option<PathBuf>,
    /// Whose ids it runs with: the host's, or a user namespace of its own (`--userns`).
    #[serde(default)]
    pub userns: UsernsMode,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// The shell's convention: the exit code, or 128 + the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(sig) => 128 + sig,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitStatus::Exited(code) => write!(f, "exit code {code}"),
            ExitStatus::Signaled(sig) => match nix::sys::signal::Signal::try_from(sig) {
                Ok(name) => write!(f, "killed by {name}"),
                Err(_) => write!(f, "killed by signal {sig}"),
            },
        }
    }
}

/// How a container ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerExit {
    /// The command's status (with the init too: `Signaled(N)` when signal N killed it).
    pub status: ExitStatus,
    /// Whether the kernel's OOM killer killed a process of the container (its memory
    /// limit was hit).
    pub oom_killed: bool,
}

impl ContainerExit {
    /// Whether the OOM killer killed the command itself. When it killed another process of
    /// the container instead, the command's own status stands and only
    /// [`oom_killed`](ContainerExit::oom_killed) tells.
    pub fn command_oom_killed(&self) -> bool {
        self.oom_killed && self.status == ExitStatus::Signaled(libc::SIGKILL)
    }
}

/// Runs a container to its end: [`start_container`] then [`RunningContainer::wait`].
pub fn run_container(spec: &ContainerSpec) -> Result<ContainerExit, RuntimeError> {
    start_container(spec)?.wait()
}

/// A started container whose command has been exec'd. Dropping it without
/// [`wait`](RunningContainer::wait) kills the container and removes its cgroup.
#[derive(Debug)]
pub struct RunningContainer {
    pid: Pid,
    cgroup: Option<Cgroup>,
    /// Read end of the init's status pipe.
    status: Option<OwnedFd>,
    tty: Option<TtySessionHandle>,
    /// The pty's master, for a caller that relays it itself (`capture_output` with `tty`).
    console: Option<OwnedFd>,
    /// The copying of the container's stdio pipes (without a tty).
    relay: Option<StdioRelay>,
    /// The read ends of its stdout and stderr, with `capture_output`.
    output: Option<OutputPipes>,
    waited: bool,
    /// Its slot of host ids (`--userns=auto`), free again when this is dropped.
    id_lease: Option<crate::id_leases::IdLease>,
}

/// Wrapper so that `RunningContainer` can derive `Debug`.
struct TtySessionHandle(TtySession);

impl std::fmt::Debug for TtySessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TtySession")
    }
}

/// Starts a container and returns once its command runs (its `execve` succeeded) or with
/// the reason it could not start. Nothing is left behind on error: the cgroup is removed
/// and mounts exist only in the dead container's namespace. Stale kiln cgroups (of
/// containers whose kiln was killed) are removed first, see [`cgroups::clean_stale`].
///
/// Must be waited for on the thread that called it: the container gets SIGKILL
/// (`PR_SET_PDEATHSIG`) when that thread ends.
pub fn start_container(spec: &ContainerSpec) -> Result<RunningContainer, RuntimeError> {
    start_container_attached(spec, &mut |_| Ok(()))
}

/// [`start_container`], calling `attach` with the host PID of the container's first
/// process once it is in its new namespaces and cgroup, before any of its code runs: the
/// moment to give its network namespace an interface ([`NetworkMode::Bridge`]). An error
/// from `attach` stops the start, and nothing is left of the container.
pub fn start_container_attached(
    spec: &ContainerSpec,
    attach: &mut dyn FnMut(i32) -> Result<(), String>,
) -> Result<RunningContainer, RuntimeError> {
    let cgroup_root = cgroup_root(spec.cgroup_root.as_deref());
    let (plan, own_userns) = container_plan(spec, &cgroup_root)?;
    let devnull = open_host_devnull()?;
    let (relay, output, stdio) = match (spec.tty, spec.capture_output) {
        // The child replaces stdio with its pty once it has one.
        (true, _) => (None, None, None),
        (false, true) => {
            OutputPipes::new(spec.interactive).map(|(o, e)| (None, Some(o), Some(e)))?
        }
        (false, false) => {
            StdioRelay::start(spec.interactive).map(|(r, e)| (Some(r), None, Some(e)))?
        }
    };
    let null = devnull.as_raw_fd();
    let fd_or_null = |fd: Option<&OwnedFd>| fd.map_or(null, |f| f.as_raw_fd());
    let resources = spec.resources();
    let mut launch = Launch {
        cgroup_root: &cgroup_root,
        id: &spec.id,
        resources: &resources,
        stdin: fd_or_null(stdio.as_ref().and_then(|e| e.stdin.as_ref())),
        stdout: fd_or_null(stdio.as_ref().map(|e| &e.stdout)),
        stderr: fd_or_null(stdio.as_ref().map(|e| &e.stderr)),
        tty: spec.tty.then_some(spec.interactive),
        console_to_caller: spec.capture_output,
        attach: Some(attach),
        id_mapping: own_userns.as_ref().map(|own| own.mapping),
    };
    let mut running = start(&plan, &mut launch, (devnull, stdio))?;
    running.relay = relay;
    running.output = output;
    running.id_lease = own_userns.and_then(|own| own.lease);
    Ok(running)
}

impl ContainerSpec {
    /// The cgroup's resources: the confinement's, with the given devices allowed.
    pub(crate) fn resources(&self) -> Resources {
        let rules: Vec<_> = self.devices.iter().map(DeviceNode::rule).collect();
        let resources = self.confinement.resources.clone();
        Resources {
            devices: resources.devices.clone().and(&rules),
            ..resources
        }
    }
}

/// Where cgroupfs is: the given root or `/sys/fs/cgroup`.
pub(crate) fn cgroup_root(root: Option<&Path>) -> PathBuf {
    root.map_or_else(|| PathBuf::from(DEFAULT_CGROUP_ROOT), Path::to_path_buf)
}

pub(crate) fn open_host_devnull() -> Result<OwnedFd, RuntimeError> {
    sys::open(c"/dev/null", libc::O_RDWR)
        .map_err(|e| RuntimeError::sys("open /dev/null")(Errno::from_raw(e)))
}

/// How to start the clone child of a step or container.
pub(crate) struct Launch<'a> {
    pub cgroup_root: &'a Path,
    /// Names the cgroup `kiln-<id>`.
    pub id: &'a str,
    pub resources: &'a Resources,
    /// The child's stdio until it arranges its own: pipes kiln reads (or the host's
    /// `/dev/null`, which the child replaces with its own).
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// `Some(interactive)` to give the child a pty.
    pub tty: Option<bool>,
    /// Hand the pty's master to the caller ([`RunningContainer::take_console`]) instead of
    /// copying it to and from kiln's own stdio.
    pub console_to_caller: bool,
    /// Called with the child's PID once it is in its cgroup, before it goes on.
    pub attach: Option<&'a mut dyn FnMut(i32) -> Result<(), String>>,
    /// The maps of the child's own user namespace, written before it goes on.
    pub id_mapping: Option<IdMapping>,
}

/// Whether this kiln can apply limits (make cgroups): root can; an ordinary user only
/// in a cgroup v2 subtree systemd delegated to it.
pub fn limits_apply() -> bool {
    !crate::userns::rootless() || delegated_cgroup_root(Path::new(DEFAULT_CGROUP_ROOT)).is_ok()
}

/// Where an ordinary user's kiln makes its cgroups: the subtree delegated to the user
/// (`kiln_cgroups::rootless`), found anew each time (it is a few reads).
pub(crate) fn delegated_cgroup_root(
    cgroupfs: &Path,
) -> Result<std::path::PathBuf, cgroups::DelegationError> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    // In kiln's user namespace the user is uid 0, and so are its cgroup dirs.
    cgroups::delegated_root(cgroupfs, &own, nix::unistd::geteuid().as_raw())
}

/// Removes the cgroups of steps and containers whose kiln was killed
/// ([`cgroups::clean_stale`]) under `cgroup_root`, or for an ordinary user in its
/// delegated subtree. Best effort. Not part of each start, since the sweep opens every
/// kiln cgroup, running ones too: a build sweeps before its first step, `kiln run` when
/// it found a container whose kiln was killed, and `kiln gc` always.
pub fn sweep_stale_cgroups(cgroup_root: Option<&Path>) {
    let mut root = self::cgroup_root(cgroup_root);
    if crate::userns::rootless() {
        match delegated_cgroup_root(&root) {
            Ok(delegated) => root = delegated,
            Err(_) => return,
        }
    }
    let _ = cgroups::clean_stale(&root);
}

/// The cgroup of a step or container. An ordinary user's kiln makes one only for limits
/// asked for, in its delegated subtree; without one such a limit is an error, since a
/// limit silently not applied is worse than none (the default pids limit and device
/// list are not asked for, and go without a cgroup).
fn container_cgroup(launch: &Launch) -> Result<Option<Cgroup>, RuntimeError> {
    let mut root = launch.cgroup_root.to_path_buf();
    if crate::userns::rootless() {
        let limits = launch.resources.requested();
        if limits.is_empty() {
            return Ok(None);
        }
        root = delegated_cgroup_root(launch.cgroup_root).map_err(|e| {
            let reason = match e.hint() {
                Some(fix) => format!("{e} ({fix})"),
                None => e.to_string(),
            };
            RuntimeError::LimitsNeedCgroups { limits, reason }
        })?;
    }
    Cgroup::create(&root, launch.id, launch.resources)
        .map(Some)
        .map_err(Into::into)
}

/// The parent side shared by build steps and containers: creates the cgroup, clones the
/// child, puts it in the cgroup before letting it go on, receives its pty, and returns
/// once the command's `execve` succeeded. `keep` is dropped (closing kiln's copies of the
/// child's stdio) right after the clone.
pub(crate) fn start<K>(
    plan: &ChildPlan,
    launch: &mut Launch,
    keep: K,
) -> Result<RunningContainer, RuntimeError> {
    let cgroup = container_cgroup(launch)?;
    let (report_read, report_write) = cloexec_pipe(OFlag::empty())?;
    let (sync_write, sync_read) = sync_socket()?;
    let (status_read, status_write) = match plan.init {
        true => cloexec_pipe(OFlag::O_NONBLOCK).map(|(r, w)| (Some(r), Some(w)))?,
        false => (None, None),
    };
    let console = launch.tty.map(|_| console_socket()).transpose()?;
    let kiln = sys::pidfd_open(getpid().as_raw())
        .map_err(|e| RuntimeError::sys("pidfd_open")(Errno::from_raw(e)))?;
    let self_join = self_join_files(cgroup.as_ref(), launch.id_mapping.is_some())?;
    let args = ChildArgs {
        plan,
        fds: ChildFds {
            stdin: launch.stdin,
            stdout: launch.stdout,
            stderr: launch.stderr,
            report: report_write.as_raw_fd(),
            parent: kiln.as_raw_fd(),
            sync: sync_read.as_raw_fd(),
            status: status_write.as_ref().map_or(-1, |w| w.as_raw_fd()),
            console: console.as_ref().map_or(-1, |(_, child)| child.as_raw_fd()),
            cgroup_tasks: self_join.fds(),
        },
    };
    let flags = clone_flags(plan);
    let pid = spawn(&args, flags)?;
    tracing::debug!(
        id = launch.id,
        pid = pid.as_raw(),
        namespaces = %namespace_names(flags, plan.cgroup_namespace),
        init = plan.init,
        "process started"
    );
    // Only the child may hold these now, so EOF on the error pipe means its exec succeeded
    // and EOF on a stdio pipe means the container closed it.
    drop((report_write, sync_read, status_write, kiln, keep));
    let joined_by_child = self_join.by_child();
    drop(self_join);
    let console = console.map(|(ours, _child)| ours);
    let mut running = RunningContainer {
        pid,
        cgroup,
        status: status_read,
        tty: None,
        console: None,
        relay: None,
        output: None,
        waited: false,
        id_lease: None,
    };
    // The child waits for a first byte, so it has its ids before it does anything.
    if let Some(mapping) = &launch.id_mapping {
        container_userns::write_maps(pid.as_raw(), mapping)?;
    }
    // On v1 the child moved itself into its cgroups first thing; else it builds its root
    // meanwhile and waits for the second byte before it drops its privileges, forks or
    // execs, so no code of the container runs outside the cgroup. A child that is gone
    // failed (a workdir that is a file, say): its report says why.
    if let_go(&sync_write, "start the container process")? {
        if let Some(cgroup) = running.cgroup.as_ref().filter(|_| !joined_by_child) {
            cgroup.join(pid.as_raw())?;
        }
        if let Some(attach) = launch.attach.as_mut() {
            // Dropping `running` kills the child and removes its cgroup.
            attach(pid.as_raw()).map_err(RuntimeError::Attach)?;
        }
        let_go(&sync_write, "start the container process")?;
    }
    drop(sync_write);
    // The child sends the pty master before its exec; EOF means it failed first, and the
    // error pipe says why.
    let master = match &console {
        Some(sock) => sys::recv_fd(sock.as_raw_fd()).map_err(|e| {
            RuntimeError::sys("receive the container's terminal")(Errno::from_raw(e))
        })?,
        None => None,
    };
    match (master, launch.tty) {
        (Some(master), Some(_)) if launch.console_to_caller => running.console = Some(master),
        (Some(master), Some(interactive)) => {
            running.tty = Some(TtySessionHandle(TtySession::start(master, interactive)?));
        }
        _ => {}
    }
    match read_report(&report_read)? {
        None => Ok(running),
        Some(report) => {
            // The child has exited (or will): collect it and clean up, then report why.
            let _ = running.finish();
            Err(plan.error_for(report))
        }
    }
}

impl RunningContainer {
    /// The host pid of the container's PID 1 (the init, or the command without one).
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Sends `signal` to the container's PID 1. With the init it reaches the command (for
    /// the forwarded signals, see `init`); without one, a command that set no handler for
    /// it does not see it (the kernel protects a namespace's init), except SIGKILL.
    pub fn signal(&self, signal: Signal) -> Result<(), RuntimeError> {
        kill(self.pid, signal).map_err(RuntimeError::sys("signal the container"))
    }

    /// A pidfd of the container's PID 1, readable once it has exited (for `poll`). Valid
    /// for as long as this value lives: the process is not reaped before `wait`.
    pub fn pidfd(&self) -> Result<OwnedFd, RuntimeError> {
        sys::pidfd_open(self.pid.as_raw())
            .map_err(|e| RuntimeError::sys("pidfd_open")(Errno::from_raw(e)))
    }

    /// The read ends of the container's stdout and stderr (and its stdin's write end with
    /// `interactive`), once, when it was started with `capture_output` and no `tty`.
    pub fn take_output(&mut self) -> Option<OutputPipes> {
        self.output.take()
    }

    /// The master of the container's pty, once, when it was started with `capture_output`
    /// and `tty`: its output to read, its input to write.
    pub fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    /// Waits for the container to end, then removes its cgroup.
    pub fn wait(mut self) -> Result<ContainerExit, RuntimeError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<ContainerExit, RuntimeError> {
        let status = wait_for(self.pid)?;
        self.waited = true;
        let status = self.command_status().unwrap_or(status);
        tracing::debug!(pid = self.pid.as_raw(), %status, "process exited");
        if let Some(TtySessionHandle(tty)) = self.tty.take() {
            tty.finish();
        }
        if let Some(relay) = self.relay.take() {
            relay.finish();
        }
        let Some(cgroup) = self.cgroup.take() else {
            return Ok(ContainerExit {
                status,
                oom_killed: false,
            });
        };
        let oom_killed = cgroup.oom_killed();
        cgroup.remove()?;
        Ok(ContainerExit {
            status,
            oom_killed: oom_killed?,
        })
    }

    /// The command's exact status, which the init sends on the status pipe before exiting.
    fn command_status(&self) -> Option<ExitStatus> {
        let pipe = self.status.as_ref()?;
        let mut buf = [0u8; STATUS_LEN];
        // SAFETY: the buffer is valid for its length; the pipe is non-blocking.
        let n = unsafe { libc::read(pipe.as_raw_fd(), buf.as_mut_ptr().cast(), STATUS_LEN) };
        if n != STATUS_LEN as isize {
            return None;
        }
        let raw = libc::c_int::from_ne_bytes(buf);
        Some(match libc::WIFSIGNALED(raw) {
            true => ExitStatus::Signaled(libc::WTERMSIG(raw)),
            false => ExitStatus::Exited(libc::WEXITSTATUS(raw)),
        })
    }
}

impl Drop for RunningContainer {
    fn drop(&mut self) {
        if !self.waited {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
        // The cgroup and tty session clean up in their own Drop.
    }
}

/// A connected unix socket pair for the pty master: (kiln's end, the child's end).
pub(crate) fn console_socket() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    socket_pair("create the console socket")
}

/// A connected unix socket pair on which kiln lets a child go on past its waits (see
/// [`let_go`]): (kiln's end, the child's end). A socket, not a pipe, so that kiln's send
/// to a child that died answers EPIPE instead of killing kiln with SIGPIPE.
pub(crate) fn sync_socket() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    socket_pair("create the sync socket")
}

fn socket_pair(what: &'static str) -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    let mut fds = [0 as libc::c_int; 2];
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: socketpair fills the two-element array.
    if unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) } != 0 {
        return Err(RuntimeError::sys(what)(Errno::last()));
    }
    // SAFETY: both fds are new and owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends the byte a child waits for on its sync socket. False when the child is gone:
/// it failed before it read it, and its report says why.
pub(crate) fn let_go(sync: &OwnedFd, what: &'static str) -> Result<bool, RuntimeError> {
    match sys::send_byte(sync.as_raw_fd(), b'g') {
        Ok(()) => Ok(true),
        Err(libc::EPIPE | libc::ECONNRESET) => Ok(false),
        Err(e) => Err(RuntimeError::sys(what)(Errno::from_raw(e))),
    }
}

fn cloexec_pipe(extra: OFlag) -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    pipe2(OFlag::O_CLOEXEC | extra).map_err(RuntimeError::sys("create a pipe"))
}

/// Checks the spec and builds the child's plan; writes the `/etc` files into `state_dir`
/// The `tasks` files the child moves itself into its v1 cgroups through (none on v2, and
/// none with a user namespace of the container's own, whose child the parent moves).
fn self_join_files(
    cgroup: Option<&kiln_cgroups::Cgroup>,
    user_namespace: bool,
) -> Result<SelfJoin, RuntimeError> {
    Ok(SelfJoin::new(match (cgroup, user_namespace) {
        (Some(cgroup), false) => cgroup.self_join_files()?,
        _ => Vec::new(),
    }))
}

/// and makes the detached mounts the child attaches (and, with a user namespace of the
/// container's own, its root).
fn container_plan(
    spec: &ContainerSpec,
    cgroup_root: &Path,
) -> Result<(ChildPlan, Option<OwnUserns>), RuntimeError> {
    let etc_binds = write_etc_files(spec)?;
    let mut trees = etc_binds
        .iter()
        .map(|(host, rel)| {
            container_mounts::etc_file_tree(host).map_err(|e| RuntimeError::Setup {
                stage: Stage::BindEtcFile.name(),
                target: Some(format!("/{}", rel.to_string_lossy())),
                errno: Errno::from_raw(e),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mounts = user_mounts(spec, &mut trees)?;
    let container = ContainerPlan {
        mounts,
        read_only_root: spec.read_only,
        tty: spec.tty,
        winsize: initial_window_size(),
        keep_stdin: spec.interactive || spec.tty,
        shm_size: match spec.shm_size {
            // tmpfs takes size=0 as "no limit".
            Some(0) => return Err(InvalidSandbox::ZeroShmSize.into()),
            Some(bytes) => c_string(&bytes.to_string(), "shm size")?,
            None => DEFAULT_SHM_SIZE.to_owned(),
        },
        sysctls: sysctls::prepare(&spec.sysctls)?,
        devices: host_devices::prepare(&spec.devices)?,
        trees,
        own_root: None,
    };
    let sandbox = Sandbox::new(&spec.confinement, cgroup_root, spec.init, Some(container))?;
    let mut plan = ChildPlan::build(
        &spec.overlay,
        &spec.process,
        InitLayer::Container,
        etc_binds,
        sandbox,
    )?;
    // After `build`: the upper dir has its root's owner and mode by now.
    let own = container_userns::prepare(spec.userns, &spec.id, &spec.overlay)?;
    if let (Some(own), Some(container)) = (&own, plan.container.as_mut()) {
        let mapping = own.mapping;
        let devices = host_devices::make_for_user_namespace(
            &mut container.devices,
            container.trees.len(),
            |id, is_uid| mapping.host_id(id, is_uid),
        )?;
        container.trees.extend(devices);
        // kiln's /etc files belong to the container's root, as they do without one.
        for (host, _) in &plan.etc_binds {
            let host = Path::new(std::ffi::OsStr::from_bytes(host.as_bytes()));
            std::os::unix::fs::lchown(
                host,
                Some(own.mapping.uids.outside),
                Some(own.mapping.gids.outside),
            )
            .map_err(RuntimeError::io("chown", host))?;
        }
        container.trees.push(
            own.root
                .try_clone()
                .map_err(RuntimeError::io("dup", "the container root"))?,
        );
        container.own_root = Some(container.trees.len() - 1);
        plan.user_namespace = true;
        plan.pseudo_fs = PseudoFs {
            in_user_namespace: true,
            tty_group: own.mapping.has_tty_group(),
        };
    }
    if plan.kept_fds().len() > MAX_KEPT_FDS {
        return Err(InvalidSandbox::TooManyMounts {
            max: MAX_KEPT_FDS - CONTAINER_ETC_FILES.len() - 1,
        }
        .into());
    }
    Ok((plan, own))
}

/// Binds and tmpfs mounts, sorted so that a mount's parent is mounted before it; each
/// bind's detached copy is added to `trees`.
fn user_mounts(
    spec: &ContainerSpec,
    trees: &mut Vec<OwnedFd>,
) -> Result<Vec<UserMount>, RuntimeError> {
    let mut mounts = Vec::new();
    for bind in &spec.mounts {
        let source = std::path::absolute(&bind.source)
            .map_err(RuntimeError::io("bind mount source", bind.source.clone()))?;
        let meta =
            fs::metadata(&source).map_err(RuntimeError::io("bind mount source", source.clone()))?;
        let c_source = CString::new(source.as_os_str().as_bytes())
            .map_err(|_| InvalidSandbox::NulBindSource(source.clone()))?;
        let mount = UserMount::new(
            MountSource::Bind {
                tree: trees.len(),
                dir: meta.is_dir(),
            },
            &bind.target,
        )
        .map_err(container_target)?;
        let tree = container_mounts::bind_tree(&c_source, bind.readonly).map_err(|e| {
            RuntimeError::Setup {
                stage: Stage::BindMount.name(),
                target: Some(mount.target.clone()),
                errno: Errno::from_raw(e),
            }
        })?;
        trees.push(tree);
        mounts.push(mount);
    }
    for target in &spec.tmpfs {
        mounts.push(UserMount::new(MountSource::Tmpfs, target).map_err(container_target)?);
    }
    mounts.sort_by_key(UserMount::depth);
    Ok(mounts)
}

/// Where the container's `/etc` files live on the host: (file in the state dir, path in
/// the container).
pub(crate) fn etc_file_sources(
    spec: &ContainerSpec,
) -> Result<Vec<(PathBuf, String)>, RuntimeError> {
    let dir = std::path::absolute(&spec.state_dir)
        .map_err(RuntimeError::io("resolve", spec.state_dir.clone()))?;
    Ok(CONTAINER_ETC_FILES
        .iter()
        .map(|rel| {
            let name = rel.rsplit('/').next().unwrap_or(rel);
            (dir.join(name), format!("/{rel}"))
        })
        .collect())
}

/// Writes `hosts`, `hostname` and `resolv.conf` into the state dir; returns the (host
/// file, path in the root) pairs to bind.
pub(crate) fn write_etc_files(
    spec: &ContainerSpec,
) -> Result<Vec<(CString, CString)>, RuntimeError> {
    let sources = etc_file_sources(spec)?;
    if let Some((first, _)) = sources.first() {
        let dir = first.parent().unwrap_or(first);
        fs::create_dir_all(dir).map_err(RuntimeError::io("create state dir", dir))?;
    }
    let hostname = format!("{}\n", spec.process.hostname);
    let contents = [
        spec.etc_hosts.as_str(),
        hostname.as_str(),
        spec.etc_resolv_conf.as_str(),
    ];
    sources
        .iter()
        .zip(contents)
        .map(|((host, target), text)| {
            fs::write(host, text).map_err(RuntimeError::io("write", host.clone()))?;
            let host = host
                .to_str()
                .ok_or_else(|| InvalidSandbox::StateDirNotUtf8(host.clone()))?;
            let rel = target.trim_start_matches('/');
            Ok((c_string(host, "path")?, c_string(rel, "path")?))
        })
        .collect()
}

/// The child's stack. It only runs the setup code (a few small frames and one 4 KiB buffer).
const CHILD_STACK_SIZE: usize = 256 * 1024;

pub(crate) fn clone_flags(plan: &ChildPlan) -> c_int {
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    // Created first by the kernel, so it owns the others.
    if plan.user_namespace {
        flags |= libc::CLONE_NEWUSER;
    }
    if plan.new_netns {
        flags |= libc::CLONE_NEWNET;
    }
    flags
}

/// A container's `-v`/`--tmpfs` target that is not one.
fn container_target(source: crate::MountTargetError) -> RuntimeError {
    RuntimeError::BadMountTarget { kind: None, source }
}

/// The namespaces `flags` (and the child's own unshare of the cgroup namespace) create,
/// for the debug log.
fn namespace_names(flags: c_int, cgroup: bool) -> String {
    let mut names: Vec<&str> = [
        (libc::CLONE_NEWUSER, "user"),
        (libc::CLONE_NEWNS, "mnt"),
        (libc::CLONE_NEWPID, "pid"),
        (libc::CLONE_NEWUTS, "uts"),
        (libc::CLONE_NEWIPC, "ipc"),
        (libc::CLONE_NEWNET, "net"),
    ]
    .into_iter()
    .filter(|(flag, _)| flags & flag != 0)
    .map(|(_, name)| name)
    .collect();
    if cgroup {
        names.push("cgroup");
    }
    names.join(",")
}

/// Runs `start` (a fork or a clone) with every signal blocked, so no kiln signal handler
/// can run in the new process before it resets them; kiln's mask is restored after.
pub(crate) fn with_signals_blocked<T>(start: impl FnOnce() -> T) -> Result<T, RuntimeError> {
    let mut saved = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut saved),
    )
    .map_err(RuntimeError::sys("block signals"))?;
    let started = start();
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&saved), None)
        .map_err(RuntimeError::sys("restore the signal mask"))?;
    Ok(started)
}

/// `clone` with every signal blocked ([`with_signals_blocked`]).
pub(crate) fn spawn(args: &ChildArgs, flags: c_int) -> Result<Pid, RuntimeError> {
    let mut stack = vec![0u8; CHILD_STACK_SIZE];
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    let (pid, clone_errno) = with_signals_blocked(|| {
        // SAFETY: child_main only reads `args` (copied into the child with the whole address
        // space, as CLONE_VM is not set) and never returns into Rust code of the parent's.
        let pid = unsafe {
            libc::clone(
                child_main,
                top as *mut libc::c_void,
                flags | libc::SIGCHLD,
                args as *const ChildArgs as *mut libc::c_void,
            )
        };
        (pid, Errno::last())
    })?;
    if pid < 0 {
        return Err(RuntimeError::sys("clone the step process")(clone_errno));
    }
    Ok(Pid::from_raw(pid))
}

/// `None` on EOF (exec succeeded), the report otherwise.
pub(crate) fn read_report(pipe: &OwnedFd) -> Result<Option<Report>, RuntimeError> {
    let mut buf = [0u8; REPORT_LEN];
    let mut filled = 0;
    while filled < REPORT_LEN {
        match read(pipe, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(RuntimeError::sys("read the error pipe")(e)),
        }
    }
    match filled {
        0 => Ok(None),
        REPORT_LEN => Report::from_bytes(&buf).map(Some),
        _ => Err(RuntimeError::MalformedReport),
    }
}

pub(crate) fn wait_for(pid: Pid) -> Result<ExitStatus, RuntimeError> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(ExitStatus::Signaled(sig as i32)),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(RuntimeError::sys("wait for the step process")(e)),
        }
    }
}
