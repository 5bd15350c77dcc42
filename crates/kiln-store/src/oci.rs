//! kiln's one OCI vocabulary: the media types and annotation keys kiln reads and writes,
//! descriptors for content kiln wrote, and the conversions between kiln's [`Digest`] and
//! oci-spec's.
//!
//! Exists so that a digest crosses between the two types without a trip through text
//! (`to_string()` then `parse()`), and so each media type and annotation key is spelt once.
//! It lives in the store, the bottom crate, because every other crate talks OCI: layers
//! (media types of blobs), images (descriptors), the registry (manifest kinds) and build.
//! oci-spec's digest grammar allows any algorithm; kiln's allows only sha256 (SECURITY.md
//! rule 6), so a descriptor's digest becomes kiln's only through a fallible conversion.

use oci_spec::image::{Descriptor, DescriptorBuilder, MediaType, Sha256Digest};

use crate::digest::{BadDigest, Digest};

/// An OCI image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// An OCI image index.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// An OCI image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// A Docker schema 2 manifest, which registries still serve and kiln reads like an OCI one.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// A Docker manifest list, read like an OCI index.
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// An uncompressed layer.
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// A gzip-compressed layer.
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// A zstd-compressed layer (kiln's default).
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Non-distributable layers: unpacked like the others, only their pushing differs.
pub const MEDIA_TYPE_TAR_NONDISTRIBUTABLE: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const MEDIA_TYPE_TAR_NONDISTRIBUTABLE_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const MEDIA_TYPE_TAR_NONDISTRIBUTABLE_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
/// Docker's gzip-compressed layer, in images pulled from Docker Hub and the like.
pub const MEDIA_TYPE_DOCKER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker's foreign (Windows base) layer.
pub const MEDIA_TYPE_DOCKER_FOREIGN_TAR_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// The `oci-layout` file of an OCI image layout (the store's own, and archives kiln writes).
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The annotation that names an image in an OCI layout.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The index annotation that keeps a spec's `run:` defaults with an image's tags. They live
/// in the store, not in the image: they may name host paths (bind mount sources), which
/// must not reach a registry or change the image's digest.
pub const RUN_DEFAULTS_ANNOTATION: &str = "dev.kiln.run-defaults";
/// The index annotation `kiln build` adds (value [`ORIGIN_BUILD`]) next to the run defaults
/// of an image it built from the user's spec. Run defaults without it came from elsewhere
/// and may not grant privileges (SECURITY.md rule 15).
pub const ORIGIN_ANNOTATION: &str = "dev.kiln.origin";
pub const ORIGIN_BUILD: &str = "build";

/// A descriptor for content kiln wrote (or checked) and knows the digest and size of.
pub fn descriptor(media_type: MediaType, digest: &Digest, size: u64) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(digest)
        .size(size)
        .build()
        .expect("all required descriptor fields are set")
}

/// Only sha256 digests are kiln's; any other algorithm is refused here, before the digest
/// can name a file.
impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = BadDigest;

    fn try_from(oci: &oci_spec::image::Digest) -> Result<Self, BadDigest> {
        if *oci.algorithm() != oci_spec::image::DigestAlgorithm::Sha256 {
            return Err(BadDigest(oci.to_string()));
        }
        Digest::from_hex(oci.digest()).map_err(|_| BadDigest(oci.to_string()))
    }
}

impl TryFrom<oci_spec::image::Digest> for Digest {
    type Error = BadDigest;

    fn try_from(oci: oci_spec::image::Digest) -> Result<Self, BadDigest> {
        Digest::try_from(&oci)
    }
}

/// The digest of the content a descriptor points at.
impl TryFrom<&Descriptor> for Digest {
    type Error = BadDigest;

    fn try_from(desc: &Descriptor) -> Result<Self, BadDigest> {
        Digest::try_from(desc.digest())
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(digest: &Digest) -> Self {
        digest
            .hex()
            .parse::<Sha256Digest>()
            .expect("a kiln digest is a valid OCI sha256 digest")
            .into()
    }
}

impl From<Digest> for oci_spec::image::Digest {
    fn from(digest: Digest) -> Self {
        Self::from(&digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oci(text: &str) -> oci_spec::image::Digest {
        text.parse().unwrap()
    }

    #[test]
    fn digests_round_trip_between_the_two_types() {
        let kiln = Digest::of_bytes(b"round trip");
        let theirs = oci_spec::image::Digest::from(&kiln);
        assert_eq!(theirs.to_string(), kiln.to_string());
        assert_eq!(Digest::try_from(&theirs).unwrap(), kiln);
        assert_eq!(Digest::try_from(theirs).unwrap(), kiln);
    }

    #[test]
    fn descriptors_carry_the_digest_and_give_it_back() {
        let digest = Digest::of_bytes(b"manifest");
        let desc = descriptor(MediaType::ImageManifest, &digest, 8);
        assert_eq!(desc.media_type().to_string(), MEDIA_TYPE_MANIFEST);
        assert_eq!(desc.size(), 8);
        assert_eq!(Digest::try_from(&desc).unwrap(), digest);
        let json = serde_json::to_value(&desc).unwrap();
        assert_eq!(json["digest"], digest.to_string());
    }

    #[test]
    fn a_descriptor_with_another_algorithm_is_refused_clearly() {
        let sha512 = format!("sha512:{}", "a".repeat(128));
        let mut desc = descriptor(MediaType::ImageManifest, &Digest::of_bytes(b""), 0);
        desc.set_digest(oci(&sha512));
        let err = Digest::try_from(&desc).unwrap_err();
        assert_eq!(err.0, sha512);
        let message = err.to_string();
        assert!(message.contains(&sha512), "{message}");
        assert!(message.contains("expected sha256:"), "{message}");
        let unknown = oci("md5+b64:abc");
        assert!(Digest::try_from(&unknown).is_err());
    }

    #[test]
    fn media_types_agree_with_oci_spec() {
        for (ours, theirs) in [
            (MEDIA_TYPE_MANIFEST, MediaType::ImageManifest),
            (MEDIA_TYPE_INDEX, MediaType::ImageIndex),
            (MEDIA_TYPE_CONFIG, MediaType::ImageConfig),
            (MEDIA_TYPE_TAR, MediaType::ImageLayer),
            (MEDIA_TYPE_TAR_GZIP, MediaType::ImageLayerGzip),
            (MEDIA_TYPE_TAR_ZSTD, MediaType::ImageLayerZstd),
        ] {
            assert_eq!(MediaType::from(ours), theirs);
            assert_eq!(theirs.to_string(), ours);
        }
    }
}
