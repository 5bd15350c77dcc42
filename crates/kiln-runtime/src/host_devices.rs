//! `kiln run --device`: host devices a container is given. Each becomes a node in the
//! container's own `/dev` tmpfs, made by the clone child with `mknod` (the host device's
//! type, numbers, mode and owner), and a rule in the container's device allow-list with
//! the access asked for (SECURITY.md rule 12: the node alone opens nothing; the cgroup
//! decides, and only for that device).
//!
//! Why `mknod` in `/dev` and not a bind of the host node: kiln's `/dev` tmpfs is the one
//! filesystem a container sees that allows device nodes (the root and every `-v` are
//! `nodev`), and a node made there holds no reference to the host's `/dev`. That is also
//! why the container path must be under `/dev` and must not be one of kiln's own entries
//! there (`null`, `pts`, `shm`, …).
//!
//! [`DeviceNode::from_host`] runs in the parent (it reads the host); [`make_all`] in the
//! allocation-free child, on paths prepared by [`prepare`].

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::cgroups::{Access, DeviceKind, DeviceRule};
use super::devices::is_kilns_own_dev_entry;
use super::error::{Report, Stage};
use super::plan::c_string;
use super::sys::{self, Errno};
use super::RuntimeError;

/// How deep and how many device nodes a directory given as a device may hold.
const MAX_DIR_DEPTH: usize = 8;
const MAX_DIR_DEVICES: usize = 1024;

/// A device node a container gets, as the host has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceNode {
    /// Absolute path in the container, normalised, under `/dev/`.
    pub path: String,
    /// `Char` or `Block`.
    pub kind: DeviceKind,
    pub major: u32,
    pub minor: u32,
    /// Permission bits, owner and group of the node: the host node's, as Docker does.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// What the container may do with it (the cgroup rule).
    pub access: Access,
}

/// Why a host path cannot be given as a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device {}: not a device node (nor a directory of them)", .0.display())]
    NotADevice(PathBuf),
    #[error("device {}: the directory holds no device nodes", .0.display())]
    EmptyDir(PathBuf),
    #[error("device {}: the directory holds more than {max} device nodes or is nested deeper than {depth}", path.display(), max = MAX_DIR_DEVICES, depth = MAX_DIR_DEPTH)]
    DirTooLarge { path: PathBuf },
    #[error("device {}: {target} is kiln's own in the container's /dev", host.display())]
    ReservedTarget { host: PathBuf, target: String },
    #[error("device {target} is given twice")]
    Twice { target: String },
}

impl DeviceError {
    /// The host path the error is about, when it is about one.
    pub fn host(&self) -> Option<&Path> {
        match self {
            DeviceError::Unreadable { path, .. }
            | DeviceError::NotADevice(path)
            | DeviceError::EmptyDir(path)
            | DeviceError::DirTooLarge { path } => Some(path),
            DeviceError::ReservedTarget { host, .. } => Some(host),
            DeviceError::Twice { .. } => None,
        }
    }
}

impl DeviceNode {
    /// The device at `host` (symlinks followed, as `/dev/disk/by-id/…` are) for the
    /// container path `target`; a directory gives every device node below it, at the same
    /// place below `target` (Docker's rule).
    pub fn from_host(
        host: &Path,
        target: &str,
        access: Access,
    ) -> Result<Vec<DeviceNode>, DeviceError> {
        let unreadable = |source| DeviceError::Unreadable {
            path: host.to_owned(),
            source,
        };
        let meta = std::fs::metadata(host).map_err(unreadable)?;
        let nodes = match meta.is_dir() {
            true => {
                let mut nodes = Vec::new();
                walk_dir(host, target, access, 0, &mut nodes)?;
                if nodes.is_empty() {
                    return Err(DeviceError::EmptyDir(host.to_owned()));
                }
                nodes
            }
            false => vec![node_of(&meta, target, access)
                .ok_or_else(|| DeviceError::NotADevice(host.to_owned()))?],
        };
        if let Some(own) = nodes.iter().find(|n| !may_be_made(&n.path)) {
            return Err(DeviceError::ReservedTarget {
                host: host.to_owned(),
                target: own.path.clone(),
            });
        }
        Ok(nodes)
    }

    /// An error when two of `nodes` are at the same container path.
    pub fn check_distinct(nodes: &[DeviceNode]) -> Result<(), DeviceError> {
        for (i, node) in nodes.iter().enumerate() {
            if nodes[..i].iter().any(|n| n.path == node.path) {
                return Err(DeviceError::Twice {
                    target: node.path.clone(),
                });
            }
        }
        Ok(())
    }

    /// The cgroup rule that lets the container use this device.
    pub fn rule(&self) -> DeviceRule {
        DeviceRule::device(self.kind, self.major, self.minor, self.access)
    }
}

/// Every device node below `dir` (symlinks not followed), placed below `target`.
fn walk_dir(
    dir: &Path,
    target: &str,
    access: Access,
    depth: usize,
    out: &mut Vec<DeviceNode>,
) -> Result<(), DeviceError> {
    let too_large = || DeviceError::DirTooLarge {
        path: dir.to_owned(),
    };
    if depth > MAX_DIR_DEPTH {
        return Err(too_large());
    }
    let unreadable = |source| DeviceError::Unreadable {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(unreadable)?
        .collect::<Result<_, _>>()
        .map_err(unreadable)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|source| DeviceError::Unreadable {
            path: path.clone(),
            source,
        })?;
        let below = format!("{target}/{name}");
        if meta.is_dir() {
            walk_dir(&path, &below, access, depth + 1, out)?;
        } else if let Some(node) = node_of(&meta, &below, access) {
            out.push(node);
        }
        if out.len() > MAX_DIR_DEVICES {
            return Err(too_large());
        }
    }
    Ok(())
}

/// The node `meta` describes, if it is a character or block device.
fn node_of(meta: &std::fs::Metadata, target: &str, access: Access) -> Option<DeviceNode> {
    let kind = match meta.file_type() {
        t if t.is_char_device() => DeviceKind::Char,
        t if t.is_block_device() => DeviceKind::Block,
        _ => return None,
    };
    let rdev = meta.rdev();
    Some(DeviceNode {
        path: target.to_owned(),
        kind,
        major: libc::major(rdev),
        minor: libc::minor(rdev),
        mode: meta.mode() & 0o777,
        uid: meta.uid(),
        gid: meta.gid(),
        access,
    })
}

/// Whether `path` is below `/dev`, with no `.` or `..`, and not one of kiln's own `/dev`
/// entries or below one.
fn may_be_made(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/dev/") else {
        return false;
    };
    let mut parts = rest.split('/');
    let first = parts.next().unwrap_or("");
    let clean = rest
        .split('/')
        .all(|p| !p.is_empty() && p != "." && p != "..");
    clean && !is_kilns_own_dev_entry(first)
}

/// One node, prepared for the allocation-free child.
#[derive(Debug)]
pub(crate) struct PreparedDevice {
    /// The container path, for messages.
    pub path: String,
    /// The dirs between `/dev` and the node, outermost first, created when missing.
    dirs: Vec<CString>,
    name: CString,
    /// File type and permission bits.
    mode: libc::mode_t,
    dev: libc::dev_t,
    uid: u32,
    gid: u32,
    /// For a container with a user namespace of its own, which cannot make a usable node:
    /// the index among the child's kept fds of the node the parent made
    /// ([`make_for_user_namespace`]), bound on an empty file instead.
    pub tree: Option<usize>,
}

/// The nodes as the child makes them; a path given twice is an error.
pub(crate) fn prepare(nodes: &[DeviceNode]) -> Result<Vec<PreparedDevice>, RuntimeError> {
    let mut out: Vec<PreparedDevice> = Vec::with_capacity(nodes.len());
    for node in nodes {
        if !may_be_made(&node.path) || out.iter().any(|p| p.path == node.path) {
            return Err(super::error::InvalidSandbox::DevicePath(node.path.clone()).into());
        }
        let rest = &node.path["/dev/".len()..];
        let mut parts: Vec<&str> = rest.split('/').collect();
        let name = parts.pop().unwrap_or_default();
        let type_bits = match node.kind {
            DeviceKind::Block => libc::S_IFBLK,
            _ => libc::S_IFCHR,
        };
        out.push(PreparedDevice {
            path: node.path.clone(),
            dirs: parts
                .iter()
                .map(|d| c_string(d, "device path"))
                .collect::<Result<_, _>>()?,
            name: c_string(name, "device path")?,
            mode: type_bits | (node.mode & 0o777),
            dev: libc::makedev(node.major, node.minor),
            uid: node.uid,
            gid: node.gid,
            tree: None,
        });
    }
    Ok(out)
}

/// For a container with a user namespace of its own: makes each node in a tmpfs of the
/// host's user namespace (a tmpfs mounted in the container's is `nodev` whatever kiln
/// asks), its owner the container's view of the host node's (`to_host` maps an id,
/// `None` for one the namespace lacks, which keeps the host's), and returns a detached
/// mount of each node, for the child to bind in its `/dev`; records the fd index each
/// gets from `first_index` on.
pub(crate) fn make_for_user_namespace(
    devices: &mut [PreparedDevice],
    first_index: usize,
    to_host: impl Fn(u32, bool) -> Option<u32>,
) -> Result<Vec<OwnedFd>, RuntimeError> {
    if devices.is_empty() {
        return Ok(Vec::new());
    }
    let fail = |path: &str| {
        let path = path.to_owned();
        move |e: Errno| RuntimeError::Setup {
            stage: Stage::MakeDevice.name(),
            target: Some(path.clone()),
            errno: nix::errno::Errno::from_raw(e),
        }
    };
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC;
    let holder = sys::new_mount(c"tmpfs", &[(c"mode", Some(c"0700"))], attrs)
        .map_err(fail("a tmpfs for the device nodes"))?;
    let mut trees = Vec::with_capacity(devices.len());
    for (i, device) in devices.iter_mut().enumerate() {
        let name = c_string(&format!("d{i}"), "device")?;
        let made = &device.path;
        // SAFETY: the name is NUL-terminated; `holder` is a directory (mount) fd.
        let ret =
            unsafe { libc::mknodat(holder.as_raw_fd(), name.as_ptr(), device.mode, device.dev) };
        sys::check(ret as libc::c_long).map_err(fail(made))?;
        // The mode exactly, whatever kiln's umask took from it (the child has none).
        // SAFETY: as above; the name is the node just made.
        let ret =
            unsafe { libc::fchmodat(holder.as_raw_fd(), name.as_ptr(), device.mode & 0o7777, 0) };
        sys::check(ret as libc::c_long).map_err(fail(made))?;
        let uid = to_host(device.uid, true).unwrap_or(device.uid);
        let gid = to_host(device.gid, false).unwrap_or(device.gid);
        // SAFETY: as above; the node was just made, and no symlink is followed.
        let ret = unsafe {
            libc::fchownat(
                holder.as_raw_fd(),
                name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        sys::check(ret as libc::c_long).map_err(fail(made))?;
        trees.push(sys::clone_tree(holder.as_raw_fd(), &name, false).map_err(fail(made))?);
        device.tree = Some(first_index + i);
    }
    Ok(trees)
}

/// Makes every node in the container's `/dev` (the tmpfs mounted at `dev` in `root`), or
/// binds the one the parent made on an empty file (kept fd `first_tree_fd` + its index).
/// Runs in the clone child, before `pivot_root`.
pub(crate) fn make_all(
    root: BorrowedFd,
    devices: &[PreparedDevice],
    first_tree_fd: RawFd,
) -> Result<(), Report> {
    if devices.is_empty() {
        return Ok(());
    }
    let fail = |i: usize| {
        move |errno: Errno| Report {
            stage: Stage::MakeDevice,
            errno,
            detail: i as u32,
        }
    };
    let dev = sys::open_in_root(root, c"dev", libc::O_DIRECTORY).map_err(fail(0))?;
    for (i, device) in devices.iter().enumerate() {
        make_one(dev.as_fd(), device, first_tree_fd).map_err(fail(i))?;
    }
    Ok(())
}

fn make_one(dev: BorrowedFd, device: &PreparedDevice, first_tree_fd: RawFd) -> Result<(), Errno> {
    let mut parent: Option<OwnedFd> = None;
    for dir in &device.dirs {
        let at = parent.as_ref().map_or(dev, |p| p.as_fd());
        match sys::mkdir_new_at(at, dir, 0o755) {
            Ok(()) | Err(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        parent = Some(sys::open_beneath(
            at,
            dir,
            libc::O_PATH | libc::O_DIRECTORY,
        )?);
    }
    let at = parent.as_ref().map_or(dev, |p| p.as_fd());
    if let Some(index) = device.tree {
        let file = sys::create_new_at(at, &device.name, libc::O_RDONLY, 0o600)?;
        // SAFETY: the fd is one the child keeps open through its setup.
        let node = unsafe { BorrowedFd::borrow_raw(first_tree_fd + index as RawFd) };
        return sys::attach_borrowed(node, file.as_fd());
    }
    // SAFETY: the name is NUL-terminated; `at` is a directory fd.
    let made = unsafe {
        libc::mknodat(
            at.as_raw_fd(),
            device.name.as_ptr(),
            device.mode,
            device.dev,
        )
    };
    sys::check(made as libc::c_long)?;
    // SAFETY: as above; the node was just made, and no symlink is followed.
    let owned = unsafe {
        libc::fchownat(
            at.as_raw_fd(),
            device.name.as_ptr(),
            device.uid,
            device.gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    sys::check(owned as libc::c_long).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_device_is_read_with_its_numbers_and_mode() {
        let nodes =
            DeviceNode::from_host(Path::new("/dev/null"), "/dev/xnull", Access::READ).unwrap();
        assert_eq!(nodes.len(), 1);
        let n = &nodes[0];
        assert_eq!((n.kind, n.major, n.minor), (DeviceKind::Char, 1, 3));
        assert_eq!(n.mode, 0o666);
        assert_eq!(n.rule().v1_line(), "c 1:3 r");
    }

    #[test]
    fn what_is_no_device_or_kilns_own_is_refused() {
        let missing = DeviceNode::from_host(Path::new("/nonexistent"), "/dev/x", Access::ALL);
        assert!(matches!(missing, Err(DeviceError::Unreadable { .. })));
        let file = DeviceNode::from_host(Path::new("/etc/hostname"), "/dev/x", Access::ALL);
        assert!(matches!(file, Err(DeviceError::NotADevice(_))));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            DeviceNode::from_host(empty.path(), "/dev/x", Access::ALL),
            Err(DeviceError::EmptyDir(_))
        ));
        for own in ["/dev/null", "/dev/pts/9", "/dev/shm/x", "/dev/fd/3"] {
            let err = DeviceNode::from_host(Path::new("/dev/zero"), own, Access::ALL);
            assert!(
                matches!(err, Err(DeviceError::ReservedTarget { .. })),
                "{own}"
            );
        }
        let twice = DeviceNode::from_host(Path::new("/dev/zero"), "/dev/z", Access::ALL).unwrap();
        assert!(prepare(&[twice[0].clone(), twice[0].clone()]).is_err());
    }

    #[test]
    fn a_directory_gives_every_node_below_it() {
        let nodes = DeviceNode::from_host(Path::new("/dev/pts"), "/dev/hostpts", Access::READ);
        // /dev/pts holds ptmx at least (a character device).
        let nodes = nodes.unwrap();
        assert!(
            nodes.iter().any(|n| n.path == "/dev/hostpts/ptmx"),
            "{nodes:?}"
        );
        let prepared = prepare(&nodes).unwrap();
        assert_eq!(prepared[0].dirs, [c"hostpts".to_owned()]);
    }
}
