//! Cache mounts and secrets of build steps: [`StepMount`].
//!
//! A run step may get persistent cache directories of the host (a package manager's
//! download cache) and secrets (a token) beside its root, neither of which may end up in
//! its layer. Both are mounted by the clone child in the step's own mount namespace, after
//! the overlay root and the pseudo filesystems and before `pivot_root`, on targets resolved
//! inside the root (`openat2(RESOLVE_IN_ROOT | RESOLVE_NO_XDEV)`: image symlinks are
//! followed as if the root were `/`, and a target may not lead into `/proc`, `/dev`, `/sys`
//! or another mount). Missing targets are created like Docker's volumes, and removed from
//! the upper dir again after the step (`mount_point_cleanup`).
//!
//! - A **cache** dir is opened once by kiln, `O_PATH | O_NOFOLLOW`, checked on that fd (a
//!   directory owned by root, not a symlink), and cloned with `open_tree` into a detached
//!   mount before `clone`; the child only attaches that mount. No host path is resolved
//!   twice, and nothing inside the cache dir is ever resolved by kiln, so what one step
//!   leaves in a shared cache (a symlink to `/`) cannot redirect another step's mount
//!   (BuildKit's CVE-2024-23651, buildah's CVE-2024-9675 and CVE-2024-11218). It is
//!   mounted `nosuid,nodev`; writes go to the host dir, which is the point.
//! - A **secret** lives on a tmpfs the child mounts in the scaffold of its own namespace:
//!   written there from kiln's memory, mode 0400, owned by the step's uid and gid, and
//!   bound read-only over the target. It never touches a disk and vanishes with the
//!   step's namespace. Its content never appears in a `Debug` output or error message.
//!
//! Everything is prepared before `clone` ([`StepMountPlan`]); the child allocates nothing.

use std::ffi::{CStr, CString};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libc::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

use super::container_mounts::{create_target, TargetPath};
use super::error::{InvalidSandbox, Report, RuntimeError, Stage, NO_DETAIL};
use super::mount_point_cleanup::{MadeLog, Recorder, MAX_MADE, PATH_BYTES};
use super::overlay::Overlay;
use super::sys::{self, Errno, Sys};

/// The largest secret kiln mounts (it is held in memory and on a tmpfs).
pub const MAX_SECRET_BYTES: usize = 512 * 1024;

/// The most cache mounts and secrets one step may have.
pub const MAX_STEP_MOUNTS: usize = 32;

/// Room tmpfs needs beside the secrets' own pages.
const TMPFS_SLACK: usize = 4096;

/// A mount a build step gets beside its root filesystem. Neither kind is ever part of the
/// step's layer; targets are absolute paths inside the root, resolved there (image
/// symlinks followed as if the root were `/`) and created when missing. Targets must not
/// nest (one inside another) or repeat.
#[derive(Clone, PartialEq, Eq)]
pub enum StepMount {
    /// A persistent cache directory of the host, bound read-write (`nosuid,nodev`) at
    /// `target`. It must be a directory owned by root, and not a symlink.
    Cache { source: PathBuf, target: String },
    /// A secret: `content` becomes a read-only file of mode 0400 owned by the step's uid and
    /// gid at `target`, on a tmpfs inside the step's mount namespace (never on disk), for
    /// this step only. At most [`MAX_SECRET_BYTES`].
    Secret {
        content: SecretBytes,
        target: String,
    },
}

impl StepMount {
    pub fn target(&self) -> &str {
        match self {
            StepMount::Cache { target, .. } | StepMount::Secret { target, .. } => target,
        }
    }

    /// How messages name this mount's target.
    fn kind(&self) -> &'static str {
        match self {
            StepMount::Cache { .. } => "cache mount target",
            StepMount::Secret { .. } => "secret target",
        }
    }
}

/// A secret's bytes, overwritten with zeros when dropped, so the value does not linger in
/// memory kiln has freed (where a later allocation or a core dump could show it). Clones
/// are zeroed too.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

/// Never shows the bytes.
impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Zeroes `bytes` in a way the compiler may not drop as dead stores before a free.
fn wipe(bytes: &mut [u8]) {
    for byte in bytes.iter_mut() {
        // SAFETY: a valid, exclusive reference.
        unsafe { std::ptr::write_volatile(byte, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Never shows a secret's content.
impl fmt::Debug for StepMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepMount::Cache { source, target } => f
                .debug_struct("Cache")
                .field("source", source)
                .field("target", target)
                .finish(),
            StepMount::Secret { content, target } => f
                .debug_struct("Secret")
                .field("content", &format_args!("<{} bytes>", content.len()))
                .field("target", target)
                .finish(),
        }
    }
}

/// What the child puts at one target.
enum Source {
    /// The detached mount in [`StepMountPlan::trees`] at this index.
    Cache { slot: usize },
    /// A file of this name on the secrets tmpfs, with this content.
    Secret { file: CString, content: SecretBytes },
}

struct PreparedMount {
    kind: &'static str,
    path: TargetPath,
    source: Source,
}

impl PreparedMount {
    fn target_is_dir(&self) -> bool {
        matches!(self.source, Source::Cache { .. })
    }
}

/// A step's cache mounts and secrets in the form the clone child uses, and the log of the
/// mount points it creates, which kiln removes from the upper dir after the step.
pub(crate) struct StepMountPlan {
    mounts: Vec<PreparedMount>,
    /// Detached mounts of the cache dirs; the child finds them at fixed fds.
    trees: Vec<OwnedFd>,
    /// Where the child mounts the secrets tmpfs (in its scaffold), and the tmpfs options.
    secrets_dir: CString,
    secrets_size: CString,
    secrets_inodes: CString,
    upper: CString,
    upper_path: PathBuf,
    uid: u32,
    gid: u32,
    log: MadeLog,
}

impl fmt::Debug for StepMountPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let targets: Vec<&str> = self.mounts.iter().map(|m| m.path.target.as_str()).collect();
        f.debug_struct("StepMountPlan")
            .field("targets", &targets)
            .finish()
    }
}

impl StepMountPlan {
    /// Checks `mounts` and prepares them for a step of `overlay` running as `uid`:`gid`;
    /// `None` without mounts. Opens the cache dirs; touches nothing on disk.
    pub(crate) fn new(
        mounts: &[StepMount],
        overlay: &Overlay,
        uid: u32,
        gid: u32,
    ) -> Result<Option<StepMountPlan>, RuntimeError> {
        if mounts.is_empty() {
            return Ok(None);
        }
        if mounts.len() > MAX_STEP_MOUNTS {
            return Err(InvalidSandbox::TooManyStepMounts {
                max: MAX_STEP_MOUNTS,
                count: mounts.len(),
            }
            .into());
        }
        let paths = mounts
            .iter()
            .map(target_path)
            .collect::<Result<Vec<_>, _>>()?;
        check_no_nesting(mounts, &paths)?;
        let mut trees = Vec::new();
        let mut prepared = Vec::with_capacity(mounts.len());
        for (i, (mount, path)) in mounts.iter().zip(paths).enumerate() {
            let source = match mount {
                StepMount::Cache { source, .. } => {
                    trees.push(open_cache_dir(source)?);
                    Source::Cache {
                        slot: trees.len() - 1,
                    }
                }
                StepMount::Secret { content, .. } => Source::Secret {
                    file: c_string(i.to_string())?,
                    content: check_secret(content, &path.target)?.clone(),
                },
            };
            prepared.push(PreparedMount {
                kind: mount.kind(),
                path,
                source,
            });
        }
        let upper_path = std::path::absolute(&overlay.upper)
            .map_err(RuntimeError::io("resolve", &overlay.upper))?;
        let secret_bytes: usize = prepared
            .iter()
            .map(|m| match &m.source {
                Source::Secret { content, .. } => content.len().div_ceil(4096) * 4096,
                Source::Cache { .. } => 0,
            })
            .sum();
        Ok(Some(StepMountPlan {
            secrets_dir: c_path(&overlay.mountpoint()?.join("secrets"))?,
            secrets_size: c_string((secret_bytes + TMPFS_SLACK).to_string())?,
            secrets_inodes: c_string((prepared.len() + 4).to_string())?,
            upper: c_path(&upper_path)?,
            upper_path,
            log: MadeLog::new(prepared.len())?,
            mounts: prepared,
            trees,
            uid,
            gid,
        }))
    }

    /// The fds the child must keep open until it has mounted the caches, in slot order.
    pub(crate) fn kept_fds(&self) -> &[OwnedFd] {
        &self.trees
    }

    fn has_secrets(&self) -> bool {
        self.mounts
            .iter()
            .any(|m| matches!(m.source, Source::Secret { .. }))
    }

    /// In the child, before `pivot_root`: performs every mount into `root`, with the cache
    /// mounts' fds moved to `first_kept_fd + slot`, and logs the mount points it made.
    pub(crate) fn mount_all(&self, root: BorrowedFd, first_kept_fd: RawFd) -> Result<(), Report> {
        let log_failed = at(Stage::StepMountLog, NO_DETAIL as usize);
        let upper =
            sys::open(&self.upper, libc::O_PATH | libc::O_DIRECTORY).map_err(&log_failed)?;
        let mut root_buf = [0u8; PATH_BYTES];
        let root_len = sys::dir_path(root, &mut root_buf).map_err(&log_failed)?;
        let recorder = Recorder::new(&self.log, upper.as_fd(), &root_buf[..root_len]);
        let secrets = self.mount_secrets_tmpfs()?;
        for (i, m) in self.mounts.iter().enumerate() {
            let target =
                reach_target(root, &recorder, i, m).map_err(at(Stage::StepMountTarget, i))?;
            match (&m.source, &secrets) {
                (Source::Cache { slot }, _) => {
                    let tree = first_kept_fd + *slot as RawFd;
                    attach_fd(tree, target.as_fd()).map_err(at(Stage::CacheMount, i))?;
                }
                (Source::Secret { file, content }, Some(dir)) => {
                    self.place_secret(dir.as_fd(), file, content.as_slice(), target.as_fd(), i)?;
                }
                (Source::Secret { .. }, None) => {
                    return Err(at(Stage::SecretTmpfs, i)(libc::EINVAL))
                }
            }
        }
        recorder.seal().map_err(log_failed)
    }

    /// A tmpfs just big enough for the step's secrets, in the scaffold (which only this
    /// mount namespace has, and which `pivot_root` leaves behind).
    fn mount_secrets_tmpfs(&self) -> Result<Option<OwnedFd>, Report> {
        if !self.has_secrets() {
            return Ok(None);
        }
        let fail = at(Stage::SecretTmpfs, NO_DETAIL as usize);
        sys::mkdir(&self.secrets_dir, 0o700).map_err(&fail)?;
        let options = [
            (c"mode", Some(c"0700")),
            (c"size", Some(self.secrets_size.as_c_str())),
            (c"nr_inodes", Some(self.secrets_inodes.as_c_str())),
        ];
        let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        let fs = sys::new_mount(c"tmpfs", &options, attrs).map_err(&fail)?;
        let dir = sys::open(
            &self.secrets_dir,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )
        .map_err(&fail)?;
        sys::attach(&fs, dir.as_fd()).map_err(fail)?;
        Ok(Some(fs))
    }

    /// Writes the secret into a new 0400 file on the secrets tmpfs `dir`, gives it to the
    /// step's user, and binds it read-only over `target`.
    fn place_secret(
        &self,
        dir: BorrowedFd,
        file: &CStr,
        content: &[u8],
        target: BorrowedFd,
        index: usize,
    ) -> Result<(), Report> {
        let fail = at(Stage::SecretFile, index);
        let fd = sys::create_new_at(dir, file, libc::O_WRONLY, 0o400).map_err(&fail)?;
        sys::write_all(fd.as_raw_fd(), content).map_err(&fail)?;
        sys::fchown(fd.as_fd(), self.uid, self.gid).map_err(&fail)?;
        drop(fd);
        let fail = at(Stage::SecretMount, index);
        let tree = sys::clone_tree(dir.as_raw_fd(), file, false).map_err(&fail)?;
        let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        sys::set_mount_attrs(tree.as_fd(), attrs, false).map_err(&fail)?;
        sys::attach(&tree, target).map_err(fail)
    }

    /// After the step (or its failed setup): removes the mount points the child made from
    /// the upper dir.
    pub(crate) fn remove_mount_points(&self) -> Result<(), RuntimeError> {
        self.log.remove_made_entries(&self.upper_path)
    }

    /// The error for a child's failure report about step mounts.
    pub(crate) fn error_for(&self, report: Report) -> RuntimeError {
        let errno = nix::errno::Errno::from_raw(report.errno);
        let mount = self.mounts.get(report.detail as usize);
        let target = match report.stage {
            Stage::StepMountTarget => {
                if let Some(m) = mount {
                    return RuntimeError::MountTarget {
                        kind: m.kind,
                        target: m.path.target.clone(),
                        errno,
                    };
                }
                None
            }
            Stage::SecretTmpfs => Some(self.secrets_dir.to_string_lossy().into_owned()),
            Stage::StepMountLog => Some(self.upper_path.display().to_string()),
            _ => mount.map(|m| m.path.target.clone()),
        };
        RuntimeError::Setup {
            stage: report.stage.name(),
            target,
            errno,
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

fn c_string(s: String) -> Result<CString, RuntimeError> {
    CString::new(s).map_err(|_| InvalidSandbox::NulString.into())
}

fn c_path(path: &Path) -> Result<CString, RuntimeError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| InvalidSandbox::NulPath(path.to_owned()).into())
}

fn target_path(mount: &StepMount) -> Result<TargetPath, RuntimeError> {
    let word = match mount {
        StepMount::Cache { .. } => "cache",
        StepMount::Secret { .. } => "secret",
    };
    let path = TargetPath::new(mount.target()).map_err(|source| RuntimeError::BadMountTarget {
        kind: Some(word),
        source,
    })?;
    if path.names.len() > MAX_MADE {
        return Err(InvalidSandbox::DeepMountTarget {
            kind: mount.kind(),
            target: path.target,
            max: MAX_MADE,
        }
        .into());
    }
    Ok(path)
}

/// One mount inside another would put the inner mount point into the outer mount's
/// source (a host cache dir) or hide it.
fn check_no_nesting(mounts: &[StepMount], paths: &[TargetPath]) -> Result<(), RuntimeError> {
    for (i, (inner, inner_path)) in mounts.iter().zip(paths).enumerate() {
        for (j, (outer, outer_path)) in mounts.iter().zip(paths).enumerate() {
            if i != j
                && inner_path.is_within(outer_path)
                && (i > j || inner_path.names.len() > outer_path.names.len())
            {
                return Err(InvalidSandbox::NestedStepMounts {
                    inner_kind: inner.kind(),
                    inner: inner_path.target.clone(),
                    outer_kind: outer.kind(),
                    outer: outer_path.target.clone(),
                    same: inner_path.names.len() == outer_path.names.len(),
                }
                .into());
            }
        }
    }
    Ok(())
}

fn check_secret<'c>(
    content: &'c SecretBytes,
    target: &str,
) -> Result<&'c SecretBytes, RuntimeError> {
    if content.len() > MAX_SECRET_BYTES {
        return Err(InvalidSandbox::SecretTooLarge {
            target: target.into(),
            len: content.len(),
            max_kib: MAX_SECRET_BYTES / 1024,
        }
        .into());
    }
    Ok(content)
}

/// Opens the cache dir once, checks it on the fd, and clones it into a detached mount
/// (`nosuid,nodev`) for the child to attach.
fn open_cache_dir(source: &Path) -> Result<OwnedFd, RuntimeError> {
    let source = std::path::absolute(source).map_err(RuntimeError::io("resolve", source))?;
    let io = |what: &'static str| {
        let path = source.clone();
        move |errno: Errno| RuntimeError::Io {
            what,
            path,
            source: std::io::Error::from_raw_os_error(errno),
        }
    };
    let fd = sys::open(&c_path(&source)?, libc::O_PATH | libc::O_NOFOLLOW)
        .map_err(io("open cache mount source"))?;
    let st = sys::stat_fd(fd.as_fd()).map_err(io("stat cache mount source"))?;
    let problem = match st.st_mode & libc::S_IFMT {
        libc::S_IFLNK => Some(InvalidSandbox::CacheSourceSymlink(source.clone())),
        libc::S_IFDIR if st.st_uid != 0 => Some(InvalidSandbox::CacheSourceOwner {
            path: source.clone(),
            uid: st.st_uid,
        }),
        libc::S_IFDIR => None,
        _ => Some(InvalidSandbox::CacheSourceNotDir(source.clone())),
    };
    if let Some(problem) = problem {
        return Err(problem.into());
    }
    let tree =
        sys::clone_tree(fd.as_raw_fd(), c"", false).map_err(io("clone cache mount source"))?;
    sys::set_mount_attrs(tree.as_fd(), MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, false)
        .map_err(io("set the mount flags of cache mount source"))?;
    Ok(tree)
}

/// Resolves (and creates) mount `index`'s target inside the root, without crossing a
/// mount, logging what it creates.
fn reach_target(
    root: BorrowedFd,
    recorder: &Recorder,
    index: usize,
    m: &PreparedMount,
) -> Sys<OwnedFd> {
    let names = &m.path.names;
    let mut copied_up: Option<usize> = None;
    let reached = create_target(
        root,
        &m.path.prefixes,
        names,
        m.target_is_dir(),
        libc::RESOLVE_NO_XDEV,
        &mut |first, parent| {
            copied_up = recorder.note_creation(index, parent, &names[first..])?;
            Ok(())
        },
    )?;
    if let (Some(first), Some(copied_up)) = (reached.first_created, copied_up) {
        recorder.set_made(index, copied_up + names.len() - first)?;
    }
    if !m.target_is_dir() && sys::file_type(reached.fd.as_fd())? == libc::S_IFDIR {
        return Err(libc::EISDIR);
    }
    Ok(reached.fd)
}

/// Attaches the detached mount at fd number `tree` onto `target`.
fn attach_fd(tree: RawFd, target: BorrowedFd) -> Sys<()> {
    // SAFETY: `tree` is open in the child for as long as this call (moved there by
    // `arrange_stdio`); it is only borrowed.
    let tree = unsafe { BorrowedFd::borrow_raw(tree) };
    sys::attach_borrowed(tree, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(target: &str) -> StepMount {
        StepMount::Cache {
            source: "/nonexistent".into(),
            target: target.into(),
        }
    }

    fn secret(target: &str) -> StepMount {
        StepMount::Secret {
            content: b"hunter2".to_vec().into(),
            target: target.into(),
        }
    }

    fn nesting(mounts: &[StepMount]) -> Result<(), RuntimeError> {
        let paths: Vec<TargetPath> = mounts.iter().map(|m| target_path(m).unwrap()).collect();
        check_no_nesting(mounts, &paths)
    }

    #[test]
    fn nested_or_repeated_targets_are_refused() {
        assert!(nesting(&[cache("/a/b"), secret("/a/c"), cache("/ab")]).is_ok());
        let err = nesting(&[cache("/a"), secret("/a/./b")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid sandbox: secret target \"/a/b\" is inside cache mount target \"/a\": \
             cache mounts and secrets must not nest"
        );
        let err = nesting(&[secret("/a/b/"), cache("/a")]).unwrap_err();
        assert!(err.to_string().contains("\"/a/b\" is inside"), "{err}");
        let err = nesting(&[cache("/a"), cache("/x/../a")]).unwrap_err();
        assert!(err.to_string().contains("is the same as"), "{err}");
    }

    #[test]
    fn targets_must_be_absolute_and_not_too_deep() {
        let err = target_path(&secret("run/x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid sandbox: secret mount target \"run/x\" must be an absolute path"
        );
        assert!(target_path(&cache("/")).is_err());
        let deep = "/d".repeat(MAX_MADE + 1);
        assert!(target_path(&cache(&deep)).is_err());
        assert!(target_path(&cache(&"/d".repeat(MAX_MADE))).is_ok());
    }

    #[test]
    fn wiping_zeroes_every_byte() {
        let mut bytes = b"hunter2".to_vec();
        wipe(&mut bytes);
        assert_eq!(bytes, [0; 7]);
    }

    #[test]
    fn secrets_are_bounded_and_never_printed() {
        let big = SecretBytes::from(vec![b'x'; MAX_SECRET_BYTES + 1]);
        let err = check_secret(&big, "/run/secrets/big").unwrap_err();
        assert!(err.to_string().contains("more than the 512 KiB"), "{err}");
        let max = SecretBytes::from(vec![b'x'; MAX_SECRET_BYTES]);
        assert!(check_secret(&max, "/t").is_ok());
        let shown = format!("{:?}", secret("/run/secrets/x"));
        assert_eq!(
            shown,
            "Secret { content: <7 bytes>, target: \"/run/secrets/x\" }"
        );
        assert!(!shown.contains("hunter2"));
    }
}
