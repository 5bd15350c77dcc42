//! The checks every image from elsewhere passes, whichever way it comes in (`kiln pull`,
//! `from: oci:`), and the words its errors use.
//!
//! Exists so that the same bad image gets the same refusal, worded the same, through every
//! door: a digest or size mismatch names the blob (index, manifest, config, layer n of m)
//! and its descriptor, and a bound that is hit names its key in kiln's config file
//! ([`kiln_store::Bounds`]). Transport (HTTP, files) stays with the caller; what is checked
//! and what it is called lives here.

use std::fmt;

use oci_spec::image::{Descriptor, ImageManifest};

use kiln_store::{Bound, Bounds, Digest};

/// Which document or blob of an image something is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Index,
    Manifest,
    Config,
    /// Layer `n` (from 1, bottom first) of `of`.
    Layer {
        n: usize,
        of: usize,
    },
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Index => f.write_str("index"),
            Role::Manifest => f.write_str("manifest"),
            Role::Config => f.write_str("config"),
            Role::Layer { n, of } => write!(f, "layer {n} of {of}"),
        }
    }
}

/// A blob as its descriptor gives it, with its role: what an error about it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub role: Role,
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

impl Described {
    pub fn new(role: Role, digest: &Digest, desc: &Descriptor) -> Described {
        Described {
            role,
            digest: digest.clone(),
            size: desc.size(),
            media_type: desc.media_type().to_string(),
        }
    }
}

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({} bytes, {})",
            self.role, self.digest, self.size, self.media_type
        )
    }
}

/// How much of a blob there was, when it was not what its descriptor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Exactly this many bytes.
    Exactly(u64),
    /// More than the descriptor's size: at least this many (the rest was not read).
    AtLeast(u64),
    /// The source stopped after this many bytes.
    Only(u64),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Exactly(n) => write!(f, "{n}"),
            Found::AtLeast(n) => write!(f, "at least {n}"),
            Found::Only(n) => write!(f, "only {n}"),
        }
    }
}

/// Why an image from elsewhere is refused.
#[derive(Debug, thiserror::Error)]
pub enum IncomingError {
    #[error("{blob}: digest mismatch: its content has digest {actual}")]
    DigestMismatch { blob: Described, actual: Digest },
    #[error("{blob}: size mismatch: its descriptor says {} bytes, {source_name} has {found}", blob.size)]
    SizeMismatch {
        blob: Described,
        /// Where the bytes came from: "the registry", "the file".
        source_name: &'static str,
        found: Found,
    },
    #[error("{role} {what} is larger than kiln's limit of {limit} bytes (image_limits: document_size in kiln's config file)")]
    DocumentTooLarge {
        role: Role,
        /// Its digest or reference.
        what: String,
        limit: u64,
    },
    #[error("index {digest} is nested more than {limit} deep: kiln follows at most {limit} levels of indexes (image_limits: index_depth in kiln's config file)")]
    IndexTooDeep { digest: Digest, limit: u64 },
    #[error("the image has {count} layers, more than kiln's limit of {limit} (image_limits: layers in kiln's config file)")]
    TooManyLayers { count: usize, limit: u64 },
    #[error("the image's blobs add up to {total} bytes by their descriptors, more than kiln's limit of {limit} (image_limits: image_size in kiln's config file)")]
    ImageTooLarge { total: u128, limit: u64 },
    #[error("its manifest lists {layers} layers but its config lists {diff_ids} diff_ids")]
    DiffIdCount { layers: usize, diff_ids: usize },
    #[error(transparent)]
    BadDigest(#[from] kiln_store::digest::BadDigest),
}

impl IncomingError {
    /// What to do about it: raise the bound it hit, or know the image is damaged.
    pub fn hint(&self) -> String {
        match self.bound() {
            Some(bound) => bound.hint(),
            None => {
                "the image is damaged or was altered on its way; nothing of it was stored".into()
            }
        }
    }

    /// The bound of kiln's config file this error hit, if any.
    pub fn bound(&self) -> Option<Bound> {
        match self {
            IncomingError::DocumentTooLarge { .. } => Some(Bound::DocumentSize),
            IncomingError::IndexTooDeep { .. } => Some(Bound::IndexDepth),
            IncomingError::TooManyLayers { .. } => Some(Bound::Layers),
            IncomingError::ImageTooLarge { .. } => Some(Bound::ImageSize),
            _ => None,
        }
    }
}

pub type Result<T, E = IncomingError> = std::result::Result<T, E>;

/// Checks a manifest before any of its blobs is fetched: how many layers, how many bytes
/// all of it adds up to (`manifest_len` is the manifest's own size), and that every
/// descriptor's digest is well formed.
pub fn check_manifest(manifest: &ImageManifest, manifest_len: u64, bounds: &Bounds) -> Result<()> {
    let count = manifest.layers().len();
    if count as u64 > bounds.layers {
        return Err(IncomingError::TooManyLayers {
            count,
            limit: bounds.layers,
        });
    }
    let total: u128 = std::iter::once(manifest.config())
        .chain(manifest.layers())
        .map(|d| u128::from(d.size()))
        .sum::<u128>()
        + u128::from(manifest_len);
    if total > u128::from(bounds.image_size) {
        return Err(IncomingError::ImageTooLarge {
            total,
            limit: bounds.image_size,
        });
    }
    for desc in std::iter::once(manifest.config()).chain(manifest.layers()) {
        Digest::try_from(desc)?;
    }
    Ok(())
}

/// The descriptor of the config, for messages.
pub fn config_of(manifest: &ImageManifest) -> Result<Described> {
    let desc = manifest.config();
    Ok(Described::new(Role::Config, &Digest::try_from(desc)?, desc))
}

/// The layers of a manifest, bottom first, each described with its position.
pub fn layers_of(manifest: &ImageManifest) -> Result<Vec<Described>> {
    let of = manifest.layers().len();
    manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, desc)| {
            let role = Role::Layer { n: i + 1, of };
            Ok(Described::new(role, &Digest::try_from(desc)?, desc))
        })
        .collect()
}

/// The manifest and config must agree on the number of layers.
pub fn check_diff_ids(manifest: &ImageManifest, diff_ids: usize) -> Result<()> {
    let layers = manifest.layers().len();
    if layers != diff_ids {
        return Err(IncomingError::DiffIdCount { layers, diff_ids });
    }
    Ok(())
}

/// A document of `len` bytes read for `role`, against [`Bounds::document_size`].
pub fn check_document(role: Role, what: &str, len: u64, bounds: &Bounds) -> Result<()> {
    if len > bounds.document_size {
        return Err(IncomingError::DocumentTooLarge {
            role,
            what: what.to_owned(),
            limit: bounds.document_size,
        });
    }
    Ok(())
}

/// How many indexes were followed on the way from a reference to an image manifest: at
/// most [`Bounds::index_depth`]. (An index cannot list itself or an index it is nested in:
/// it would have to contain its own digest. Such a listing fails as a digest mismatch, and
/// the depth bound ends any chain.)
#[derive(Debug, Default)]
pub struct IndexPath {
    followed: u64,
}

impl IndexPath {
    /// Records that the index `digest` is to be read next.
    pub fn enter(&mut self, digest: &Digest, bounds: &Bounds) -> Result<()> {
        if self.followed >= bounds.index_depth {
            return Err(IncomingError::IndexTooDeep {
                digest: digest.clone(),
                limit: bounds.index_depth,
            });
        }
        self.followed += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_store::oci::{descriptor, MEDIA_TYPE_CONFIG, MEDIA_TYPE_TAR_GZIP};
    use oci_spec::image::{ImageManifestBuilder, MediaType};

    fn manifest(layer_sizes: &[u64]) -> ImageManifest {
        let d = |n: u64| Digest::of_bytes(&n.to_le_bytes());
        ImageManifestBuilder::default()
            .schema_version(2u32)
            .config(descriptor(MediaType::from(MEDIA_TYPE_CONFIG), &d(0), 100))
            .layers(
                layer_sizes
                    .iter()
                    .map(|s| descriptor(MediaType::from(MEDIA_TYPE_TAR_GZIP), &d(*s), *s))
                    .collect::<Vec<_>>(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn layers_at_the_bound_pass_and_one_more_fails() {
        let bounds = Bounds {
            layers: 3,
            ..Bounds::default()
        };
        check_manifest(&manifest(&[1, 2, 3]), 10, &bounds).unwrap();
        let err = check_manifest(&manifest(&[1, 2, 3, 4]), 10, &bounds).unwrap_err();
        assert!(
            err.to_string()
                .contains("4 layers, more than kiln's limit of 3"),
            "{err}"
        );
        assert_eq!(err.bound(), Some(Bound::Layers));
    }

    #[test]
    fn image_size_counts_manifest_config_and_layers() {
        let bounds = Bounds {
            image_size: 100 + 10 + 1000 + 2000,
            ..Bounds::default()
        };
        check_manifest(&manifest(&[1000, 2000]), 10, &bounds).unwrap();
        let err = check_manifest(&manifest(&[1000, 2000]), 11, &bounds).unwrap_err();
        assert!(err.to_string().contains("3111 bytes"), "{err}");
    }

    #[test]
    fn index_depth() {
        let bounds = Bounds {
            index_depth: 2,
            ..Bounds::default()
        };
        let (a, b, c) = (
            Digest::of_bytes(b"a"),
            Digest::of_bytes(b"b"),
            Digest::of_bytes(b"c"),
        );
        let mut path = IndexPath::default();
        path.enter(&a, &bounds).unwrap();
        path.enter(&b, &bounds).unwrap();
        let err = path.enter(&c, &bounds).unwrap_err();
        assert!(
            matches!(err, IncomingError::IndexTooDeep { limit: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_mismatch_names_the_blob_and_its_descriptor() {
        let m = manifest(&[5, 6]);
        let layer = layers_of(&m).unwrap().remove(1);
        let err = IncomingError::SizeMismatch {
            blob: layer,
            source_name: "the file",
            found: Found::Exactly(189),
        };
        let text = err.to_string();
        assert!(text.starts_with("layer 2 of 2 sha256:"), "{text}");
        assert!(
            text.contains("(6 bytes, application/vnd.oci.image.layer.v1.tar+gzip)"),
            "{text}"
        );
        assert!(
            text.ends_with("size mismatch: its descriptor says 6 bytes, the file has 189"),
            "{text}"
        );
    }
}
