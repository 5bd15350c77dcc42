//! The code that runs in the clone child, between `clone` and `execve`.
//!
//! kiln is multi-threaded (zstd workers, progress threads), and the child is a copy of one
//! thread of it: another thread may have held the allocator's lock at the moment of `clone`,
//! so the child must never allocate, and it must not call glibc functions that assume the
//! parent's threads exist. It reads the [`ChildPlan`] prepared by the parent and makes raw
//! system calls only. On failure it writes a fixed-size [`Report`] to the error pipe (fd 3,
//! close-on-exec) and exits; a successful `execve` closes the pipe, which the parent sees as
//! EOF.

use std::convert::Infallible;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::ptr;

use libc::{c_int, c_long, c_void};

use super::container_mounts;
use super::devices;
use super::error::{Report, Stage, NO_DETAIL};
use super::host_devices;
use super::init::{self, InitFds};
use super::overlay;
use super::plan::{ChildArgs, ChildFds, ChildPlan, MAX_CGROUP_TASKS};
use super::sys::{self, Errno};
use super::sysctls;

/// Where the error pipe lives once stdio is arranged; closed by `execve` (close-on-exec).
pub(crate) const REPORT_FD: RawFd = 3;
/// Where the init's status pipe lives (containers with an init only; close-on-exec).
const STATUS_FD: RawFd = 4;
/// Where the console socket lives until the pty master has been sent (`tty` only).
pub(crate) const CONSOLE_FD: RawFd = 5;
/// Where the pipe the parent says "go on" through lives during setup, until its second
/// byte (closed then).
const SYNC_FD: RawFd = 6;
/// The first fd that is neither stdio nor one of the above; fds the plan keeps for setup
/// ([`ChildPlan::kept_fds`]) follow from here.
const FIRST_FREE_FD: RawFd = 7;
/// The most fds a plan may keep for setup (a step's mounts, a container's binds).
pub(crate) const MAX_KEPT_FDS: usize = 256;
/// Exit codes of a child that failed before exec (the parent reads the report instead).
const EXIT_NOT_FOUND: c_int = 127;
const EXIT_NOT_EXECUTABLE: c_int = 126;
pub(crate) const EXIT_SETUP_FAILED: c_int = 125;
/// The umask build steps start with, whatever kiln's own is, so builds are reproducible.
pub(crate) const STEP_UMASK: libc::mode_t = 0o022;
/// Signals 1..NSIG on Linux.
const NSIG: c_int = 65;

/// Entry point given to `clone`. `arg` points to a [`ChildArgs`] in the child's copy of the
/// parent's memory.
pub(crate) extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: run_step passes a pointer to a live ChildArgs; without CLONE_VM the child has
    // its own copy of it.
    let args = unsafe { &*(arg as *const ChildArgs) };
    let mut child = Child {
        plan: args.plan,
        fds: args.fds,
        report_fd: args.fds.report,
    };
    let report = match child.run() {
        Err(report) => report,
        Ok(never) => match never {},
    };
    // Nothing more can be done if the parent is gone; the exit code still tells.
    let _ = sys::write_all(child.report_fd, &report.to_bytes());
    // SAFETY: _exit ends the process without running the parent's atexit handlers.
    unsafe { libc::_exit(exit_code(&report)) }
}

/// The exit code of a child that failed before or at exec, as a shell would give.
pub(crate) fn exit_code(report: &Report) -> c_int {
    match (report.stage, report.errno) {
        (Stage::Exec, libc::ENOENT | libc::ENOTDIR) => EXIT_NOT_FOUND,
        (Stage::Exec, _) => EXIT_NOT_EXECUTABLE,
        _ => EXIT_SETUP_FAILED,
    }
}

pub(crate) fn at(stage: Stage) -> impl Fn(Errno) -> Report {
    move |errno| Report {
        stage,
        errno,
        detail: NO_DETAIL,
    }
}

fn at_item(stage: Stage, index: usize) -> impl Fn(Errno) -> Report {
    move |errno| Report {
        stage,
        errno,
        detail: index as u32,
    }
}

fn from_stage((stage, errno): (Stage, Errno)) -> Report {
    Report {
        stage,
        errno,
        detail: NO_DETAIL,
    }
}

struct Child<'a> {
    plan: &'a ChildPlan,
    fds: ChildFds,
    report_fd: RawFd,
}

impl Child<'_> {
    fn run(&mut self) -> Result<Infallible, Report> {
        reset_signals();
        self.die_with_parent();
        let plan = self.plan;
        let container = plan.container.as_ref();
        self.wait_for_parent();
        join_own_cgroups(&self.fds.cgroup_tasks).map_err(at(Stage::JoinCgroup))?;
        if plan.user_namespace {
            become_namespace_root().map_err(at(Stage::SetUid))?;
        }
        self.arrange_stdio().map_err(at(Stage::Stdio))?;
        new_session().map_err(at(Stage::Session))?;
        overlay::make_mounts_private().map_err(at(Stage::PrivateMounts))?;
        if self.plan.new_netns {
            bring_up_loopback().map_err(at(Stage::Loopback))?;
        }
        // Modes of created dirs and device nodes are given exactly.
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(0) };
        self.build_root()?;
        if let Some(c) = container.filter(|c| c.tty) {
            set_up_console(&c.winsize).map_err(at(Stage::Session))?;
        }
        if !container.is_some_and(|c| c.keep_stdin) {
            replace_stdin().map_err(at(Stage::OpenDevNull))?;
        }
        self.set_hostname().map_err(at(Stage::Hostname))?;
        self.enter_workdir()?;
        if container.is_some_and(|c| c.read_only_root) {
            container_mounts::make_root_read_only().map_err(at(Stage::ReadOnlyRoot))?;
        }
        // SAFETY: as above.
        unsafe { libc::umask(STEP_UMASK) };
        self.wait_for_cgroup()?;
        plan.confine.apply(|| self.switch_user())?;
        sys::close_from(FIRST_FREE_FD).map_err(at(Stage::CloseFds))?;
        match plan.init {
            true => {
                let fds = InitFds {
                    report: REPORT_FD,
                    status: STATUS_FD,
                    tty: container.is_some_and(|c| c.tty),
                };
                Err(at(Stage::StartInit)(init::run(
                    &fds,
                    &|| self.exec(),
                    exit_code,
                )))
            }
            false => Err(self.exec()),
        }
    }

    /// Blocks until the parent says to go on. If kiln gave up instead, the socket reads as
    /// EOF: leave quietly (what this process mounted goes with its namespaces).
    fn wait_for_parent(&self) {
        if !matches!(sys::read_byte(self.fds.sync), Ok(true)) {
            // SAFETY: as in child_main.
            unsafe { libc::_exit(EXIT_SETUP_FAILED) };
        }
    }

    /// Blocks until the parent has put this process in its cgroups (it does so while the
    /// root is built), so that nothing of the container runs unaccounted: called before
    /// privileges are dropped, anything forks or the command is executed. Then enters a
    /// cgroup namespace rooted there when asked.
    fn wait_for_cgroup(&self) -> Result<(), Report> {
        self.wait_for_parent();
        // SAFETY: closing the sync socket's fd, which nothing uses any more.
        unsafe { libc::close(self.fds.sync) };
        if self.plan.cgroup_namespace {
            // SAFETY: unshare with a flag only.
            sys::check(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } as c_long)
                .map_err(at(Stage::CgroupNamespace))?;
        }
        Ok(())
    }

    /// The step dies with the kiln thread that started it (`run_step` blocks that thread
    /// until the step ends). If kiln is already gone, give up silently.
    fn die_with_parent(&self) {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        if sys::has_exited(self.fds.parent) {
            // SAFETY: as in child_main.
            unsafe { libc::_exit(EXIT_SETUP_FAILED) };
        }
    }

    /// Puts the error pipe on fd 3 (and the status pipe on 4) and stdio on 0–2, the fds the
    /// plan needs during setup (detached cache mounts) on [`FIRST_FREE_FD`] and up, then
    /// closes every other inherited fd before anything looks at the filesystem (no host
    /// directory fd survives; the kept ones are closed before exec).
    fn arrange_stdio(&mut self) -> Result<(), Errno> {
        let f = self.fds;
        let kept = self.plan.kept_fds();
        if kept.len() > MAX_KEPT_FDS {
            return Err(libc::EMFILE);
        }
        let first_copy = FIRST_FREE_FD + kept.len() as RawFd;
        // Copies above every fixed number first, so that moving one onto its fixed number
        // never clobbers another.
        let copy = |fd: RawFd| sys::dup_above(fd, first_copy);
        let stdout = copy(f.stdout)?;
        let stderr = copy(f.stderr)?;
        let report = copy(f.report)?;
        let stdin = copy(f.stdin)?;
        let optional = |fd: RawFd| match fd {
            -1 => Ok(None),
            fd => copy(fd).map(Some),
        };
        let sync = copy(f.sync)?;
        let status = optional(f.status)?;
        let console = optional(f.console)?;
        let mut kept_copies = [-1; MAX_KEPT_FDS];
        for (slot, fd) in kept_copies.iter_mut().zip(kept) {
            *slot = copy(fd.as_raw_fd())?;
        }
        sys::dup_onto(report, REPORT_FD, true)?;
        self.report_fd = REPORT_FD;
        sys::dup_onto(sync, SYNC_FD, true)?;
        self.fds.sync = SYNC_FD;
        if let Some(status) = status {
            sys::dup_onto(status, STATUS_FD, true)?;
        }
        if let Some(console) = console {
            sys::dup_onto(console, CONSOLE_FD, true)?;
        }
        // The fixed numbers not in use may hold fds kiln leaked by mistake.
        for (fd, used) in [
            (STATUS_FD, status.is_some()),
            (CONSOLE_FD, console.is_some()),
        ] {
            if !used {
                // SAFETY: closing an fd this process does not use; EBADF is fine.
                unsafe { libc::close(fd) };
            }
        }
        sys::dup_onto(stdin, 0, false)?;
        sys::dup_onto(stdout, 1, false)?;
        sys::dup_onto(stderr, 2, false)?;
        for (i, fd) in kept_copies[..kept.len()].iter().enumerate() {
            sys::dup_onto(*fd, FIRST_FREE_FD + i as RawFd, true)?;
        }
        sys::close_from(first_copy)
    }

    /// Overlay, pseudo filesystems, host files and mounts, then `pivot_root` into it.
    fn build_root(&self) -> Result<(), Report> {
        let plan = self.plan;
        let root = match plan.container.as_ref().and_then(|c| c.own_root) {
            Some(index) => attach_own_root(FIRST_FREE_FD + index as RawFd)?,
            None => {
                overlay::mount_overlay_root(&plan.mount).map_err(from_stage)?;
                sys::open(&plan.mount.root, libc::O_PATH | libc::O_DIRECTORY)
                    .map_err(at(Stage::OpenRoot))?
            }
        };
        let shm_size = plan
            .container
            .as_ref()
            .map_or(devices::DEFAULT_SHM_SIZE, |c| c.shm_size.as_c_str());
        devices::mount_pseudo_filesystems(root.as_fd(), shm_size, plan.pseudo_fs)
            .map_err(from_stage)?;
        if let Some(c) = &plan.container {
            // In the fresh /dev and /proc, before masks and the read-only /proc/sys.
            host_devices::make_all(root.as_fd(), &c.devices, FIRST_FREE_FD)?;
            sysctls::write_all(root.as_fd(), &c.sysctls)?;
        }
        for (i, (host, rel)) in plan.etc_binds.iter().enumerate() {
            let bound = match plan.container {
                // The parent made the copies of the files, the first trees.
                Some(_) => {
                    container_mounts::bind_file_over(root.as_fd(), FIRST_FREE_FD + i as RawFd, rel)
                }
                None => devices::bind_host_file(root.as_fd(), host, rel).map(drop),
            };
            bound.map_err(at_item(Stage::BindEtcFile, i))?;
        }
        if let Some(step) = &plan.step_mounts {
            step.mount_all(root.as_fd(), FIRST_FREE_FD)?;
        }
        if let Some(c) = &plan.container {
            for (i, m) in c.mounts.iter().enumerate() {
                container_mounts::mount_user(root.as_fd(), m, i, FIRST_FREE_FD)?;
            }
        }
        container_mounts::mask_paths(root.as_fd())?;
        container_mounts::make_paths_read_only(root.as_fd())?;
        pivot_into(root).map_err(at(Stage::PivotRoot))
    }

    fn set_hostname(&self) -> Result<(), Errno> {
        let name = self.plan.hostname.as_bytes();
        // SAFETY: the buffer is valid for its length.
        sys::check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } as c_long)
            .map(drop)
    }

    /// Creates the workdir like Docker's `WORKDIR` (root-owned, 0755), enters it, and checks
    /// the result is inside the root. Runs after `pivot_root`, so symlinks in the image
    /// resolve inside it.
    fn enter_workdir(&self) -> Result<(), Report> {
        for (i, dir) in self.plan.workdir_prefixes.iter().enumerate() {
            sys::mkdir_allow_existing(dir, 0o755).map_err(at_item(Stage::MkdirWorkdir, i))?;
        }
        enter_dir_inside_root(&self.plan.workdir)
    }

    fn switch_user(&self) -> Result<(), Report> {
        switch_user(self.plan.uid, self.plan.gid, &self.plan.groups)
    }

    fn exec(&self) -> Report {
        let p = self.plan;
        exec_command(&p.exec_candidates, &p.argv, &p.envp, p.searches_path)
    }
}

/// In a user namespace of its own (maps written by the parent), the child still has the
/// host root's ids, which the namespace does not map: it takes the namespace's root
/// (keeping its capabilities there) and drops kiln's supplementary groups.
fn become_namespace_root() -> Result<(), Errno> {
    sys::syscall3(libc::SYS_setgroups, 0, 0, 0)?;
    sys::syscall3(libc::SYS_setresgid, 0, 0, 0)?;
    sys::syscall3(libc::SYS_setresuid, 0, 0, 0)
}

/// A container with a user namespace of its own gets its root from the parent, as the
/// detached overlay kept at `fd`: attached over `/` (the one mount point the child can
/// always reach, since host paths need not be open to the namespace's root), it is the
/// root `pivot_into` enters.
fn attach_own_root(fd: RawFd) -> Result<OwnedFd, Report> {
    sys::attach_at_path(fd, c"/").map_err(at(Stage::MountOverlay))?;
    // SAFETY: the fd is one the child keeps open through its setup.
    let mount = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    sys::open_in_root(mount, c".", libc::O_DIRECTORY).map_err(at(Stage::OpenRoot))
}

/// Enters `dir` and checks that the result is inside the process's root.
pub(crate) fn enter_dir_inside_root(dir: &std::ffi::CStr) -> Result<(), Report> {
    sys::chdir(dir).map_err(at(Stage::ChdirWorkdir))?;
    // glibc's getcwd fails with ENOENT when the cwd is unreachable from the root.
    let mut buf = [0 as libc::c_char; 4096];
    // SAFETY: the buffer is valid for its length.
    let cwd = unsafe { libc::getcwd(buf.as_mut_ptr(), buf.len()) };
    if cwd.is_null() || buf[0] != b'/' as libc::c_char {
        return Err(at(Stage::CheckWorkdir)(libc::ENOENT));
    }
    Ok(())
}

/// Sets the supplementary groups, then gid and uid. Raw system calls on purpose: glibc's
/// wrappers would try to sync the parent's threads.
pub(crate) fn switch_user(uid: u32, gid: u32, groups: &[libc::gid_t]) -> Result<(), Report> {
    let count = groups.len() as c_long;
    match sys::syscall3(libc::SYS_setgroups, count, groups.as_ptr() as c_long, 0) {
        // A user namespace with a single-id map denies setgroups; with no group to
        // set there is nothing it would have changed.
        Err(libc::EPERM) if groups.is_empty() => {}
        other => other.map_err(at(Stage::SetGroups))?,
    }
    let gid = gid as c_long;
    sys::syscall3(libc::SYS_setresgid, gid, gid, gid).map_err(at(Stage::SetGid))?;
    let uid = uid as c_long;
    sys::syscall3(libc::SYS_setresuid, uid, uid, uid).map_err(at(Stage::SetUid))
}

/// Like `execvpe`: tries each candidate; a permission error is remembered and reported
/// if no later candidate runs, "not there" errors move on, anything else stops.
pub(crate) fn exec_command(
    candidates: &[std::ffi::CString],
    argv: &super::plan::CStringArray,
    envp: &super::plan::CStringArray,
    searches_path: bool,
) -> Report {
    let mut denied = None;
    let mut last = Report {
        stage: Stage::Exec,
        errno: libc::ENOENT,
        detail: 0,
    };
    for (i, path) in candidates.iter().enumerate() {
        // SAFETY: path, argv and envp are NUL-terminated / NULL-terminated arrays.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let report = at_item(Stage::Exec, i)(sys::last_errno());
        match report.errno {
            libc::EACCES => denied = denied.or(Some(report)),
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT
                if searches_path => {}
            _ => return report,
        }
        last = report;
    }
    match (denied, searches_path) {
        (Some(report), _) => report,
        // Not in any $PATH dir: the parent reports "executable file not found in $PATH".
        (None, true) => Report {
            stage: Stage::Exec,
            errno: libc::ENOENT,
            detail: NO_DETAIL,
        },
        (None, false) => last,
    }
}

/// Handlers and the signal mask are inherited through `clone`; kiln's handlers must not run
/// here, and ignored signals (Rust ignores SIGPIPE) would stay ignored across `execve`. The
/// parent blocked every signal around `clone`, so none can arrive before this.
pub(crate) fn reset_signals() {
    // SAFETY: a zeroed sigaction with SIG_DFL is valid; errors (SIGKILL, SIGSTOP, glibc's
    // internal signals) are expected and harmless.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for sig in 1..NSIG {
            libc::sigaction(sig, &default, ptr::null_mut());
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
    }
}

/// A new network namespace starts with `lo` down.
fn bring_up_loopback() -> Result<(), Errno> {
    let sock = sys::socket_for_ioctl()?;
    // SAFETY: a zeroed ifreq is valid; it names "lo" and the ioctls fill or read its flags.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
            *dst = *src as libc::c_char;
        }
        sys::check(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) as c_long)?;
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        sys::check(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) as c_long)?;
    }
    Ok(())
}

/// `pivot_root(".", ".")` stacks the old root on the new one; detaching "." then removes the
/// old root (and every host mount under it) from this namespace.
fn pivot_into(root: OwnedFd) -> Result<(), Errno> {
    // SAFETY: plain system calls on a valid fd and static strings.
    unsafe {
        sys::check(libc::fchdir(root.as_raw_fd()) as c_long)?;
        sys::check(libc::syscall(
            libc::SYS_pivot_root,
            c".".as_ptr(),
            c".".as_ptr(),
        ))?;
        sys::check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH) as c_long)?;
    }
    drop(root);
    sys::chdir(c"/")
}

/// A session of its own, so the container cannot reach kiln's terminal through
/// `/dev/tty`.
pub(crate) fn new_session() -> Result<(), Errno> {
    // SAFETY: a plain system call; the child is not a process group leader (new pid).
    sys::check(unsafe { libc::setsid() } as c_long).map(drop)
}

/// Allocates the container's terminal in its own devpts (so it is `/dev/pts/0` inside,
/// like with runc), sends the master to kiln over the console socket, and makes the slave
/// stdio and the controlling terminal. Runs after `pivot_root`.
pub(crate) fn set_up_console(size: &libc::winsize) -> Result<(), Errno> {
    let master = sys::open(c"/dev/ptmx", libc::O_RDWR | libc::O_NOCTTY)?;
    let unlock: c_int = 0;
    // SAFETY: ioctls on the master with valid pointers.
    let slave = unsafe {
        sys::check(libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) as c_long)?;
        if size.ws_row != 0 {
            sys::check(libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, size) as c_long)?;
        }
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
        sys::check(libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) as c_long)? as RawFd
    };
    let sent = sys::send_fd(CONSOLE_FD, master.as_raw_fd());
    drop(master);
    // SAFETY: the console socket is not needed any more.
    unsafe { libc::close(CONSOLE_FD) };
    let result = sent.and_then(|()| {
        for fd in 0..=2 {
            sys::dup_onto(slave, fd, false)?;
        }
        // SAFETY: fd 0 is now the slave; this session has no controlling terminal yet.
        sys::check(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } as c_long).map(drop)
    });
    // SAFETY: closing the extra slave fd.
    unsafe { libc::close(slave) };
    result
}

/// Stdin becomes the step's own `/dev/null` (a node kiln made in its `/dev` tmpfs).
pub(crate) fn replace_stdin() -> Result<(), Errno> {
    let null = sys::open(c"/dev/null", libc::O_RDWR | libc::O_NOFOLLOW)?;
    sys::dup_onto(null.as_raw_fd(), 0, false)
}

/// Moves this single-threaded process (a clone child, `kiln exec`'s intermediate) into its
/// v1 cgroups by writing `0` to each `tasks` file the parent opened (-1: none), which the
/// kernel does without its global threadgroup lock (see `Cgroup::self_join_files`). Called
/// first thing, so the whole setup is accounted. Allocation-free.
pub(crate) fn join_own_cgroups(tasks: &[RawFd; MAX_CGROUP_TASKS]) -> Result<(), Errno> {
    for &fd in tasks.iter().filter(|fd| **fd >= 0) {
        sys::write_all(fd, b"0")?;
    }
    Ok(())
}
