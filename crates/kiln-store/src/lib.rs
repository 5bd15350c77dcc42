//! The local store: an OCI image layout plus unpacked layer dirs.
//!
//! Exists so that every other module can treat content as immutable and addressed by digest.
//! Layout (ARCHITECTURE.md, `store`): `oci-layout`, `index.json`, `blobs/sha256/<hex>`
//! form a valid OCI image layout that skopeo and umoci read; `layers/<diff_id hex>/` are
//! layer dirs in overlay format, used as lowerdirs as they are; `tmp/` holds staging
//! files. Everything becomes visible by `rename` only after it is complete and verified,
//! so a crash or a failed build leaves nothing half-written. Tags live in `index.json` as
//! `org.opencontainers.image.ref.name` annotations holding a normalised [`Reference`].

mod blob;
pub mod bounds;
pub mod budget;
pub mod cache;
pub mod containers;
pub mod digest;
pub mod fsck;
mod fsutil;
pub mod gc;
mod gc_lock;
mod index;
pub mod oci;
pub mod reference;

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use blob::BlobWriter;
pub use bounds::{Bound, Bounds};
pub use budget::{CacheBudget, CacheUsage};
pub use cache::{StepRecord, USER_LOOKUPS};
pub use containers::{ContainerDir, ContainerState};
pub use digest::Digest;
pub use fsck::{FsckReport, Problem, ProblemKind};
pub use fsutil::{canonical_json, read_document, remove_live_temp_dirs, TempDir};
pub use gc::{GcError, GcOptions, GcReport, ImageContent, ImageReadError, ImageReader, Removal};
pub use gc_lock::ContentGuard;
pub use index::Tagged;
pub use oci::REF_NAME;
pub use reference::Reference;

/// Largest JSON document (manifest, config, index) kiln reads at all (SECURITY.md rule 7):
/// the ceiling of [`Bounds::document_size`], which bounds documents from elsewhere (4 MiB
/// by default). Documents in the store passed that bound on their way in.
pub const MAX_DOCUMENT: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("blob {0} is not in the store")]
    MissingBlob(Digest),
    #[error("blob {0} is larger than {1} bytes")]
    TooLarge(Digest, u64),
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("{path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error(transparent)]
    Reference(#[from] reference::BadReference),
}

impl StoreError {
    pub fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_owned();
        move |source| StoreError::Io { what, path, source }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on a store directory. Cheap to clone; holds no open files.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An exclusive lock on the store's index, released on drop.
pub struct StoreLock {
    _lock: nix::fcntl::Flock<File>,
}

impl Store {
    /// Opens the store at `root`, creating an empty one (mode 0700) when missing.
    pub fn open(root: &Path) -> Result<Store> {
        let store = Store {
            root: root.to_owned(),
        };
        for dir in [
            root.to_owned(),
            store.blobs_dir(),
            store.layers_dir(),
            store.tmp_dir(),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(StoreError::io("create", &dir))?;
        }
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(StoreError::io("chmod", root))?;
        store.init_layout_files()?;
        fsutil::remove_stale_staging(&store.tmp_dir());
        tracing::debug!(root = %root.display(), "store opened");
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the store-wide lock that serialises index updates between kiln processes.
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io("open", &path))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map(|lock| StoreLock { _lock: lock })
            .map_err(|(_, e)| StoreError::Io {
                what: "lock",
                path,
                source: e.into(),
            })
    }

    /// A fresh private directory under `tmp/`, removed when dropped.
    pub fn temp_dir(&self, purpose: &str) -> Result<TempDir> {
        TempDir::new_in(&self.tmp_dir(), purpose)
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The size in bytes of a blob in the store.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::MissingBlob(digest.clone()))
            }
            Err(e) => Err(StoreError::io("stat", &path)(e)),
        }
    }

    /// The name of a layer's dir under [`Store::layers_dir`] (short names keep overlay's
    /// mount options short).
    pub fn layer_name(diff_id: &Digest) -> String {
        diff_id.hex().to_owned()
    }

    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layers_dir().join(Self::layer_name(diff_id))
    }

    /// The bytes a layer's files hold, as docker counts an image's SIZE: every regular
    /// file's length once (hard links once) and every symlink's target; dirs and special
    /// files count nothing. Walks the unpacked layer dir (no record of it is kept).
    pub fn layer_size(&self, diff_id: &Digest) -> Result<u64> {
        fsutil::apparent_size(&self.layer_dir(diff_id))
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_dir(diff_id).is_dir()
    }

    /// Makes a fully written layer dir visible under its diff_id. When another process
    /// committed the same layer first, the staged copy is dropped: both are identical.
    pub fn commit_layer(&self, staged: &Path, diff_id: &Digest) -> Result<()> {
        fsutil::sync_tree_root(staged)?;
        self.publish_layer(staged, diff_id)?;
        fsutil::sync_dir(&self.layers_dir())?;
        tracing::debug!(%diff_id, "layer dir committed");
        Ok(())
    }

    /// Starts writing a blob; see [`BlobWriter::commit`].
    pub fn new_blob(&self) -> Result<BlobWriter> {
        BlobWriter::create(self)
    }

    /// Stores a small in-memory blob (a manifest or config) and returns its digest.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let mut w = self.new_blob()?;
        io::Write::write_all(&mut w, bytes).map_err(StoreError::io("write", &self.tmp_dir()))?;
        Ok(w.commit(None)?.0)
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob(digest.clone()),
            _ => StoreError::Io {
                what: "open",
                path,
                source: e,
            },
        })
    }

    /// Reads a whole small blob, refusing more than `limit` bytes, and checks its digest.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let file = self.open_blob(digest)?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(file, limit + 1), &mut bytes)
            .map_err(StoreError::io("read", &self.blob_path(digest)))?;
        if bytes.len() as u64 > limit {
            return Err(StoreError::TooLarge(digest.clone(), limit));
        }
        let actual = Digest::of_bytes(&bytes);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    fn init_layout_files(&self) -> Result<()> {
        let layout = self.root.join("oci-layout");
        if !layout.exists() {
            fsutil::write_atomic(self, &layout, oci::OCI_LAYOUT)?;
        }
        if !self.index_path().exists() {
            let _lock = self.lock()?;
            if !self.index_path().exists() {
                self.write_index(&index::empty_index())?;
            }
        }
        Ok(())
    }
}
