//! The gc lock (`$ROOT/gc.lock`): the shared [`ContentGuard`] every writer holds and the
//! exclusive side gc takes, waiting for the guards.
//!
//! # The content-guard invariant
//!
//! Content always exists before the reference that keeps it alive: a build commits its
//! layers and config before it writes the tag, a pull commits blobs before the manifest is
//! tagged, a cache hit reuses a layer before the new image names it, and `kiln run`
//! resolves an image before its container's `state.json` names it. A gc running in between
//! would see that content as garbage. So:
//!
//! **Every operation that creates content, or reuses content it has not yet referenced,
//! holds a [`ContentGuard`] (a shared `flock` on `$ROOT/gc.lock`) from before its first
//! write or lookup until the reference that keeps the content alive (tag, build-cache
//! record, container state) is written. gc holds the same lock exclusively from before it
//! computes what is reachable until it has removed the rest.**
//!
//! Guards are shared, so builds, pulls and runs never wait for each other, only for a
//! running gc, and gc waits until every guard is released. Nested guards in one process
//! are fine (shared locks do not conflict), but a process must not run gc while it holds a
//! guard: each `flock` is its own lock, so gc would wait for itself. Linux `flock` has no
//! writer preference: a steady stream of overlapping builds can keep gc waiting, but never
//! makes it unsafe.

use std::fs::File;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{Result, Store, StoreError};

/// Held by every operation that creates content; see the module doc. Released on drop.
#[derive(Debug)]
pub struct ContentGuard {
    _lock: Flock<File>,
}

/// gc's exclusive side of the same lock.
pub(super) struct GcLock {
    _lock: Flock<File>,
}

impl Store {
    /// Takes the shared side of the gc lock; see the module doc for who must hold it.
    pub fn content_guard(&self) -> Result<ContentGuard> {
        let file = self.open_gc_lock()?;
        Flock::lock(file, FlockArg::LockShared)
            .map(|lock| ContentGuard { _lock: lock })
            .map_err(|(_, e)| self.gc_lock_error(e))
    }

    fn open_gc_lock(&self) -> Result<File> {
        let path = self.root().join("gc.lock");
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io("open", &path))
    }

    fn gc_lock_error(&self, errno: Errno) -> StoreError {
        StoreError::Io {
            what: "lock",
            path: self.root().join("gc.lock"),
            source: errno.into(),
        }
    }

    /// The gc lock if no other kiln process holds a content guard now, else `None`.
    pub(super) fn exclusive_gc_lock_now(&self) -> Result<Option<GcLock>> {
        let file = self.open_gc_lock()?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(GcLock { _lock: lock })),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(self.gc_lock_error(e)),
        }
    }

    pub(super) fn exclusive_gc_lock(&self, on_wait: &mut dyn FnMut()) -> Result<GcLock> {
        let file = self.open_gc_lock()?;
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(GcLock { _lock: lock }),
            Err((file, Errno::EWOULDBLOCK)) => file,
            Err((_, e)) => return Err(self.gc_lock_error(e)),
        };
        on_wait();
        Flock::lock(file, FlockArg::LockExclusive)
            .map(|lock| GcLock { _lock: lock })
            .map_err(|(_, e)| self.gc_lock_error(e))
    }
}
