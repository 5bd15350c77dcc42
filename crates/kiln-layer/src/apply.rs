//! Untrusted OCI layer stream → layer dir in overlay format (the security-critical part).
//!
//! Guarantees (SECURITY.md §3 rules 1–7), whatever the stream holds: nothing is created,
//! changed or removed outside `dest`. How:
//!
//! - entry paths are normalised: leading `/` and `./`, empty and `.` components dropped;
//!   a `..` component anywhere, a NUL byte, or a directory component starting with `.wh.`
//!   is an error (no legitimate writer produces them);
//! - the parent directory is resolved by `openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS)`
//!   from an `O_PATH` fd of `dest`, so symlinks made by the layer are followed only inside
//!   it; the entry itself is made by one `*at` call on its bare name (unlink, then create
//!   with O_EXCL|O_NOFOLLOW, mkdirat, symlinkat, mknodat, linkat), and metadata is set on
//!   the new fd or with AT_SYMLINK_NOFOLLOW. A directory entry over a symlink replaces it;
//! - a path may appear once per layer; the root may only be a directory;
//! - whiteouts: `.wh.NAME` becomes a 0/0 character device (NAME non-empty, not `.`/`..`),
//!   `DIR/.wh..wh..opq` (an empty regular file) sets `trusted.overlay.opaque=y` on DIR,
//!   other `.wh..wh.*` names are errors. As the image spec says, a whiteout only hides the
//!   layers below: a same-layer directory of that name becomes opaque instead, a
//!   same-layer file stays, and a directory that later replaces a whiteout is opaque;
//! - hard links: the target is resolved inside `dest` without following any symlink; if it
//!   is not there it is looked up in `lowers` (honouring their whiteouts) and copied up
//!   first, as overlayfs would; `linkat` never follows a symlink;
//! - incoming `trusted.*`, `user.overlay.*` and `security.selinux` xattrs are dropped;
//! - a character device 0/0 is refused (overlayfs would read it as a whiteout);
//! - a parent the layer does not list is created with the mode and owner of the same
//!   directory in the lower layers (0755 root:root if none); a parent that is a symlink or
//!   file in a lower layer is an error, since a layer dir cannot write through it.
//!
//! Directory mtimes are set when the entries below them are done, which is exact for
//! archives that keep each directory's content together (every mainstream writer).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::OFlag;
use sha2::{Digest as _, Sha256};

use super::compress::LayerStream;
use super::error::{LayerError, Result};
use super::inroot::{self, Resolve, Root};
use super::lowers;
use super::read::{Entry, Kind, TarReader};
use super::write::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use super::ApplyLimits;
use kiln_store::Digest;

/// Buffer for file data: fixed, whatever the file size.
const COPY_BUF: usize = 256 << 10;

/// Applies the layer stream `blob` (compressed as `media_type` says; `""` means detect it
/// from the magic bytes) into the empty directory `dest`, which becomes a layer dir.
/// `lowers` are the layer dirs below it, top-most first. Returns the diff_id (sha256 of the
/// uncompressed stream, read to its very end). After an error `dest` is garbage: the caller
/// deletes it.
pub fn apply_layer(
    blob: &mut dyn Read,
    media_type: &str,
    dest: &Path,
    lowers: &[PathBuf],
    limits: &ApplyLimits,
) -> Result<Digest> {
    let stream = LayerStream::open(blob, media_type, limits)?;
    let mut tar = TarReader::new(stream, limits);
    let mut applier = Applier::new(dest, lowers, limits)?;
    while let Some(entry) = tar.next_entry()? {
        applier.apply(&entry, &mut tar)?;
    }
    applier.finish()?;
    let diff_id = tar.into_inner().finish()?;
    tracing::trace!(%diff_id, dest = %dest.display(), lowers = lowers.len(), "layer tar applied");
    Ok(diff_id)
}

/// Device nodes of layers applied by this process that became empty placeholder files.
static DEVICE_PLACEHOLDERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn note_device_placeholder(path: &[u8]) {
    let path = String::from_utf8_lossy(path).into_owned();
    tracing::debug!(path, "device node applied as a placeholder file");
    if let Ok(mut all) = DEVICE_PLACEHOLDERS.lock() {
        all.push(path);
    }
}

/// The paths of device nodes that layers applied since the last call carried and that
/// became empty files because this process may not make device nodes (an ordinary user's
/// kiln). The caller says so to the user: a process-wide list rather than a return value
/// of [`apply_layer`], since layers are applied deep inside pulls, builds and bundles and
/// only the binary prints.
pub fn take_device_placeholders() -> Vec<String> {
    DEVICE_PLACEHOLDERS
        .lock()
        .map(|mut all| std::mem::take(&mut *all))
        .unwrap_or_default()
}

struct Applier {
    root: Root,
    lowers: Vec<Root>,
    max_path_len: usize,
    /// Truncated sha256 of every path applied, to refuse duplicates in little memory.
    seen: HashSet<[u8; 16]>,
    /// Directories (and their mtimes) whose content may still follow, outermost first.
    open_dirs: Vec<(Vec<u8>, i64)>,
    buf: Vec<u8>,
}

/// An I/O failure on the layer entry `path`.
fn io_err(what: &'static str, path: &[u8]) -> impl FnOnce(std::io::Error) -> LayerError {
    let path = String::from_utf8_lossy(path).into_owned();
    move |source| LayerError::EntryIo { what, path, source }
}

impl Applier {
    fn new(dest: &Path, lowers: &[PathBuf], limits: &ApplyLimits) -> Result<Self> {
        let open = |p: &Path| {
            Root::open(p).map_err(LayerError::io("open", p.as_os_str().as_encoded_bytes()))
        };
        Ok(Applier {
            root: open(dest)?,
            lowers: lowers.iter().map(|p| open(p)).collect::<Result<_>>()?,
            max_path_len: limits.max_path_len,
            seen: HashSet::new(),
            open_dirs: Vec::new(),
            buf: vec![0; COPY_BUF],
        })
    }

    fn apply<R: Read>(&mut self, entry: &Entry, tar: &mut TarReader<R>) -> Result<()> {
        let path = normalise(&entry.path, self.max_path_len)?;
        // Every entry, also the kinds whose owner is not applied (hard links, whiteouts):
        // a layer that names an impossible owner is not a layer kiln understands.
        ids(entry)?;
        let key: [u8; 16] = Sha256::digest(&path)[..16].try_into().unwrap_or_default();
        if !self.seen.insert(key) {
            return Err(LayerError::entry(
                &entry.path,
                "the path appears twice in the layer",
            ));
        }
        self.close_dirs_outside(&path)?;
        if path.is_empty() {
            return self.apply_root(entry);
        }
        let (parent, name) = split_parent(&path);
        if name.starts_with(WHITEOUT_PREFIX) {
            return self.apply_whiteout(entry, &path, parent, name);
        }
        match entry.kind {
            Kind::HardLink => self.apply_hardlink(entry, &path, parent, name),
            _ => self.apply_node(entry, tar, &path, parent, name),
        }
    }

    fn finish(&mut self) -> Result<()> {
        while let Some((dir, mtime)) = self.open_dirs.pop() {
            self.set_dir_mtime(&dir, mtime)?;
        }
        Ok(())
    }

    /// Sets the mtime of every open directory that `path` is not inside of.
    fn close_dirs_outside(&mut self, path: &[u8]) -> Result<()> {
        while let Some((dir, _)) = self.open_dirs.last() {
            if dir.is_empty() || (path.starts_with(dir) && path.get(dir.len()) == Some(&b'/')) {
                break;
            }
            if let Some((dir, mtime)) = self.open_dirs.pop() {
                self.set_dir_mtime(&dir, mtime)?;
            }
        }
        Ok(())
    }

    fn set_dir_mtime(&self, dir: &[u8], mtime: i64) -> Result<()> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        match self.root.open_at(dir, flags, Resolve::InRoot) {
            Ok(fd) => {
                inroot::utime_fd(fd.as_fd(), mtime, 0).map_err(io_err("set the time of", dir))
            }
            // A later entry replaced it; its time no longer matters.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(LayerError::io("open", dir)(e)),
        }
    }

    fn apply_root(&mut self, entry: &Entry) -> Result<()> {
        if entry.kind != Kind::Dir {
            return Err(LayerError::entry(
                &entry.path,
                "only a directory may stand for the layer's root",
            ));
        }
        let fd = inroot::open_dir_nofollow(self.root.fd(), b".").map_err(io_err("open", b"/"))?;
        set_meta_fd(fd.as_fd(), entry)?;
        self.open_dirs.push((Vec::new(), entry.mtime));
        Ok(())
    }

    fn apply_whiteout(
        &mut self,
        entry: &Entry,
        path: &[u8],
        parent: &[u8],
        name: &[u8],
    ) -> Result<()> {
        if entry.kind == Kind::Dir {
            return Err(LayerError::entry(
                &entry.path,
                "a whiteout cannot be a directory",
            ));
        }
        if name == OPAQUE_MARKER {
            if entry.kind != Kind::File || entry.size != 0 {
                return Err(LayerError::entry(
                    &entry.path,
                    "the opaque marker must be an empty regular file",
                ));
            }
            let dir = self.parent_dir(parent, path, Resolve::InRoot)?;
            return inroot::set_opaque(dir.as_fd(), b"").map_err(io_err("mark opaque", parent));
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.is_empty()
            || target == b"."
            || target == b".."
            || target.starts_with(WHITEOUT_PREFIX)
        {
            return Err(LayerError::entry(&entry.path, "invalid whiteout name"));
        }
        let dir = self.parent_dir(parent, path, Resolve::InRoot)?;
        let dir = dir.as_fd();
        match inroot::lstat(dir, target).map_err(io_err("stat", path))? {
            None => inroot::mkwhiteout(dir, target)
                .and_then(|()| inroot::utime_at(dir, target, entry.mtime, 0))
                .map_err(io_err("create the whiteout", path)),
            Some(st) if inroot::is_dir(&st) && !inroot::is_whiteout(&st) => {
                inroot::set_opaque(dir, target).map_err(io_err("mark opaque", path))
            }
            // A whiteout already, or a file of this layer, which hides the lower one anyway.
            Some(_) => Ok(()),
        }
    }

    fn apply_node<R: Read>(
        &mut self,
        entry: &Entry,
        tar: &mut TarReader<R>,
        path: &[u8],
        parent: &[u8],
        name: &[u8],
    ) -> Result<()> {
        let dir = self.parent_dir(parent, path, Resolve::InRoot)?;
        let dir = dir.as_fd();
        let mut replaces_whiteout = false;
        if let Some(st) = inroot::lstat(dir, name).map_err(io_err("stat", path))? {
            if entry.kind == Kind::Dir && inroot::is_dir(&st) {
                return self.finish_dir(dir, name, entry, path, false);
            }
            replaces_whiteout = inroot::is_whiteout(&st);
            inroot::remove_any(dir, name).map_err(io_err("replace", path))?;
        }
        match entry.kind {
            Kind::File => {
                let mut file = inroot::create_file(dir, name).map_err(io_err("create", path))?;
                copy_data(tar, &mut file, &mut self.buf, path)?;
                set_meta_fd(file.as_fd(), entry)?;
                inroot::utime_fd(file.as_fd(), entry.mtime, 0)
                    .map_err(io_err("set the time of", path))
            }
            Kind::Dir => {
                inroot::mkdir(dir, name).map_err(io_err("create", path))?;
                self.finish_dir(dir, name, entry, path, replaces_whiteout)
            }
            Kind::Symlink => {
                if entry.link.is_empty() {
                    return Err(LayerError::entry(
                        &entry.path,
                        "symlink with an empty target",
                    ));
                }
                inroot::symlink(&entry.link, dir, name).map_err(io_err("create", path))?;
                set_meta_at(dir, name, entry, path)
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let (kind, dev) = match entry.kind {
                    Kind::Char if entry.dev == (0, 0) => {
                        return Err(LayerError::entry(
                            &entry.path,
                            "character device 0:0 is an overlay whiteout",
                        ))
                    }
                    Kind::Char => (libc::S_IFCHR, entry.dev),
                    Kind::Block => (libc::S_IFBLK, entry.dev),
                    _ => (libc::S_IFIFO, (0, 0)),
                };
                let dev = nix::sys::stat::makedev(dev.0.into(), dev.1.into());
                match inroot::mknod(dir, name, kind, dev) {
                    // A user namespace (rootless kiln) may make no device node: an empty
                    // file holds its place, and the pull goes on (said by the caller).
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) && kind != libc::S_IFIFO => {
                        inroot::create_file(dir, name).map_err(io_err("create", path))?;
                        note_device_placeholder(path);
                    }
                    other => other.map_err(io_err("create", path))?,
                }
                set_meta_at(dir, name, entry, path)
            }
            Kind::HardLink => Err(LayerError::entry(&entry.path, "unexpected hard link")),
        }
    }

    /// Metadata of a directory entry; its mtime waits until its content is done.
    fn finish_dir(
        &mut self,
        dir: BorrowedFd,
        name: &[u8],
        entry: &Entry,
        path: &[u8],
        opaque: bool,
    ) -> Result<()> {
        let fd = inroot::open_dir_nofollow(dir, name).map_err(io_err("open", path))?;
        if opaque {
            inroot::set_opaque(fd.as_fd(), b"").map_err(io_err("mark opaque", path))?;
        }
        set_meta_fd(fd.as_fd(), entry)?;
        self.open_dirs.push((path.to_vec(), entry.mtime));
        Ok(())
    }

    fn apply_hardlink(
        &mut self,
        entry: &Entry,
        path: &[u8],
        parent: &[u8],
        name: &[u8],
    ) -> Result<()> {
        let target = normalise(&entry.link, self.max_path_len)
            .map_err(|_| LayerError::entry(&entry.path, "invalid hard link target"))?;
        if target.is_empty() || target == path {
            return Err(LayerError::entry(
                &entry.path,
                "hard link to the root or to itself",
            ));
        }
        let (tparent, tname) = split_parent(&target);
        if tname.starts_with(WHITEOUT_PREFIX) {
            return Err(LayerError::entry(&entry.path, "hard link to a whiteout"));
        }
        let tdir = self.link_target_dir(entry, &target, tparent, tname)?;
        let dir = self.parent_dir(parent, path, Resolve::InRoot)?;
        if inroot::lstat(dir.as_fd(), name)
            .map_err(io_err("stat", path))?
            .is_some()
        {
            inroot::remove_any(dir.as_fd(), name).map_err(io_err("replace", path))?;
        }
        inroot::hardlink(tdir.as_fd(), tname, dir.as_fd(), name)
            .map_err(io_err("create the hard link", path))
    }

    /// The directory holding the hard link target, copying the target up from the lower
    /// layers if this layer does not have it yet. No symlink is followed on the way.
    fn link_target_dir(
        &mut self,
        entry: &Entry,
        target: &[u8],
        tparent: &[u8],
        tname: &[u8],
    ) -> Result<OwnedFd> {
        let missing = || {
            LayerError::entry(
                &entry.path,
                "the hard link target does not exist in this layer or below",
            )
        };
        match self.root.open_dir(tparent, Resolve::InRootNoSymlinks) {
            Ok(dir) => match inroot::lstat(dir.as_fd(), tname).map_err(io_err("stat", target))? {
                Some(st) if inroot::is_dir(&st) => {
                    return Err(LayerError::entry(&entry.path, "hard link to a directory"))
                }
                Some(st) if inroot::is_whiteout(&st) => return Err(missing()),
                Some(_) => return Ok(dir),
                None => {}
            },
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(_) => return Err(missing()),
        }
        let comps: Vec<&[u8]> = target.split(|b| *b == b'/').collect();
        let found = self
            .lookup(&comps)?
            .filter(|f| f.layer > 0)
            .ok_or_else(missing)?;
        if inroot::is_dir(&found.st) {
            return Err(LayerError::entry(&entry.path, "hard link to a directory"));
        }
        let dir = self.parent_dir(tparent, target, Resolve::InRootNoSymlinks)?;
        lowers::copy_up(&found, dir.as_fd(), tname).map_err(io_err("copy up", target))?;
        Ok(dir)
    }

    /// Looks `comps` up through this layer and the lower ones.
    fn lookup(&self, comps: &[&[u8]]) -> Result<Option<lowers::Found>> {
        let layers: Vec<&Root> = std::iter::once(&self.root).chain(&self.lowers).collect();
        lowers::lookup(&layers, comps).map_err(io_err("look up", &comps.join(&b'/')))
    }

    /// Resolves (creating if needed) the directory `parent` of the entry `path`.
    fn parent_dir(&mut self, parent: &[u8], path: &[u8], how: Resolve) -> Result<OwnedFd> {
        match self.root.open_dir(parent, how) {
            Ok(dir) => Ok(dir),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                self.make_parents(parent, path, how)
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(LayerError::entry(
                path,
                "its parent directory is reached through a symlink",
            )),
            Err(e) => Err(LayerError::io("open", parent)(e)),
        }
    }

    /// Creates the missing directories of `parent`, one name at a time.
    fn make_parents(&mut self, parent: &[u8], path: &[u8], how: Resolve) -> Result<OwnedFd> {
        let comps: Vec<&[u8]> = parent.split(|b| *b == b'/').collect();
        let mut dir = self.root.open_dir(b"", how).map_err(io_err("open", b"/"))?;
        for i in 0..comps.len() {
            let prefix = comps[..=i].join(&b'/');
            match self.root.open_dir(&prefix, how) {
                Ok(next) => {
                    dir = next;
                    continue;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {}
                Err(e) => return Err(LayerError::io("open", &prefix)(e)),
            }
            let name = comps[i];
            match inroot::lstat(dir.as_fd(), name).map_err(io_err("stat", &prefix))? {
                None => self.make_implicit_dir(dir.as_fd(), name, &comps[..=i], path)?,
                Some(st) if inroot::is_whiteout(&st) => {
                    // The lower directory was deleted: the new one must not merge with it.
                    inroot::remove_any(dir.as_fd(), name).map_err(io_err("replace", &prefix))?;
                    make_default_dir(dir.as_fd(), name, &prefix)?;
                    inroot::set_opaque(dir.as_fd(), name)
                        .map_err(io_err("mark opaque", &prefix))?;
                }
                Some(_) => {
                    let why = format!(
                        "its parent {} is not a directory",
                        String::from_utf8_lossy(&prefix)
                    );
                    return Err(LayerError::entry(path, why));
                }
            }
            dir = inroot::open_dir_nofollow(dir.as_fd(), name).map_err(io_err("open", &prefix))?;
        }
        Ok(dir)
    }

    /// A directory the layer uses without listing it: it takes the owner, mode and times
    /// of the same directory in the lower layers, as an overlay copy-up would.
    fn make_implicit_dir(
        &mut self,
        dir: BorrowedFd,
        name: &[u8],
        comps: &[&[u8]],
        path: &[u8],
    ) -> Result<()> {
        let prefix = comps.join(&b'/');
        match self.lookup(comps)? {
            Some(found) if inroot::is_dir(&found.st) => {
                inroot::mkdir(dir, name).map_err(io_err("create", &prefix))?;
                lowers::copy_meta(&found, dir, name).map_err(io_err("copy up", &prefix))
            }
            Some(_) => {
                let why = format!(
                    "its parent {} is a symlink or file in a lower layer, which kiln does not write through",
                    String::from_utf8_lossy(&prefix)
                );
                Err(LayerError::entry(path, why))
            }
            None => make_default_dir(dir, name, &prefix),
        }
    }
}

/// A new directory, 0755 root:root.
fn make_default_dir(dir: BorrowedFd, name: &[u8], path: &[u8]) -> Result<()> {
    inroot::mkdir(dir, name).map_err(io_err("create", path))?;
    inroot::chown_at(dir, name, 0, 0).map_err(io_err("chown", path))?;
    inroot::chmod_at(dir, name, 0o755).map_err(io_err("chmod", path))
}

/// The longest name (one path component) Linux filesystems store: refused up front so the
/// error names the entry and the rule rather than an `ENAMETOOLONG` from some syscall.
const NAME_MAX: usize = 255;

/// Normalises an entry path: no leading `/` or `./`, no empty or `.` components. Refuses
/// `..` components, NUL bytes, `.wh.` directories, names longer than [`NAME_MAX`] and
/// paths longer than `max_len`.
fn normalise(raw: &[u8], max_len: usize) -> Result<Vec<u8>> {
    if raw.contains(&0) {
        return Err(LayerError::entry(raw, "the path contains a NUL byte"));
    }
    let comps: Vec<&[u8]> = raw
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    if comps.iter().any(|c| *c == b"..") {
        return Err(LayerError::entry(
            raw,
            "the path has a '..' component, which could climb out of the layer",
        ));
    }
    if let Some((_, dirs)) = comps.split_last() {
        if dirs.iter().any(|c| c.starts_with(WHITEOUT_PREFIX)) {
            return Err(LayerError::entry(
                raw,
                "a directory name starts with .wh., which marks whiteouts",
            ));
        }
    }
    if let Some(long) = comps.iter().find(|c| c.len() > NAME_MAX) {
        return Err(LayerError::entry(
            raw,
            format!(
                "a name in the path is {} bytes long; Linux filesystems allow at most {NAME_MAX}",
                long.len()
            ),
        ));
    }
    let path = comps.join(&b'/');
    if path.len() > max_len {
        return Err(LayerError::entry(
            raw,
            format!(
                "the path is {} bytes long, more than kiln's limit of {max_len} (image_limits: path_length in kiln's config file)",
                path.len()
            ),
        ));
    }
    Ok(path)
}

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// The owner ids of an entry. `(uid_t)-1` means "leave unchanged" to `chown`, so an entry
/// owned by 4294967295 would keep the applier's own id (root) and, with mode 4755, become a
/// setuid-root file: that id, and any larger one, is refused like `kiln run -u` refuses it.
fn ids(entry: &Entry) -> Result<(u32, u32)> {
    let id = |value: u64, what: &str| {
        u32::try_from(value)
            .ok()
            .filter(|id| *id != u32::MAX)
            .ok_or_else(|| {
                LayerError::entry(
                    &entry.path,
                    format!("{what} {value} is not a valid id (the largest is 4294967294)"),
                )
            })
    };
    Ok((id(entry.uid, "uid")?, id(entry.gid, "gid")?))
}

/// Xattrs a layer may set: not overlay's own (`trusted.*`, `user.overlay.*`), not host
/// SELinux labels.
fn allowed_xattr(name: &[u8]) -> bool {
    !(name.starts_with(b"trusted.")
        || name.starts_with(b"user.overlay.")
        || name == b"security.selinux")
}

/// Owner, mode and xattrs of an open file or directory, in that order: chown clears
/// setuid bits and file capabilities, so they come after it.
fn set_meta_fd(fd: BorrowedFd, entry: &Entry) -> Result<()> {
    let (uid, gid) = ids(entry)?;
    inroot::chown_fd(fd, uid, gid).map_err(io_err("chown", &entry.path))?;
    inroot::chmod_fd(fd, entry.mode).map_err(io_err("chmod", &entry.path))?;
    for (key, value) in entry.xattrs.iter().filter(|(k, _)| allowed_xattr(k)) {
        inroot::xattr_set(fd, b"", key, value).map_err(io_err("set xattrs of", &entry.path))?;
    }
    Ok(())
}

/// Owner, mode, xattrs and times of `name` in `dir`, never following a symlink.
fn set_meta_at(dir: BorrowedFd, name: &[u8], entry: &Entry, path: &[u8]) -> Result<()> {
    let (uid, gid) = ids(entry)?;
    inroot::chown_at(dir, name, uid, gid).map_err(io_err("chown", path))?;
    if entry.kind != Kind::Symlink {
        inroot::chmod_at(dir, name, entry.mode).map_err(io_err("chmod", path))?;
    }
    for (key, value) in entry.xattrs.iter().filter(|(k, _)| allowed_xattr(k)) {
        inroot::xattr_set(dir, name, key, value).map_err(io_err("set xattrs of", path))?;
    }
    inroot::utime_at(dir, name, entry.mtime, 0).map_err(io_err("set the time of", path))
}

fn copy_data<R: Read>(
    tar: &mut TarReader<R>,
    file: &mut std::fs::File,
    buf: &mut [u8],
    path: &[u8],
) -> Result<()> {
    loop {
        let n = tar.read_data(buf)?;
        if n == 0 {
            return Ok(());
        }
        file.write_all(&buf[..n]).map_err(io_err("write", path))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_or_refused() {
        let ok = |raw: &str| String::from_utf8(normalise(raw.as_bytes(), 4096).unwrap()).unwrap();
        assert_eq!(ok("/etc//passwd"), "etc/passwd");
        assert_eq!(ok("./usr/./bin/"), "usr/bin");
        assert_eq!(ok("./"), "");
        for bad in ["../x", "a/../../x", "a/..", "a\0b", ".wh.d/x"] {
            assert!(normalise(bad.as_bytes(), 4096).is_err(), "{bad:?} accepted");
        }
        assert!(normalise(b"aaaa/bbbb", 8).is_err());
    }
}
