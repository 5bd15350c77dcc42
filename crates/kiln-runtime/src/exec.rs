//! `kiln exec`: a new process in a running container, confined exactly as the container's
//! own command is (unless the caller asks for more).
//!
//! Exists because a process that joins a container must end up where the container's
//! command is, with nothing of kiln's on it: in *all* its namespaces (mount, PID, UTS, IPC,
//! network, cgroup — whichever differ from kiln's), in its cgroup, behind the same
//! capability sets, `no_new_privs` and seccomp filter, as its user, in its root, holding
//! no host fd. The confinement is applied by the same code a container's clone child uses
//! (`ConfinePlan::apply`, `child::switch_user`, `child::exec_command`): one way to confine.
//!
//! How it joins, and why in two steps:
//! - kiln opens a pidfd of the container's PID 1 and checks that the process is in the
//!   container's cgroup (so a recycled PID cannot be joined), and opens its
//!   `/proc/PID/ns/*` files as a fallback for kernels where `setns` on a pidfd fails
//!   (before 5.8). Everything the children need is prepared here; they allocate nothing.
//! - kiln forks an *intermediate* process (kiln is multi-threaded; a thread cannot enter a
//!   mount namespace, and entering a PID namespace only applies to the caller's
//!   children), puts it into the container's cgroup, then lets it go on. It calls
//!   `setns(pidfd, flags)` once for every namespace, then forks the process that will run
//!   the command with `CLONE_PARENT`, so that process is kiln's own child (kiln waits for
//!   it and signals it without any PID race) and is inside the container's PID namespace.
//!   The intermediate reports the new PID and exits.
//! - The new process takes its stdio (pipes kiln copies, its own pty in the container's
//!   devpts, or the container's `/dev/null` with `-d`), starts a session, enters the
//!   workdir (`setns` into a mount namespace sets the root and cwd to the namespace's root,
//!   which after the container's `pivot_root` is the container's root: the process never
//!   sees the host's tree), then confines itself and execs. Failures come back as a
//!   [`Report`] on a close-on-exec pipe; EOF means the exec succeeded.
//!
//! It dies with the container: it is in the container's PID namespace, whose processes
//! the kernel kills when its PID 1 exits. Attached, it also dies with kiln
//! (`PR_SET_PDEATHSIG`); detached (`-d`) it is left to run, reparented, as docker's.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libc::c_int;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{getpid, pipe2, read, Pid};

use super::cgroups::{self, CGROUP_PARENT, CGROUP_PREFIX};
use super::child::{self, at, CONSOLE_FD, EXIT_SETUP_FAILED, REPORT_FD, STEP_UMASK};
use super::confinement::{ConfinePlan, Confinement};
use super::container::{
    cgroup_root, open_host_devnull, read_report, wait_for, with_signals_blocked, ExitStatus,
};
use super::error::{Report, RuntimeError, Stage, NO_DETAIL};
use super::plan::{c_string, check_ids, CStringArray, ExecCandidates, SelfJoin, MAX_CGROUP_TASKS};
use super::pty::{initial_window_size, TtySession};
use super::relay::StdioRelay;
use super::sys;

/// The namespaces a process may join, in the order the fallback enters them one by one
/// (the user namespace first: a rootless container's other namespaces are its, and only
/// inside it does the process have the capabilities to join them; the mount namespace
/// last: joining it changes what `/proc` paths mean, though only fds are used).
const NAMESPACES: [(&str, c_int); 7] = [
    ("user", libc::CLONE_NEWUSER),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
];

/// The first fd the exec'd process does not keep open through its setup.
const FIRST_CLOSED_FD: RawFd = CONSOLE_FD + 1;

/// What to run in which container, and how.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// Host PID of the container's PID 1 (its init, or its command without one).
    pub container_pid: i32,
    /// The container's id: its cgroup is `kiln-<id>`, and the PID must be in it.
    pub id: String,
    /// Where cgroupfs is; `None` means `/sys/fs/cgroup`.
    pub cgroup_root: Option<PathBuf>,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// "K=V" entries; `PATH` from here is used to find `argv[0]`.
    pub env: Vec<String>,
    /// Absolute path inside the container; must exist (it is not created, as docker's).
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Capabilities, `no_new_privs` and seccomp (the resources are the container's
    /// cgroup's and are not read).
    pub confinement: Confinement,
    /// A pseudo-terminal of its own as stdio.
    pub tty: bool,
    /// Pass kiln's stdin to it.
    pub interactive: bool,
    /// Leave it running on its own: stdio is the container's `/dev/null`, and it does not
    /// die with kiln.
    pub detach: bool,
}

/// An exec'd process that runs. Dropping it without [`wait`](RunningExec::wait) or
/// [`detach`](RunningExec::detach) kills it.
pub struct RunningExec {
    pid: Pid,
    tty: Option<TtySession>,
    relay: Option<StdioRelay>,
    /// Waited for, or left to run on its own.
    released: bool,
}

impl std::fmt::Debug for RunningExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningExec")
            .field("pid", &self.pid)
            .finish()
    }
}

impl RunningExec {
    /// Its host PID.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Sends `signal` to it (it is kiln's unreaped child, so the PID is still its own).
    pub fn signal(&self, signal: Signal) -> Result<(), RuntimeError> {
        kill(self.pid, signal).map_err(RuntimeError::sys("signal the exec'd process"))
    }

    /// Waits for it to end and for its output to be copied.
    pub fn wait(mut self) -> Result<ExitStatus, RuntimeError> {
        let status = wait_for(self.pid)?;
        self.released = true;
        if let Some(tty) = self.tty.take() {
            tty.finish();
        }
        if let Some(relay) = self.relay.take() {
            relay.finish();
        }
        Ok(status)
    }

    /// Leaves it running (`-d`): when kiln exits it is reparented, and it ends with its
    /// container at the latest.
    pub fn detach(mut self) {
        self.released = true;
    }
}

impl Drop for RunningExec {
    fn drop(&mut self) {
        if !self.released {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

/// Starts `spec`'s command in its container and returns once it runs (its `execve`
/// succeeded) or with the reason it could not start (126/127 through
/// [`RuntimeError::command_exit_code`]).
pub fn exec_in_container(spec: &ExecSpec) -> Result<RunningExec, RuntimeError> {
    let cgroup_root = cgroup_root(spec.cgroup_root.as_deref());
    let target = Target::open(spec.container_pid, &spec.id)?;
    let plan = ExecPlan::build(spec, &target)?;
    let devnull = open_host_devnull()?;
    let (relay, ends) = match spec.tty || spec.detach {
        true => (None, None),
        false => StdioRelay::start(spec.interactive).map(|(r, e)| (Some(r), Some(e)))?,
    };
    let null = devnull.as_raw_fd();
    let (report_read, report_write) = cloexec_pipe()?;
    let (sync_write, sync_read) = crate::container::sync_socket()?;
    let (pid_read, pid_write) = cloexec_pipe()?;
    let console = match spec.tty {
        true => Some(console_socket()?),
        false => None,
    };
    let kiln = sys::pidfd_open(getpid().as_raw())
        .map_err(|e| RuntimeError::sys("pidfd_open")(Errno::from_raw(e)))?;
    let rootless = crate::userns::rootless();
    // As the container's own process does (`container::start`): spares the kernel's
    // global threadgroup lock. Not for an ordinary user's delegated (v2) cgroups.
    let self_join = SelfJoin::new(match rootless {
        true => Vec::new(),
        false => cgroups::container_self_join_files(&cgroup_root, &spec.id)?,
    });
    let fds = ExecFds {
        stdin: ends
            .as_ref()
            .and_then(|e| e.stdin.as_ref())
            .map_or(null, |f| f.as_raw_fd()),
        stdout: ends.as_ref().map_or(null, |e| e.stdout.as_raw_fd()),
        stderr: ends.as_ref().map_or(null, |e| e.stderr.as_raw_fd()),
        report: report_write.as_raw_fd(),
        sync: sync_read.as_raw_fd(),
        pid_out: pid_write.as_raw_fd(),
        console: console.as_ref().map_or(-1, |(_, child)| child.as_raw_fd()),
        parent: kiln.as_raw_fd(),
        cgroup_tasks: self_join.fds(),
    };
    let intermediate = fork_intermediate(&plan, &fds)?;
    // Only the children may hold these now: EOF on the pipes means they are done with them.
    drop((report_write, sync_read, pid_write, kiln, ends, devnull));
    let console = console.map(|(ours, _child)| ours);
    // An ordinary user's container has a cgroup only in its delegated subtree, and only
    // when it was given limits (see `container::container_cgroup`).
    let joined = match rootless {
        _ if self_join.by_child() => Ok(()),
        true => match crate::container::delegated_cgroup_root(&cgroup_root) {
            Ok(root) if cgroups::container_dirs(&root, &spec.id).is_ok_and(|d| !d.is_empty()) => {
                cgroups::join_container(&root, &spec.id, intermediate.as_raw())
            }
            _ => Ok(()),
        },
        false => cgroups::join_container(&cgroup_root, &spec.id, intermediate.as_raw()),
    };
    if let Err(e) = joined {
        let _ = kill(intermediate, Signal::SIGKILL);
        let _ = waitpid(intermediate, None);
        return Err(e.into());
    }
    // The intermediate waits for this byte, so nothing runs outside the cgroup.
    // (An intermediate that is gone failed first; its report says why.)
    let go = crate::container::let_go(&sync_write, "start the exec'd process");
    drop(sync_write);
    let pid = read_pid(&pid_read);
    let _ = wait_for(intermediate);
    go?;
    let Some(pid) = pid else {
        // The intermediate failed before it forked; its report says why.
        return Err(match read_report(&report_read)? {
            Some(report) => plan.error_for(report),
            None => RuntimeError::MalformedReport,
        });
    };
    let mut running = RunningExec {
        pid,
        tty: None,
        relay,
        released: false,
    };
    // The process sends the pty master before it execs; EOF means it failed first.
    if let Some(sock) = &console {
        let master = sys::recv_fd(sock.as_raw_fd()).map_err(|e| {
            RuntimeError::sys("receive the exec'd process's terminal")(Errno::from_raw(e))
        })?;
        if let Some(master) = master {
            running.tty = Some(TtySession::start(master, spec.interactive)?);
        }
    }
    match read_report(&report_read)? {
        None => {
            tracing::debug!(id = %spec.id, pid = pid.as_raw(), namespaces = %target.names(), "exec'd");
            Ok(running)
        }
        Some(report) => {
            let _ = running.wait();
            Err(plan.error_for(report))
        }
    }
}

/// The container's PID 1, held by a pidfd, and the namespaces it has that kiln does not.
struct Target {
    pidfd: OwnedFd,
    /// `CLONE_NEW*` flags of the namespaces to join.
    flags: c_int,
    /// The same namespaces as `/proc/PID/ns/*` fds, for kernels without pidfd `setns`.
    fds: Vec<(c_int, OwnedFd)>,
}

impl Target {
    /// Opens the process and its namespaces; an error unless it is alive and in the
    /// container's cgroup (a PID taken from a state file may have been reused).
    fn open(pid: i32, id: &str) -> Result<Target, RuntimeError> {
        let gone = || RuntimeError::ContainerGone(id.to_owned());
        let pidfd = sys::pidfd_open(pid).map_err(|_| gone())?;
        if !is_the_container(pid, id) {
            return Err(gone());
        }
        let mut flags = 0;
        let mut fds = Vec::new();
        for (name, flag) in NAMESPACES {
            let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
            let ours = Path::new("/proc/self/ns").join(name);
            let (Ok(a), Ok(b)) = (fs::metadata(&theirs), fs::metadata(&ours)) else {
                // A kernel without this namespace type: nothing to join.
                continue;
            };
            if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
                continue;
            }
            let fd = fs::File::open(&theirs).map_err(RuntimeError::io("open", &theirs))?;
            flags |= flag;
            fds.push((flag, OwnedFd::from(fd)));
        }
        // Opened while the process was alive: the ns files are its own, not a successor's.
        if sys::has_exited(pidfd.as_raw_fd()) {
            return Err(gone());
        }
        Ok(Target { pidfd, flags, fds })
    }

    /// The joined namespaces, for the debug log.
    fn names(&self) -> String {
        NAMESPACES
            .iter()
            .filter(|(_, flag)| self.flags & flag != 0)
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Whether `pid` (taken from a state file) is still the container's process: in its
/// cgroup; for a rootless kiln, which makes no cgroup, in a user namespace other than
/// the host's, as every container of an ordinary user is and no plain process of theirs,
/// with the container's upper dir under its root (another namespaced process of the
/// user's that took over the PID has another root).
fn is_the_container(pid: i32, id: &str) -> bool {
    match crate::userns::rootless() {
        true => {
            let host = fs::metadata("/proc/1/ns/user");
            let theirs = fs::metadata(format!("/proc/{pid}/ns/user"));
            let namespaced = match (host, theirs) {
                (Ok(h), Ok(t)) => (h.dev(), h.ino()) != (t.dev(), t.ino()),
                // The host's init is not ours to look at (hidepid): the process is enough.
                (Err(_), Ok(_)) => true,
                _ => false,
            };
            namespaced && root_is_the_containers(pid, id)
        }
        false => in_cgroup(pid, id),
    }
}

/// Whether the root mount of process `pid` is an overlay whose upper dir is container
/// `id`'s (`…/containers/ID/upper` in its options). A mountinfo kiln may not read says
/// nothing against it.
fn root_is_the_containers(pid: i32, id: &str) -> bool {
    let Ok(mountinfo) = fs::read_to_string(format!("/proc/{pid}/mountinfo")) else {
        return true;
    };
    let upper = "upperdir=";
    let own = format!("/containers/{id}/upper");
    mountinfo
        .lines()
        .filter(|line| line.split(' ').nth(4) == Some("/"))
        .any(|line| {
            line.split(',')
                .filter_map(|option| option.strip_prefix(upper))
                .any(|dir| dir.ends_with(&own))
        })
}

/// Whether `pid` is in the cgroup `kiln-<id>` (in any hierarchy).
fn in_cgroup(pid: i32, id: &str) -> bool {
    let suffix = format!("/{CGROUP_PARENT}/{CGROUP_PREFIX}{id}");
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|text| text.lines().any(|l| l.ends_with(&suffix)))
}

/// Everything the two children read, prepared before the fork.
struct ExecPlan {
    pidfd: RawFd,
    ns_flags: c_int,
    ns_fds: Vec<(c_int, RawFd)>,
    cwd: CString,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    argv: CStringArray,
    envp: CStringArray,
    candidates: ExecCandidates,
    confine: ConfinePlan,
    tty: bool,
    winsize: libc::winsize,
    keep_stdin: bool,
    detach: bool,
    // Kept for error messages.
    argv0: String,
    cwd_text: String,
}

/// Host fds the children start from. Optional ones are -1.
struct ExecFds {
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    /// Write end of the close-on-exec error pipe (both children).
    report: RawFd,
    /// Read end of the pipe on which kiln says "go" once the intermediate is in the cgroup.
    sync: RawFd,
    /// Write end of the pipe the intermediate sends the new process's PID on.
    pid_out: RawFd,
    /// With a tty: the socket the pty master goes to kiln on.
    console: RawFd,
    /// A pidfd of kiln, to notice it died before `PR_SET_PDEATHSIG` was set.
    parent: RawFd,
    /// The container's v1 `tasks` files the intermediate moves itself in through (-1 for
    /// none; all -1 when kiln moves it).
    cgroup_tasks: [RawFd; MAX_CGROUP_TASKS],
}

impl ExecPlan {
    fn build(spec: &ExecSpec, target: &Target) -> Result<ExecPlan, RuntimeError> {
        let argv0 = match spec.argv.first() {
            Some(a) if !a.is_empty() => a.clone(),
            _ => return Err(super::InvalidSandbox::EmptyCommand.into()),
        };
        if !spec.cwd.starts_with('/') {
            return Err(super::InvalidSandbox::RelativeWorkdir(spec.cwd.clone()).into());
        }
        check_ids(spec.uid, spec.gid, &spec.groups)?;
        Ok(ExecPlan {
            pidfd: target.pidfd.as_raw_fd(),
            ns_flags: target.flags,
            ns_fds: target
                .fds
                .iter()
                .map(|(flag, fd)| (*flag, fd.as_raw_fd()))
                .collect(),
            cwd: c_string(&spec.cwd, "workdir")?,
            uid: spec.uid,
            gid: spec.gid,
            groups: spec.groups.clone(),
            argv: CStringArray::new(&spec.argv, "command argument")?,
            envp: CStringArray::new(&spec.env, "environment variable")?,
            candidates: ExecCandidates::new(&argv0, &spec.env)?,
            confine: spec.confinement.plan()?,
            tty: spec.tty,
            winsize: initial_window_size(),
            keep_stdin: spec.interactive || spec.tty,
            detach: spec.detach,
            argv0,
            cwd_text: spec.cwd.clone(),
        })
    }

    /// Names the failed stage with the path, name or id it was working on.
    fn error_for(&self, report: Report) -> RuntimeError {
        let errno = Errno::from_raw(report.errno);
        let target = match report.stage {
            Stage::Exec if report.detail == NO_DETAIL && errno == Errno::ENOENT => {
                return RuntimeError::CommandNotFound {
                    command: self.argv0.clone(),
                    path: self.candidates.path_var.clone(),
                };
            }
            Stage::Exec => self
                .candidates
                .paths
                .get(report.detail as usize)
                .map(|c| c.to_string_lossy().into_owned())
                .or_else(|| Some(self.argv0.clone())),
            Stage::ChdirWorkdir | Stage::CheckWorkdir => Some(self.cwd_text.clone()),
            Stage::SetGroups => Some(format!("{:?}", self.groups)),
            Stage::SetGid => Some(self.gid.to_string()),
            Stage::SetUid => Some(self.uid.to_string()),
            Stage::SetRlimit => self
                .confine
                .rlimits
                .get(report.detail as usize)
                .map(|l| l.name().to_owned()),
            _ => None,
        };
        RuntimeError::Setup {
            stage: report.stage.name(),
            target,
            errno,
        }
    }
}

/// Forks the intermediate with every signal blocked (it resets them), so no kiln signal
/// handler runs in it.
fn fork_intermediate(plan: &ExecPlan, fds: &ExecFds) -> Result<Pid, RuntimeError> {
    let forked = with_signals_blocked(|| {
        let forked = sys::raw_fork();
        if forked == Ok(0) {
            intermediate(plan, fds);
        }
        forked
    })?;
    forked
        .map(Pid::from_raw)
        .map_err(|e| RuntimeError::sys("fork")(Errno::from_raw(e)))
}

/// The intermediate: waits until it is in the cgroup, joins the namespaces, forks the
/// process that execs (as kiln's child, in the container's PID namespace), sends its PID
/// and exits. Makes raw system calls only (it is a copy of a multi-threaded process).
fn intermediate(plan: &ExecPlan, fds: &ExecFds) -> ! {
    child::reset_signals();
    if let Err(errno) = child::join_own_cgroups(&fds.cgroup_tasks) {
        fail(fds.report, at(Stage::JoinCgroup)(errno));
    }
    if !matches!(sys::read_byte(fds.sync), Ok(true)) {
        exit(EXIT_SETUP_FAILED);
    }
    if let Err(errno) = join_namespaces(plan) {
        fail(fds.report, at(Stage::JoinNamespaces)(errno));
    }
    match sys::raw_fork_with(libc::CLONE_PARENT) {
        Ok(0) => {
            let report = match run_command(plan, fds) {
                Err(report) => report,
                Ok(never) => match never {},
            };
            fail(REPORT_FD, report)
        }
        Ok(pid) => {
            let _ = sys::write_all(fds.pid_out, &pid.to_ne_bytes());
            exit(0)
        }
        Err(errno) => fail(fds.report, at(Stage::ForkProcess)(errno)),
    }
}

/// One `setns` on the pidfd for every namespace at once (Linux ≥ 5.8); else each
/// namespace's file in turn.
fn join_namespaces(plan: &ExecPlan) -> Result<(), sys::Errno> {
    if plan.ns_flags == 0 {
        return Ok(());
    }
    // SAFETY: the pidfd stays open for as long as the plan exists.
    let pidfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(plan.pidfd) };
    if nix::sched::setns(pidfd, CloneFlags::from_bits_retain(plan.ns_flags)).is_ok() {
        return Ok(());
    }
    for (flag, fd) in &plan.ns_fds {
        // SAFETY: as above, for the namespace fds.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
        nix::sched::setns(fd, CloneFlags::from_bits_retain(*flag)).map_err(|e| e as i32)?;
    }
    Ok(())
}

/// The process that execs the command, inside every namespace of the container.
fn run_command(plan: &ExecPlan, fds: &ExecFds) -> Result<std::convert::Infallible, Report> {
    if !plan.detach {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        if sys::has_exited(fds.parent) {
            exit(EXIT_SETUP_FAILED);
        }
    }
    arrange_stdio(fds).map_err(at(Stage::Stdio))?;
    child::new_session().map_err(at(Stage::Session))?;
    if plan.tty {
        child::set_up_console(&plan.winsize).map_err(at(Stage::Session))?;
    } else if plan.detach {
        container_devnull_as_stdio().map_err(at(Stage::OpenDevNull))?;
    } else if !plan.keep_stdin {
        child::replace_stdin().map_err(at(Stage::OpenDevNull))?;
    }
    child::enter_dir_inside_root(&plan.cwd)?;
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(STEP_UMASK) };
    plan.confine
        .apply(|| child::switch_user(plan.uid, plan.gid, &plan.groups))?;
    sys::close_from(FIRST_CLOSED_FD).map_err(at(Stage::CloseFds))?;
    Err(child::exec_command(
        &plan.candidates.paths,
        &plan.argv,
        &plan.envp,
        plan.candidates.searches_path,
    ))
}

/// The error pipe on [`REPORT_FD`], the console socket on [`CONSOLE_FD`], stdio on 0–2;
/// every other inherited fd closed (no host fd reaches the command).
fn arrange_stdio(fds: &ExecFds) -> Result<(), sys::Errno> {
    let first_copy = FIRST_CLOSED_FD;
    let copy = |fd: RawFd| sys::dup_above(fd, first_copy);
    let stdin = copy(fds.stdin)?;
    let stdout = copy(fds.stdout)?;
    let stderr = copy(fds.stderr)?;
    let report = copy(fds.report)?;
    let console = match fds.console {
        -1 => None,
        fd => Some(copy(fd)?),
    };
    sys::dup_onto(report, REPORT_FD, true)?;
    match console {
        Some(console) => sys::dup_onto(console, CONSOLE_FD, true)?,
        // SAFETY: closing an fd number this process does not use; EBADF is fine.
        None => unsafe {
            libc::close(CONSOLE_FD);
        },
    }
    // SAFETY: as above: fd 4 has no use here.
    unsafe { libc::close(REPORT_FD + 1) };
    sys::dup_onto(stdin, 0, false)?;
    sys::dup_onto(stdout, 1, false)?;
    sys::dup_onto(stderr, 2, false)?;
    sys::close_from(first_copy)
}

/// `-d`: stdio is the container's own `/dev/null` (its output goes nowhere, as docker's).
fn container_devnull_as_stdio() -> Result<(), sys::Errno> {
    let null = sys::open(c"/dev/null", libc::O_RDWR | libc::O_NOFOLLOW)?;
    for fd in 0..=2 {
        sys::dup_onto(null.as_raw_fd(), fd, false)?;
    }
    Ok(())
}

fn fail(report_fd: RawFd, report: Report) -> ! {
    let _ = sys::write_all(report_fd, &report.to_bytes());
    exit(child::exit_code(&report))
}

fn exit(code: c_int) -> ! {
    // SAFETY: _exit ends the process without running the parent's atexit handlers.
    unsafe { libc::_exit(code) }
}

/// The PID the intermediate sent, or `None` when it ended without one.
fn read_pid(pipe: &OwnedFd) -> Option<Pid> {
    let mut buf = [0u8; 4];
    let mut filled = 0;
    while filled < buf.len() {
        match read(pipe, &mut buf[filled..]) {
            Ok(0) => return None,
            Ok(n) => filled += n,
            Err(Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
    Some(Pid::from_raw(i32::from_ne_bytes(buf)))
}

fn cloexec_pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    pipe2(OFlag::O_CLOEXEC).map_err(RuntimeError::sys("create a pipe"))
}

/// A connected unix socket pair: (kiln's end, the process's end).
fn console_socket() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    super::container::console_socket()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_whose_root_is_no_containers_overlay_is_not_the_container() {
        // The test's own root is the host's (or the test machine's), never an overlay
        // with a kiln container's upper dir.
        let me = std::process::id() as i32;
        assert!(!root_is_the_containers(me, "0123abcd"));
        // A process kiln may not look at says nothing against it.
        assert!(root_is_the_containers(i32::MAX, "0123abcd"));
    }
}
