//! The overlay root filesystem: option string, host-side preparation, and [`with_overlay`].
//!
//! Every overlay kiln mounts lives only in a private mount namespace (a build step's, or a
//! dedicated thread's), so nothing is ever left mounted on the host and no cleanup is needed
//! after a crash. The namespace still needs a directory to mount on: `<upper's parent>/merged`
//! (see [`Overlay::mountpoint`]). On it, inside the namespace, kiln mounts a small tmpfs, the
//! *scaffold*, holding:
//!
//! - `root/`: where the overlay is mounted;
//! - `init/`: an extra top-most read-only lower layer. For build steps it holds the empty
//!   `proc/`, `dev/` and `sys/` mount points, so an image needs none of them, an image symlink
//!   at one of those names is shadowed instead of followed, and the mount points never appear
//!   in the step's upper dir (Docker's "init layer", without a layer on disk). For an image
//!   with no layers at all it is the empty lower dir overlayfs requires.
//!
//! The overlay itself is mounted with the new mount API when the kernel has overlayfs's
//! `lowerdir+` key (Linux 6.8+): one `fsconfig` call per layer, so the number of layers is
//! bounded only by overlayfs's own stack limit ([`MAX_LOWER_LAYERS`]). Older kernels get the
//! legacy `mount(2)` option string, which must fit in one page (about 60 layers of 64-hex
//! names, given relative to the layers dir).

use std::ffi::{CStr, CString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::{fs, thread};

use libc::{MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC};
use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};

use super::error::{InvalidSandbox, RuntimeError, Stage};
use super::sys::{self, Sys};

/// An overlay rootfs description. Lower layer dirs are given relative to `layers_dir` so the
/// mount option string stays short with many layers.
///
/// The merged root (`/`) takes its owner and mode from the upper dir, so before mounting
/// kiln gives the upper dir the owner and mode of the top-most lower's root (`root:root 0755`
/// when there is no lower): a `0700` temp dir as upper would otherwise lock non-root steps
/// out of `/`. `work` must be an empty dir on the same filesystem as `upper`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Overlay {
    pub layers_dir: PathBuf,
    /// Dir names under `layers_dir`, top-most first; may be empty (scratch).
    pub lowers: Vec<String>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

/// Characters the legacy overlay option parser treats specially; kiln rejects them instead of
/// escaping them.
const OPTION_SPECIAL: &[u8] = b",:\\\0";

/// The most lower layers overlayfs stacks in one mount (the kernel's `OVL_MAX_STACK`).
pub(crate) const MAX_LOWER_LAYERS: usize = 500;

/// The most layers an image may have for a build step or a container to run on it:
/// overlayfs's stack less kiln's own init layer.
pub const MAX_IMAGE_LAYERS: usize = MAX_LOWER_LAYERS - 1;

/// The longest string value `fsconfig` accepts (the kernel copies at most 256 bytes with
/// the NUL).
const FSCONFIG_VALUE_MAX: usize = 255;

/// The overlayfs key that appends one lower layer below those already given.
const LOWER_ADD_KEY: &CStr = c"lowerdir+";

/// A plain change set in the upper dir: no redirects, no metadata-only copy-ups, no index.
pub(crate) const PLAIN_CHANGE_SET: [(&CStr, &CStr); 3] = [
    (c"redirect_dir", c"nofollow"),
    (c"metacopy", c"off"),
    (c"index", c"off"),
];

/// In a user namespace (rootless kiln) overlayfs keeps its own marks — opaque dirs,
/// redirects — in `user.overlay.*` xattrs, since `trusted.*` needs the host's root; the
/// store's layer dirs are written the same way there (kiln-layer).
const USER_XATTR: &CStr = c"userxattr";

/// Dirs of the init layer of build steps (relative to the scaffold's `init/`).
pub(crate) const INIT_MOUNTPOINTS: [&str; 3] = ["proc", "dev", "sys"];

/// Files kiln writes for containers and binds over the image's; the init layer holds empty
/// regular files at these paths, so an image symlink there is shadowed, never followed.
pub(crate) const CONTAINER_ETC_FILES: [&str; 3] = ["etc/hosts", "etc/hostname", "etc/resolv.conf"];

/// Whether the scaffold's `init/` dir is stacked as the top-most lower layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InitLayer {
    /// Build steps: `init/` with the `proc`, `dev`, `sys` mount points is the top-most lower.
    MountPoints,
    /// Plain access to the image (`copy:` steps): `init/` is used only as the empty lower
    /// of a layerless image.
    OnlyIfNoLowers,
    /// Containers: the mount points of build steps plus `etc/` with
    /// [`CONTAINER_ETC_FILES`].
    Container,
}

/// Everything needed to mount the overlay, as C strings built before any namespace work so
/// the clone child can mount without allocating.
#[derive(Debug)]
pub(crate) struct MountPlan {
    pub scaffold: CString,
    /// Dirs to create in the scaffold tmpfs, parents first.
    pub scaffold_dirs: Vec<CString>,
    /// Empty files to create in the scaffold tmpfs, after the dirs.
    pub scaffold_files: Vec<CString>,
    pub root: CString,
    pub root_path: PathBuf,
    /// The dir relative lower names are resolved from (`None` without lowers).
    pub layers_dir: Option<CString>,
    pub overlay: OverlayMount,
    /// Mount the overlay read-only: its unmount then does not sync the upper dir's whole
    /// filesystem, as unmounting a writable overlay does.
    pub read_only: bool,
}

/// How the overlay is mounted, decided before `clone` by what the kernel supports.
#[derive(Debug)]
pub(crate) enum OverlayMount {
    /// New mount API: these `fsconfig` string settings in order (one `lowerdir+` per layer,
    /// top-most first), then create, `fsmount` and `move_mount`.
    PerLayer(Vec<(&'static CStr, CString)>),
    /// Legacy `mount(2)` with this option string (fits in one page).
    Options(CString),
}

impl Overlay {
    /// The host directory the scaffold is mounted on inside private namespaces:
    /// `<upper's parent>/merged`. kiln creates it when missing; it stays empty on the host.
    /// Steps sharing the parent dir may share it: each namespace mounts its own scaffold.
    pub fn mountpoint(&self) -> Result<PathBuf, RuntimeError> {
        let upper = absolute(&self.upper)?;
        let parent = upper.parent().ok_or(InvalidSandbox::UpperIsRoot)?;
        Ok(parent.join("merged"))
    }

    /// Checks the description, prepares host dirs (mount point, upper's owner and mode) and
    /// builds the mount plan.
    pub(crate) fn prepare(&self, init: InitLayer) -> Result<MountPlan, RuntimeError> {
        let upper = absolute(&self.upper)?;
        let work = absolute(&self.work)?;
        let layers_dir = absolute(&self.layers_dir)?;
        let scaffold = self.mountpoint()?;
        let init_dir = scaffold.join("init");
        let root = scaffold.join("root");

        // Every check first, so a rejected description changes nothing on disk.
        self.check_lowers(&layers_dir)?;
        for (what, dir) in [("upper", &upper), ("work", &work), ("scaffold", &init_dir)] {
            check_option_path(what, dir)?;
        }
        let mut lowers: Vec<&[u8]> = self.lowers.iter().map(|l| l.as_bytes()).collect();
        if init != InitLayer::OnlyIfNoLowers || lowers.is_empty() {
            lowers.insert(0, init_dir.as_os_str().as_bytes());
        }
        check_layer_count(self.lowers.len(), lowers.len())?;
        let overlay = overlay_mount(&lowers, &upper, &work)?;
        let mut scaffold_dirs = vec![c_path(&root)?, c_path(&init_dir)?];
        let mut scaffold_files = Vec::new();
        if init != InitLayer::OnlyIfNoLowers {
            for name in INIT_MOUNTPOINTS {
                scaffold_dirs.push(c_path(&init_dir.join(name))?);
            }
        }
        if init == InitLayer::Container {
            scaffold_dirs.push(c_path(&init_dir.join("etc"))?);
            for name in CONTAINER_ETC_FILES {
                scaffold_files.push(c_path(&init_dir.join(name))?);
            }
        }
        let plan = MountPlan {
            scaffold: c_path(&scaffold)?,
            scaffold_dirs,
            scaffold_files,
            root: c_path(&root)?,
            root_path: root,
            layers_dir: (!self.lowers.is_empty())
                .then(|| c_path(&layers_dir))
                .transpose()?,
            overlay,
            read_only: false,
        };

        require_dir("overlay upper dir", &upper)?;
        require_dir("overlay work dir", &work)?;
        create_mountpoint(&scaffold)?;
        self.align_upper_root(&layers_dir, &upper)?;
        tracing::debug!(
            lowers = self.lowers.len(),
            upper = %upper.display(),
            mount_api = match plan.overlay {
                OverlayMount::PerLayer(_) => "fsconfig lowerdir+",
                OverlayMount::Options(_) => "option string",
            },
            "overlay prepared"
        );
        Ok(plan)
    }

    fn check_lowers(&self, layers_dir: &Path) -> Result<(), RuntimeError> {
        for name in &self.lowers {
            let bad = name.is_empty()
                || name == "."
                || name == ".."
                || name
                    .bytes()
                    .any(|b| b == b'/' || OPTION_SPECIAL.contains(&b));
            if bad {
                return Err(InvalidSandbox::LowerName(name.clone()).into());
            }
            let path = layers_dir.join(name);
            if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                return Err(RuntimeError::MissingLayer(path));
            }
        }
        Ok(())
    }

    fn align_upper_root(&self, layers_dir: &Path, upper: &Path) -> Result<(), RuntimeError> {
        let (uid, gid, mode) = match self.lowers.first() {
            Some(top) => {
                let path = layers_dir.join(top);
                let meta = fs::symlink_metadata(&path).map_err(RuntimeError::io("stat", &path))?;
                (meta.uid(), meta.gid(), meta.mode() & 0o7777)
            }
            None => (0, 0, 0o755),
        };
        let meta = fs::symlink_metadata(upper).map_err(RuntimeError::io("stat", upper))?;
        if (meta.uid(), meta.gid()) != (uid, gid) {
            lchown(upper, Some(uid), Some(gid)).map_err(RuntimeError::io("chown", upper))?;
        }
        if meta.mode() & 0o7777 != mode {
            fs::set_permissions(upper, fs::Permissions::from_mode(mode))
                .map_err(RuntimeError::io("chmod", upper))?;
        }
        Ok(())
    }
}

fn absolute(path: &Path) -> Result<PathBuf, RuntimeError> {
    std::path::absolute(path).map_err(RuntimeError::io("resolve", path))
}

fn c_path(path: &Path) -> Result<CString, RuntimeError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| InvalidSandbox::NulPath(path.to_owned()).into())
}

fn check_option_path(what: &str, path: &Path) -> Result<(), RuntimeError> {
    if path
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|b| OPTION_SPECIAL.contains(b))
    {
        return Err(InvalidSandbox::OptionPath {
            what: what.into(),
            path: path.to_owned(),
        }
        .into());
    }
    Ok(())
}

fn require_dir(what: &'static str, path: &Path) -> Result<(), RuntimeError> {
    let meta = fs::symlink_metadata(path).map_err(RuntimeError::io(what, path))?;
    if !meta.is_dir() {
        return Err(InvalidSandbox::NotADirectory {
            what,
            path: path.to_owned(),
        }
        .into());
    }
    Ok(())
}

fn create_mountpoint(path: &Path) -> Result<(), RuntimeError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(RuntimeError::io("create overlay mount point", path)(e))
        }
        _ => require_dir("overlay mount point", path),
    }
}

/// Refuses more lowers than overlayfs stacks, counting kiln's init layer when it is used.
fn check_layer_count(image_layers: usize, lowers: usize) -> Result<(), RuntimeError> {
    if lowers <= MAX_LOWER_LAYERS {
        return Ok(());
    }
    let own = lowers - image_layers;
    Err(InvalidSandbox::TooManyLayers {
        layers: image_layers,
        max: MAX_LOWER_LAYERS - own,
        beside_init: own > 0,
    }
    .into())
}

/// Picks the mount method: one `fsconfig` per layer when the kernel can and every value is
/// short enough for `fsconfig`, else the legacy option string. Lowers are top-most first.
fn overlay_mount(
    lowers: &[&[u8]],
    upper: &Path,
    work: &Path,
) -> Result<OverlayMount, RuntimeError> {
    let dirs = [upper, work].map(|p| p.as_os_str().as_bytes());
    let fits_fsconfig = lowers
        .iter()
        .chain(&dirs)
        .all(|v| v.len() <= FSCONFIG_VALUE_MAX);
    if fits_fsconfig && kernel_adds_lowers_one_by_one() {
        return per_layer_settings(lowers, upper, work).map(OverlayMount::PerLayer);
    }
    overlay_options(lowers, upper, work).map(OverlayMount::Options)
}

/// The `fsconfig` settings of the new-API mount, in the order they must be given.
fn per_layer_settings(
    lowers: &[&[u8]],
    upper: &Path,
    work: &Path,
) -> Result<Vec<(&'static CStr, CString)>, RuntimeError> {
    let value = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| RuntimeError::from(InvalidSandbox::NulOverlayPath))
    };
    let mut settings = vec![(c"source", c"overlay".to_owned())];
    for lower in lowers {
        settings.push((LOWER_ADD_KEY, value(lower)?));
    }
    settings.push((c"upperdir", c_path(upper)?));
    settings.push((c"workdir", c_path(work)?));
    for (key, val) in PLAIN_CHANGE_SET {
        settings.push((key, val.to_owned()));
    }
    if crate::userns::current().nested {
        settings.push((USER_XATTR, CString::default()));
    }
    Ok(settings)
}

/// Whether overlayfs takes lower layers one by one (`lowerdir+`, Linux 6.8+). Asked once
/// per process with a throwaway filesystem context. Before 6.5 overlayfs accepted any key
/// at `fsconfig` time and refused unknown ones only at create, so a bogus key must be
/// refused too for the answer to mean anything.
fn kernel_adds_lowers_one_by_one() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        let Ok(fs) = sys::fs_open(c"overlay") else {
            return false;
        };
        sys::fs_set_string(&fs, LOWER_ADD_KEY, c"/").is_ok()
            && sys::fs_set_string(&fs, c"kiln-no-such-key", c"x") == Err(libc::EINVAL)
    })
}

/// Builds the legacy `mount(2)` option string and checks it fits the one page the kernel
/// copies. Lowers are top-most first.
pub(crate) fn overlay_options(
    lowers: &[&[u8]],
    upper: &Path,
    work: &Path,
) -> Result<CString, RuntimeError> {
    let mut opts = b"lowerdir=".to_vec();
    opts.extend_from_slice(&lowers.join(&b':'));
    opts.extend_from_slice(b",upperdir=");
    opts.extend_from_slice(upper.as_os_str().as_bytes());
    opts.extend_from_slice(b",workdir=");
    opts.extend_from_slice(work.as_os_str().as_bytes());
    for (key, value) in PLAIN_CHANGE_SET {
        opts.push(b',');
        opts.extend_from_slice(key.to_bytes());
        opts.push(b'=');
        opts.extend_from_slice(value.to_bytes());
    }
    if crate::userns::current().nested {
        opts.push(b',');
        opts.extend_from_slice(USER_XATTR.to_bytes());
    }
    let max = page_size() - 1;
    if opts.len() > max {
        return Err(RuntimeError::OverlayOptionsTooLong {
            layers: lowers.len(),
            len: opts.len(),
            max,
        });
    }
    CString::new(opts).map_err(|_| InvalidSandbox::NulOverlayOptions.into())
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Makes every mount of the current (already private) namespace private, so nothing mounted
/// afterwards propagates back to the host.
pub(crate) fn make_mounts_private() -> Sys<()> {
    sys::mount(
        c"none",
        c"/",
        None,
        (MS_REC | MS_PRIVATE) as libc::c_ulong,
        None,
    )
}

/// Mounts the scaffold tmpfs and the overlay on its `root/`. Allocates nothing: it also runs
/// in the clone child. Leaves the cwd in the layers dir.
pub(crate) fn mount_overlay_root(plan: &MountPlan) -> Result<(), (Stage, sys::Errno)> {
    let flags = (MS_NOSUID | MS_NODEV | MS_NOEXEC) as libc::c_ulong;
    let opts = c"mode=0755,size=64k";
    sys::mount(
        c"kiln-scaffold",
        &plan.scaffold,
        Some(c"tmpfs"),
        flags,
        Some(opts),
    )
    .map_err(|e| (Stage::Scaffold, e))?;
    for dir in &plan.scaffold_dirs {
        sys::mkdir(dir, 0o755).map_err(|e| (Stage::Scaffold, e))?;
    }
    for file in &plan.scaffold_files {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
        sys::open_mode(file, flags, 0o644).map_err(|e| (Stage::Scaffold, e))?;
    }
    if let Some(dir) = &plan.layers_dir {
        sys::chdir(dir).map_err(|e| (Stage::ChdirLayers, e))?;
    }
    match &plan.overlay {
        OverlayMount::PerLayer(settings) => {
            mount_layer_by_layer(settings, &plan.root, plan.read_only)
        }
        OverlayMount::Options(options) => {
            let read_only = if plan.read_only { MS_RDONLY } else { 0 };
            sys::mount(
                c"overlay",
                &plan.root,
                Some(c"overlay"),
                (MS_NODEV | read_only) as libc::c_ulong,
                Some(options),
            )
        }
    }
    .map_err(|e| (Stage::MountOverlay, e))
}

/// The new-API overlay mount on `target`. Relative lower names resolve from the cwd at
/// `fsconfig` time. Allocates nothing.
///
/// `nodev` (both APIs): a device node in an image layer, or one a container makes with
/// mknod on its root, can never be opened, whatever the device cgroup allows (SECURITY.md
/// rule 12); only kiln's own `/dev` holds usable nodes.
fn mount_layer_by_layer(settings: &[(&CStr, CString)], target: &CStr, read_only: bool) -> Sys<()> {
    let fs = sys::fs_open(c"overlay")?;
    for (key, value) in settings {
        match value.is_empty() {
            true => sys::fs_set_flag(&fs, key)?, // a flag (`userxattr`); no value is empty
            false => sys::fs_set_string(&fs, key, value)?,
        }
    }
    let mut attrs = libc::MOUNT_ATTR_NODEV;
    if read_only {
        sys::fs_set_flag(&fs, c"ro")?;
        attrs |= libc::MOUNT_ATTR_RDONLY;
    }
    let mount = sys::fs_mount(&fs, attrs)?;
    let target = sys::open(target, libc::O_PATH | libc::O_DIRECTORY)?;
    sys::attach(&mount, target.as_fd())
}

/// Mount the overlay (`redirect_dir=nofollow,metacopy=off,index=off`, so the upper dir is a plain
/// change set) in a private mount namespace of a dedicated thread, call `f(merged_root)` on
/// that thread, and unmount (the namespace dies with the thread). The mount is never visible
/// in kiln's own namespace or the host's. Used for `copy:` steps and for reading an image's
/// `/etc/passwd`. Threads `f` spawns share the private namespace. A panic in `f` is resumed
/// on the caller's thread.
pub fn with_overlay<T: Send>(
    ov: &Overlay,
    f: impl FnOnce(&Path) -> T + Send,
) -> Result<T, RuntimeError> {
    in_private_mount(ov, ov.prepare(InitLayer::OnlyIfNoLowers)?, f)
}

/// [`with_overlay`] for reading only (`/etc/passwd` lookups): the overlay is mounted
/// read-only, so its unmount costs nothing, where a writable one's syncs the whole
/// filesystem of the upper dir (tens of ms while other writes are pending).
pub fn with_overlay_read_only<T: Send>(
    ov: &Overlay,
    f: impl FnOnce(&Path) -> T + Send,
) -> Result<T, RuntimeError> {
    let plan = MountPlan {
        read_only: true,
        ..ov.prepare(InitLayer::OnlyIfNoLowers)?
    };
    in_private_mount(ov, plan, f)
}

/// Mounts `plan` (made from `ov`) in a private mount namespace of a dedicated thread and
/// calls `f` there.
pub(crate) fn in_private_mount<T: Send>(
    ov: &Overlay,
    plan: MountPlan,
    f: impl FnOnce(&Path) -> T + Send,
) -> Result<T, RuntimeError> {
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("kiln-overlay".into())
            .spawn_scoped(scope, || -> Result<T, RuntimeError> {
                enter_private_mount_namespace()?;
                mount_overlay_root(&plan).map_err(|(stage, e)| setup_error(&plan, stage, e))?;
                tracing::debug!(root = %plan.root_path.display(), read_only = plan.read_only, "overlay mounted in a private mount namespace");
                sys::chdir(c"/").map_err(|e| RuntimeError::Setup {
                    stage: Stage::ChdirWorkdir.name(),
                    target: Some("/".into()),
                    errno: Errno::from_raw(e),
                })?;
                let out = f(&plan.root_path);
                unmount_scaffold(&plan);
                Ok(out)
            })
            .map_err(RuntimeError::io(
                "start overlay thread for",
                ov.upper.clone(),
            ))?;
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn enter_private_mount_namespace() -> Result<(), RuntimeError> {
    // CLONE_FS gives this thread its own cwd and root, which a new mount namespace requires.
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)
        .map_err(RuntimeError::sys("unshare the mount namespace"))?;
    make_mounts_private().map_err(|e| RuntimeError::Setup {
        stage: Stage::PrivateMounts.name(),
        target: None,
        errno: Errno::from_raw(e),
    })
}

/// Unmounts now rather than when the thread exits, so the overlay is gone when
/// [`with_overlay`] returns. Errors only mean something in `f` still holds a file open; the
/// namespace's end releases the mount then.
fn unmount_scaffold(plan: &MountPlan) {
    for target in [&plan.root, &plan.scaffold] {
        // SAFETY: target is NUL-terminated.
        if unsafe { libc::umount2(target.as_ptr(), 0) } != 0 {
            // SAFETY: as above.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Names a failed stage of [`mount_overlay_root`] with the path it was working on.
pub(crate) fn setup_error(plan: &MountPlan, stage: Stage, errno: sys::Errno) -> RuntimeError {
    let target = match stage {
        Stage::Scaffold => Some(&plan.scaffold),
        Stage::ChdirLayers => plan.layers_dir.as_ref(),
        Stage::MountOverlay => Some(&plan.root),
        _ => None,
    };
    RuntimeError::Setup {
        stage: stage.name(),
        target: target.map(|t| t.to_string_lossy().into_owned()),
        errno: Errno::from_raw(errno),
    }
}
