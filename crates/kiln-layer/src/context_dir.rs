//! A build context opened once, as a directory fd, and every path below it resolved by the
//! kernel beneath that fd.
//!
//! Exists because a context named by a path string is only as good as the moment the string
//! is looked up: the copy runs on a thread that has changed its working directory to `/`
//! (a relative context then named the host's root), and a path can be swapped for another
//! between the build cache hashing a context and the copy reading it. So a build opens each
//! context once, before its first step (`O_PATH|O_DIRECTORY|O_CLOEXEC`: no read access, and
//! never inherited by a step), and both `copy_in` and the build cache's digest
//! (`build::context`) open sources with `openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS)`
//! from it, so they refuse, resolve and name sources exactly alike.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use super::error::{LayerError, Result};
use super::inroot::{Resolve, Root};
use super::source_path::{fd_path, relative_to};

/// An open build context directory.
pub struct ContextDir {
    root: Root,
    /// Where the directory really was when opened (symlinks resolved), to turn where a
    /// source resolved to into a path relative to the context.
    real: Vec<u8>,
    /// The path it was opened by, for messages only: never looked up again.
    shown: PathBuf,
}

impl ContextDir {
    /// Opens the (trusted) directory `path`; symlinks on the way are followed, as the user
    /// named it.
    pub fn open(path: &Path) -> io::Result<ContextDir> {
        let root = Root::open(path)?;
        let real = fd_path(root.fd())?;
        Ok(ContextDir {
            root,
            real,
            shown: path.to_owned(),
        })
    }

    /// The path the context was opened by, for messages.
    pub fn path(&self) -> &Path {
        &self.shown
    }

    /// The directory's canonical host path when it was opened (names its hash memo).
    pub fn real_path(&self) -> &[u8] {
        &self.real
    }

    /// Opens the copy source `source` (as written, for messages) at `rel` below the context.
    /// Leaving the context by `..` or by a symlink fails; so does a missing source.
    pub fn open_source(&self, source: &str, rel: &str, flags: OFlag) -> Result<OwnedFd> {
        self.root
            .open_at(rel.as_bytes(), flags, Resolve::Beneath)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EXDEV) => LayerError::CopyOutsideContext(source.to_owned()),
                Some(libc::ENOENT) => LayerError::CopySourceMissing(source.to_owned()),
                _ => LayerError::io("open the copy source", source.as_bytes())(e),
            })
    }

    /// Where an opened source really is, relative to the context.
    pub fn context_path(&self, fd: BorrowedFd, source: &str) -> Result<Vec<u8>> {
        let real = fd_path(fd).map_err(LayerError::io("resolve", source.as_bytes()))?;
        relative_to(&self.real, &real)
            .ok_or_else(|| LayerError::CopyOutsideContext(source.to_owned()))
    }

    /// Opens a path already resolved below the context (a [`Self::context_path`]) with no
    /// symlink allowed anywhere on the way: a node swapped for a symlink since it was found
    /// is not followed.
    pub fn open_resolved(&self, real: &[u8], flags: OFlag) -> io::Result<OwnedFd> {
        self.root.open_at(real, flags, Resolve::BeneathNoSymlinks)
    }
}

impl AsFd for ContextDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.root.fd()
    }
}

impl std::fmt::Debug for ContextDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextDir")
            .field("fd", &self.root.fd())
            .field("path", &self.shown)
            .finish()
    }
}
