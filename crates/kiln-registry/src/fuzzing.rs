//! Entry points for the fuzz targets in `fuzz/` (SECURITY.md G4). Not an API: each runs the
//! same private parsers a pull runs on what a registry sends, without the network.

use oci_spec::image::{ImageIndex, ImageManifest};

use super::auth;
use super::manifest::{self, Kind, Platform};
use kiln_image::ImageConfig;
use kiln_store::Digest;

/// A `WWW-Authenticate` header, as the transport parses it after a 401.
pub fn challenge(header: &str) -> bool {
    auth::parse_challenge(header).is_ok()
}

/// A manifest or index as fetched with `content_type`, then what a pull does with it:
/// the index's entry for this machine, or the manifest's layers paired with the diff_ids
/// of `config` (the config blob's bytes). Returns whether the document was accepted.
pub fn document(bytes: &[u8], content_type: &str, config: &[u8]) -> bool {
    let Ok((_, kind)) = manifest::classify("fuzz", bytes, content_type) else {
        return false;
    };
    match kind {
        Kind::Index => {
            let Ok(index) = serde_json::from_slice::<ImageIndex>(bytes) else {
                return false;
            };
            manifest::pick_platform("fuzz", &index, &Platform::host())
                .is_ok_and(|desc| Digest::try_from(&desc).is_ok())
        }
        Kind::Manifest => {
            let Ok(manifest) = serde_json::from_slice::<ImageManifest>(bytes) else {
                return false;
            };
            let _ = Digest::try_from(manifest.config());
            serde_json::from_slice::<ImageConfig>(config)
                .is_ok_and(|config| super::pull::layer_jobs(&manifest, &config).is_ok())
        }
    }
}
