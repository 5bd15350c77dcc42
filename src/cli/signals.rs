//! Ctrl-C and friends: forwarded to a running container, otherwise clean up and exit.
//!
//! Termination signals are blocked in every thread and taken by one thread with `sigwait`,
//! so cleanup runs as normal code rather than in a signal handler. While `kiln run` has a
//! container running, a signal goes to the container (its init passes it on, like
//! `docker run`'s signal proxy) and kiln's normal exit path cleans up when it ends.
//! Otherwise kiln removes its staging dirs and exits 128+N. Mounts need no cleanup: they
//! only exist in the mount namespaces of steps and containers, which die with kiln (their
//! processes get SIGKILL through PR_SET_PDEATHSIG).

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

/// The host pid of the running container's first process, 0, or [`HOLDING`].
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);
/// A process is being started: a signal is kept in [`HELD`] until it runs.
const HOLDING: i32 = -1;
/// The first signal that arrived while holding, or 0.
static HELD: AtomicI32 = AtomicI32::new(0);
/// Whether SIGHUP is ignored (a detached container's monitor).
static IGNORE_HANGUP: AtomicBool = AtomicBool::new(false);
/// Whether a signal was passed on since [`take_forwarded`] last looked.
static FORWARDED: AtomicBool = AtomicBool::new(false);

/// Whether a termination signal to kiln was passed on to the process since the last
/// call: the user ended it (a restart policy does not start it again).
pub fn take_forwarded() -> bool {
    FORWARDED.swap(false, Ordering::SeqCst)
}

/// Ignores SIGHUP from now on: a detached container's monitor outlives the terminal and
/// the shell that started it, and a stray hangup must not reach its container either.
pub fn ignore_hangup() {
    IGNORE_HANGUP.store(true, Ordering::SeqCst);
}

/// Keeps a termination signal that arrives while a process is being started, for
/// [`forward_to`] to pass on once the process runs: a Ctrl-C at that moment must reach the
/// process, not end kiln (and the process with it).
pub fn hold() {
    FORWARD_TO.store(HOLDING, Ordering::SeqCst);
}

/// Whether a signal arrived since [`hold`]; it is taken (not passed on).
pub fn take_held() -> bool {
    HELD.swap(0, Ordering::SeqCst) != 0
}

/// Ends a [`hold`] for which no process was started; whether a signal was held, which
/// the caller takes as its own (see [`take_held`]).
pub fn release() -> bool {
    FORWARD_TO.store(0, Ordering::SeqCst);
    HELD.swap(0, Ordering::SeqCst) != 0
}

/// Sends later termination signals (and one held since [`hold`]) to `pid` (a container's
/// first process, an exec'd process) instead of ending kiln; `None` restores the default,
/// and a signal held for a process that never ran ends kiln as it would have.
pub fn forward_to(pid: Option<i32>) {
    FORWARD_TO.store(pid.unwrap_or(0), Ordering::SeqCst);
    match pid {
        Some(pid) => deliver_held(pid),
        None => {
            if let Ok(signal) = Signal::try_from(HELD.swap(0, Ordering::SeqCst)) {
                interrupted(signal);
            }
        }
    }
}

/// Passes a held signal on to `pid`, once, whichever thread gets here first.
fn deliver_held(pid: i32) {
    if let Ok(signal) = Signal::try_from(HELD.swap(0, Ordering::SeqCst)) {
        if nix::sys::signal::kill(Pid::from_raw(pid), signal).is_ok() {
            FORWARDED.store(true, Ordering::SeqCst);
        }
    }
}

/// Removes kiln's staging and exits as a process ended by `signal`.
fn interrupted(signal: Signal) -> ! {
    kiln_store::remove_live_temp_dirs();
    eprintln!("kiln: interrupted by {signal}, cleaned up");
    std::process::exit(128 + signal as i32);
}

/// Call first in `main`, before any thread exists, so every thread inherits the mask.
pub fn install() {
    // Rust ignores SIGPIPE, which turns `kiln inspect x | head` into a panic on the next
    // print; a command-line tool should end quietly instead, as cat or docker do.
    // SAFETY: setting a default disposition installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).is_err() {
        return;
    }
    std::thread::spawn(move || loop {
        let Ok(signal) = set.wait() else { return };
        if signal == Signal::SIGHUP && IGNORE_HANGUP.load(Ordering::SeqCst) {
            continue;
        }
        let pid = FORWARD_TO.load(Ordering::SeqCst);
        if pid == HOLDING {
            let _ = HELD.compare_exchange(0, signal as i32, Ordering::SeqCst, Ordering::SeqCst);
            // The process may have been named meanwhile.
            let now = FORWARD_TO.load(Ordering::SeqCst);
            if now > 0 {
                deliver_held(now);
            }
            continue;
        }
        if pid > 0 && nix::sys::signal::kill(Pid::from_raw(pid), signal).is_ok() {
            FORWARDED.store(true, Ordering::SeqCst);
            continue;
        }
        interrupted(signal);
    });
}
