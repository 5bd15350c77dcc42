//! Paths of copy sources, shared by `copy:` steps (`copy_in`) and the build cache's view of
//! the same sources (`build::context`), which must name, resolve and refuse them exactly
//! alike.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::copy::{Exclusion, Exclusions};
use super::error::LayerError;

/// The error for a source that the exclusions name, worded like the missing-source error
/// Docker gives for a `.dockerignore`d path, but saying why.
pub fn excluded_source(source: &str, rule: &str) -> LayerError {
    LayerError::Io {
        what: "copy",
        path: source.to_owned(),
        source: io::Error::new(io::ErrorKind::NotFound, format!("it is excluded by {rule}")),
    }
}

/// The rule excluding the source `path` (relative to the context) or one of the directories
/// above it, checked from the top. A directory excluded with exceptions below it is not
/// excluded as a source: what the exceptions bring back is copied.
pub fn source_exclusion(excluded: &Exclusions, path: &[u8], is_dir: bool) -> Option<String> {
    if path.is_empty() {
        return None; // the context root itself is never excluded
    }
    let ancestors = path.iter().enumerate().filter(|(_, b)| **b == b'/');
    let verdicts = ancestors
        .map(|(end, _)| excluded(as_path(&path[..end]), true))
        .chain(std::iter::once_with(|| excluded(as_path(path), is_dir)));
    for verdict in verdicts {
        if let Exclusion::Excluded(rule) = verdict {
            return Some(rule);
        }
    }
    None
}

/// A source path as written, `.` and `..` resolved lexically, relative to the context.
pub fn clean_source(rel: &str) -> Vec<u8> {
    let mut comps: Vec<&str> = Vec::new();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                comps.pop();
            }
            c => comps.push(c),
        }
    }
    comps.join("/").into_bytes()
}

/// Where an open fd really is on the host (the kernel's `/proc/self/fd` link).
pub fn fd_path(fd: BorrowedFd) -> io::Result<Vec<u8>> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(std::fs::read_link(link)?
        .into_os_string()
        .into_encoded_bytes())
}

/// `real` relative to `base` (both absolute host paths); `None` when it is not below it.
pub(crate) fn relative_to(base: &[u8], real: &[u8]) -> Option<Vec<u8>> {
    if base == b"/" {
        return Some(real.strip_prefix(b"/").unwrap_or(real).to_vec());
    }
    match real.strip_prefix(base)? {
        [] => Some(Vec::new()),
        [b'/', rest @ ..] => Some(rest.to_vec()),
        _ => None,
    }
}

/// `parent/name`, or `name` at the top.
pub fn child_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

pub fn as_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}
