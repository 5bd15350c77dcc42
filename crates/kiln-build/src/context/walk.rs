//! What a `copy:` step's sources consist of: the same walk as `layer::copy_in` (same
//! resolution, same errors, same exclusions, sockets skipped), without copying anything.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::fcntl::OFlag;
use nix::sys::stat::FileStat;

use super::{ContextDir, ContextError, Ignore};
use kiln_layer::inroot::{self, file_type};
use kiln_layer::source_path::{
    as_path, child_path, clean_source, excluded_source, source_exclusion,
};
use kiln_layer::{Exclusion, LayerError};

/// One node a copy step would write.
pub(super) struct Found {
    /// The context path as the user names it: the source as written (`.`/`..` resolved
    /// lexically), then names below it. What the listing shows and is sorted by.
    pub path: Vec<u8>,
    /// Where it really is in the context (symlinks in the source resolved).
    pub real: Vec<u8>,
    pub st: FileStat,
    pub kind: FoundKind,
}

pub(super) enum FoundKind {
    File,
    Dir,
    Symlink(Vec<u8>),
    /// A fifo or device node: `st` has its type and device number.
    Special,
}

/// Every node that copying `sources` would write, in no particular order.
pub(super) fn walk_sources(
    dir: &ContextDir,
    sources: &[String],
    ignore: &Ignore,
) -> Result<Vec<Found>, ContextError> {
    let mut found = Vec::new();
    for source in sources {
        walk_source(dir, source, ignore, &mut found)?;
    }
    Ok(found)
}

fn walk_source(
    dir: &ContextDir,
    source: &str,
    ignore: &Ignore,
    out: &mut Vec<Found>,
) -> Result<(), ContextError> {
    let rel = source.trim_start_matches('/');
    let fd = dir.open_source(source, rel, OFlag::O_PATH)?;
    let st = inroot::fstat(fd.as_fd()).map_err(LayerError::io("stat", source.as_bytes()))?;
    let real = dir.context_path(fd.as_fd(), source)?;
    let lexical = clean_source(rel);
    let is_dir = file_type(&st) == libc::S_IFDIR;
    let excluded = ignore.as_exclusions();
    let rule = source_exclusion(&excluded, &lexical, is_dir)
        .or_else(|| source_exclusion(&excluded, &real, is_dir));
    if let Some(rule) = rule {
        return Err(excluded_source(source, &rule).into());
    }
    if is_dir {
        let fd = dir.open_source(source, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let at = Place {
            shown: source,
            path: &lexical,
            real: &real,
        };
        return walk_dir(fd.as_fd(), &at, ignore, out);
    }
    if let Some(kind) = kind_of(&st) {
        out.push(Found {
            path: lexical,
            real,
            st,
            kind,
        });
    }
    Ok(())
}

/// A directory being walked: shown in messages as `shown`, listed as `path`, really at `real`.
struct Place<'a> {
    shown: &'a str,
    path: &'a [u8],
    real: &'a [u8],
}

/// Adds the content of the directory `dir`, found at `at`, to `out`.
fn walk_dir(
    dir: BorrowedFd,
    at: &Place,
    ignore: &Ignore,
    out: &mut Vec<Found>,
) -> Result<(), ContextError> {
    let names = inroot::list_dir(dir).map_err(LayerError::io("list", at.shown.as_bytes()))?;
    for name in names {
        let shown = format!("{}/{}", at.shown, String::from_utf8_lossy(&name));
        let Some(st) =
            inroot::lstat(dir, &name).map_err(LayerError::io("stat", shown.as_bytes()))?
        else {
            continue;
        };
        let real = child_path(at.real, &name);
        let is_dir = file_type(&st) == libc::S_IFDIR;
        // A directory excluded with exceptions is listed only when something below it is.
        let only_as_parent = match ignore.exclusion(as_path(&real), is_dir) {
            Exclusion::Included => false,
            Exclusion::Excluded(_) => continue,
            Exclusion::ExcludedWithExceptions(_) => true,
        };
        let Some(kind) = kind_of(&st) else {
            continue; // sockets
        };
        let path = child_path(at.path, &name);
        let fail = |e: io::Error| LayerError::io("copy", shown.as_bytes())(e);
        let kind = match kind {
            FoundKind::Symlink(_) => {
                FoundKind::Symlink(inroot::readlink(dir, &name).map_err(fail)?)
            }
            kind => kind,
        };
        let sub = is_dir
            .then(|| inroot::open_dir_nofollow(dir, &name))
            .transpose()
            .map_err(fail)?;
        out.push(Found {
            path: path.clone(),
            real: real.clone(),
            st,
            kind,
        });
        let listed = out.len();
        if let Some(sub) = sub {
            let below = Place {
                shown: &shown,
                path: &path,
                real: &real,
            };
            walk_dir(sub.as_fd(), &below, ignore, out)?;
        }
        if only_as_parent && out.len() == listed {
            out.pop();
        }
    }
    Ok(())
}

/// What a node of this type becomes in the listing; `None` for what copying skips.
fn kind_of(st: &FileStat) -> Option<FoundKind> {
    match file_type(st) {
        libc::S_IFREG => Some(FoundKind::File),
        libc::S_IFDIR => Some(FoundKind::Dir),
        libc::S_IFLNK => Some(FoundKind::Symlink(Vec::new())),
        libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => Some(FoundKind::Special),
        _ => None,
    }
}
