//! The sandbox's pseudo filesystems: `/proc`, a minimal `/dev`, read-only `/sys`.
//!
//! Each is a fresh filesystem made with `fsopen`/`fsmount` and attached with `move_mount`
//! onto a mount point opened inside the root with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_SYMLINKS)`, so no image symlink is ever followed to place a mount. `/dev` is a
//! tmpfs with character devices made by `mknod` (kiln runs as root, and a device node in a
//! tmpfs needs no host device to bind), plus a private devpts instance and `/dev/shm`.
//! All of this runs in the clone child: no allocation.

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use libc::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

use super::error::Stage;
use super::sys::{self, Errno};

/// A failed stage and its errno.
pub(crate) type StageResult<T> = Result<T, (Stage, Errno)>;

fn at(stage: Stage) -> impl Fn(Errno) -> (Stage, Errno) {
    move |e| (stage, e)
}

struct CharDevice {
    name: &'static CStr,
    major: u32,
    minor: u32,
}

/// The devices every container runtime provides (the OCI runtime spec's default set).
const CHAR_DEVICES: [CharDevice; 6] = [
    CharDevice {
        name: c"null",
        major: 1,
        minor: 3,
    },
    CharDevice {
        name: c"zero",
        major: 1,
        minor: 5,
    },
    CharDevice {
        name: c"full",
        major: 1,
        minor: 7,
    },
    CharDevice {
        name: c"random",
        major: 1,
        minor: 8,
    },
    CharDevice {
        name: c"urandom",
        major: 1,
        minor: 9,
    },
    CharDevice {
        name: c"tty",
        major: 5,
        minor: 0,
    },
];

/// (link name, target) in `/dev`.
const DEV_SYMLINKS: [(&CStr, &CStr); 5] = [
    (c"ptmx", c"pts/ptmx"),
    (c"fd", c"/proc/self/fd"),
    (c"stdin", c"/proc/self/fd/0"),
    (c"stdout", c"/proc/self/fd/1"),
    (c"stderr", c"/proc/self/fd/2"),
];

/// The size option of `/dev/shm` when none is given: Docker's 64 MiB.
pub(crate) const DEFAULT_SHM_SIZE: &CStr = c"65536k";

/// Whether `name` is an entry kiln makes in `/dev` itself (a device, a symlink, `pts` or
/// `shm`), where no `--device` may go.
pub(crate) fn is_kilns_own_dev_entry(name: &str) -> bool {
    let is = |c: &CStr| c.to_bytes() == name.as_bytes();
    CHAR_DEVICES.iter().any(|d| is(d.name))
        || DEV_SYMLINKS.iter().any(|(link, _)| is(link))
        || ["pts", "shm"].contains(&name)
}

/// Mounts `/proc`, `/dev` (with pts, and shm of `shm_size`, a tmpfs `size=` value) and a
/// read-only `/sys` into `root`.
pub(crate) fn mount_pseudo_filesystems(root: BorrowedFd, shm_size: &CStr) -> StageResult<()> {
    mount_proc(root)?;
    mount_dev(root, shm_size)?;
    mount_sys(root)
}

/// A mount point dir inside the root; a symlink or non-dir there is an error, not followed.
fn mount_point(root: BorrowedFd, rel: &CStr, stage: Stage) -> StageResult<OwnedFd> {
    sys::open_in_root(root, rel, libc::O_DIRECTORY).map_err(at(stage))
}

fn mount_proc(root: BorrowedFd) -> StageResult<()> {
    let target = mount_point(root, c"proc", Stage::MountProc)?;
    let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    // fsopen here, in the child, so the instance belongs to the new pid namespace.
    let proc = sys::new_mount(c"proc", &[], attrs).map_err(at(Stage::MountProc))?;
    sys::attach(&proc, target.as_fd()).map_err(at(Stage::MountProc))
}

fn mount_sys(root: BorrowedFd) -> StageResult<()> {
    let target = mount_point(root, c"sys", Stage::MountSys)?;
    let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    // A fresh sysfs (not a bind of the host's) shows the step's own network namespace.
    let sysfs = sys::new_mount(c"sysfs", &[], attrs).map_err(at(Stage::MountSys))?;
    sys::attach(&sysfs, target.as_fd()).map_err(at(Stage::MountSys))
}

fn mount_dev(root: BorrowedFd, shm_size: &CStr) -> StageResult<()> {
    let target = mount_point(root, c"dev", Stage::MountDev)?;
    let options = [(c"mode", Some(c"755")), (c"size", Some(c"65536k"))];
    // Not nodev: the device nodes below must work.
    let dev = sys::new_mount(c"tmpfs", &options, MOUNT_ATTR_NOSUID).map_err(at(Stage::MountDev))?;
    sys::attach(&dev, target.as_fd()).map_err(at(Stage::MountDev))?;
    populate_dev(dev.as_fd()).map_err(at(Stage::PopulateDev))?;
    mount_devpts(dev.as_fd())?;
    mount_shm(dev.as_fd(), shm_size)
}

fn populate_dev(dev: BorrowedFd) -> Result<(), Errno> {
    for d in &CHAR_DEVICES {
        let mode = libc::S_IFCHR | 0o666;
        // SAFETY: the name is NUL-terminated; dev is a directory fd.
        let ret = unsafe {
            libc::mknodat(
                dev.as_raw_fd(),
                d.name.as_ptr(),
                mode,
                libc::makedev(d.major, d.minor),
            )
        };
        sys::check(ret as libc::c_long)?;
    }
    for (name, mode) in [(c"pts", 0o755), (c"shm", 0o1777)] {
        // SAFETY: as above.
        sys::check(unsafe { libc::mkdirat(dev.as_raw_fd(), name.as_ptr(), mode) } as libc::c_long)?;
    }
    for (name, target) in &DEV_SYMLINKS {
        // SAFETY: as above.
        let ret = unsafe { libc::symlinkat(target.as_ptr(), dev.as_raw_fd(), name.as_ptr()) };
        sys::check(ret as libc::c_long)?;
    }
    Ok(())
}

/// A devpts instance of the step's own, so its ptys are not the host's.
fn mount_devpts(dev: BorrowedFd) -> StageResult<()> {
    let stage = Stage::MountDevPts;
    let target = sys::open_in_root(dev, c"pts", libc::O_DIRECTORY).map_err(at(stage))?;
    let options = [
        (c"newinstance", None),
        (c"ptmxmode", Some(c"0666")),
        (c"mode", Some(c"0620")),
        (c"gid", Some(c"5")),
    ];
    let pts = sys::new_mount(c"devpts", &options, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)
        .map_err(at(stage))?;
    sys::attach(&pts, target.as_fd()).map_err(at(stage))
}

fn mount_shm(dev: BorrowedFd, size: &CStr) -> StageResult<()> {
    let stage = Stage::MountDevShm;
    let target = sys::open_in_root(dev, c"shm", libc::O_DIRECTORY).map_err(at(stage))?;
    let options = [(c"mode", Some(c"1777")), (c"size", Some(size))];
    let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    let shm = sys::new_mount(c"tmpfs", &options, attrs).map_err(at(stage))?;
    sys::attach(&shm, target.as_fd()).map_err(at(stage))
}

/// Binds the host file `host` read-only onto `rel` inside the root, only when `rel` is a
/// regular file of the image reached without any symlink. A missing or odd target is
/// skipped: creating it would put a file into the step's layer. Returns whether it bound.
pub(crate) fn bind_host_file(root: BorrowedFd, host: &CStr, rel: &CStr) -> Result<bool, Errno> {
    let target = match sys::open_in_root(root, rel, 0) {
        Ok(fd) => fd,
        Err(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV) => return Ok(false),
        Err(e) => return Err(e),
    };
    if sys::file_type(target.as_fd())? != libc::S_IFREG {
        return Ok(false);
    }
    let tree = match sys::read_only_bind_of(host) {
        Ok(tree) => tree,
        Err(libc::ENOENT) => return Ok(false),
        Err(e) => return Err(e),
    };
    sys::attach(&tree, target.as_fd())?;
    Ok(true)
}
