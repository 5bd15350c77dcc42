//! `copy:` build steps: build-context files → the step's root, with Docker `COPY` semantics.
//!
//! Both ends are hostile in their own way: a context may hold symlinks pointing anywhere on
//! the host, and the root is an image whose symlinks (`/bin -> usr/bin`, or `/etc ->
//! /host/etc`) must only ever be followed inside it. So sources are resolved with
//! `openat2(RESOLVE_BENEATH)` under the context's directory fd ([`ContextDir`], opened once
//! by the build, never by its path here: leaving it by `..` or a symlink is an error),
//! destinations with `RESOLVE_IN_ROOT` under the root, and every file is created by name
//! relative to a resolved parent fd, never through a symlink.
//!
//! Semantics: a file source goes *into* the destination when it ends with `/` or is an
//! existing directory, else it *becomes* the destination; a directory source has its
//! content copied into the destination (created like `mkdir -p`; new parents are 0755
//! root:root). Several sources need a destination ending with `/`. Everything copied gets
//! `uid`/`gid`, and `mode` when given (files and directories alike). Without `mode`, modes
//! follow git's model so that a build does not depend on the host's umask or on a chmod
//! that only a cache could notice: directories get 0755, files 0755 when the source has any
//! execute bit and 0644 otherwise; setuid/setgid/sticky and group/other write never come
//! from the host. Modification times are not taken from the host either: everything copied
//! gets `CopyOptions::mtime` (the build's SOURCE_DATE_EPOCH), so the build cache, which
//! never looks at host mtimes, can never hand out a layer that a fresh copy would not
//! reproduce byte for byte. Symlinks
//! inside a copied directory stay symlinks; hard links become separate files; sockets are
//! skipped; extended attributes of the host are not copied.
//!
//! Exclusions (ignore files, decided by the build module) come in as a predicate on paths
//! relative to the context. A path is left out when it or any directory above it is
//! excluded; an excluded source named explicitly is an error. The one way back in is an
//! exception of Docker's syntax (`docs` then `!docs/README.md`): a directory excluded that
//! way is walked, and copied as the parent of what comes back, or not at all when nothing
//! does. A source reached through a symlink is checked both as written and where it really
//! is, so a symlink cannot smuggle an excluded directory into the image; entries below it
//! are checked where they really are.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::FileStat;

use super::context_dir::ContextDir;
use super::error::{LayerError, Result};
use super::inroot::{self, Resolve, Root};
use super::source_path::{as_path, child_path, clean_source, excluded_source, source_exclusion};

/// Ownership and mode given to everything a `copy:` step writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// Permission bits for every copied file and directory; `None` derives them from the
    /// source's execute bits (see the module doc).
    pub mode: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    /// Modification time (seconds since the epoch) of everything copied.
    pub mtime: i64,
}

/// What a `copy:` step wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of regular-file content.
    pub bytes: u64,
}

/// Says whether a context path (relative to the context root, `/`-separated, no `.` or
/// `..`) is excluded from `copy:` steps. The flag tells whether the path is a directory.
pub type Exclusions<'a> = dyn Fn(&Path, bool) -> Exclusion + Sync + 'a;

/// What the exclusion rules say about one context path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// Copied.
    Included,
    /// Left out, with everything below it. Names the rule, e.g. `.kilnignore line 3
    /// (*.log)`.
    Excluded(String),
    /// A directory left out, but a later exception may bring back paths below it: it is
    /// walked, and copied only as the parent of what comes back.
    ExcludedWithExceptions(String),
}

/// Copies `sources` (paths relative to `context`) to `dest` (absolute, or relative to
/// `workdir`) inside `root`, a step's mounted root filesystem. Nothing is excluded.
pub fn copy_in(
    context: &ContextDir,
    sources: &[String],
    root: &Path,
    dest: &str,
    workdir: &str,
    opts: &CopyOptions,
) -> Result<CopyStats> {
    copy_in_filtered(context, sources, root, dest, workdir, opts, &|_, _| {
        Exclusion::Included
    })
}

/// [`copy_in`], leaving out every context path that `excluded` names (and everything below
/// an excluded directory). Naming an excluded path as a source is an error.
pub fn copy_in_filtered(
    context: &ContextDir,
    sources: &[String],
    root: &Path,
    dest: &str,
    workdir: &str,
    opts: &CopyOptions,
    excluded: &Exclusions,
) -> Result<CopyStats> {
    let dest_err = |why: &str| LayerError::CopyDest {
        dest: dest.to_owned(),
        why: why.to_owned(),
    };
    if sources.is_empty() {
        return Err(dest_err("nothing to copy"));
    }
    let into_dir = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
    if sources.len() > 1 && !into_dir {
        return Err(dest_err(
            "copying several sources needs a destination ending with /",
        ));
    }
    let root =
        Root::open(root).map_err(LayerError::io("open", root.as_os_str().as_encoded_bytes()))?;
    let mut copier = Copier {
        context,
        root,
        opts: *opts,
        excluded,
        stats: CopyStats::default(),
    };
    let dest_comps = clean_dest(dest, workdir);
    for source in sources {
        copier.copy_source(source, &dest_comps, into_dir)?;
    }
    Ok(copier.stats)
}

/// The mode a copied node gets when the step declares none: git's model.
fn normalised_mode(st: &FileStat) -> u32 {
    if inroot::is_dir(st) || st.st_mode & 0o111 != 0 {
        0o755
    } else {
        0o644
    }
}

/// The destination as components from the root, `..` resolved lexically as Docker does.
fn clean_dest(dest: &str, workdir: &str) -> Vec<String> {
    let full = if dest.starts_with('/') {
        dest.to_owned()
    } else {
        format!("{workdir}/{dest}")
    };
    let mut comps: Vec<String> = Vec::new();
    for c in full.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                comps.pop();
            }
            c => comps.push(c.to_owned()),
        }
    }
    comps
}

/// One node to copy: its metadata, where to read it from, and its names.
struct Node<'a> {
    st: &'a FileStat,
    /// The open regular file, for an explicitly named source.
    file: Option<BorrowedFd<'a>>,
    /// The directory holding it under the destination name, for entries of a copied dir.
    parent: Option<BorrowedFd<'a>>,
    /// The path shown in messages, as the user wrote it.
    shown: &'a str,
    /// Where it really is, relative to the context: what exclusions are checked against.
    real: &'a [u8],
}

struct Copier<'a> {
    context: &'a ContextDir,
    root: Root,
    opts: CopyOptions,
    excluded: &'a Exclusions<'a>,
    stats: CopyStats,
}

impl Copier<'_> {
    fn copy_source(&mut self, source: &str, dest: &[String], into_dir: bool) -> Result<()> {
        let rel = source.trim_start_matches('/');
        let src = self.context.open_source(source, rel, OFlag::O_PATH)?;
        let st = inroot::fstat(src.as_fd()).map_err(LayerError::io("stat", source.as_bytes()))?;
        let real = self.context.context_path(src.as_fd(), source)?;
        self.refuse_excluded(source, &clean_source(rel), &real, inroot::is_dir(&st))?;
        if inroot::is_dir(&st) {
            let target = self.make_dirs(dest)?;
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
            let src = self.context.open_source(source, rel, flags)?;
            return self.copy_dir_content(src.as_fd(), target.as_fd(), source, &real);
        }
        let base = Path::new(rel)
            .file_name()
            .map(|n| n.as_encoded_bytes().to_vec())
            .unwrap_or_default();
        let (parent, name) = match dest.split_last() {
            _ if into_dir || self.is_dir_in_root(dest) => (dest, base),
            Some((last, parent)) => (parent, last.as_bytes().to_vec()),
            None => (dest, base),
        };
        if name.is_empty() {
            return Err(LayerError::CopyDest {
                dest: dest.join("/"),
                why: format!("{source} has no file name"),
            });
        }
        let dir = self.make_dirs(parent)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
        let file = if inroot::file_type(&st) == libc::S_IFREG {
            Some(self.context.open_source(source, rel, flags)?)
        } else {
            None
        };
        let node = Node {
            st: &st,
            file: file.as_ref().map(|f| f.as_fd()),
            parent: None,
            shown: source,
            real: &real,
        };
        self.copy_node(&node, dir.as_fd(), &name)
    }

    /// Fails when a source is excluded as written (`lexical`) or where it resolved (`real`).
    fn refuse_excluded(&self, source: &str, lexical: &[u8], real: &[u8], dir: bool) -> Result<()> {
        let rule = source_exclusion(self.excluded, lexical, dir)
            .or_else(|| source_exclusion(self.excluded, real, dir));
        match rule {
            Some(rule) => Err(excluded_source(source, &rule)),
            None => Ok(()),
        }
    }

    fn is_dir_in_root(&self, path: &[String]) -> bool {
        self.root
            .open_dir(path.join("/").as_bytes(), Resolve::InRoot)
            .is_ok()
    }

    /// `mkdir -p` inside the root: symlinks are followed, but only within it.
    fn make_dirs(&mut self, comps: &[String]) -> Result<OwnedFd> {
        let mut dir = self
            .root
            .open_dir(b"", Resolve::InRoot)
            .map_err(LayerError::io("open", b"/"))?;
        for i in 0..comps.len() {
            let prefix = comps[..=i].join("/");
            let err = |why: &str| LayerError::CopyDest {
                dest: format!("/{prefix}"),
                why: why.to_owned(),
            };
            match self.root.open_dir(prefix.as_bytes(), Resolve::InRoot) {
                Ok(next) => {
                    dir = next;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(err("not a directory"))
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(LayerError::io("open", prefix.as_bytes())(e)),
            }
            let name = comps[i].as_bytes();
            if inroot::lstat(dir.as_fd(), name)
                .map_err(LayerError::io("stat", prefix.as_bytes()))?
                .is_some()
            {
                return Err(err("a symlink that leads nowhere inside the image"));
            }
            let mkerr = LayerError::io("create", prefix.as_bytes());
            inroot::mkdir(dir.as_fd(), name)
                .and_then(|()| inroot::chown_at(dir.as_fd(), name, 0, 0))
                .and_then(|()| inroot::chmod_at(dir.as_fd(), name, 0o755))
                .map_err(mkerr)?;
            dir = inroot::open_dir_nofollow(dir.as_fd(), name)
                .map_err(LayerError::io("open", prefix.as_bytes()))?;
        }
        Ok(dir)
    }

    /// Copies what is in `src` (really at `real` in the context) into `dst`, leaving out
    /// sockets and excluded entries.
    fn copy_dir_content(
        &mut self,
        src: BorrowedFd,
        dst: BorrowedFd,
        src_path: &str,
        real: &[u8],
    ) -> Result<()> {
        let names = inroot::list_dir(src).map_err(LayerError::io("list", src_path.as_bytes()))?;
        for name in names {
            let path = format!("{src_path}/{}", String::from_utf8_lossy(&name));
            let Some(st) =
                inroot::lstat(src, &name).map_err(LayerError::io("stat", path.as_bytes()))?
            else {
                continue;
            };
            let real = child_path(real, &name);
            if inroot::file_type(&st) == libc::S_IFSOCK || !self.copies(src, &name, &st, &real)? {
                continue;
            }
            let node = Node {
                st: &st,
                file: None,
                parent: Some(src),
                shown: &path,
                real: &real,
            };
            self.copy_node(&node, dst, &name)?;
        }
        Ok(())
    }

    /// Whether the entry `name` of `dir` (really at `real` in the context) is copied: it is
    /// not excluded, or it is a directory below which an exception brings something back.
    fn copies(&self, dir: BorrowedFd, name: &[u8], st: &FileStat, real: &[u8]) -> Result<bool> {
        match (self.excluded)(as_path(real), inroot::is_dir(st)) {
            Exclusion::Included => Ok(true),
            Exclusion::Excluded(_) => Ok(false),
            Exclusion::ExcludedWithExceptions(_) => {
                let shown = String::from_utf8_lossy(real).into_owned();
                let sub = inroot::open_dir_nofollow(dir, name)
                    .map_err(LayerError::io("open", shown.as_bytes()))?;
                let names = inroot::list_dir(sub.as_fd()).map_err(LayerError::io("list", real))?;
                for name in names {
                    let Some(st) =
                        inroot::lstat(sub.as_fd(), &name).map_err(LayerError::io("stat", real))?
                    else {
                        continue;
                    };
                    let below = child_path(real, &name);
                    if inroot::file_type(&st) != libc::S_IFSOCK
                        && self.copies(sub.as_fd(), &name, &st, &below)?
                    {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// Copies one node to `name` in `dst`, replacing what is there (but not a directory).
    fn copy_node(&mut self, src: &Node, dst: BorrowedFd, name: &[u8]) -> Result<()> {
        let (st, src_path) = (src.st, src.shown);
        let shown = || format!("{src_path} → {}", String::from_utf8_lossy(name));
        let existing =
            inroot::lstat(dst, name).map_err(|e| LayerError::io("stat", shown().as_bytes())(e))?;
        let ftype = inroot::file_type(st);
        match existing {
            Some(e) if inroot::is_dir(&e) && ftype == libc::S_IFDIR => {}
            Some(e) if inroot::is_dir(&e) => {
                let why = format!(
                    "cannot replace the directory {} with {src_path}",
                    String::from_utf8_lossy(name)
                );
                return Err(LayerError::CopyDest {
                    dest: String::from_utf8_lossy(name).into_owned(),
                    why,
                });
            }
            Some(_) => inroot::remove_any(dst, name)
                .map_err(|e| LayerError::io("replace", shown().as_bytes())(e))?,
            None => {}
        }
        let fail = |e: io::Error| LayerError::io("copy", shown().as_bytes())(e);
        match (ftype, src.parent) {
            (libc::S_IFDIR, Some(src_dir)) => {
                if existing.is_none() {
                    inroot::mkdir(dst, name).map_err(fail)?;
                }
                self.stats.dirs += 1;
                let sub_dst = inroot::open_dir_nofollow(dst, name).map_err(fail)?;
                self.set_meta(dst, name, st, true).map_err(fail)?;
                let sub_src = inroot::open_dir_nofollow(src_dir, name).map_err(fail)?;
                self.copy_dir_content(sub_src.as_fd(), sub_dst.as_fd(), src_path, src.real)?;
                // Copying the content changed the directory's mtime: set it last.
                inroot::utime_at(dst, name, self.opts.mtime, 0).map_err(fail)
            }
            (libc::S_IFREG, _) => {
                let mut from = match (src.file, src.parent) {
                    (Some(fd), _) => std::fs::File::from(fd.try_clone_to_owned().map_err(fail)?),
                    (None, Some(dir)) => inroot::open_file_nofollow(dir, name).map_err(fail)?,
                    (None, None) => return Err(fail(io::Error::from(io::ErrorKind::NotFound))),
                };
                let mut to = inroot::create_file(dst, name).map_err(fail)?;
                // std uses copy_file_range here: streaming, no user-space buffer.
                self.stats.bytes += io::copy(&mut from, &mut to).map_err(fail)?;
                self.stats.files += 1;
                self.set_meta(dst, name, st, true).map_err(fail)
            }
            (libc::S_IFLNK, Some(src_dir)) => {
                let target = inroot::readlink(src_dir, name).map_err(fail)?;
                inroot::symlink(&target, dst, name).map_err(fail)?;
                self.stats.symlinks += 1;
                self.set_meta(dst, name, st, false).map_err(fail)
            }
            (libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO, _) => {
                inroot::mknod(dst, name, ftype, st.st_rdev).map_err(fail)?;
                self.stats.files += 1;
                self.set_meta(dst, name, st, true).map_err(fail)
            }
            _ => Ok(()), // sockets, and the impossible combinations
        }
    }

    fn set_meta(&self, dir: BorrowedFd, name: &[u8], st: &FileStat, chmod: bool) -> io::Result<()> {
        inroot::chown_at(dir, name, self.opts.uid, self.opts.gid)?;
        if chmod {
            let mode = self.opts.mode.unwrap_or_else(|| normalised_mode(st));
            inroot::chmod_at(dir, name, mode)?;
        }
        inroot::utime_at(dir, name, self.opts.mtime, 0)
    }
}
