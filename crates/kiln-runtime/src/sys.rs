//! Thin wrappers over the raw system calls the sandbox child makes.
//!
//! Everything here is callable between `clone` and `execve` in a multi-threaded process:
//! no allocation, no locks, no glibc wrappers that touch other threads (glibc's `setuid`
//! family signals every thread it knows of, which in a cloned child are the parent's threads
//! and would hang). Errors are plain errno values so that no `Drop`-carrying error type is
//! needed. The new mount API (`fsopen`, `fsmount`, `move_mount`, `open_tree`) lets mounts
//! be attached to file descriptors resolved safely inside the root, never to path strings.

use std::ffi::CStr;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use libc::{c_int, c_long, c_uint};

/// An errno value.
pub(crate) type Errno = c_int;
pub(crate) type Sys<T> = Result<T, Errno>;

pub(crate) fn last_errno() -> Errno {
    // SAFETY: glibc's errno location is thread-local and always valid.
    unsafe { *libc::__errno_location() }
}

/// Turns a `-1`-on-error return value into a result.
pub(crate) fn check(ret: c_long) -> Sys<c_long> {
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(ret)
    }
}

fn check_int(ret: c_int) -> Sys<c_int> {
    check(ret as c_long).map(|v| v as c_int)
}

fn owned(ret: c_long) -> Sys<OwnedFd> {
    // SAFETY: a non-negative return of an fd-creating call is a new fd we own.
    check(ret).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A datagram socket, only for interface ioctls.
pub(crate) fn socket_for_ioctl() -> Sys<OwnedFd> {
    // SAFETY: socket takes integers only.
    owned(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) } as c_long,
    )
}

pub(crate) fn open(path: &CStr, flags: c_int) -> Sys<OwnedFd> {
    open_mode(path, flags, 0)
}

/// `open` with a creation mode.
pub(crate) fn open_mode(path: &CStr, flags: c_int, mode: libc::mode_t) -> Sys<OwnedFd> {
    // SAFETY: path is NUL-terminated.
    owned(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode) } as c_long)
}

/// `openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`: `rel` is looked up inside `root`
/// and no symlink (image-made or magic) is followed on the way; an `O_PATH` fd of the
/// final component is returned (of the symlink itself if it is one).
pub(crate) fn open_in_root(root: BorrowedFd, rel: &CStr, extra_flags: c_int) -> Sys<OwnedFd> {
    let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    openat2(
        root,
        rel,
        libc::O_PATH | libc::O_NOFOLLOW | extra_flags,
        resolve,
    )
}

/// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`: `rel` below
/// `dir`, through no symlink, no `..` out of `dir` and no mount point. `O_NOFOLLOW` is
/// added to `flags`, so a symlink as the last component is opened itself (with `O_PATH`)
/// or refused.
pub(crate) fn open_beneath(dir: BorrowedFd, rel: &CStr, flags: c_int) -> Sys<OwnedFd> {
    let resolve = libc::RESOLVE_BENEATH
        | libc::RESOLVE_NO_SYMLINKS
        | libc::RESOLVE_NO_MAGICLINKS
        | libc::RESOLVE_NO_XDEV;
    openat2(dir, rel, flags | libc::O_NOFOLLOW, resolve)
}

/// Attempts made when `openat2` answers EAGAIN.
const OPENAT2_ATTEMPTS: usize = 16;

/// `openat2`, retried while it answers EAGAIN: with `RESOLVE_BENEATH`/`RESOLVE_IN_ROOT` the
/// kernel gives up when a rename or mount anywhere on the system raced with the lookup of
/// a `..`, and asks the caller to try again (parallel builds and containers mount a lot).
fn openat2(dir: BorrowedFd, rel: &CStr, flags: c_int, resolve: u64) -> Sys<OwnedFd> {
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    let mut attempts = 0;
    loop {
        // SAFETY: pointers are valid for the call; size matches the struct passed.
        let opened = owned(unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                rel.as_ptr(),
                &how as *const libc::open_how,
                size_of::<libc::open_how>(),
            )
        });
        attempts += 1;
        match opened {
            Err(libc::EAGAIN) if attempts < OPENAT2_ATTEMPTS => {}
            other => return other,
        }
    }
}

/// The file type bits (`S_IFMT`) of an open fd.
pub(crate) fn file_type(fd: BorrowedFd) -> Sys<libc::mode_t> {
    // SAFETY: stat is plain data and fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check_int(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_mode & libc::S_IFMT)
}

pub(crate) fn mount(
    source: &CStr,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Sys<()> {
    let fstype = fstype.map_or(ptr::null(), CStr::as_ptr);
    let data = data.map_or(ptr::null(), |d| d.as_ptr().cast());
    // SAFETY: all strings are NUL-terminated or null where the kernel allows it.
    check_int(unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype, flags, data) })
        .map(drop)
}

/// Creates a detached filesystem mount: `fsopen` + options + `fsmount`.
pub(crate) fn new_mount(
    fstype: &CStr,
    options: &[(&CStr, Option<&CStr>)],
    attrs: u64,
) -> Sys<OwnedFd> {
    let fs = fs_open(fstype)?;
    for (key, value) in options {
        let (cmd, value) = match value {
            Some(v) => (libc::FSCONFIG_SET_STRING, v.as_ptr()),
            None => (libc::FSCONFIG_SET_FLAG, ptr::null()),
        };
        fsconfig(&fs, cmd, key.as_ptr(), value)?;
    }
    fs_mount(&fs, attrs)
}

/// `fsopen`: a new, unconfigured filesystem context of type `fstype`.
pub(crate) fn fs_open(fstype: &CStr) -> Sys<OwnedFd> {
    // SAFETY: fstype is NUL-terminated.
    owned(unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC) })
}

/// `fsconfig(FSCONFIG_SET_STRING)`: one `key=value` setting of a filesystem context.
pub(crate) fn fs_set_string(fs: &OwnedFd, key: &CStr, value: &CStr) -> Sys<()> {
    fsconfig(fs, libc::FSCONFIG_SET_STRING, key.as_ptr(), value.as_ptr())
}

/// `fsconfig(FSCONFIG_SET_FLAG)`: one flag setting (`ro`) of a filesystem context.
pub(crate) fn fs_set_flag(fs: &OwnedFd, key: &CStr) -> Sys<()> {
    fsconfig(fs, libc::FSCONFIG_SET_FLAG, key.as_ptr(), ptr::null())
}

/// Creates the filesystem of a configured context and returns a detached mount of it with
/// the mount attributes `attrs` (`MOUNT_ATTR_*`).
pub(crate) fn fs_mount(fs: &OwnedFd, attrs: u64) -> Sys<OwnedFd> {
    fs_create(fs)?;
    fs_mount_created(fs, attrs)
}

/// `fsconfig(FSCONFIG_CMD_CREATE)`: creates the filesystem of a configured context, with
/// the calling thread's credentials.
pub(crate) fn fs_create(fs: &OwnedFd) -> Sys<()> {
    fsconfig(fs, libc::FSCONFIG_CMD_CREATE, ptr::null(), ptr::null())
}

/// A detached mount of a created context ([`fs_create`]) with the attributes `attrs`.
pub(crate) fn fs_mount_created(fs: &OwnedFd, attrs: u64) -> Sys<OwnedFd> {
    // SAFETY: fs is a valid fs context fd.
    owned(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs as c_uint,
        )
    })
}

fn fsconfig(
    fs: &OwnedFd,
    cmd: libc::fsconfig_command,
    key: *const libc::c_char,
    value: *const libc::c_char,
) -> Sys<()> {
    // SAFETY: key and value are NUL-terminated or null as the command requires.
    check(unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, key, value, 0) })
        .map(drop)
}

/// A detached copy (bind) of the mount at `path`, made read-only and `nosuid,nodev,noexec`.
pub(crate) fn read_only_bind_of(path: &CStr) -> Sys<OwnedFd> {
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    // SAFETY: path is NUL-terminated.
    let tree =
        owned(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) })?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY
            | libc::MOUNT_ATTR_NOSUID
            | libc::MOUNT_ATTR_NODEV
            | libc::MOUNT_ATTR_NOEXEC,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: attr is valid for the call and its size is passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            size_of::<libc::mount_attr>(),
        )
    })?;
    Ok(tree)
}

/// Attaches the detached mount `mount` on top of the file or directory `target`.
pub(crate) fn attach(mount: &OwnedFd, target: BorrowedFd) -> Sys<()> {
    attach_borrowed(mount.as_fd(), target)
}

/// [`attach`] for a mount fd the caller does not own.
pub(crate) fn attach_borrowed(mount: BorrowedFd, target: BorrowedFd) -> Sys<()> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: both fds are valid, paths are empty strings.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    })
    .map(drop)
}

pub(crate) fn mkdir(path: &CStr, mode: libc::mode_t) -> Sys<()> {
    // SAFETY: path is NUL-terminated.
    check_int(unsafe { libc::mkdir(path.as_ptr(), mode) }).map(drop)
}

pub(crate) fn mkdir_allow_existing(path: &CStr, mode: libc::mode_t) -> Sys<()> {
    match mkdir(path, mode) {
        Err(libc::EEXIST) => Ok(()),
        other => other,
    }
}

pub(crate) fn chdir(path: &CStr) -> Sys<()> {
    // SAFETY: path is NUL-terminated.
    check_int(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

pub(crate) fn dup_above(fd: RawFd, min: RawFd) -> Sys<RawFd> {
    // SAFETY: F_DUPFD_CLOEXEC never replaces an open fd.
    check_int(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })
}

/// `dup3`; `cloexec` decides whether `to` survives `execve`.
pub(crate) fn dup_onto(from: RawFd, to: RawFd, cloexec: bool) -> Sys<()> {
    let flags = if cloexec { libc::O_CLOEXEC } else { 0 };
    // SAFETY: replacing `to` is the intent; the caller owns both numbers.
    check_int(unsafe { libc::dup3(from, to, flags) }).map(drop)
}

/// Closes every fd from `first` up.
pub(crate) fn close_from(first: RawFd) -> Sys<()> {
    // SAFETY: closing fds the child does not use is the intent.
    check(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as c_uint,
            c_uint::MAX,
            0 as c_uint,
        )
    })
    .map(drop)
}

pub(crate) fn write_all(fd: RawFd, mut bytes: &[u8]) -> Sys<()> {
    while !bytes.is_empty() {
        // SAFETY: the buffer is valid for its length.
        match check(unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) } as c_long) {
            Ok(n) => bytes = bytes.get(n as usize..).unwrap_or_default(),
            Err(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends one byte on a socket without SIGPIPE: kiln's SIGPIPE is the default (it dies), and
/// a child that failed has closed its end; then this answers EPIPE.
pub(crate) fn send_byte(sock: RawFd, byte: u8) -> Sys<()> {
    loop {
        // SAFETY: the buffer is one valid byte.
        let sent = unsafe { libc::send(sock, (&byte as *const u8).cast(), 1, libc::MSG_NOSIGNAL) };
        match check(sent as c_long) {
            Err(libc::EINTR) => {}
            other => return other.map(drop),
        }
    }
}

pub(crate) fn syscall3(nr: c_long, a: c_long, b: c_long, c: c_long) -> Sys<()> {
    // SAFETY: callers pass arguments valid for `nr`.
    check(unsafe { libc::syscall(nr, a, b, c) }).map(drop)
}

pub(crate) fn pidfd_open(pid: libc::pid_t) -> Sys<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags only.
    owned(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as c_uint) })
}

/// True when the process behind `pidfd` has exited.
pub(crate) fn has_exited(pidfd: RawFd) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & libc::POLLIN != 0
}

/// `openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: like [`open_in_root`], but
/// symlinks are followed, each resolved as if `root` were `/`, so none leads outside it.
/// `extra_resolve` adds `RESOLVE_*` flags (such as `RESOLVE_NO_XDEV`).
pub(crate) fn open_following_in_root(
    root: BorrowedFd,
    rel: &CStr,
    extra_flags: c_int,
    extra_resolve: u64,
) -> Sys<OwnedFd> {
    let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | extra_resolve;
    openat2(root, rel, libc::O_PATH | extra_flags, resolve)
}

/// A detached copy of the mount tree at `path` (relative to `dir`, or `dir` itself when
/// `path` is empty); `recursive` includes the mounts below it.
pub(crate) fn clone_tree(dir: RawFd, path: &CStr, recursive: bool) -> Sys<OwnedFd> {
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as c_uint;
    }
    if path.is_empty() {
        flags |= libc::AT_EMPTY_PATH as c_uint;
    }
    // SAFETY: path is NUL-terminated; dir is an fd or AT_FDCWD.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, dir, path.as_ptr(), flags) })
}

/// Sets mount attributes (`MOUNT_ATTR_*`) on the mount `fd` refers to, and on every mount
/// below it when `recursive`.
pub(crate) fn set_mount_attrs(fd: BorrowedFd, attrs: u64, recursive: bool) -> Sys<()> {
    let attr = libc::mount_attr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as c_uint;
    }
    // SAFETY: attr is valid for the call and its size is passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            size_of::<libc::mount_attr>(),
        )
    })
    .map(drop)
}

/// Makes the mount `fd` (a detached clone) show its files through the id mapping of the
/// user namespace `userns` (`MOUNT_ATTR_IDMAP`).
pub(crate) fn set_idmap(fd: BorrowedFd, userns: BorrowedFd) -> Sys<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: attr is valid for the call and its size is passed.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as c_uint,
            &attr as *const libc::mount_attr,
            size_of::<libc::mount_attr>(),
        )
    })
    .map(drop)
}

/// Lets the calling thread keep its capabilities when its ids change
/// (`SECBIT_NO_SETUID_FIXUP`); per thread, like every credential.
pub(crate) fn keep_capabilities_across_id_changes() -> Sys<()> {
    const SECBIT_NO_SETUID_FIXUP: c_long = 1 << 2;
    // SAFETY: prctl with integer arguments.
    check(unsafe {
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_SECUREBITS,
            SECBIT_NO_SETUID_FIXUP,
            0,
            0,
            0,
        )
    })
    .map(drop)
}

/// Sets the calling thread's filesystem uid and gid (raw calls: per thread, where glibc's
/// would not be).
pub(crate) fn set_fs_ids(uid: u32, gid: u32) {
    // SAFETY: plain system calls with integer arguments; they cannot fail.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid as c_long);
        libc::syscall(libc::SYS_setfsuid, uid as c_long);
    }
}

/// Moves the detached mount `mount` onto the path `target`.
pub(crate) fn attach_at_path(mount: RawFd, target: &CStr) -> Sys<()> {
    // SAFETY: mount is an fd, target NUL-terminated, the source path empty.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// `fstat` of an open fd.
pub(crate) fn stat_fd(fd: BorrowedFd) -> Sys<libc::stat> {
    // SAFETY: stat is plain data and fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check_int(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// Reads one byte; `Ok(false)` on end of file.
pub(crate) fn read_byte(fd: RawFd) -> Sys<bool> {
    let mut byte = 0u8;
    loop {
        // SAFETY: a one-byte buffer.
        match check(unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) } as c_long) {
            Err(libc::EINTR) => {}
            other => return other.map(|n| n == 1),
        }
    }
}

/// `fork` as a raw `clone(SIGCHLD)`: no atfork handlers, which could take locks held by
/// threads that do not exist in a clone child. Returns 0 in the new process.
pub(crate) fn raw_fork() -> Sys<libc::pid_t> {
    raw_fork_with(0)
}

/// [`raw_fork`] with extra `clone` flags (such as `CLONE_PARENT`), none of which may share
/// memory or need a new stack.
pub(crate) fn raw_fork_with(flags: c_int) -> Sys<libc::pid_t> {
    let flags = (flags | libc::SIGCHLD) as c_long;
    // SAFETY: without CLONE_VM the child gets a copy of this stack and continues here.
    check(unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) })
        .map(|pid| pid as libc::pid_t)
}

/// Room for one `SCM_RIGHTS` control message carrying one fd (aligned like `cmsghdr`).
type FdControl = [u64; 4];

/// Sends `fd` over the unix socket `sock` (`SCM_RIGHTS`), with a one-byte payload.
pub(crate) fn send_fd(sock: RawFd, fd: RawFd) -> Sys<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control: FdControl = [0; 4];
    // SAFETY: msghdr is plain data; the CMSG macros stay inside `control`, which is large
    // and aligned enough for one header and one int.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(size_of::<c_int>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<c_int>() as u32) as usize;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>(), fd);
        check(libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) as c_long).map(drop)
    }
}

/// Receives an fd sent with [`send_fd`]; `None` when the peer closed the socket first.
pub(crate) fn recv_fd(sock: RawFd) -> Sys<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control: FdControl = [0; 4];
    // SAFETY: as in send_fd; the kernel fills at most msg_controllen bytes.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<FdControl>();
        let n = loop {
            match check(libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) as c_long) {
                Err(libc::EINTR) => {}
                other => break other?,
            }
        };
        if n == 0 {
            return Ok(None);
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(libc::EPROTO);
        }
        let fd = ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>());
        Ok(Some(OwnedFd::from_raw_fd(fd)))
    }
}

/// The absolute path by which this process reaches the directory `dir` (`fchdir`, then the
/// `getcwd` system call, which asks the kernel rather than walking `..`). Changes the cwd.
/// Returns the path's length in `buf` (no NUL); a dir outside this process's root is ENOENT.
pub(crate) fn dir_path(dir: BorrowedFd, buf: &mut [u8]) -> Sys<usize> {
    // SAFETY: fchdir on a valid fd; getcwd writes at most buf.len() bytes.
    let len = unsafe {
        check_int(libc::fchdir(dir.as_raw_fd()))?;
        check(libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()))?
    };
    // The kernel counts the NUL, and names an unreachable cwd "(unreachable)/…".
    match (len as usize).checked_sub(1) {
        Some(path_len) if buf.first() == Some(&b'/') => Ok(path_len),
        _ => Err(libc::ENOENT),
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn stat_at(dir: BorrowedFd, name: &CStr) -> Sys<libc::stat> {
    // SAFETY: stat is plain data and fstatat fills it; name is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check_int(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// `mkdirat(dir, name)`, reporting an existing entry as EEXIST.
pub(crate) fn mkdir_new_at(dir: BorrowedFd, name: &CStr, mode: libc::mode_t) -> Sys<()> {
    // SAFETY: name is NUL-terminated.
    check_int(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// Creates the file `name` in `dir` (never through a symlink, never an existing one: EEXIST)
/// and opens it with `flags` (`O_WRONLY`, …).
pub(crate) fn create_new_at(
    dir: BorrowedFd,
    name: &CStr,
    flags: c_int,
    mode: libc::mode_t,
) -> Sys<OwnedFd> {
    let flags = flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: name is NUL-terminated.
    owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) } as c_long)
}

pub(crate) fn fchown(fd: BorrowedFd, uid: u32, gid: u32) -> Sys<()> {
    // SAFETY: a plain system call on a valid fd.
    check_int(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// `unlinkat(dir, name)`; `dir_entry` removes a directory (only an empty one).
pub(crate) fn unlink_at(dir: BorrowedFd, name: &CStr, dir_entry: bool) -> Sys<()> {
    let flags = if dir_entry { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: name is NUL-terminated.
    check_int(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// Whether the open file `fd` has the extended attribute `name`.
pub(crate) fn has_xattr(fd: BorrowedFd, name: &CStr) -> Sys<bool> {
    // SAFETY: a zero-sized query: no buffer is written.
    match check(
        unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), ptr::null_mut(), 0) } as c_long,
    ) {
        Ok(_) => Ok(true),
        Err(libc::ENODATA) => Ok(false),
        Err(e) => Err(e),
    }
}
