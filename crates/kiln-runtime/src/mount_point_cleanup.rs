//! Keeping the mount points of cache mounts and secrets out of a step's layer.
//!
//! A step's upper dir becomes its layer, and a mount needs a mount point. When a cache or
//! secret target is missing from the image, the clone child creates it and its missing
//! parents in the merged root, so overlayfs puts them in the upper dir, together with
//! copies of the image dirs above them (copied up because an entry was created in them).
//! None of that is the step's change. kiln removes exactly those entries after the step:
//!
//! 1. While creating a target, the child writes down what it made, in a [`MadeLog`]: memory
//!    mapped `MAP_SHARED` before `clone` (so kiln sees the child's writes; `execve` unmaps
//!    it, so the step never sees it). Per mount: the target's real path inside the root,
//!    taken from the kernel (the `getcwd` of the dir where creation starts), so image
//!    symlinks such as `/run -> /var/run` are resolved exactly as the mount resolved them
//!    and never again; how many of its trailing components kiln made (created, or copied
//!    up: not in the upper dir before kiln created something in them); and, once every
//!    mount is in place, a [`Stamp`] of each (inode, ctime, mode, owner) from the upper dir.
//! 2. After the step, kiln walks those paths in the upper dir with `openat2(RESOLVE_BENEATH
//!    | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)`, so nothing the step left there is followed
//!    and nothing outside the upper dir is reached (BuildKit's cleaner deleted host files by
//!    following one, CVE-2024-23652). Deepest first, it removes each made entry whose stamp
//!    is unchanged: same inode and ctime, so the step neither replaced it, changed its mode,
//!    owner or xattrs, nor added or removed an entry in it. Dirs go with `rmdir` (only when
//!    empty and not opaque), the target file only when still empty. The first entry that
//!    fails a check stops the walk for its mount: it and everything above it stay.
//!
//! Edge cases:
//! - the step wrote beside a mount point (`/root/.cache/x` beside a cache at
//!   `/root/.cache/pip`): the parent's ctime changed, so the parent stays with the step's
//!   file, and only the mount point goes;
//! - a made dir the step only `chmod`ed, `chown`ed or gave an xattr stays (its ctime moved);
//! - targets that exist in the image are not changes: nothing is made, nothing removed;
//! - a target created over a whiteout of an upper dir that was not fresh is left in place,
//!   since removing it would bring back the file the whiteout deleted;
//! - several mounts sharing made parents: stamps are taken after the last mount, every
//!   check is done before any removal, and removal goes in reverse mount order, so a
//!   parent is removed once all its made children are gone;
//! - setup that fails before the step runs leaves stamps unset; nothing can have touched
//!   the made entries then, and they are removed by type only (empty dir, empty file);
//! - before Linux 6.13 (no fine-grained ctimes) a change within the clock tick of the stamp
//!   could go unseen; inode, mode and owner are still compared;
//! - more than [`MAX_MADE`] made entries for one target: only the deepest are tracked and
//!   the copied-up dirs above them stay.

use std::ffi::{CStr, CString};
use std::mem::size_of;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};

use super::error::{InvalidSandbox, RuntimeError};
use super::sys::{self, Errno, Sys};

/// The most made entries tracked per mount: enough for any target path kiln accepts (the
/// target's own components are limited to this), and for the dirs copied up above it.
pub(crate) const MAX_MADE: usize = 64;

/// Room for one path inside the root.
pub(crate) const PATH_BYTES: usize = libc::PATH_MAX as usize;

/// What identifies an upper dir entry and its metadata: any change by the step moves the
/// ctime, a replacement changes the inode.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stamp {
    ino: u64,
    ctime_sec: i64,
    ctime_nsec: i64,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Stamp {
    fn of(st: &libc::stat) -> Stamp {
        Stamp {
            ino: st.st_ino,
            ctime_sec: st.st_ctime,
            ctime_nsec: st.st_ctime_nsec,
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }
}

/// One mount's entry in the log (plain data: the child fills it without allocating).
#[repr(C)]
struct Record {
    /// How many trailing components of `path` kiln made; 0: nothing to remove.
    made: u32,
    /// 1 once `stamps` hold the made entries' stamps, outermost first.
    sealed: u32,
    path_len: u32,
    stamps: [Stamp; MAX_MADE],
    /// The target's real path inside the root, relative (`var/run/secrets/x`).
    path: [u8; PATH_BYTES],
}

/// One [`Record`] per step mount, in anonymous memory shared between kiln and the clone
/// child. The kernel hands it out zeroed: every record starts as "nothing made".
pub(crate) struct MadeLog {
    records: NonNull<Record>,
    count: usize,
}

impl std::fmt::Debug for MadeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MadeLog")
            .field("count", &self.count)
            .finish()
    }
}

impl MadeLog {
    pub(crate) fn new(count: usize) -> Result<MadeLog, RuntimeError> {
        let len = Self::bytes(count.max(1));
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(RuntimeError::sys("map the mount point log")(
                nix::errno::Errno::last(),
            ));
        }
        let records =
            NonNull::new(addr.cast::<Record>()).ok_or(RuntimeError::sys(
                "map the mount point log",
            )(nix::errno::Errno::ENOMEM))?;
        Ok(MadeLog { records, count })
    }

    fn bytes(count: usize) -> usize {
        count * size_of::<Record>()
    }

    /// The record of mount `index`, for the clone child to fill (EINVAL out of range: the
    /// child must not panic).
    ///
    /// # Safety
    /// Only the child may call this, and only while no other reference to the record exists
    /// in its own address space (the child is single-threaded and takes one at a time).
    // The mapping is shared memory outside Rust's ownership: `&self` hands out `&mut` by design.
    #[allow(clippy::mut_from_ref)]
    unsafe fn child_record(&self, index: usize) -> Sys<&mut Record> {
        if index >= self.count {
            return Err(libc::EINVAL);
        }
        // SAFETY: in bounds of the mapping; exclusivity is the caller's promise.
        Ok(unsafe { &mut *self.records.as_ptr().add(index) })
    }

    /// A copy of the record of mount `index`, read after the child has exited.
    fn snapshot(&self, index: usize) -> Box<Record> {
        assert!(index < self.count, "mount point log index out of range");
        // SAFETY: in bounds; the child that wrote it is gone, so nothing writes concurrently.
        // Volatile: the writes came from another process.
        Box::new(unsafe { ptr::read_volatile(self.records.as_ptr().add(index)) })
    }

    /// After the step: removes from `upper` what the child made for every mount and the step
    /// left untouched (see the module doc).
    pub(crate) fn remove_made_entries(&self, upper: &Path) -> Result<(), RuntimeError> {
        let chains: Vec<Chain> = (0..self.count)
            .filter_map(|i| Chain::from_record(&self.snapshot(i)))
            .collect();
        if chains.is_empty() {
            return Ok(());
        }
        let c_upper =
            CString::new(upper.as_os_str().as_bytes()).map_err(|_| InvalidSandbox::NulUpperDir)?;
        let dir = sys::open(&c_upper, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| io_error("open the upper dir", upper.to_path_buf(), e))?;
        let cleaner = Cleaner {
            upper: dir.as_fd(),
            upper_path: upper,
        };
        let removable = chains
            .iter()
            .map(|c| cleaner.untouched_count(c))
            .collect::<Result<Vec<_>, _>>()?;
        for (chain, count) in chains.iter().zip(removable).rev() {
            cleaner.remove_deepest(chain, count)?;
        }
        Ok(())
    }
}

impl Drop for MadeLog {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, with its length; nothing borrows it any more.
        unsafe { libc::munmap(self.records.as_ptr().cast(), Self::bytes(self.count.max(1))) };
    }
}

fn io_error(what: &'static str, path: PathBuf, errno: Errno) -> RuntimeError {
    RuntimeError::Io {
        what,
        path,
        source: std::io::Error::from_raw_os_error(errno),
    }
}

/// The child's side of the log: notes what [`super::container_mounts::create_target`] makes.
/// Allocation-free.
pub(crate) struct Recorder<'a> {
    log: &'a MadeLog,
    upper: BorrowedFd<'a>,
    /// The merged root's path as the kernel names it from the child (before `pivot_root`).
    root_path: &'a [u8],
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(log: &'a MadeLog, upper: BorrowedFd<'a>, root_path: &'a [u8]) -> Self {
        Recorder {
            log,
            upper,
            root_path,
        }
    }

    /// Called once per mount, before kiln creates `rest[0]` in the dir `parent` (and then
    /// the other names of `rest` below it). Writes the target's real path and returns how
    /// many dirs above `rest[0]` that creation copies up, or `None` when what it makes must
    /// stay (a whiteout is in the way).
    pub(crate) fn note_creation(
        &self,
        index: usize,
        parent: BorrowedFd,
        rest: &[CString],
    ) -> Sys<Option<usize>> {
        let mut buf = [0u8; PATH_BYTES];
        let len = sys::dir_path(parent, &mut buf)?;
        let base = inside(&buf[..len], self.root_path).ok_or(libc::EXDEV)?;
        let first = rest.first().ok_or(libc::EINVAL)?;
        // SAFETY: the child takes one record at a time.
        let record = unsafe { self.log.child_record(index) }?;
        let mut path = PathWriter {
            buf: &mut record.path,
            len: 0,
        };
        path.push(base)?;
        for name in rest {
            path.push(name.to_bytes())?;
        }
        record.path_len = path.len as u32;
        let depth = components(base).count();
        let in_upper = dirs_in_upper(self.upper, base)?;
        if in_upper == depth && entry_in_upper(self.upper, base, first)? {
            return Ok(None);
        }
        Ok(Some(depth - in_upper))
    }

    /// Marks the last `count` components of mount `index`'s path as made by kiln.
    pub(crate) fn set_made(&self, index: usize, count: usize) -> Sys<()> {
        // SAFETY: as in note_creation.
        let record = unsafe { self.log.child_record(index) }?;
        record.made = count.min(MAX_MADE) as u32;
        Ok(())
    }

    /// Once every mount is in place: stamps each made entry as it is in the upper dir now.
    pub(crate) fn seal(&self) -> Sys<()> {
        for index in 0..self.log.count {
            // SAFETY: as in note_creation.
            let record = unsafe { self.log.child_record(index) }?;
            let made = record.made as usize;
            if made == 0 {
                continue;
            }
            let path = &record.path[..record.path_len as usize];
            let ends = component_ends(path);
            let total = components(path).count();
            for (stamp, end) in record.stamps.iter_mut().zip(ends.skip(total - made)) {
                let st = with_c_path(&path[..end], |rel| stat_beneath(self.upper, rel))?;
                *stamp = Stamp::of(&st);
            }
            record.sealed = 1;
        }
        Ok(())
    }
}

/// `path` relative to `root` when it is `root` or below it.
fn inside<'p>(path: &'p [u8], root: &[u8]) -> Option<&'p [u8]> {
    if root == b"/" {
        return path.strip_prefix(b"/");
    }
    match path.strip_prefix(root)? {
        [] => Some(&[]),
        [b'/', rest @ ..] => Some(rest),
        _ => None,
    }
}

/// Appends components to a fixed buffer, `/`-separated.
struct PathWriter<'b> {
    buf: &'b mut [u8; PATH_BYTES],
    len: usize,
}

impl PathWriter<'_> {
    fn push(&mut self, part: &[u8]) -> Sys<()> {
        if part.is_empty() {
            return Ok(());
        }
        let sep = usize::from(self.len > 0);
        let end = self.len + sep + part.len();
        if end > self.buf.len() {
            return Err(libc::ENAMETOOLONG);
        }
        if sep == 1 {
            self.buf[self.len] = b'/';
        }
        self.buf[self.len + sep..end].copy_from_slice(part);
        self.len = end;
        Ok(())
    }
}

fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// The end offsets of each component of a relative path without empty components.
fn component_ends(path: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let slashes = path
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(|(i, _)| i);
    slashes.chain((!path.is_empty()).then_some(path.len()))
}

/// Calls `f` with `rel` as a C string (`.` when empty), built on the stack.
fn with_c_path<T>(rel: &[u8], f: impl FnOnce(&CStr) -> Sys<T>) -> Sys<T> {
    let mut buf = [0u8; PATH_BYTES + 2];
    let rel = if rel.is_empty() { b"." as &[u8] } else { rel };
    if rel.len() >= buf.len() {
        return Err(libc::ENAMETOOLONG);
    }
    buf[..rel.len()].copy_from_slice(rel);
    let c = CStr::from_bytes_until_nul(&buf).map_err(|_| libc::EINVAL)?;
    if c.to_bytes().len() != rel.len() {
        return Err(libc::EINVAL);
    }
    f(c)
}

fn stat_beneath(dir: BorrowedFd, rel: &CStr) -> Sys<libc::stat> {
    let fd = sys::open_beneath(dir, rel, libc::O_PATH)?;
    sys::stat_fd(fd.as_fd())
}

/// How many leading dirs of `base` the upper dir has (they are always a prefix).
fn dirs_in_upper(upper: BorrowedFd, base: &[u8]) -> Sys<usize> {
    let mut found = 0;
    for end in component_ends(base) {
        let opened = with_c_path(&base[..end], |rel| {
            sys::open_beneath(upper, rel, libc::O_PATH | libc::O_DIRECTORY)
        });
        match opened {
            Ok(_) => found += 1,
            Err(libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

/// Whether the upper dir has an entry (a whiteout, since the merged root has none) at
/// `base/name`.
fn entry_in_upper(upper: BorrowedFd, base: &[u8], name: &CStr) -> Sys<bool> {
    let dir = with_c_path(base, |rel| {
        sys::open_beneath(upper, rel, libc::O_PATH | libc::O_DIRECTORY)
    })?;
    match sys::stat_at(dir.as_fd(), name) {
        Ok(_) => Ok(true),
        Err(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One mount's made entries, read back by kiln.
struct Chain {
    /// The target's path inside the root, by component.
    components: Vec<CString>,
    /// How many trailing components kiln made.
    made: usize,
    /// Their stamps, outermost first; `None` when setup stopped before stamping.
    stamps: Option<Vec<Stamp>>,
}

impl Chain {
    fn from_record(record: &Record) -> Option<Chain> {
        let made = record.made as usize;
        let path = record.path.get(..record.path_len as usize)?;
        let components: Vec<CString> = components(path)
            .map(|c| CString::new(c).ok())
            .collect::<Option<_>>()?;
        if made == 0 || made > components.len() || made > MAX_MADE {
            return None;
        }
        let stamps = (record.sealed == 1).then(|| record.stamps[..made].to_vec());
        Some(Chain {
            components,
            made,
            stamps,
        })
    }

    /// The first `depth` components, joined (`.` for none).
    fn prefix(&self, depth: usize) -> CString {
        match depth {
            0 => c".".to_owned(),
            _ => {
                let parts: Vec<&[u8]> = self.components[..depth]
                    .iter()
                    .map(|c| c.to_bytes())
                    .collect();
                CString::new(parts.join(&b'/')).unwrap_or_else(|_| c".".to_owned())
            }
        }
    }

    /// The depths of the made entries, deepest first, with their index in `stamps`.
    fn made_depths(&self) -> impl Iterator<Item = (usize, usize)> {
        let (total, made) = (self.components.len(), self.made);
        (0..made).rev().map(move |i| (total - made + i + 1, i))
    }
}

/// Kiln's side: checks and removes made entries in the upper dir.
struct Cleaner<'a> {
    upper: BorrowedFd<'a>,
    upper_path: &'a Path,
}

impl Cleaner<'_> {
    /// How many of `chain`'s deepest made entries are still as kiln left them.
    fn untouched_count(&self, chain: &Chain) -> Result<usize, RuntimeError> {
        let mut count = 0;
        for (depth, i) in chain.made_depths() {
            if !self.untouched(chain, depth, i)? {
                break;
            }
            count += 1;
        }
        Ok(count)
    }

    fn untouched(&self, chain: &Chain, depth: usize, i: usize) -> Result<bool, RuntimeError> {
        let rel = chain.prefix(depth);
        let fd = match sys::open_beneath(self.upper, &rel, libc::O_PATH) {
            Ok(fd) => fd,
            Err(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV) => return Ok(false),
            Err(e) => return Err(self.error("open", &rel, e)),
        };
        let st = sys::stat_fd(fd.as_fd()).map_err(|e| self.error("stat", &rel, e))?;
        let shape_ok = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => !self.is_opaque(&rel)?,
            libc::S_IFREG => depth == chain.components.len() && st.st_size == 0,
            _ => false,
        };
        let stamp_ok = chain
            .stamps
            .as_ref()
            .is_none_or(|stamps| stamps[i] == Stamp::of(&st));
        Ok(shape_ok && stamp_ok)
    }

    /// An opaque dir hides the image's dir of the same name: removing it would bring that
    /// content back.
    fn is_opaque(&self, rel: &CStr) -> Result<bool, RuntimeError> {
        let dir = sys::open_beneath(self.upper, rel, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| self.error("open", rel, e))?;
        for name in [c"trusted.overlay.opaque", c"user.overlay.opaque"] {
            match sys::has_xattr(dir.as_fd(), name) {
                Ok(false) | Err(libc::ENOTSUP) => {}
                Ok(true) => return Ok(true),
                Err(e) => return Err(self.error("read the xattrs of", rel, e)),
            }
        }
        Ok(false)
    }

    /// Removes the `count` deepest made entries of `chain`, stopping quietly at one that is
    /// not empty or gone.
    fn remove_deepest(&self, chain: &Chain, count: usize) -> Result<(), RuntimeError> {
        for (depth, _) in chain.made_depths().take(count) {
            let parent_rel = chain.prefix(depth - 1);
            let parent = sys::open_beneath(self.upper, &parent_rel, libc::O_PATH)
                .map_err(|e| self.error("open", &parent_rel, e))?;
            let name = &chain.components[depth - 1];
            let is_dir = match sys::stat_at(parent.as_fd(), name) {
                Ok(st) => st.st_mode & libc::S_IFMT == libc::S_IFDIR,
                Err(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(self.error("stat", &chain.prefix(depth), e)),
            };
            match sys::unlink_at(parent.as_fd(), name, is_dir) {
                Ok(()) => {}
                Err(libc::ENOTEMPTY | libc::EEXIST | libc::ENOENT | libc::EBUSY) => return Ok(()),
                Err(e) => return Err(self.error("remove mount point", &chain.prefix(depth), e)),
            }
        }
        Ok(())
    }

    fn error(&self, what: &'static str, rel: &CStr, errno: Errno) -> RuntimeError {
        let path = self
            .upper_path
            .join(std::ffi::OsStr::from_bytes(rel.to_bytes()));
        io_error(what, path, errno)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_taken_relative_to_the_root_only_at_component_boundaries() {
        assert_eq!(
            inside(b"/a/root/var/run", b"/a/root"),
            Some(&b"var/run"[..])
        );
        assert_eq!(inside(b"/a/root", b"/a/root"), Some(&b""[..]));
        assert_eq!(inside(b"/a/rootx/var", b"/a/root"), None);
        assert_eq!(inside(b"/b", b"/a/root"), None);
        assert_eq!(inside(b"/var", b"/"), Some(&b"var"[..]));
    }

    #[test]
    fn component_ends_split_a_relative_path() {
        let ends: Vec<usize> = component_ends(b"var/run/x").collect();
        assert_eq!(ends, [3, 7, 9]);
        assert_eq!(component_ends(b"").count(), 0);
    }

    #[test]
    fn the_path_writer_joins_and_refuses_overflow() {
        let mut buf = [0u8; PATH_BYTES];
        let mut w = PathWriter {
            buf: &mut buf,
            len: 0,
        };
        w.push(b"").unwrap();
        w.push(b"var/run").unwrap();
        w.push(b"x").unwrap();
        assert_eq!(&w.buf[..w.len], b"var/run/x");
        assert_eq!(w.push(&[b'a'; PATH_BYTES]), Err(libc::ENAMETOOLONG));
    }
}
