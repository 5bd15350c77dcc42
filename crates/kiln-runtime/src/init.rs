//! The built-in init: PID 1 of a container when `init` is on (`kiln run --init`, the
//! default).
//!
//! A command that is not written to be PID 1 neither reaps the orphans that get re-parented
//! to it nor reacts to signals it did not set handlers for (the kernel drops those for a
//! namespace's init). So the clone child, once everything is set up (root, user,
//! capabilities, seccomp), forks the command and stays as PID 1: it reaps every zombie,
//! forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to the command,
//! and exits when the command does, which makes the kernel kill whatever else is left in
//! the namespace.
//!
//! Exit status: a PID 1 cannot kill itself with a signal, so the init exits with the
//! shell's code (the command's code, or 128 + N when signal N killed it), and also writes
//! the command's raw wait status on the *status pipe* (fd 4, close-on-exec) just before
//! that, so the parent reports `Signaled(N)` exactly instead of guessing from the code.
//!
//! Like the rest of the child it allocates nothing: the signal set lives on the stack and
//! waiting is `sigwaitinfo` on blocked signals.

use std::os::fd::RawFd;
use std::ptr;

use libc::c_int;

use super::error::Report;
use super::sys::{self, Errno};

/// Signals the init passes on to the command.
const FORWARDED: [c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// The init is kiln's own process image, not a program of the container. Left dumpable,
/// it would let the container's root open `/proc/1/exe` — kiln's binary on the host, the
/// way into CVE-2019-5736 — and `/proc/1/mem`, `/proc/1/root`, `/proc/1/environ`.
/// Non-dumpable, those need CAP_SYS_PTRACE, which containers do not get by default. The
/// command is unaffected: `execve` makes it dumpable again.
fn make_undumpable() -> Result<(), Errno> {
    // SAFETY: prctl with integer arguments only.
    sys::check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } as libc::c_long).map(drop)
}

/// Length of the status record on the status pipe (a native-endian `c_int`).
pub(crate) const STATUS_LEN: usize = 4;

/// Where the init keeps what it needs.
pub(crate) struct InitFds {
    /// The error pipe; the init closes its copy so that the command's `execve` is seen.
    pub report: RawFd,
    /// The status pipe.
    pub status: RawFd,
    /// Whether stdin is a terminal whose foreground process group should be the command's.
    pub tty: bool,
}

/// Forks the command (`exec` runs in the new process and returns only on failure), then
/// reaps and forwards until the command ends; exits with its status. Returns only if the
/// fork fails.
pub(crate) fn run(
    fds: &InitFds,
    exec: &dyn Fn() -> Report,
    exit_code: fn(&Report) -> c_int,
) -> Errno {
    if let Err(e) = make_undumpable() {
        return e;
    }
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid set pointer; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        // Blocked before the fork, so nothing sent from now on is lost.
        libc::sigprocmask(libc::SIG_BLOCK, &set, ptr::null_mut());
    }
    let command = match sys::raw_fork() {
        Ok(0) => become_command(fds, exec, exit_code),
        Ok(pid) => pid,
        Err(e) => return e,
    };
    // SAFETY: closing our copy of the error pipe; the command keeps its own until exec.
    unsafe { libc::close(fds.report) };
    loop {
        // SAFETY: valid set; no siginfo wanted.
        let sig = unsafe { libc::sigwaitinfo(&set, ptr::null_mut()) };
        match sig {
            libc::SIGCHLD => {
                if let Some(status) = reap(command) {
                    finish(fds.status, status);
                }
            }
            s if s > 0 => {
                // SAFETY: kill with plain integers; the command may be gone already.
                unsafe { libc::kill(command, s) };
            }
            // EINTR (a stopped-and-continued init): wait again.
            _ => {}
        }
    }
}

/// In the forked process: take the terminal's foreground, unblock signals, exec.
fn become_command(fds: &InitFds, exec: &dyn Fn() -> Report, exit_code: fn(&Report) -> c_int) -> ! {
    if fds.tty {
        // Its own process group in the foreground, so ^C reaches the command once, from the
        // terminal, rather than the init too. tcsetpgrp from a background group raises
        // SIGTTOU unless it is blocked.
        // SAFETY: plain system calls on fd 0 and a stack signal set.
        unsafe {
            let mut ttou: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut ttou);
            libc::sigaddset(&mut ttou, libc::SIGTTOU);
            libc::sigprocmask(libc::SIG_BLOCK, &ttou, ptr::null_mut());
            libc::setpgid(0, 0);
            let me = libc::getpid();
            libc::ioctl(0, libc::TIOCSPGRP, &me as *const libc::pid_t);
        }
    }
    // SAFETY: an empty mask, as the command should start with.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut());
    }
    let report = exec();
    let _ = sys::write_all(fds.report, &report.to_bytes());
    // SAFETY: ends the forked process without unwinding.
    unsafe { libc::_exit(exit_code(&report)) }
}

/// Reaps every exited child; returns the command's wait status once it is among them.
fn reap(command: libc::pid_t) -> Option<c_int> {
    let mut result = None;
    loop {
        let mut status: c_int = 0;
        // SAFETY: a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return result;
        }
        if pid == command {
            result = Some(status);
        }
    }
}

/// Hands the status to the parent and exits with the shell's code for it.
fn finish(status_fd: RawFd, status: c_int) -> ! {
    let _ = sys::write_all(status_fd, &status.to_ne_bytes());
    let code = if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    };
    // SAFETY: ends PID 1; the kernel kills the rest of the namespace.
    unsafe { libc::_exit(code) }
}
