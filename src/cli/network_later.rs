//! What a network needs after a container's run, done by a process of kiln's own so that
//! the runner reports the exit without waiting for it: rewriting the port rules (a rule
//! removed costs the kernel an RCU grace period, ~10 ms) and, once the network has been
//! idle for its linger, removing its bridge, table and forwarding (~65 ms). Both are the
//! hidden `kiln network-reclaim`; the port rewrite runs under the network's lock, which
//! the runner hands to it as fd 3 (`Network::release_deferring_ports`).

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};

use kiln_container::container_networks::{RunEnd, DEFAULT_NETWORK};

use super::housekeeping::NETWORK_RECLAIM_COMMAND;
use super::Globals;

/// The fd the port rewrite's process finds the network's lock on.
pub const PORTS_LOCK_FD: i32 = 3;

/// Hands what the run's end left to processes of their own, and prints its warnings. An
/// idle network whose port rules are pending is reclaimed by the process that rewrites
/// them: one process per network.
pub fn finish_run(globals: &Globals, end: RunEnd) {
    let pending: Vec<String> = end.port_locks.iter().map(|(l, _)| l.clone()).collect();
    for (label, lock) in end.port_locks {
        let then_reclaim = end.idle.contains(&label);
        spawn_reclaim(globals, &label, Some(lock), then_reclaim);
    }
    for label in end.idle.iter().filter(|l| !pending.contains(l)) {
        spawn_reclaim(globals, label, None, true);
    }
    for e in end.problems {
        eprintln!("kiln: warning: {e}");
    }
}

/// The last container left the bridge network `label`: a process of its own removes its
/// bridge, table and forwarding after the linger unless a container came meanwhile.
pub fn remove_idle_network_later(globals: &Globals, label: &str) {
    spawn_reclaim(globals, label, None, true);
}

/// [`remove_idle_network_later`] for the default network, whose state is the host's, not
/// a store's (a build calls it when a step was the network's last user).
pub fn remove_idle_default_network_later() {
    spawn(&[NETWORK_RECLAIM_COMMAND.as_ref()], None);
}

fn spawn_reclaim(globals: &Globals, label: &str, ports_lock: Option<OwnedFd>, reclaim: bool) {
    let mut args: Vec<&OsStr> = Vec::new();
    if label != DEFAULT_NETWORK {
        args.extend(["--root".as_ref(), globals.root.as_os_str()]);
    }
    args.push(NETWORK_RECLAIM_COMMAND.as_ref());
    if label != DEFAULT_NETWORK {
        args.push(label.as_ref());
    }
    if ports_lock.is_some() {
        args.push("--ports".as_ref());
    }
    if !reclaim {
        args.push("--no-reclaim".as_ref());
    }
    spawn(&args, ports_lock);
}

/// Starts kiln with `args` in a process group of its own, `lock` (if any) as its fd 3;
/// this process's copy of the lock closes when the call returns, the child's keeps it.
fn spawn(args: &[&OsStr], lock: Option<OwnedFd>) {
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if let Some(lock) = &lock {
        let fd = lock.as_raw_fd();
        // SAFETY: dup2 and fcntl are async-signal-safe; nothing else runs in the child
        // between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if fd == PORTS_LOCK_FD {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, PORTS_LOCK_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    match command.spawn() {
        // Reaped by a thread of its own: a monitor lives on after it, restart after
        // restart, and would otherwise keep a zombie of each.
        Ok(mut child) => drop(std::thread::spawn(move || child.wait())),
        // The lock closes with `lock` here: its next holder rewrites the rules.
        Err(e) => eprintln!("kiln: warning: settle the bridge network: {e}; kiln gc settles it"),
    }
}
