//! The one error type of the layer module, worded for someone who knows `docker build`.

use std::io;

use kiln_store::{Bound, Digest, StoreError};

/// Everything that can go wrong while writing, applying or copying layer content.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A filesystem call failed; `what` says what kiln was doing, `path` where.
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: io::Error,
    },

    /// A filesystem call on a layer entry failed (a name or link target the filesystem
    /// refuses, a full disk…); `path` is the entry's, `what` the call's.
    #[error("layer entry {path:?} ({what}): {source}")]
    EntryIo {
        what: &'static str,
        path: String,
        source: io::Error,
    },

    /// The layer stream could not be read or decompressed.
    #[error("cannot read the layer stream: {0}")]
    Stream(#[source] io::Error),

    /// A media type kiln does not unpack.
    #[error("unsupported layer media type {0:?} (expected an OCI or Docker tar layer, plain, gzip or zstd)")]
    MediaType(String),

    /// The stream is not a well-formed tar archive.
    #[error("the layer is not a valid tar archive: {0}")]
    BadArchive(String),

    /// One entry of the layer is refused (unsafe, ambiguous or malformed).
    #[error("layer entry {path:?} refused: {why}")]
    BadEntry { path: String, why: String },

    /// A resource bound of [`crate::ApplyLimits`] that the config file sets was hit.
    #[error("the layer exceeds kiln's limit of {limit} {} (image_limits: {} in kiln's config file)", bound_unit(*bound), bound.key())]
    Limit { bound: Bound, limit: u64 },

    /// A PAX or GNU long-name extension larger than kiln reads.
    #[error("the layer has an extension header of more than {limit} bytes")]
    ExtensionTooLarge { limit: u64 },

    /// The uncompressed layer's digest is not the diff_id the image config gives it.
    #[error(
        "its uncompressed content is {actual}, but the image config says its diff_id is {expected}"
    )]
    DiffId { expected: Digest, actual: Digest },

    /// The store's staging for an unpacked layer failed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A file in a directory being captured cannot be represented in an OCI layer.
    #[error("cannot put {path:?} into a layer: {why}")]
    Unrepresentable { path: String, why: String },

    /// A `copy:` source leaves the build context (by `..` or a symlink).
    #[error("copy source {0} is outside the build context")]
    CopyOutsideContext(String),

    /// A `copy:` source does not exist in the build context.
    #[error("copy source {0} does not exist in the build context")]
    CopySourceMissing(String),

    /// A `copy:` step that cannot be carried out as written.
    #[error("copy to {dest}: {why}")]
    CopyDest { dest: String, why: String },
}

impl LayerError {
    /// What to do about it, when something can be done: a bound of kiln's config file that
    /// a trusted layer may raise.
    pub fn hint(&self) -> Option<String> {
        match self {
            LayerError::Limit { bound, .. } => Some(bound.hint()),
            _ => None,
        }
    }

    /// Adapter for `map_err`: an I/O failure while doing `what` on `path`.
    pub fn io(what: &'static str, path: &[u8]) -> impl FnOnce(io::Error) -> LayerError {
        let path = String::from_utf8_lossy(path).into_owned();
        move |source| LayerError::Io { what, path, source }
    }

    /// A refused layer entry.
    pub(crate) fn entry(path: &[u8], why: impl Into<String>) -> LayerError {
        LayerError::BadEntry {
            path: String::from_utf8_lossy(path).into_owned(),
            why: why.into(),
        }
    }
}

/// What a layer bound counts, after its number in a message.
fn bound_unit(bound: Bound) -> &'static str {
    match bound {
        Bound::LayerEntries => "entries",
        Bound::LayerSize => "uncompressed bytes",
        Bound::CompressionRatio => "as ratio of uncompressed to compressed size",
        Bound::PathLength => "bytes in a path",
        _ => bound.key(),
    }
}

/// Result alias of the layer module.
pub type Result<T, E = LayerError> = std::result::Result<T, E>;
