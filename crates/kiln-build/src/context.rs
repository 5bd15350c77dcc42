//! The build context as the build cache sees it: what its ignore file (`.kilnignore`,
//! `.containerignore` or `.dockerignore`) excludes, and a content digest of exactly what a
//! `copy:` step would copy.
//!
//! Exists so a `copy:` step's cache key depends on what lands in the image and on nothing
//! else: file content, the execute bit (the only mode bit `layer::copy_in` takes from the
//! host), symlink targets and the set of paths, but never host mtimes, the umask, other
//! mode bits or the order in which a directory lists its entries. The walk is the one
//! `copy_in` makes (same resolution beneath the same [`ContextDir`] fd, same errors, same
//! exclusions, sockets skipped); the listing is sorted by path bytes and hashed canonically.
//!
//! Reading a large context on every build would make a cached build slow, so file hashes
//! are remembered in a [`HashMemo`] by inode and change times, and files that miss are
//! hashed in parallel (rayon). The listing itself ([`SourceEntry`]) is kept small and
//! serialisable so a build can store it and later say which paths made a step miss
//! ([`changed_paths`]).

mod dockerignore;
mod hash;
mod ignore;
mod memo;
mod walk;

#[cfg(test)]
mod copy_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use self::ignore::{Ignore, IgnoreSyntax, IGNORE_FILES};
pub use memo::{HashMemo, RACY_MARGIN};

use kiln_layer::inroot;
pub use kiln_layer::ContextDir;
use kiln_layer::LayerError;
use kiln_store::Digest;
use walk::{Found, FoundKind};

/// Everything that can go wrong while reading a build context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A copy source that copying refuses too (missing, outside the context, excluded by
    /// the ignore file), or a file that cannot be read; worded as `copy_in` words it.
    #[error(transparent)]
    Source(#[from] LayerError),

    /// An ignore file that cannot be used (`line` 0: the file as a whole).
    #[error("{}: {problem}", located(path, *line))]
    IgnoreFile {
        path: PathBuf,
        line: u64,
        problem: IgnoreProblem,
    },

    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },

    #[error("cannot save the build context's hash memo {path}: {source}")]
    SaveMemo { path: PathBuf, source: io::Error },
}

/// What is wrong with an ignore file, or with one of its patterns.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreProblem {
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    #[error("the pattern is not valid UTF-8")]
    NotUtf8,
    /// A gitignore pattern the `ignore` crate refuses.
    #[error("{0}")]
    Gitignore(#[source] ::ignore::Error),
    #[error("\"!\" needs a pattern after it")]
    BareNegation,
    #[error("a \\ at the end escapes nothing")]
    TrailingEscape,
    #[error("a character class \"[\" is not closed with \"]\"")]
    UnclosedClass,
    #[error("an empty character class \"[]\"")]
    EmptyClass,
    #[error("the range \"{0}-\" has no end")]
    OpenRange(char),
    #[error("the range \"{0}-{1}\" is backwards")]
    BackwardsRange(char, char),
}

impl ContextError {
    fn read(path: PathBuf, source: io::Error) -> ContextError {
        ContextError::Read { path, source }
    }

    fn save(path: &Path, source: io::Error) -> ContextError {
        ContextError::SaveMemo {
            path: path.to_owned(),
            source,
        }
    }
}

fn located(path: &Path, line: u64) -> String {
    match line {
        0 => path.display().to_string(),
        n => format!("{}:{n}", path.display()),
    }
}

/// Result alias of the context module.
pub type Result<T, E = ContextError> = std::result::Result<T, E>;

/// The content of a `copy:` step's sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesDigest {
    /// sha256 over the canonical listing: equal exactly when `files` is.
    pub digest: Digest,
    /// What would be copied, sorted by path bytes.
    pub files: Vec<SourceEntry>,
    /// Files whose content was read this time (not found in the memo).
    pub files_read: u64,
    /// Bytes read for them.
    pub bytes_read: u64,
}

/// One node a `copy:` step would write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEntry {
    /// The context path as the step names it: the source as written (`./` and `..`
    /// resolved lexically, no leading `/`), then the names below a directory source. A
    /// directory source itself is not listed, only its content. Bytes that are not UTF-8
    /// are shown as `\xNN`.
    pub path: String,
    #[serde(flatten)]
    pub kind: EntryKind,
}

/// What a listed node is, with what of it reaches the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryKind {
    File {
        /// Whether any execute bit is set (the file becomes 0755 rather than 0644).
        exec: bool,
        content: Digest,
    },
    Dir,
    Symlink {
        target: String,
    },
    Fifo,
    CharDevice {
        rdev: u64,
    },
    BlockDevice {
        rdev: u64,
    },
}

/// Lists and hashes what copying `sources` (relative to `context`) would copy, failing
/// where `layer::copy_in` would fail. File hashes come from `memo` when the file has not
/// changed; the rest are read in parallel and remembered in `memo`.
pub fn copy_sources_digest(
    context: &ContextDir,
    sources: &[String],
    ignore: &Ignore,
    memo: &mut HashMemo,
) -> Result<SourcesDigest> {
    let mut found = walk::walk_sources(context, sources, ignore)?;
    found.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    // Overlapping sources (`[., src]`) name the same node twice; it is copied the same.
    found.dedup_by(|a, b| a.path == b.path);
    let contents = hash::file_contents(context, &found, memo)?;
    let mut listing = Sha256::new();
    listing.update(b"kiln copy sources v1\0");
    let mut files = Vec::with_capacity(found.len());
    for (node, content) in found.iter().zip(&contents.sha256) {
        let kind = entry_kind(node, *content);
        write_canonical(&mut listing, &node.path, &kind, node);
        files.push(SourceEntry {
            path: display_bytes(&node.path),
            kind,
        });
    }
    Ok(SourcesDigest {
        digest: Digest::from_hasher(listing),
        files,
        files_read: contents.files_read,
        bytes_read: contents.bytes_read,
    })
}

fn entry_kind(node: &Found, content: Option<[u8; 32]>) -> EntryKind {
    let st = &node.st;
    match (&node.kind, inroot::file_type(st)) {
        (FoundKind::File, _) => EntryKind::File {
            exec: st.st_mode & 0o111 != 0,
            content: Digest::from_sha256(content.unwrap_or_default()),
        },
        (FoundKind::Dir, _) => EntryKind::Dir,
        (FoundKind::Symlink(target), _) => EntryKind::Symlink {
            target: display_bytes(target),
        },
        (FoundKind::Special, libc::S_IFCHR) => EntryKind::CharDevice { rdev: st.st_rdev },
        (FoundKind::Special, libc::S_IFBLK) => EntryKind::BlockDevice { rdev: st.st_rdev },
        (FoundKind::Special, _) => EntryKind::Fifo,
    }
}

/// Adds one node to the canonical listing: a type tag, length-prefixed raw bytes (never
/// the lossy display form), and what of the node reaches the image.
fn write_canonical(h: &mut Sha256, path: &[u8], kind: &EntryKind, node: &Found) {
    let bytes = |h: &mut Sha256, b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    let tag: &[u8] = match kind {
        EntryKind::File { exec: false, .. } => b"f",
        EntryKind::File { exec: true, .. } => b"x",
        EntryKind::Dir => b"d",
        EntryKind::Symlink { .. } => b"l",
        EntryKind::Fifo => b"p",
        EntryKind::CharDevice { .. } => b"c",
        EntryKind::BlockDevice { .. } => b"b",
    };
    h.update(tag);
    bytes(h, path);
    match (kind, &node.kind) {
        (EntryKind::File { content, .. }, _) => h.update(content.hex().as_bytes()),
        (_, FoundKind::Symlink(target)) => bytes(h, target),
        (EntryKind::CharDevice { rdev } | EntryKind::BlockDevice { rdev }, _) => {
            h.update(rdev.to_le_bytes())
        }
        _ => {}
    }
}

/// The paths added, removed or changed between two listings, sorted.
pub fn changed_paths(old: &[SourceEntry], new: &[SourceEntry]) -> Vec<String> {
    let index = |entries: &[SourceEntry]| -> BTreeMap<String, EntryKind> {
        entries
            .iter()
            .map(|e| (e.path.clone(), e.kind.clone()))
            .collect()
    };
    let (old, new) = (index(old), index(new));
    let mut changed: Vec<String> = old
        .iter()
        .filter(|(path, kind)| new.get(*path) != Some(kind))
        .map(|(path, _)| path.clone())
        .collect();
    changed.extend(new.keys().filter(|p| !old.contains_key(*p)).cloned());
    changed.sort();
    changed
}

/// A path or link target for people and JSON: UTF-8 as it is, other bytes as `\xNN`.
fn display_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}
