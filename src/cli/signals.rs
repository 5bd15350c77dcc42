//! Ctrl-C and friends: clean up staging dirs, then exit with 128+signal.
//!
//! Termination signals are blocked in every thread and taken by one thread with `sigwait`,
//! so cleanup runs as normal code rather than in a signal handler. Mounts need no cleanup:
//! they only exist in the mount namespaces of build steps, which die with kiln (the steps
//! get SIGKILL through PR_SET_PDEATHSIG).

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

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
    std::thread::spawn(move || {
        if let Ok(signal) = set.wait() {
            crate::store::remove_live_temp_dirs();
            eprintln!("kiln: interrupted by {signal}, cleaned up");
            std::process::exit(128 + signal as i32);
        }
    });
}
