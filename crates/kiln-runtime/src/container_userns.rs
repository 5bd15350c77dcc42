//! A container's own user namespace (`kiln run --userns=auto|keep-id`), root's hardening:
//! root in the container is not root on the host.
//!
//! Exists because the rest of the runtime assumes the container's ids are the host's. With
//! `auto`, ids 0…N-1 of the container are a slot of host ids no other container has
//! (`id_leases`); with `keep-id`, they are the host's own ids, but in a namespace of the
//! container's, so its capabilities reach only what that namespace owns (podman's
//! meaning for root).
//!
//! The image's files stay as they are on disk: the parent builds the container's root
//! before `clone` as a detached overlay whose layers and upper dir are *idmapped* mounts
//! (on-disk id k is host id slot+k), so the container sees its files under the ids the
//! image gives them, and what it writes lands in its upper dir under in-container ids;
//! `kiln diff`, `commit` and `cp` read it as they read any container's, and the next start
//! may take another slot. The overlay is created in the host's user namespace (so it keeps
//! `trusted.overlay.*` marks, as the layers in the store have them) by a short-lived thread
//! whose filesystem ids are the container's root, since overlayfs creates its work dir with
//! its creator's ids, which an idmapped mount must be able to map. The clone child, already
//! in the new namespace, attaches that overlay as its root; every other host path it would
//! need is also opened by the parent (see `container_mounts`), since the host's root is not
//! root in the namespace.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::str::FromStr;

use nix::errno::Errno;

use crate::error::RuntimeError;
use crate::id_leases::{self, IdLease, SLOT_IDS};
use crate::overlay::{Overlay, CONTAINER_ETC_FILES, INIT_MOUNTPOINTS, PLAIN_CHANGE_SET};
use crate::sys;
use crate::userns::IdMap;

/// Why an ordinary user's kiln cannot give a container a user namespace of its own.
pub const ROOT_ONLY: &str = "a user namespace of the container's own needs root: an ordinary user's containers already run in kiln's user namespace, where root is the user";

const NUL_PATH: &str = "a path of the container's root has a NUL byte";

/// Whose ids a container runs with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UsernsMode {
    /// The host's user namespace (Docker's default).
    #[default]
    Host,
    /// `size` ids from a slot of host ids of the container's own.
    Auto { size: u32 },
    /// The host's ids, in a user namespace of the container's own.
    KeepId,
}

impl UsernsMode {
    /// Whether the container gets a user namespace of its own.
    pub fn is_private(self) -> bool {
        self != UsernsMode::Host
    }
}

impl std::fmt::Display for UsernsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UsernsMode::Host => f.write_str("host"),
            UsernsMode::Auto { size } if *size == SLOT_IDS => f.write_str("auto"),
            UsernsMode::Auto { size } => write!(f, "auto:size={size}"),
            UsernsMode::KeepId => f.write_str("keep-id"),
        }
    }
}

/// Why a `--userns` value is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernsModeError {
    #[error("expected host, auto, auto:size=N or keep-id")]
    Unknown,
    #[error("the size must be a number from 1 to {SLOT_IDS}")]
    Size,
}

impl FromStr for UsernsMode {
    type Err = UsernsModeError;

    /// podman's words: `host`, `auto`, `auto:size=N`, `keep-id`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "host" | "" => return Ok(UsernsMode::Host),
            "auto" => return Ok(UsernsMode::Auto { size: SLOT_IDS }),
            "keep-id" => return Ok(UsernsMode::KeepId),
            _ => {}
        }
        let size = text
            .strip_prefix("auto:size=")
            .ok_or(UsernsModeError::Unknown)?;
        match size.parse::<u32>() {
            Ok(n) if (1..=SLOT_IDS).contains(&n) && !size.starts_with('+') => {
                Ok(UsernsMode::Auto { size: n })
            }
            _ => Err(UsernsModeError::Size),
        }
    }
}

/// The maps of a started container's namespace, as `/proc/PID/uid_map` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMapping {
    pub uids: IdMap,
    pub gids: IdMap,
}

impl IdMapping {
    fn identity() -> IdMapping {
        let all = IdMap {
            inside: 0,
            outside: 0,
            count: u32::MAX,
        };
        IdMapping {
            uids: all,
            gids: all,
        }
    }

    fn is_identity(&self) -> bool {
        *self == IdMapping::identity()
    }

    /// `uid_map` and `gid_map` file contents.
    pub(crate) fn map_texts(&self) -> [String; 2] {
        [self.uids, self.gids].map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count))
    }

    /// The host id of the namespace's uid (`is_uid`) or gid `id`, if it maps it.
    pub(crate) fn host_id(&self, id: u32, is_uid: bool) -> Option<u32> {
        let map = if is_uid { self.uids } else { self.gids };
        let offset = id.checked_sub(map.inside)?;
        (offset < map.count).then(|| map.outside.wrapping_add(offset))
    }

    /// Whether gid 5 (tty, which devpts may own ptys by) exists in the namespace.
    pub(crate) fn has_tty_group(&self) -> bool {
        self.gids.count > 5
    }
}

/// What the parent prepared for a container with a user namespace of its own.
#[derive(Debug)]
pub(crate) struct OwnUserns {
    pub mapping: IdMapping,
    /// The detached overlay that becomes the container's root.
    pub root: OwnedFd,
    /// The slot of host ids, held while the container runs (`auto` only).
    pub lease: Option<IdLease>,
}

/// Takes the ids (for `auto`) and builds the container's root as a detached overlay;
/// `None` for [`UsernsMode::Host`].
pub(crate) fn prepare(
    mode: UsernsMode,
    id: &str,
    overlay: &Overlay,
) -> Result<Option<OwnUserns>, RuntimeError> {
    if mode == UsernsMode::Host {
        return Ok(None);
    }
    if crate::userns::rootless() {
        return Err(RuntimeError::UsernsUnsupported(ROOT_ONLY));
    }
    let (mapping, lease) = match mode {
        UsernsMode::Host => return Ok(None),
        UsernsMode::KeepId => (IdMapping::identity(), None),
        UsernsMode::Auto { size } => {
            let lease = id_leases::take(id)?;
            let map = |outside| IdMap {
                inside: 0,
                outside,
                count: size,
            };
            let mapping = IdMapping {
                uids: map(lease.uid),
                gids: map(lease.gid),
            };
            (mapping, Some(lease))
        }
    };
    let root = detached_root(overlay, &mapping)?;
    tracing::debug!(id, %mode, uid = mapping.uids.outside, gid = mapping.gids.outside, "container root built for its own user namespace");
    Ok(Some(OwnUserns {
        mapping,
        root,
        lease,
    }))
}

/// The container's root: kiln's init layer, the image's layers and the container's upper
/// dir in one overlay that is mounted nowhere.
fn detached_root(overlay: &Overlay, mapping: &IdMapping) -> Result<OwnedFd, RuntimeError> {
    let idmap = match mapping.is_identity() {
        true => None,
        false => Some(mapping_namespace(mapping)?),
    };
    let layered = |path: &Path| -> Result<LayerDir, RuntimeError> {
        match &idmap {
            None => LayerDir::path(path),
            Some(ns) => LayerDir::idmapped(path, ns),
        }
    };
    let fs = sys::fs_open(c"overlay").map_err(sys_error("open an overlay context"))?;
    let set = |key: &CStr, value: &CStr| {
        sys::fs_set_string(&fs, key, value).map_err(|e| RuntimeError::Setup {
            stage: "configure the overlay",
            target: Some(format!(
                "{}={}",
                key.to_string_lossy(),
                value.to_string_lossy()
            )),
            errno: Errno::from_raw(e),
        })
    };
    set(c"source", c"overlay")?;
    let upper =
        std::path::absolute(&overlay.upper).map_err(RuntimeError::io("resolve", &overlay.upper))?;
    let work =
        std::path::absolute(&overlay.work).map_err(RuntimeError::io("resolve", &overlay.work))?;
    let parent = upper
        .parent()
        .filter(|p| Some(*p) == work.parent())
        .ok_or(RuntimeError::UsernsUnsupported(
        "a user namespace of the container's own needs its upper and work dirs in one directory",
    ))?;
    init_layer(parent)?;
    let container_dir = layered(parent)?;
    set(c"lowerdir+", &container_dir.value(Some(INIT_DIR.as_ref()))?)?;
    // Each idmapped clone stays open until the overlay is created: closing the last fd of
    // a detached mount unmounts it, and overlayfs clones its layers only at create.
    let mut layers = Vec::with_capacity(overlay.lowers.len());
    for name in &overlay.lowers {
        let layer = layered(&overlay.layers_dir.join(name))?;
        set(c"lowerdir+", &layer.value(None)?)?;
        layers.push(layer);
    }
    set(c"upperdir", &container_dir.value(upper.file_name())?)?;
    set(c"workdir", &container_dir.value(work.file_name())?)?;
    for (key, value) in PLAIN_CHANGE_SET {
        set(key, value)?;
    }
    create_as_container_root(&fs, mapping)?;
    let attrs = libc::MOUNT_ATTR_NODEV;
    sys::fs_mount_created(&fs, attrs).map_err(sys_error("mount the overlay"))
}

/// A layer dir as overlayfs is given it: its path, or an idmapped clone of it by fd.
enum LayerDir {
    Path(CString),
    Idmapped(OwnedFd),
}

impl LayerDir {
    fn path(path: &Path) -> Result<LayerDir, RuntimeError> {
        CString::new(path.as_os_str().as_bytes())
            .map(LayerDir::Path)
            .map_err(|_| RuntimeError::UsernsUnsupported(NUL_PATH))
    }

    fn idmapped(path: &Path, ns: &OwnedFd) -> Result<LayerDir, RuntimeError> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| RuntimeError::UsernsUnsupported(NUL_PATH))?;
        let failed = |what: &'static str| {
            move |e| RuntimeError::Setup {
                stage: what,
                target: Some(path.display().to_string()),
                errno: Errno::from_raw(e),
            }
        };
        let tree =
            sys::clone_tree(libc::AT_FDCWD, &c, false).map_err(failed("clone the mount of"))?;
        sys::set_idmap(tree.as_fd(), ns.as_fd()).map_err(failed("idmap the mount of"))?;
        Ok(LayerDir::Idmapped(tree))
    }

    /// The `fsconfig` value naming this dir, or `child` in it.
    fn value(&self, child: Option<&std::ffi::OsStr>) -> Result<CString, RuntimeError> {
        match self {
            LayerDir::Path(p) => {
                let mut bytes = p.as_bytes().to_vec();
                if let Some(child) = child {
                    bytes.push(b'/');
                    bytes.extend_from_slice(child.as_bytes());
                }
                CString::new(bytes).map_err(|_| RuntimeError::UsernsUnsupported(NUL_PATH))
            }
            LayerDir::Idmapped(fd) => fd_path(fd, child),
        }
    }
}

/// `/proc/self/fd/N[/child]`: how a detached mount is named to `fsconfig`.
fn fd_path(fd: &OwnedFd, child: Option<&std::ffi::OsStr>) -> Result<CString, RuntimeError> {
    let mut text = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if let Some(child) = child {
        text.push(b'/');
        text.extend_from_slice(child.as_bytes());
    }
    CString::new(text).map_err(|_| RuntimeError::UsernsUnsupported(NUL_PATH))
}

/// The name of the dir beside the upper dir that holds a container's init layer.
const INIT_DIR: &str = "init";

/// kiln's init layer of a container (the mount points and `/etc` files, see `overlay`),
/// which the scaffold holds for other containers: here a dir beside the upper dir, owned
/// by root on disk like the image's files, so the idmapping shows it as the container's.
/// (A detached tmpfs cannot be a layer: overlayfs clones only mounts of a namespace.)
fn init_layer(container_dir: &Path) -> Result<(), RuntimeError> {
    let init = container_dir.join(INIT_DIR);
    for dir in INIT_MOUNTPOINTS.iter().chain(&["etc"]) {
        let path = init.join(dir);
        std::fs::create_dir_all(&path).map_err(RuntimeError::io("create", &path))?;
    }
    for rel in CONTAINER_ETC_FILES {
        let path = init.join(rel);
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(RuntimeError::io("create", &path))?;
    }
    Ok(())
}

/// A user namespace with `mapping`, for `mount_setattr(MOUNT_ATTR_IDMAP)`: made by a
/// throwaway process that waits until the maps are written and the namespace is open.
fn mapping_namespace(mapping: &IdMapping) -> Result<OwnedFd, RuntimeError> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(RuntimeError::sys("create a pipe"))?;
    let pid = crate::container::with_signals_blocked(|| sys::raw_fork_with(libc::CLONE_NEWUSER))?
        .map_err(|e| RuntimeError::sys("make a user namespace")(Errno::from_raw(e)))?;
    if pid == 0 {
        // The new process: async-signal-safe calls only, then gone. Its copy of the write
        // end closes first, so the parent's close is the end of the pipe.
        // SAFETY: closing an fd this process does not otherwise use.
        unsafe { libc::close(write.as_raw_fd()) };
        let _ = sys::read_byte(read.as_raw_fd());
        // SAFETY: _exit ends the process without running any of kiln's code.
        unsafe { libc::_exit(0) };
    }
    drop(read);
    let result = write_maps(pid, mapping).and_then(|()| {
        let path = format!("/proc/{pid}/ns/user");
        std::fs::File::open(&path)
            .map(OwnedFd::from)
            .map_err(RuntimeError::io("open", path))
    });
    drop(write);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    result
}

/// Writes the uid and gid maps of process `pid`'s (new) user namespace. As the host's
/// root, kiln may map any ids, and `setgroups` stays allowed in the namespace.
pub(crate) fn write_maps(pid: i32, mapping: &IdMapping) -> Result<(), RuntimeError> {
    let [uids, gids] = mapping.map_texts();
    for (file, text) in [("uid_map", uids), ("gid_map", gids)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text).map_err(RuntimeError::io("write", path))?;
    }
    Ok(())
}

/// Creates the overlay of `fs` with the container's root as the filesystem ids (see the
/// module docs), on a thread of its own, since those ids are per thread; its capabilities
/// are kept (`SECBIT_NO_SETUID_FIXUP`), or overlayfs could not write its `trusted.*`
/// marks.
fn create_as_container_root(fs: &OwnedFd, mapping: &IdMapping) -> Result<(), RuntimeError> {
    let (uid, gid) = (mapping.uids.outside, mapping.gids.outside);
    let create = || -> Result<(), sys::Errno> {
        if uid != 0 || gid != 0 {
            sys::keep_capabilities_across_id_changes()?;
            // setfsuid reports the previous id, never an error; the kernel refuses ids
            // it cannot map by leaving them, which the create would then show.
            sys::set_fs_ids(uid, gid);
        }
        sys::fs_create(fs)
    };
    std::thread::scope(|scope| {
        scope
            .spawn(create)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
    .map_err(|e| RuntimeError::Setup {
        stage: "create the overlay",
        target: None,
        errno: Errno::from_raw(e),
    })
}

fn sys_error(what: &'static str) -> impl Fn(sys::Errno) -> RuntimeError {
    move |e| RuntimeError::sys(what)(Errno::from_raw(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podmans_words_parse_and_print_back() {
        for text in ["host", "auto", "auto:size=1024", "keep-id"] {
            let mode: UsernsMode = text.parse().unwrap();
            assert_eq!(mode.to_string(), text);
        }
        assert_eq!(
            "auto:size=65536".parse(),
            Ok(UsernsMode::Auto { size: 65536 })
        );
        assert_eq!("".parse(), Ok(UsernsMode::Host));
        assert_eq!(
            "private".parse::<UsernsMode>(),
            Err(UsernsModeError::Unknown)
        );
        for bad in [
            "auto:size=0",
            "auto:size=65537",
            "auto:size=+5",
            "auto:size=x",
        ] {
            assert_eq!(
                bad.parse::<UsernsMode>(),
                Err(UsernsModeError::Size),
                "{bad}"
            );
        }
    }

    #[test]
    fn maps_are_written_as_the_kernel_reads_them() {
        let mapping = IdMapping {
            uids: IdMap {
                inside: 0,
                outside: 1 << 30,
                count: 65536,
            },
            gids: IdMap {
                inside: 0,
                outside: 7,
                count: 3,
            },
        };
        assert_eq!(mapping.map_texts(), ["0 1073741824 65536\n", "0 7 3\n"]);
        assert!(!mapping.has_tty_group());
        assert_eq!(IdMapping::identity().map_texts()[0], "0 0 4294967295\n");
    }
}
