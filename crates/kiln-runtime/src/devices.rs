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
    /// The host's node, bound in its place in a user namespace, where mknod is refused.
    host: &'static CStr,
    major: u32,
    minor: u32,
}

/// The devices every container runtime provides (the OCI runtime spec's default set).
const CHAR_DEVICES: [CharDevice; 6] = [
    CharDevice {
        name: c"null",
        host: c"/dev/null",
        major: 1,
        minor: 3,
    },
    CharDevice {
        name: c"zero",
        host: c"/dev/zero",
        major: 1,
        minor: 5,
    },
    CharDevice {
        name: c"full",
        host: c"/dev/full",
        major: 1,
        minor: 7,
    },
    CharDevice {
        name: c"random",
        host: c"/dev/random",
        major: 1,
        minor: 8,
    },
    CharDevice {
        name: c"urandom",
        host: c"/dev/urandom",
        major: 1,
        minor: 9,
    },
    CharDevice {
        name: c"tty",
        host: c"/dev/tty",
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

/// How the child makes `/dev` and `/sys`: as the host's root, or as root only in a user
/// namespace (rootless kiln), where device nodes cannot be made (the host's are bound),
/// the tty group exists only with subordinate ids, and a fresh sysfs needs a network
/// namespace of the user namespace's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PseudoFs {
    pub in_user_namespace: bool,
    /// gid 5 (tty) exists: devpts may own its ptys by it.
    pub tty_group: bool,
}

impl PseudoFs {
    /// For the process's own user namespace.
    pub(crate) fn current() -> PseudoFs {
        let userns = crate::userns::current();
        PseudoFs {
            in_user_namespace: userns.nested,
            tty_group: userns.mapped_uids > 5,
        }
    }
}

/// Mounts `/proc`, `/dev` (with pts, and shm of `shm_size`, a tmpfs `size=` value) and a
/// read-only `/sys` into `root`.
pub(crate) fn mount_pseudo_filesystems(
    root: BorrowedFd,
    shm_size: &CStr,
    how: PseudoFs,
) -> StageResult<()> {
    mount_proc(root)?;
    mount_dev(root, shm_size, how)?;
    mount_sys(root, how)
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

fn mount_sys(root: BorrowedFd, how: PseudoFs) -> StageResult<()> {
    let target = mount_point(root, c"sys", Stage::MountSys)?;
    let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    // A fresh sysfs (not a bind of the host's) shows the step's own network namespace.
    let sysfs = match sys::new_mount(c"sysfs", &[], attrs) {
        // In a user namespace with the host's network (`--network host`), sysfs belongs
        // to the host's namespace: a read-only bind of the host's then, as runc does.
        Err(libc::EPERM) if how.in_user_namespace => {
            let tree =
                sys::clone_tree(libc::AT_FDCWD, c"/sys", true).map_err(at(Stage::MountSys))?;
            sys::set_mount_attrs(tree.as_fd(), attrs, true).map_err(at(Stage::MountSys))?;
            tree
        }
        other => other.map_err(at(Stage::MountSys))?,
    };
    sys::attach(&sysfs, target.as_fd()).map_err(at(Stage::MountSys))
}

fn mount_dev(root: BorrowedFd, shm_size: &CStr, how: PseudoFs) -> StageResult<()> {
    let target = mount_point(root, c"dev", Stage::MountDev)?;
    let options = [(c"mode", Some(c"755")), (c"size", Some(c"65536k"))];
    // Not nodev: the device nodes below must work.
    let dev = sys::new_mount(c"tmpfs", &options, MOUNT_ATTR_NOSUID).map_err(at(Stage::MountDev))?;
    sys::attach(&dev, target.as_fd()).map_err(at(Stage::MountDev))?;
    match how.in_user_namespace {
        true => bind_host_devices(dev.as_fd()),
        false => make_devices(dev.as_fd()),
    }
    .map_err(at(Stage::PopulateDev))?;
    populate_dev(dev.as_fd()).map_err(at(Stage::PopulateDev))?;
    mount_devpts(dev.as_fd(), how)?;
    mount_shm(dev.as_fd(), shm_size)
}

/// In a user namespace: an empty file for each device with the host's node bound on it
/// (the same set; a tmpfs mounted in a user namespace is `nodev` whatever kiln asks).
fn bind_host_devices(dev: BorrowedFd) -> Result<(), Errno> {
    for d in &CHAR_DEVICES {
        let file = sys::create_new_at(dev, d.name, libc::O_RDONLY, 0o666)?;
        let node = sys::clone_tree(libc::AT_FDCWD, d.host, false)?;
        sys::attach(&node, file.as_fd())?;
    }
    Ok(())
}

fn make_devices(dev: BorrowedFd) -> Result<(), Errno> {
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
    Ok(())
}

/// What `/dev` holds beside the devices: `pts`, `shm` and the usual symlinks.
fn populate_dev(dev: BorrowedFd) -> Result<(), Errno> {
    for (name, mode) in [(c"pts", 0o755), (c"shm", 0o1777)] {
        // SAFETY: the names are NUL-terminated; dev is a directory fd.
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
fn mount_devpts(dev: BorrowedFd, how: PseudoFs) -> StageResult<()> {
    let stage = Stage::MountDevPts;
    let target = sys::open_in_root(dev, c"pts", libc::O_DIRECTORY).map_err(at(stage))?;
    let options = [
        (c"newinstance", None),
        (c"ptmxmode", Some(c"0666")),
        (c"mode", Some(c"0620")),
        (c"gid", Some(c"5")),
    ];
    // Without gid 5 in the namespace devpts refuses `gid=5`: ptys stay root's group.
    let options = match how.tty_group {
        true => &options[..],
        false => &options[..3],
    };
    let pts = sys::new_mount(c"devpts", options, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC)
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
