//! Running code inside another network namespace.
//!
//! `setns(CLONE_NEWNET)` changes only the calling thread, so the work runs on a thread
//! made for it, which ends with it: no thread of the caller (which may be kiln's main
//! thread, the one that clones containers) is ever left in a container's namespace.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::sched::{setns, CloneFlags};

/// An open network namespace: `/proc/PID/ns/net` of a container's process, or a named
/// namespace's `/run/netns/NAME`. Holding it keeps the namespace alive.
#[derive(Debug)]
pub struct NetNs {
    file: File,
}

impl NetNs {
    pub fn open(path: &Path) -> io::Result<NetNs> {
        Ok(NetNs {
            file: File::open(path)?,
        })
    }

    /// The network namespace of process `pid`.
    pub fn of_pid(pid: u32) -> io::Result<NetNs> {
        NetNs::open(Path::new(&format!("/proc/{pid}/ns/net")))
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Runs `work` on a new thread that has entered `netns`, and returns its result.
pub fn in_netns<T: Send>(
    netns: BorrowedFd<'_>,
    work: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                setns(netns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                work()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
