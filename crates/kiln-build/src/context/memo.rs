//! The hash memo: a file's sha256 remembered by its identity and change times, so hashing
//! an unchanged context reads no file content at all.
//!
//! The key is (device, inode, size, mtime, ctime), all as the kernel reports them, to the
//! nanosecond. ctime cannot be set from user space and moves on every content or metadata
//! change, so a changed file always misses. The one trap is a file changed twice within
//! one timestamp tick (git's "racily clean" entries): a hash is only remembered when the
//! file's ctime was at least [`RACY_MARGIN`] old when kiln started reading it, far above
//! the coarsest timestamp granularity of the filesystems kiln runs on.
//!
//! On disk (`$ROOT/cache/context/<sha256 of the canonical context path>`), one compact
//! binary file: a magic line, the entry count, fixed-size entries, and a sha256 of all that
//! so a torn or corrupt file is detected and ignored. It is replaced by rename (last writer
//! wins between concurrent builds) and not fsynced: losing it only costs a re-read.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::stat::FileStat;
use sha2::{Digest as _, Sha256};

use super::{ContextDir, ContextError};
use kiln_store::{Digest, Store};

/// How old a file's last change must be before its hash is remembered.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);

const MAGIC: &[u8] = b"kiln hash memo v1\n";
const ENTRY_SIZE: usize = 7 * 8 + 32;
/// A memo larger than this is ignored (about 3 million files).
const MAX_MEMO: u64 = 256 << 20;

/// What identifies one version of a file's content without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    pub fn of(st: &FileStat) -> FileKey {
        FileKey {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }

    /// Whether the file last changed at least `margin` before `reading_started`.
    pub fn settled(&self, reading_started: SystemTime, margin: Duration) -> bool {
        let (secs, nanos) = self.ctime;
        let Ok(secs) = u64::try_from(secs) else {
            return true; // before 1970: certainly not being written right now
        };
        let changed = UNIX_EPOCH + Duration::new(secs, nanos.clamp(0, 999_999_999) as u32);
        changed + margin <= reading_started
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.dev, self.ino, self.size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn decode(b: &[u8]) -> FileKey {
        let u = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let i = |i: usize| u(i) as i64;
        FileKey {
            dev: u(0),
            ino: u(1),
            size: u(2),
            mtime: (i(3), i(4)),
            ctime: (i(5), i(6)),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Remembered {
    sha256: [u8; 32],
    /// Looked up or added since the memo was loaded; only these are saved.
    seen: bool,
}

/// Content hashes of one build context's files, remembered between builds.
#[derive(Debug)]
pub struct HashMemo {
    entries: HashMap<FileKey, Remembered>,
    /// The memo's file name under `cache/context/`; `None` for a memo that is never saved.
    name: Option<String>,
    /// Whether saving would write something different from what was loaded.
    dirty: bool,
    /// [`RACY_MARGIN`], shortened by tests.
    pub(super) racy_margin: Duration,
}

impl HashMemo {
    /// An empty memo, kept in memory only (`save` does nothing).
    pub fn in_memory() -> HashMemo {
        HashMemo {
            entries: HashMap::new(),
            name: None,
            dirty: false,
            racy_margin: RACY_MARGIN,
        }
    }

    /// The memo saved for `context` in `store`; empty when there is none or it is
    /// unreadable. Memos are named by the context's canonical path, so every spelling of a
    /// directory finds the same one.
    pub fn load(store: &Store, context: &ContextDir) -> HashMemo {
        let name = Digest::of_bytes(context.real_path()).hex().to_owned();
        let entries = read_memo(&memo_dir(store).join(&name)).unwrap_or_default();
        HashMemo {
            entries,
            name: Some(name),
            dirty: false,
            racy_margin: RACY_MARGIN,
        }
    }

    /// How many file hashes the memo holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The remembered hash of this version of a file, marking it as still in use.
    pub(super) fn lookup(&mut self, key: &FileKey) -> Option<[u8; 32]> {
        let entry = self.entries.get_mut(key)?;
        entry.seen = true;
        Some(entry.sha256)
    }

    pub(super) fn remember(&mut self, key: FileKey, sha256: [u8; 32]) {
        self.entries.insert(key, Remembered { sha256, seen: true });
        self.dirty = true;
    }

    /// Writes the memo back, keeping only the hashes used since it was loaded. Does
    /// nothing when that would not change the file, or for an in-memory memo.
    pub fn save(&self, store: &Store) -> Result<(), ContextError> {
        let Some(name) = &self.name else {
            return Ok(());
        };
        let unused = self.entries.values().any(|e| !e.seen);
        if !self.dirty && !unused {
            return Ok(());
        }
        let dir = memo_dir(store);
        fs::create_dir_all(&dir).map_err(|e| ContextError::save(&dir, e))?;
        let bytes = self.encode();
        let tmp = store.tmp_dir().join(temp_name());
        let target = dir.join(name);
        let written = fs::File::create_new(&tmp)
            .and_then(|mut f| f.write_all(&bytes))
            .and_then(|()| fs::rename(&tmp, &target));
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            ContextError::save(&target, e)
        })
    }

    fn encode(&self) -> Vec<u8> {
        let kept: Vec<_> = self.entries.iter().filter(|(_, e)| e.seen).collect();
        let mut out = Vec::with_capacity(MAGIC.len() + 8 + kept.len() * ENTRY_SIZE + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(kept.len() as u64).to_le_bytes());
        for (key, entry) in kept {
            key.encode(&mut out);
            out.extend_from_slice(&entry.sha256);
        }
        let check = Sha256::digest(&out);
        out.extend_from_slice(&check);
        out
    }
}

impl Default for HashMemo {
    fn default() -> Self {
        HashMemo::in_memory()
    }
}

fn memo_dir(store: &Store) -> PathBuf {
    store.cache_dir().join("context")
}

/// A temp file name no other thread or process uses at the same time, in the store's
/// staging convention `PURPOSE-PID-N` (one word before the PID): a kiln killed while
/// saving leaves it to the next kiln, which removes it once the PID is gone. (It was
/// `context-memo-PID-N`, whose PID the store did not find: left forever.)
fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("contextmemo-{}-{n}", std::process::id())
}

/// The entries of a memo file; `None` when it is missing, torn or corrupt.
fn read_memo(path: &Path) -> Option<HashMap<FileKey, Remembered>> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(MAX_MEMO + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    let (body, check) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if Sha256::digest(body).as_slice() != check {
        return None;
    }
    let rest = body.strip_prefix(MAGIC)?;
    let (count, rest) = rest.split_at_checked(8)?;
    let count = u64::from_le_bytes(count.try_into().ok()?);
    if rest.len() as u64 != count.checked_mul(ENTRY_SIZE as u64)? {
        return None;
    }
    let entries = rest.chunks_exact(ENTRY_SIZE).map(|e| {
        let (key, sha) = e.split_at(ENTRY_SIZE - 32);
        let mut sha256 = [0; 32];
        sha256.copy_from_slice(sha);
        let entry = Remembered {
            sha256,
            seen: false,
        };
        (FileKey::decode(key), entry)
    });
    Some(entries.collect())
}
