//! Writing blobs: hash while streaming, verify, then commit by rename.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

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
}

impl BlobWriter {
    pub(super) fn create(store: &Store) -> Result<Self> {
        let (file, path) = fsutil::create_temp_file(&store.tmp_dir(), "blob")?;
        Ok(BlobWriter {
            store: store.clone(),
            file: Some(file),
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Verifies the content against `expected` (when given), syncs it and renames it into
    /// `blobs/sha256/`. Returns the digest and the size.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let digest = Digest::from_hasher(std::mem::take(&mut self.hasher));
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
        Ok((digest, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
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
