//! Small filesystem helpers for crash-safe commits: temp names, fsync, atomic replace.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::{Result, Store, StoreError};

/// A name no other kiln process or thread will pick: pid, a per-process counter and the
/// clock, so two builds can stage side by side under `tmp/`.
fn unique_name(purpose: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{purpose}-{}-{n}-{nanos:08x}", std::process::id())
}

/// A fresh path under `dir` with a staging name of this process (see [`unique_name`]), which
/// the next kiln command removes if this process is killed.
pub(super) fn staging_path(dir: &Path, purpose: &str) -> PathBuf {
    dir.join(unique_name(purpose))
}

pub(super) fn create_temp_file(dir: &Path, purpose: &str) -> Result<(File, PathBuf)> {
    let path = dir.join(unique_name(purpose));
    let file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(StoreError::io("create", &path))?;
    Ok((file, path))
}

pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("sync", dir))
}

/// Syncs a staged tree's top directory before it is renamed into place. File contents were
/// written through the page cache; syncfs of the store's filesystem covers them.
pub(super) fn sync_tree_root(dir: &Path) -> Result<()> {
    let d = File::open(dir).map_err(StoreError::io("open", dir))?;
    nix::unistd::syncfs(&d).map_err(|e| StoreError::Io {
        what: "sync",
        path: dir.into(),
        source: e.into(),
    })
}

pub(super) fn remove_tree(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io {
            what: "remove",
            path: dir.into(),
            source: e,
        }),
    }
}

/// The bytes the files below `dir` hold: regular files' lengths (a hard-linked file
/// once) and symlinks' target lengths. Never follows a symlink.
pub(super) fn apparent_size(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut linked = std::collections::HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).map_err(StoreError::io("read", &dir))? {
            let entry = entry.map_err(StoreError::io("read", &dir))?;
            let meta = entry
                .metadata()
                .map_err(StoreError::io("stat", &entry.path()))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_symlink()
                || (kind.is_file() && (meta.nlink() == 1 || linked.insert(meta.ino())))
            {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

/// Replaces `target` with `bytes` atomically: temp file, fsync, rename, fsync dir.
pub(super) fn write_atomic(store: &Store, target: &Path, bytes: &[u8]) -> Result<()> {
    replace_file(store, target, bytes, true)?;
    sync_dir(target.parent().unwrap_or(store.root()))
}

/// [`write_atomic`] without waiting for the disk: readers see the old or the new file,
/// never a torn one, but a crash of the machine may lose the change.
pub(super) fn write_atomic_unsynced(store: &Store, target: &Path, bytes: &[u8]) -> Result<()> {
    replace_file(store, target, bytes, false)
}

fn replace_file(store: &Store, target: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let (mut file, tmp) = create_temp_file(&store.tmp_dir(), "doc")?;
    let written = file
        .write_all(bytes)
        .and_then(|()| if sync { file.sync_all() } else { Ok(()) });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::Io {
            what: "write",
            path: tmp,
            source: e,
        });
    }
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(StoreError::io("chmod", &tmp))?;
    fs::rename(&tmp, target).map_err(StoreError::io("replace", target))
}

/// Reads a small JSON document from outside the blob store (an `index.json`, an
/// `oci-layout`), refusing more than [`MAX_DOCUMENT`](super::MAX_DOCUMENT) bytes (SECURITY.md rule 7).
pub fn read_document(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(super::MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > super::MAX_DOCUMENT {
        return Err(io::Error::other(format!(
            "larger than {} MiB",
            super::MAX_DOCUMENT >> 20
        )));
    }
    Ok(bytes)
}

/// JSON with object keys sorted and no whitespace, so the same document always has the
/// same digest (oci-spec keeps labels and annotations in hash maps).
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    let value = serde_json::to_value(value).expect("OCI documents serialise to JSON");
    serde_json::to_vec(&value).expect("a JSON value serialises")
}

/// The process id a staging name was made by (see [`unique_name`]).
fn owner_pid(name: &str) -> Option<i32> {
    name.split('-').nth(1)?.parse().ok()
}

/// Removes staging entries under `tmp/` whose kiln process is gone (killed, or crashed),
/// so an interrupted build never leaves its staging behind for long.
pub(super) fn remove_stale_staging(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner_pid(&name.to_string_lossy()) else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if gone {
            let path = entry.path();
            let _ = if path.is_dir() {
                remove_tree(&path)
            } else {
                fs::remove_file(&path).map_err(StoreError::io("remove", &path))
            };
        }
    }
}

/// Staging dirs of this process that are still alive, so a signal handler can remove them.
static LIVE_TEMP_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Removes every staging dir this process still holds. Called on SIGINT/SIGTERM before
/// exiting, when destructors will not run.
pub fn remove_live_temp_dirs() {
    let dirs = std::mem::take(&mut *LIVE_TEMP_DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    for d in dirs {
        let _ = remove_tree(&d);
    }
}

/// A private staging directory, removed with everything in it when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub(super) fn new_in(parent: &Path, purpose: &str) -> Result<Self> {
        let path = parent.join(unique_name(purpose));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(StoreError::io("create", &path))?;
        LIVE_TEMP_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.clone());
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
        LIVE_TEMP_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != &self.path);
    }
}
