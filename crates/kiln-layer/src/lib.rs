//! Layers: an overlay upper dir ⇄ a reproducible, compressed OCI layer blob.
//!
//! kiln keeps every layer twice: as a blob (a compressed OCI tar, what registries hold) and
//! as a *layer dir* in overlayfs's own on-disk format (whiteouts are 0/0 character devices,
//! opaque directories carry `trusted.overlay.opaque=y`), used directly as an overlay
//! lowerdir. This module converts between the two, and copies build-context files into a
//! root for `copy:` steps:
//!
//! - [`write_tar`] / [`write_layer`]: walk a layer dir (typically the upper dir of a build
//!   step) and stream a reproducible tar, optionally compressed, hashing the tar (diff_id)
//!   and the blob (digest) in the same pass. Memory does not grow with file or layer size.
//! - [`apply_layer`]: unpack an untrusted layer stream into an empty dir, turning OCI
//!   whiteouts back into overlay whiteouts. Every path is resolved by the kernel inside
//!   the destination (SECURITY.md §3 rules 1–7). After an error the destination is garbage
//!   and the caller deletes it.
//! - [`unpack_staged`]: [`apply_layer`] into a staging dir of the store with the diff_id
//!   checked: the one path from a layer blob to a layer dir, for pulls and stored images.
//! - [`copy_in`]: Docker `COPY` semantics from a build context, opened once as a
//!   [`ContextDir`], into a mounted root.

#[cfg(test)]
#[macro_use]
extern crate kiln_testing;

mod apply;
mod compress;
mod context_dir;
mod copy;
mod error;
pub mod inroot;
mod lowers;
mod read;
pub mod source_path;
mod stage;
mod write;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

pub use apply::{apply_layer, take_device_placeholders};
pub use compress::{copy_as_gzip, decompressed, detect_compression, write_layer};
pub use context_dir::ContextDir;
pub use copy::{copy_in, copy_in_filtered, CopyOptions, CopyStats, Exclusion, Exclusions};
pub use error::LayerError;
pub use read::{Entry as TarEntry, Kind as TarKind, TarReader};
pub use stage::{check_layer_blob, lower_dirs, publish_staged, unpack_staged, StagedLayer};
pub use write::write_tar;

use kiln_store::{Bounds, Digest};

// Layer media types are spelt once, in the store's OCI vocabulary; re-exported because
// callers of `apply_layer` and `unpack_staged` name them.
pub use kiln_store::oci::{MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_ZSTD};

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// zstd level 3, multi-threaded; kiln's default.
    #[default]
    Zstd,
    /// gzip level 6, for clients that predate zstd layers.
    Gzip,
}

impl Compression {
    /// The OCI media type of a layer blob compressed this way.
    pub fn media_type(&self) -> &'static str {
        match self {
            Compression::Zstd => MEDIA_TYPE_TAR_ZSTD,
            Compression::Gzip => MEDIA_TYPE_TAR_GZIP,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
        })
    }
}

/// The error of parsing a [`Compression`] name.
#[derive(Debug, thiserror::Error)]
#[error("unknown compression {0:?} (expected zstd or gzip)")]
pub struct UnknownCompression(pub String);

impl FromStr for Compression {
    type Err = UnknownCompression;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zstd" => Ok(Compression::Zstd),
            "gzip" => Ok(Compression::Gzip),
            other => Err(UnknownCompression(other.to_owned())),
        }
    }
}

/// How [`write_tar`] makes a tar reproducible.
///
/// `Default` is epoch 0: every mtime becomes 1970-01-01, so builds are reproducible unless
/// the caller passes `SOURCE_DATE_EPOCH` (ARCHITECTURE.md, `layer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TarOptions {
    /// Modification times later than this (seconds since 1970) are clamped to it.
    pub epoch: u64,
}

/// What [`write_layer`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerDigests {
    /// sha256 of the compressed blob (the descriptor digest).
    pub digest: Digest,
    /// sha256 of the uncompressed tar (the config's diff_id, and kiln's cache key).
    pub diff_id: Digest,
    /// Size in bytes of the compressed blob.
    pub size: u64,
    pub compression: Compression,
}

/// Resource bounds for [`apply_layer`] (SECURITY.md rule 7). Hitting one is an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyLimits {
    /// Tar entries (headers of files, dirs, links…) in one layer ([`Bounds::layer_entries`]).
    pub max_entries: u64,
    /// Bytes of the uncompressed tar stream ([`Bounds::layer_size`]).
    pub max_bytes: u64,
    /// Bytes of one entry's path or link target after normalisation ([`Bounds::path_length`]).
    pub max_path_len: usize,
    /// Bytes of one PAX or GNU long-name extension record block. Default 1 MiB.
    pub max_header_bytes: u64,
    /// Largest ratio of uncompressed to compressed bytes, checked once more than
    /// [`ApplyLimits::ratio_grace`] bytes were decompressed (stops decompression bombs
    /// early). 0 disables the check. [`Bounds::compression_ratio`].
    pub max_ratio: u64,
    /// Uncompressed bytes before `max_ratio` is enforced ([`Bounds::ratio_after`]).
    pub ratio_grace: u64,
}

impl Default for ApplyLimits {
    fn default() -> Self {
        ApplyLimits::from(&Bounds::default())
    }
}

impl From<&Bounds> for ApplyLimits {
    /// The layer's share of the bounds on images from elsewhere.
    fn from(bounds: &Bounds) -> Self {
        ApplyLimits {
            max_entries: bounds.layer_entries,
            max_bytes: bounds.layer_size,
            max_path_len: usize::try_from(bounds.path_length).unwrap_or(usize::MAX),
            max_header_bytes: 1 << 20,
            max_ratio: bounds.compression_ratio,
            ratio_grace: bounds.ratio_after,
        }
    }
}
