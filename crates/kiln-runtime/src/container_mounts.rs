//! The container-only mounts of the clone child: kiln's `/etc` files, `-v` binds and
//! `--tmpfs` mounts, masked and read-only paths (SECURITY.md G11), and the read-only root.
//!
//! Runs before `pivot_root`, on fds resolved inside the new root with `openat2`: bind and
//! tmpfs targets follow the image's symlinks only as if the root were `/` (so never out of
//! it) and are created when missing, like Docker; `/etc` files and masked paths follow no
//! symlink at all. Allocation-free, like all of the child.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use libc::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

use super::error::{MountTargetError, Report, Stage, NO_DETAIL};
use super::sys::{self, Errno};

/// Files and dirs hidden from containers (relative to the root): files get `/dev/null`
/// bound over them, dirs an empty read-only tmpfs.
pub(crate) const MASKED_PATHS: [&CStr; 11] = [
    c"proc/acpi",
    c"proc/asound",
    c"proc/kcore",
    c"proc/keys",
    c"proc/latency_stats",
    c"proc/timer_list",
    c"proc/timer_stats",
    c"proc/sched_debug",
    c"proc/scsi",
    c"sys/firmware",
    c"sys/devices/virtual/powercap",
];

/// Paths bound read-only over themselves (relative to the root).
pub(crate) const READONLY_PATHS: [&CStr; 5] = [
    c"proc/bus",
    c"proc/fs",
    c"proc/irq",
    c"proc/sys",
    c"proc/sysrq-trigger",
];

/// What a user mount puts at its target.
#[derive(Debug)]
pub(crate) enum MountSource {
    /// A detached copy of a host path the parent made ([`bind_tree`]): its index among
    /// the fds the child keeps, and whether it is a directory.
    Bind {
        tree: usize,
        dir: bool,
    },
    Tmpfs,
}

/// A `-v` or `--tmpfs` mount, prepared by the parent.
#[derive(Debug)]
pub(crate) struct UserMount {
    pub source: MountSource,
    /// The normalised target, for messages (`/data`).
    pub target: String,
    /// Every ancestor of the target and the target, relative to the root, outermost first.
    pub prefixes: Vec<CString>,
    /// The last component of each prefix.
    pub names: Vec<CString>,
}

/// A mount target split for resolution inside the root.
#[derive(Debug)]
pub(crate) struct TargetPath {
    /// The normalised target, for messages (`/data`).
    pub target: String,
    /// Every ancestor of the target and the target, relative to the root, outermost first.
    pub prefixes: Vec<CString>,
    /// The last component of each prefix.
    pub names: Vec<CString>,
}

impl TargetPath {
    /// The absolute `target`, normalised lexically (`..` stops at `/`).
    pub(crate) fn new(target: &str) -> Result<TargetPath, MountTargetError> {
        if !target.starts_with('/') {
            return Err(MountTargetError::NotAbsolute(target.into()));
        }
        let mut parts: Vec<&str> = Vec::new();
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                name => parts.push(name),
            }
        }
        if parts.is_empty() {
            return Err(MountTargetError::Root(target.into()));
        }
        let c = |s: String| CString::new(s).map_err(|_| MountTargetError::Nul(target.into()));
        let prefixes = (1..=parts.len())
            .map(|n| c(parts[..n].join("/")))
            .collect::<Result<_, _>>()?;
        let names = parts
            .iter()
            .map(|p| c(p.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(TargetPath {
            target: format!("/{}", parts.join("/")),
            prefixes,
            names,
        })
    }

    /// Whether `self` is `other` or below it.
    pub(crate) fn is_within(&self, other: &TargetPath) -> bool {
        self.names.starts_with(&other.names)
    }
}

impl UserMount {
    /// A mount at the absolute `target`, normalised lexically (`..` stops at `/`).
    pub(crate) fn new(source: MountSource, target: &str) -> Result<UserMount, MountTargetError> {
        let path = TargetPath::new(target)?;
        Ok(UserMount {
            source,
            target: path.target,
            prefixes: path.prefixes,
            names: path.names,
        })
    }

    /// Depth of the target, to mount parents before children.
    pub(crate) fn depth(&self) -> usize {
        self.prefixes.len()
    }

    fn target_is_dir(&self) -> bool {
        match self.source {
            MountSource::Bind { dir, .. } => dir,
            MountSource::Tmpfs => true,
        }
    }
}

fn at(stage: Stage, detail: usize) -> impl Fn(Errno) -> Report {
    move |errno| Report {
        stage,
        errno,
        detail: detail as u32,
    }
}

/// The parent's half of a `-v` bind: a detached copy of the host path `source` with the
/// mounts below it, `nodev` on the whole tree (`-v /dev:/x` must not give the host's
/// devices, SECURITY.md rule 12; only kiln's own /dev holds usable nodes) and read-only
/// when asked. Made before `clone`, in kiln's own namespaces, so the child never looks a
/// host path up (in a user namespace of its own, it could not).
pub(crate) fn bind_tree(source: &CStr, readonly: bool) -> Result<OwnedFd, Errno> {
    let tree = sys::clone_tree(libc::AT_FDCWD, source, true)?;
    let attrs = match readonly {
        true => MOUNT_ATTR_NODEV | MOUNT_ATTR_RDONLY,
        false => MOUNT_ATTR_NODEV,
    };
    sys::set_mount_attrs(tree.as_fd(), attrs, true)?;
    Ok(tree)
}

/// The parent's half of binding kiln's `/etc` file `host`: a detached copy, writable but
/// `nosuid,nodev,noexec`.
pub(crate) fn etc_file_tree(host: &CStr) -> Result<OwnedFd, Errno> {
    let tree = sys::clone_tree(libc::AT_FDCWD, host, false)?;
    let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    sys::set_mount_attrs(tree.as_fd(), attrs, false)?;
    Ok(tree)
}

/// Attaches the detached copy `tree` ([`etc_file_tree`]) over the regular file `rel` of
/// the root. The target is reached without following any symlink (the container init
/// layer puts a regular file there).
pub(crate) fn bind_file_over(root: BorrowedFd, tree: RawFd, rel: &CStr) -> Result<(), Errno> {
    let target = sys::open_in_root(root, rel, 0)?;
    if sys::file_type(target.as_fd())? != libc::S_IFREG {
        return Err(libc::EEXIST);
    }
    // SAFETY: the fd is one the child keeps open through its setup.
    sys::attach_borrowed(unsafe { BorrowedFd::borrow_raw(tree) }, target.as_fd())
}

/// Performs user mount number `index`, creating its target inside the root when missing;
/// a bind's tree is kept fd `first_tree_fd` + its index.
pub(crate) fn mount_user(
    root: BorrowedFd,
    m: &UserMount,
    index: usize,
    first_tree_fd: RawFd,
) -> Result<(), Report> {
    let target = create_target(
        root,
        &m.prefixes,
        &m.names,
        m.target_is_dir(),
        0,
        &mut |_, _| Ok(()),
    )
    .map(|reached| reached.fd)
    .map_err(at(Stage::MountTarget, index))?;
    match &m.source {
        MountSource::Bind { tree, .. } => {
            // SAFETY: the fd is one the child keeps open through its setup.
            let tree = unsafe { BorrowedFd::borrow_raw(first_tree_fd + *tree as RawFd) };
            sys::attach_borrowed(tree, target.as_fd()).map_err(at(Stage::BindMount, index))
        }
        MountSource::Tmpfs => {
            let fail = at(Stage::MountTmpfs, index);
            let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
            let fs = sys::new_mount(c"tmpfs", &[(c"mode", Some(c"1777"))], attrs).map_err(&fail)?;
            sys::attach(&fs, target.as_fd()).map_err(fail)
        }
    }
}

/// What [`create_target`] reached.
pub(crate) struct Reached {
    /// An `O_PATH` fd of the target.
    pub fd: OwnedFd,
    /// The index of the first component kiln created; every later one was created too.
    pub first_created: Option<usize>,
}

/// Opens a target given as [`TargetPath`] prefixes and names (following symlinks inside the
/// root), creating missing components: dirs, and an empty file as the last one unless
/// `last_is_dir`. `extra_resolve` adds `RESOLVE_*` flags to every lookup.
/// `before_creating(i, parent)` runs once, before kiln creates its first component (number
/// `i`, in the dir `parent`). Once one component is created, the rest are created below it
/// without resolving the path again.
pub(crate) fn create_target(
    root: BorrowedFd,
    prefixes: &[CString],
    names: &[CString],
    last_is_dir: bool,
    extra_resolve: u64,
    before_creating: &mut dyn FnMut(usize, BorrowedFd) -> Result<(), Errno>,
) -> Result<Reached, Errno> {
    let mut parent: Option<OwnedFd> = None;
    let mut first_created = None;
    let last = prefixes.len().checked_sub(1).ok_or(libc::EINVAL)?;
    for (i, (prefix, name)) in prefixes.iter().zip(names).enumerate() {
        let want_dir = i < last || last_is_dir;
        let flags = if want_dir { libc::O_DIRECTORY } else { 0 };
        let found = match first_created {
            Some(_) => Err(libc::ENOENT),
            None => sys::open_following_in_root(root, prefix, flags, extra_resolve),
        };
        let fd = match found {
            Err(libc::ENOENT) => {
                let dir = parent.as_ref().map_or(root, |p| p.as_fd());
                if first_created.is_none() {
                    before_creating(i, dir)?;
                }
                match create_entry(dir, name, want_dir) {
                    Ok(()) => {
                        first_created.get_or_insert(i);
                        sys::open_beneath(dir, name, libc::O_PATH | flags)?
                    }
                    // A dangling symlink: resolved again, it fails unless its target appeared.
                    Err(libc::EEXIST) => {
                        sys::open_following_in_root(root, prefix, flags, extra_resolve)?
                    }
                    Err(e) => return Err(e),
                }
            }
            other => other?,
        };
        parent = Some(fd);
    }
    let fd = parent.ok_or(libc::EINVAL)?;
    Ok(Reached { fd, first_created })
}

/// A new dir (0755) or empty file (0644) `name` in `dir`; EEXIST if something is there.
fn create_entry(dir: BorrowedFd, name: &CStr, want_dir: bool) -> Result<(), Errno> {
    match want_dir {
        true => sys::mkdir_new_at(dir, name, 0o755),
        false => sys::create_new_at(dir, name, libc::O_WRONLY, 0o644).map(drop),
    }
}

/// Masks [`MASKED_PATHS`] that exist: `/dev/null` (the one kiln just made, checked to be
/// the null device) over files, an empty read-only tmpfs over dirs.
pub(crate) fn mask_paths(root: BorrowedFd) -> Result<(), Report> {
    let null =
        sys::open_in_root(root, c"dev/null", 0).map_err(at(Stage::MaskPath, NO_DETAIL as usize))?;
    let st = sys::stat_fd(null.as_fd()).map_err(at(Stage::MaskPath, NO_DETAIL as usize))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != libc::makedev(1, 3) {
        return Err(at(Stage::MaskPath, NO_DETAIL as usize)(libc::EPERM));
    }
    for (i, rel) in MASKED_PATHS.iter().enumerate() {
        mask_one(root, null.as_fd(), rel).map_err(at(Stage::MaskPath, i))?;
    }
    Ok(())
}

fn mask_one(root: BorrowedFd, null: BorrowedFd, rel: &CStr) -> Result<(), Errno> {
    let target = match sys::open_in_root(root, rel, 0) {
        Ok(fd) => fd,
        Err(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC;
    let cover = match sys::file_type(target.as_fd())? {
        libc::S_IFDIR => {
            let empty = [(c"size", Some(c"4k"))];
            sys::new_mount(c"tmpfs", &empty, attrs | MOUNT_ATTR_NODEV)?
        }
        _ => {
            // Not nodev: the null device must stay openable.
            let tree = sys::clone_tree(null.as_raw_fd(), c"", false)?;
            sys::set_mount_attrs(tree.as_fd(), attrs, false)?;
            tree
        }
    };
    sys::attach(&cover, target.as_fd())
}

/// Binds each of [`READONLY_PATHS`] that exists read-only over itself.
pub(crate) fn make_paths_read_only(root: BorrowedFd) -> Result<(), Report> {
    for (i, rel) in READONLY_PATHS.iter().enumerate() {
        read_only_bind(root, rel).map_err(at(Stage::ReadonlyPath, i))?;
    }
    Ok(())
}

fn read_only_bind(root: BorrowedFd, rel: &CStr) -> Result<(), Errno> {
    let target = match sys::open_in_root(root, rel, 0) {
        Ok(fd) => fd,
        Err(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    let tree = sys::clone_tree(target.as_raw_fd(), c"", true)?;
    sys::set_mount_attrs(tree.as_fd(), attrs, true)?;
    sys::attach(&tree, target.as_fd())
}

/// Makes the root mount (only it: tmpfs and binds keep their own flags) read-only. Runs
/// after `pivot_root`.
pub(crate) fn make_root_read_only() -> Result<(), Errno> {
    let root = sys::open(c"/", libc::O_PATH | libc::O_DIRECTORY)?;
    sys::set_mount_attrs(root.as_fd(), MOUNT_ATTR_RDONLY, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_normalised_and_split() {
        let m = UserMount::new(MountSource::Tmpfs, "/a//b/./c/../d/").unwrap();
        assert_eq!(m.target, "/a/b/d");
        assert_eq!(
            m.prefixes,
            [c"a".to_owned(), c"a/b".to_owned(), c"a/b/d".to_owned()]
        );
        assert_eq!(m.names, [c"a".to_owned(), c"b".to_owned(), c"d".to_owned()]);
        assert_eq!(
            UserMount::new(MountSource::Tmpfs, "/../x").unwrap().target,
            "/x"
        );
        assert!(UserMount::new(MountSource::Tmpfs, "/..").is_err());
        assert!(UserMount::new(MountSource::Tmpfs, "rel").is_err());
    }
}
