//! Writing blobs: hash while streaming, verify, then commit by rename; or, for a pull,
//! stage verified blobs and publish them all after one sync.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{fsutil, Digest, Result, Store, StoreError};

/// A blob being written to a temp file under `tmp/`. Nothing is visible in `blobs/` until
/// [`BlobWriter::commit`]; dropping the writer without committing removes the temp file.
pub struct BlobWriter {
    store: Store,
    file: Option<File>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
    /// How far write-back to disk has been started, when it is started as the blob is
    /// written ([`BlobWriter::write_back_as_written`]).
    written_back: Option<u64>,
    /// Set by [`BlobWriter::verify`].
    verified: Option<Digest>,
}

/// Every this many bytes written, [`BlobWriter::write_back_as_written`] asks the kernel to
/// start writing them to disk.
const WRITEBACK_STEP: u64 = 8 << 20;

impl BlobWriter {
    pub(super) fn create(store: &Store) -> Result<Self> {
        let (file, path) = fsutil::create_temp_file(&store.tmp_dir(), "blob")?;
        Ok(BlobWriter {
            store: store.clone(),
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
            written_back: None,
            verified: None,
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Has the kernel start writing every [`WRITEBACK_STEP`] to disk as it is written, so
    /// that the final sync of a large blob made on this machine (a build step's layer, an
    /// imported root filesystem) finds little left to do instead of the whole burst: a 1 GB
    /// layer's fsync took 2.7 s when all of it was still dirty. A pull has its own flusher.
    pub fn write_back_as_written(mut self) -> Self {
        self.written_back = Some(self.size);
        self
    }

    /// Verifies the content against `expected` (when given), syncs it and renames it into
    /// `blobs/sha256/`. Returns the digest and the size.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let digest = match self.verified.take() {
            Some(verified) => verified,
            None => Digest::from_hasher(std::mem::take(&mut self.hasher)),
        };
        if let Some(expected) = expected {
            if expected != &digest {
                return Err(StoreError::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let file = self.file.take().expect("commit is called once");
        file.sync_all()
            .map_err(StoreError::io("sync", &self.path))?;
        drop(file);
        let target = self.store.blob_path(&digest);
        std::fs::rename(&self.path, &target).map_err(StoreError::io("commit blob", &target))?;
        fsutil::sync_dir(target.parent().unwrap_or(self.store.root()))?;
        tracing::debug!(%digest, size = self.size, "blob committed");
        Ok((digest, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.verified.is_some() {
            return Err(io::Error::other("blob already verified"));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        if let Some(done) = self
            .written_back
            .filter(|done| self.size - done >= WRITEBACK_STEP)
        {
            start_writeback(file, done, self.size - done);
            self.written_back = Some(self.size);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to disk, without
/// waiting for them. A failure only means the data is written later, by the final sync.
fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor is an open
    // file the caller owns.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Staging for a pull: a blob is verified when its last byte arrived but stays in `tmp/`,
/// so that one sync of the filesystem covers everything a pull wrote before any of it is
/// published (renamed into `blobs/`).
impl BlobWriter {
    /// The temp file the bytes go to, for a reader that follows the blob as it arrives.
    pub fn temp_path(&self) -> &Path {
        &self.path
    }

    /// Asks the kernel to start writing what has arrived so far to disk, without waiting
    /// for it, so that the one sync at the end of a pull finds little left to do.
    pub fn start_writeback(&self) {
        if let Some(file) = &self.file {
            // Offset 0 and length 0 mean "the whole file".
            start_writeback(file, 0, 0);
        }
    }

    /// Checks the content against `expected`; the blob stays staged (not synced, not
    /// visible) until [`BlobWriter::publish`]. Nothing more can be written to it.
    pub fn verify(&mut self, expected: &Digest) -> Result<()> {
        let digest = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if &digest != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        self.verified = Some(digest);
        Ok(())
    }

    /// Renames a verified blob into `blobs/sha256/`. The caller has made its bytes durable
    /// first ([`Store::sync_filesystem`]) and syncs the directory after
    /// ([`Store::sync_published`]).
    pub fn publish(mut self) -> Result<()> {
        let Some(digest) = self.verified.take() else {
            return Err(StoreError::Io {
                what: "publish",
                path: self.path.clone(),
                source: io::Error::other("the blob was not verified"),
            });
        };
        let target = self.store.blob_path(&digest);
        std::fs::rename(&self.path, &target).map_err(StoreError::io("commit blob", &target))?;
        // Published: the drop must not remove anything.
        self.file = None;
        Ok(())
    }
}

/// What a pull needs beyond the per-blob commit: one sync for everything it staged, and
/// publishing without a sync per blob or per layer.
impl Store {
    /// Writes every dirty page of the store's filesystem to disk (syncfs).
    pub fn sync_filesystem(&self) -> Result<()> {
        fsutil::sync_tree_root(&self.tmp_dir())
    }

    /// Makes a staged layer dir visible like [`Store::commit_layer`], without syncing: the
    /// caller ran [`Store::sync_filesystem`] after the dir was written.
    pub fn publish_layer(&self, staged: &Path, diff_id: &Digest) -> Result<()> {
        let target = self.layer_dir(diff_id);
        match std::fs::rename(staged, &target) {
            Ok(()) => Ok(()),
            Err(e)
                if target.is_dir()
                    && matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) =>
            {
                // Another kiln published the same layer first; both are identical.
                fsutil::remove_tree(staged)
            }
            Err(e) => Err(StoreError::Io {
                what: "commit layer",
                path: target,
                source: e,
            }),
        }
    }

    /// Makes the renames of [`StagedBlob::publish`] and [`Store::publish_layer`] durable.
    pub fn sync_published(&self) -> Result<()> {
        fsutil::sync_dir(&self.blobs_dir())?;
        fsutil::sync_dir(&self.layers_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn tmp_entries(store: &Store) -> usize {
        std::fs::read_dir(store.tmp_dir()).unwrap().count()
    }

    #[test]
    fn a_verified_blob_is_invisible_until_published() {
        let (_dir, store) = store();
        let digest = Digest::of_bytes(b"layer bytes");
        let mut blob = store.new_blob().unwrap();
        blob.write_all(b"layer bytes").unwrap();
        blob.start_writeback();
        blob.verify(&digest).unwrap();
        assert!(
            blob.write_all(b"more").is_err(),
            "a verified blob is closed"
        );
        assert!(!store.has_blob(&digest));
        assert!(blob.temp_path().starts_with(store.tmp_dir()));
        store.sync_filesystem().unwrap();
        blob.publish().unwrap();
        store.sync_published().unwrap();
        assert_eq!(
            std::fs::read(store.blob_path(&digest)).unwrap(),
            b"layer bytes"
        );
        assert_eq!(tmp_entries(&store), 0);
    }

    #[test]
    fn a_mismatch_or_an_unpublished_blob_leaves_nothing() {
        let (_dir, store) = store();
        let mut blob = store.new_blob().unwrap();
        blob.write_all(b"what arrived").unwrap();
        let err = blob.verify(&Digest::of_bytes(b"what was promised"));
        assert!(matches!(err, Err(StoreError::DigestMismatch { .. })));
        drop(blob);
        let mut blob = store.new_blob().unwrap();
        blob.write_all(b"fine").unwrap();
        blob.verify(&Digest::of_bytes(b"fine")).unwrap();
        drop(blob);
        assert_eq!(tmp_entries(&store), 0);
        assert!(!store.has_blob(&Digest::of_bytes(b"fine")));
        // Publishing what was never verified is refused.
        let blob = store.new_blob().unwrap();
        assert!(blob.publish().is_err());
    }

    #[test]
    fn publishing_a_layer_twice_keeps_the_first() {
        let (_dir, store) = store();
        let diff_id = Digest::of_bytes(b"a layer");
        let stage = |content: &str| {
            let dir = store.tmp_dir().join(content);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("file"), content).unwrap();
            dir
        };
        store.publish_layer(&stage("first"), &diff_id).unwrap();
        let second = stage("second");
        store.publish_layer(&second, &diff_id).unwrap();
        assert!(!second.exists());
        let kept = std::fs::read_to_string(store.layer_dir(&diff_id).join("file")).unwrap();
        assert_eq!(kept, "first");
    }
}
