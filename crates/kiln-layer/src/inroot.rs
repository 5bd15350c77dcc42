//! Filesystem operations that the kernel confines to a root directory.
//!
//! Layer tarballs and build contexts are untrusted, and kiln handles them as root, so no
//! path from them is ever joined onto a host path and handed to `std::fs` (SECURITY.md
//! rule 1). Instead every multi-component path is resolved by `openat2` relative to an
//! `O_PATH` fd of the root (RESOLVE_IN_ROOT: `..` and absolute symlinks stay inside), and
//! every change is made with an `*at` call on a single name relative to the resolved parent,
//! never following a symlink in the last component: chown/chmod/utimes use
//! AT_SYMLINK_NOFOLLOW, files are created with O_CREAT|O_EXCL|O_NOFOLLOW, and extended
//! attributes go through `/proc/self/fd/<parent>/<name>` with the `l*xattr` calls.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, mkdirat, mknodat, FchmodatFlags, FileStat, Mode, SFlag,
};
use nix::sys::stat::{futimens, utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// How `openat2` may resolve a path below a root fd.
#[derive(Clone, Copy, Debug)]
pub enum Resolve {
    /// Symlinks are followed, but `/`, `..` and absolute targets mean the root itself.
    InRoot,
    /// No symlink is followed at all (a trailing one is returned with `O_PATH|O_NOFOLLOW`).
    InRootNoSymlinks,
    /// Anything that would leave the root (`..` above it, absolute symlinks) is an error (EXDEV).
    Beneath,
    /// [`Resolve::Beneath`], and no symlink is followed at all (ELOOP), for a path that was
    /// resolved before.
    BeneathNoSymlinks,
}

/// Attempts made when `openat2` reports EAGAIN (a concurrent rename somewhere in the tree).
const OPENAT2_RETRIES: usize = 16;

/// A directory that confines path resolution, held as an `O_PATH` fd.
pub struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Opens the trusted host directory `path` as a root.
    pub fn open(path: &Path) -> io::Result<Root> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(path.as_os_str().as_bytes(), flags, Mode::empty())?;
        Ok(Root { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `path` (relative; the empty path is the root) with `flags`, resolved by `how`.
    pub fn open_at(&self, path: &[u8], flags: OFlag, how: Resolve) -> io::Result<OwnedFd> {
        let path: &[u8] = if path.is_empty() { b"." } else { path };
        let resolve = match how {
            Resolve::InRoot => ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            Resolve::InRootNoSymlinks => {
                ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS
            }
            Resolve::Beneath => ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            Resolve::BeneathNoSymlinks => {
                ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS
            }
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(resolve);
        let mut tries = 0;
        loop {
            match openat2(self.fd(), path, how) {
                Err(Errno::EAGAIN) if tries < OPENAT2_RETRIES => tries += 1,
                other => return Ok(other?),
            }
        }
    }

    /// Opens the directory `path` as an `O_PATH` fd, usable as the parent of `*at` calls.
    pub fn open_dir(&self, path: &[u8], how: Resolve) -> io::Result<OwnedFd> {
        self.open_at(path, OFlag::O_PATH | OFlag::O_DIRECTORY, how)
    }
}

/// File type bits of a stat result.
pub fn file_type(st: &FileStat) -> u32 {
    st.st_mode & libc::S_IFMT
}

pub(crate) fn is_dir(st: &FileStat) -> bool {
    file_type(st) == libc::S_IFDIR
}

/// An overlayfs whiteout: a character device with device number 0/0.
pub(crate) fn is_whiteout(st: &FileStat) -> bool {
    file_type(st) == libc::S_IFCHR && st.st_rdev == 0
}

/// `lstat` of one name in `dir`; `None` when it does not exist.
pub fn lstat(dir: BorrowedFd, name: &[u8]) -> io::Result<Option<FileStat>> {
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `fstat` of an fd (also an `O_PATH` one).
pub fn fstat(fd: BorrowedFd) -> io::Result<FileStat> {
    Ok(nix::sys::stat::fstat(fd)?)
}

/// Opens the directory `name` in `dir` for reading, refusing to follow a symlink.
pub fn open_dir_nofollow(dir: BorrowedFd, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(openat(dir, name, flags, Mode::empty())?)
}

/// Opens the regular file `name` in `dir` for reading, refusing to follow a symlink.
pub(crate) fn open_file_nofollow(dir: BorrowedFd, name: &[u8]) -> io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    Ok(File::from(openat(dir, name, flags, Mode::empty())?))
}

/// Creates the regular file `name` in `dir`; fails if anything already has that name.
pub(crate) fn create_file(dir: BorrowedFd, name: &[u8]) -> io::Result<File> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(File::from(openat(
        dir,
        name,
        flags,
        Mode::from_bits_truncate(0o600),
    )?))
}

/// Creates the directory `name` in `dir` (mode 0700 until its real mode is set).
pub(crate) fn mkdir(dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    Ok(mkdirat(dir, name, Mode::from_bits_truncate(0o700))?)
}

pub(crate) fn symlink(target: &[u8], dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    Ok(symlinkat(target, dir, name)?)
}

/// Creates a device node or fifo; `kind` is one of S_IFCHR, S_IFBLK, S_IFIFO.
pub(crate) fn mknod(dir: BorrowedFd, name: &[u8], kind: u32, dev: u64) -> io::Result<()> {
    let kind = SFlag::from_bits_truncate(kind);
    Ok(mknodat(
        dir,
        name,
        kind,
        Mode::from_bits_truncate(0o600),
        dev,
    )?)
}

/// Creates an overlay whiteout (character device 0/0, mode 0, owned by root).
pub(crate) fn mkwhiteout(dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    mknod(dir, name, libc::S_IFCHR, 0)?;
    chown_at(dir, name, 0, 0)?;
    chmod_at(dir, name, 0)
}

/// A hard link; never follows a symlink in `old_name` (no AT_SYMLINK_FOLLOW).
pub(crate) fn hardlink(
    old_dir: BorrowedFd,
    old_name: &[u8],
    dir: BorrowedFd,
    name: &[u8],
) -> io::Result<()> {
    Ok(linkat(
        old_dir,
        old_name,
        dir,
        name,
        nix::fcntl::AtFlags::empty(),
    )?)
}

pub fn readlink(dir: BorrowedFd, name: &[u8]) -> io::Result<Vec<u8>> {
    Ok(nix::fcntl::readlinkat(dir, name)?.as_bytes().to_vec())
}

/// Removes `name` from `dir` whatever it is; a directory goes with its whole content.
/// Symlinks are removed, never followed.
pub(crate) fn remove_any(dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) => {
            let sub = open_dir_nofollow(dir, name)?;
            for child in list_dir(sub.as_fd())? {
                remove_any(sub.as_fd(), &child)?;
            }
            Ok(unlinkat(dir, name, UnlinkatFlags::RemoveDir)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The names in a directory, without `.` and `..`, in no particular order.
pub fn list_dir(dir: BorrowedFd) -> io::Result<Vec<Vec<u8>>> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut d = nix::dir::Dir::openat(dir, ".", flags, Mode::empty())?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// chown without following a symlink.
pub(crate) fn chown_at(dir: BorrowedFd, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let (u, g) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    Ok(fchownat(
        dir,
        name,
        u,
        g,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

/// chmod without following a symlink (glibc uses fchmodat2 or an O_PATH fd for this).
pub(crate) fn chmod_at(dir: BorrowedFd, name: &[u8], mode: u32) -> io::Result<()> {
    Ok(fchmodat(
        dir,
        name,
        Mode::from_bits_truncate(mode & 0o7777),
        FchmodatFlags::NoFollowSymlink,
    )?)
}

/// Sets access and modification time without following a symlink.
pub(crate) fn utime_at(dir: BorrowedFd, name: &[u8], secs: i64, nsecs: i64) -> io::Result<()> {
    let t = TimeSpec::new(secs, nsecs);
    Ok(utimensat(
        dir,
        name,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )?)
}

/// Owner, mode and times for an open regular file or directory.
pub(crate) fn chown_fd(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    Ok(fchown(
        fd,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
    )?)
}

pub(crate) fn chmod_fd(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    Ok(fchmod(fd, Mode::from_bits_truncate(mode & 0o7777))?)
}

pub(crate) fn utime_fd(fd: BorrowedFd, secs: i64, nsecs: i64) -> io::Result<()> {
    let t = TimeSpec::new(secs, nsecs);
    Ok(futimens(fd, &t, &t)?)
}

/// `/proc/self/fd/<dir>/<name>`: names one entry of an open directory for the xattr calls,
/// which have no `*at` form. With an empty `name` it is the directory itself.
fn proc_path(dir: BorrowedFd, name: &[u8]) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name);
    }
    CString::new(p).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Calls a size-probing xattr function until the buffer is large enough.
fn read_sized(mut call: impl FnMut(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let size = Errno::result(call(std::ptr::null_mut(), 0))? as usize;
        let mut buf = vec![0u8; size];
        match Errno::result(call(buf.as_mut_ptr().cast(), size)) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            Err(Errno::ERANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Names of the extended attributes of `name` in `dir` (the symlink itself, if it is one).
pub(crate) fn xattr_names(dir: BorrowedFd, name: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let p = proc_path(dir, name)?;
    let follow = name.is_empty();
    let list = read_sized(|buf, size| unsafe {
        // SAFETY: `p` is a valid C string and `buf` has room for `size` bytes.
        if follow {
            libc::listxattr(p.as_ptr(), buf.cast(), size)
        } else {
            libc::llistxattr(p.as_ptr(), buf.cast(), size)
        }
    });
    match list {
        Ok(list) => Ok(list
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect()),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// One extended attribute of `name` in `dir`, `None` if it is not set.
pub(crate) fn xattr_get(dir: BorrowedFd, name: &[u8], key: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let p = proc_path(dir, name)?;
    let key = CString::new(key).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let follow = name.is_empty();
    let value = read_sized(|buf, size| unsafe {
        // SAFETY: both strings are valid C strings and `buf` has room for `size` bytes.
        if follow {
            libc::getxattr(p.as_ptr(), key.as_ptr(), buf, size)
        } else {
            libc::lgetxattr(p.as_ptr(), key.as_ptr(), buf, size)
        }
    });
    match value {
        Ok(v) => Ok(Some(v)),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENODATA) | Some(libc::EOPNOTSUPP)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Sets one extended attribute of `name` in `dir` (of the directory itself if `name` is empty).
pub(crate) fn xattr_set(dir: BorrowedFd, name: &[u8], key: &[u8], value: &[u8]) -> io::Result<()> {
    let p = proc_path(dir, name)?;
    let key = CString::new(key).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both strings are valid C strings and `value` is a valid slice.
    let r = unsafe {
        if name.is_empty() {
            libc::setxattr(
                p.as_ptr(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        } else {
            libc::lsetxattr(
                p.as_ptr(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        }
    };
    Errno::result(r)?;
    Ok(())
}

/// Overlay marks an opaque directory with this xattr set to `y`.
pub(crate) const OPAQUE_XATTR: &[u8] = b"trusted.overlay.opaque";
/// The same mark on overlays mounted with `userxattr`.
const USER_OPAQUE_XATTR: &[u8] = b"user.overlay.opaque";

/// Whether the directory `name` in `dir` is an opaque overlay directory.
pub(crate) fn is_opaque(dir: BorrowedFd, name: &[u8]) -> io::Result<bool> {
    for key in [OPAQUE_XATTR, USER_OPAQUE_XATTR] {
        if xattr_get(dir, name, key)?.as_deref() == Some(b"y") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Marks the directory `name` in `dir` opaque (hides the lower layers' content under it):
/// with the `trusted.` mark, or, where only the host's root may set that (an ordinary
/// user's kiln, whose overlays are mounted with `userxattr`), the `user.` one.
pub(crate) fn set_opaque(dir: BorrowedFd, name: &[u8]) -> io::Result<()> {
    match xattr_set(dir, name, OPAQUE_XATTR, b"y") {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            xattr_set(dir, name, USER_OPAQUE_XATTR, b"y")
        }
        other => other,
    }
}
