//! How pulls and pushes report what they do, without printing anything themselves.

use crate::store::Digest;

/// What became of one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Already there (in the store for a pull, in the registry for a push).
    Exists,
    Pulled,
    Pushed,
    /// Linked by the registry from another of its repositories, without an upload.
    Mounted,
}

impl BlobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobOutcome::Exists => "exists",
            BlobOutcome::Pulled => "pulled",
            BlobOutcome::Pushed => "pushed",
            BlobOutcome::Mounted => "mounted",
        }
    }
}

/// Receives registry events. Calls may come from several blobs interleaved.
pub trait Progress: Send + Sync {
    /// A blob of `size` bytes starts moving.
    fn blob_started(&self, _digest: &Digest, _size: u64) {}
    /// `done` bytes of the blob have moved so far.
    fn blob_progress(&self, _digest: &Digest, _done: u64) {}
    fn blob_finished(&self, _digest: &Digest, _size: u64, _outcome: BlobOutcome) {}
}

/// A progress sink that ignores everything.
pub struct Silent;

impl Progress for Silent {}
