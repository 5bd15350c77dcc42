//! `copy:` build steps: build-context files → the step's root, with Docker `COPY` semantics.
//!
//! Both ends are hostile in their own way: a context may hold symlinks pointing anywhere on
//! the host, and the root is an image whose symlinks (`/bin -> usr/bin`, or `/etc ->
//! /host/etc`) must only ever be followed inside it. So sources are resolved with
//! `openat2(RESOLVE_BENEATH)` under the context (leaving it by `..` or a symlink is an
//! error), destinations with `RESOLVE_IN_ROOT` under the root, and every file is created
//! by name relative to a resolved parent fd, never through a symlink.
//!
//! Semantics: a file source goes *into* the destination when it ends with `/` or is an
//! existing directory, else it *becomes* the destination; a directory source has its
//! content copied into the destination (created like `mkdir -p`; new parents are 0755
//! root:root). Several sources need a destination ending with `/`. Everything copied gets
//! `uid`/`gid`, and `mode` when given (files and directories alike), else the source's
//! permission bits; modification times are kept (the layer writer clamps them). Symlinks
//! inside a copied directory stay symlinks; hard links become separate files; sockets are
//! skipped; extended attributes of the host are not copied.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::FileStat;

use super::error::{LayerError, Result};
use super::inroot::{self, Resolve, Root};

/// Ownership and mode given to everything a `copy:` step writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyOptions {
    /// Permission bits for every copied file and directory; `None` keeps the source's.
    pub mode: Option<u32>,
    pub uid: u32,
    pub gid: u32,
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

/// Copies `sources` (paths relative to `context`) to `dest` (absolute, or relative to
/// `workdir`) inside `root`, a step's mounted root filesystem.
pub fn copy_in(
    context: &Path,
    sources: &[String],
    root: &Path,
    dest: &str,
    workdir: &str,
    opts: &CopyOptions,
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
    let open =
        |p: &Path| Root::open(p).map_err(LayerError::io("open", p.as_os_str().as_encoded_bytes()));
    let mut copier = Copier {
        context: open(context)?,
        root: open(root)?,
        opts: *opts,
        stats: CopyStats::default(),
    };
    let dest_comps = clean_dest(dest, workdir);
    for source in sources {
        copier.copy_source(source, &dest_comps, into_dir)?;
    }
    Ok(copier.stats)
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

struct Copier {
    context: Root,
    root: Root,
    opts: CopyOptions,
    stats: CopyStats,
}

impl Copier {
    fn copy_source(&mut self, source: &str, dest: &[String], into_dir: bool) -> Result<()> {
        let rel = source.trim_start_matches('/');
        let src = self.open_source(source, rel, OFlag::O_PATH)?;
        let st = inroot::fstat(src.as_fd()).map_err(LayerError::io("stat", source.as_bytes()))?;
        if inroot::is_dir(&st) {
            let target = self.make_dirs(dest)?;
            let src = self.open_source(source, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
            return self.copy_dir_content(src.as_fd(), target.as_fd(), source);
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
        let src = if inroot::file_type(&st) == libc::S_IFREG {
            Some(self.open_source(source, rel, flags)?)
        } else {
            None
        };
        self.copy_node(
            src.as_ref().map(|f| f.as_fd()),
            None,
            &st,
            dir.as_fd(),
            &name,
            source,
        )
    }

    /// Opens a source under the context; leaving the context in any way is an error.
    fn open_source(&self, source: &str, rel: &str, flags: OFlag) -> Result<OwnedFd> {
        self.context
            .open_at(rel.as_bytes(), flags, Resolve::Beneath)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EXDEV) => LayerError::CopyOutsideContext(source.to_owned()),
                Some(libc::ENOENT) => LayerError::CopySourceMissing(source.to_owned()),
                _ => LayerError::io("open the copy source", source.as_bytes())(e),
            })
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

    fn copy_dir_content(&mut self, src: BorrowedFd, dst: BorrowedFd, src_path: &str) -> Result<()> {
        let names = inroot::list_dir(src).map_err(LayerError::io("list", src_path.as_bytes()))?;
        for name in names {
            let path = format!("{src_path}/{}", String::from_utf8_lossy(&name));
            let Some(st) =
                inroot::lstat(src, &name).map_err(LayerError::io("stat", path.as_bytes()))?
            else {
                continue;
            };
            self.copy_node(None, Some(src), &st, dst, &name, &path)?;
        }
        Ok(())
    }

    /// Copies one node of type `st` to `name` in `dst`. Its source is the open regular
    /// file `file`, or the entry of the same name in `src_dir`.
    fn copy_node(
        &mut self,
        file: Option<BorrowedFd>,
        src_dir: Option<BorrowedFd>,
        st: &FileStat,
        dst: BorrowedFd,
        name: &[u8],
        src_path: &str,
    ) -> Result<()> {
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
        match (ftype, src_dir) {
            (libc::S_IFDIR, Some(src_dir)) => {
                if existing.is_none() {
                    inroot::mkdir(dst, name).map_err(fail)?;
                }
                self.stats.dirs += 1;
                let sub_dst = inroot::open_dir_nofollow(dst, name).map_err(fail)?;
                self.set_meta(dst, name, st, true).map_err(fail)?;
                let sub_src = inroot::open_dir_nofollow(src_dir, name).map_err(fail)?;
                self.copy_dir_content(sub_src.as_fd(), sub_dst.as_fd(), src_path)?;
                // Copying the content changed the directory's mtime: set it last.
                inroot::utime_at(dst, name, st.st_mtime, st.st_mtime_nsec).map_err(fail)
            }
            (libc::S_IFREG, _) => {
                let mut from = match (file, src_dir) {
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
            inroot::chmod_at(dir, name, self.opts.mode.unwrap_or(st.st_mode))?;
        }
        inroot::utime_at(dir, name, st.st_mtime, st.st_mtime_nsec)
    }
}
