//! What the layers below show at a path, and overlay-style copy-up into the new layer.
//!
//! A layer dir only holds its own changes, so applying a layer sometimes needs the layers
//! under it: a hard link may point at a file of a lower layer, and a directory that the
//! layer fills without listing it should keep the lower directory's owner and mode. kiln
//! answers both the way overlayfs does: look the path up through the layers top-most
//! first, honouring whiteouts and opaque directories, then copy the node up into the new
//! layer. Lookups go one name at a time and never follow a symlink.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{FileStat, Mode};

use super::inroot::{self, Root};

/// A node visible through the layers.
pub(crate) struct Found {
    /// Index in the layer list (0 = top-most).
    pub layer: usize,
    /// The directory holding it, in that layer.
    pub dir: OwnedFd,
    pub name: Vec<u8>,
    pub st: FileStat,
}

/// What the merged view of `layers` (top-most first) shows at the path `comps`, if anything.
pub(crate) fn lookup(layers: &[&Root], comps: &[&[u8]]) -> io::Result<Option<Found>> {
    let Some((last, parents)) = comps.split_last() else {
        return Ok(None);
    };
    for (layer, root) in layers.iter().enumerate() {
        let mut dir = root.fd().try_clone_to_owned()?;
        let mut opaque_above = false;
        let mut reached_parent = true;
        for comp in parents {
            match inroot::lstat(dir.as_fd(), comp)? {
                None => {
                    reached_parent = false;
                    break;
                }
                Some(st) if inroot::is_dir(&st) => {
                    dir = open_path_dir(dir.as_fd(), comp)?;
                    opaque_above |= inroot::is_opaque(dir.as_fd(), b"")?;
                }
                // A whiteout or a non-directory hides everything below it in lower layers.
                Some(_) => return Ok(None),
            }
        }
        if reached_parent {
            match inroot::lstat(dir.as_fd(), last)? {
                Some(st) if inroot::is_whiteout(&st) => return Ok(None),
                Some(st) => {
                    return Ok(Some(Found {
                        layer,
                        dir,
                        name: last.to_vec(),
                        st,
                    }))
                }
                None => {}
            }
        }
        if opaque_above {
            return Ok(None);
        }
    }
    Ok(None)
}

fn open_path_dir(dir: BorrowedFd, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(openat(dir, name, flags, Mode::empty())?)
}

/// Copies the non-directory `found` into `dir` as `name`, with its metadata.
pub(crate) fn copy_up(found: &Found, dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    let src = found.dir.as_fd();
    match inroot::file_type(&found.st) {
        libc::S_IFREG => {
            let mut from = inroot::open_file_nofollow(src, &found.name)?;
            let mut to = inroot::create_file(dir, name)?;
            // std uses copy_file_range here: streaming, no user-space buffer.
            io::copy(&mut from, &mut to)?;
        }
        libc::S_IFLNK => inroot::symlink(&inroot::readlink(src, &found.name)?, dir, name)?,
        kind @ (libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO) => {
            inroot::mknod(dir, name, kind, found.st.st_rdev)?
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot copy this file type",
            ))
        }
    }
    copy_meta(found, dir, name)
}

/// Gives `name` in `dir` the owner, mode, times and xattrs of `found`.
pub(crate) fn copy_meta(found: &Found, dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    let st = &found.st;
    inroot::chown_at(dir, name, st.st_uid, st.st_gid)?;
    if inroot::file_type(st) != libc::S_IFLNK {
        inroot::chmod_at(dir, name, st.st_mode)?;
    }
    for key in inroot::xattr_names(found.dir.as_fd(), &found.name)? {
        if key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay.") {
            continue;
        }
        if let Some(value) = inroot::xattr_get(found.dir.as_fd(), &found.name, &key)? {
            inroot::xattr_set(dir, name, &key, &value)?;
        }
    }
    inroot::utime_at(dir, name, st.st_mtime, st.st_mtime_nsec)
}
