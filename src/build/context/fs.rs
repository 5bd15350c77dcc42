//! The few filesystem calls the context walk needs, confined to the context directory the
//! way `layer::copy_in` confines its sources: `openat2(RESOLVE_BENEATH)` from an `O_PATH`
//! fd of the context, then single names relative to opened directories, never following a
//! symlink below an explicitly named source.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::ContextError;
use crate::layer::source_path::{fd_path, relative_to};
use crate::layer::LayerError;

/// Attempts made when `openat2` reports EAGAIN (a concurrent rename somewhere in the tree).
const OPENAT2_RETRIES: usize = 16;

/// An open build context directory.
pub(super) struct ContextDir {
    fd: OwnedFd,
    /// Its real host path, to turn where a source resolved to into a context path.
    real: Vec<u8>,
}

impl ContextDir {
    /// Opens the (trusted) context directory; fails like `copy_in` when it cannot.
    pub fn open(path: &Path) -> Result<ContextDir, ContextError> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let bytes = path.as_os_str().as_bytes();
        let fd = nix::fcntl::open(bytes, flags, Mode::empty())
            .map_err(|e| LayerError::io("open", bytes)(e.into()))?;
        let real = fd_path(fd.as_fd()).map_err(LayerError::io("resolve", bytes))?;
        Ok(ContextDir { fd, real })
    }

    /// Opens `rel` below the context; anything that would leave it fails with EXDEV.
    /// `no_symlinks` refuses symlinks anywhere on the way (for paths already resolved).
    fn open_beneath(&self, rel: &[u8], flags: OFlag, no_symlinks: bool) -> io::Result<OwnedFd> {
        let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
        let mut resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        if no_symlinks {
            resolve |= ResolveFlag::RESOLVE_NO_SYMLINKS;
        }
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(resolve);
        let mut tries = 0;
        loop {
            match openat2(self.fd.as_fd(), rel, how) {
                Err(Errno::EAGAIN) if tries < OPENAT2_RETRIES => tries += 1,
                other => return Ok(other?),
            }
        }
    }

    /// Opens a copy source, failing exactly as `copy_in` does.
    pub fn open_source(
        &self,
        source: &str,
        rel: &str,
        flags: OFlag,
    ) -> Result<OwnedFd, LayerError> {
        self.open_beneath(rel.as_bytes(), flags, false)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EXDEV) => LayerError::CopyOutsideContext(source.to_owned()),
                Some(libc::ENOENT) => LayerError::CopySourceMissing(source.to_owned()),
                _ => LayerError::io("open the copy source", source.as_bytes())(e),
            })
    }

    /// Where an opened source really is, relative to the context.
    pub fn context_path(&self, fd: BorrowedFd, source: &str) -> Result<Vec<u8>, LayerError> {
        let real = fd_path(fd).map_err(LayerError::io("resolve", source.as_bytes()))?;
        relative_to(&self.real, &real)
            .ok_or_else(|| LayerError::CopyOutsideContext(source.to_owned()))
    }

    /// Opens the ignore file at the context root for reading; `None` when there is none.
    pub fn open_ignore_file(&self, name: &str) -> Result<Option<OwnedFd>, ContextError> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
        match self.open_source(name, name, flags) {
            Ok(fd) => Ok(Some(fd)),
            Err(LayerError::CopySourceMissing(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a regular file for hashing by its resolved context path (no symlink may appear
    /// on the way, so a file swapped for a symlink after the walk is not followed).
    pub fn open_resolved_file(&self, real: &[u8]) -> io::Result<File> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK;
        Ok(File::from(self.open_beneath(real, flags, true)?))
    }
}

/// The canonical host path of a context, naming its hash memo.
pub(super) fn canonical(context: &Path) -> PathBuf {
    std::fs::canonicalize(context).unwrap_or_else(|_| context.to_owned())
}
