//! Image documents from a registry or an `oci:` layout: the input is a manifest or index,
//! optionally followed by a NUL byte and the image config (JSON holds no raw NUL). Each is
//! put through what kiln does with such bytes:
//! - the pull path (`kiln_registry::fuzzing::document`): the media-type checks against each
//!   Content-Type a registry may send, then the index's entry for this machine, or the
//!   manifest's layers paired with the config's diff_ids;
//! - the store path (`kiln_image::Image::from_documents`, the body of `Image::load`), then
//!   the image's layers and size;
//! - an `oci:` layout's `index.json`: the index, every descriptor's digest and the `run:`
//!   defaults kiln keeps in a descriptor's annotations;
//! - the config alone as kiln's `ImageConfig`.
#![no_main]

use kiln_image::{run_defaults, Image, ImageConfig};
use kiln_store::Digest;
use libfuzzer_sys::fuzz_target;
use oci_spec::image::ImageIndex;

const CONTENT_TYPES: [&str; 6] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8",
    "application/json",
    "",
];

fuzz_target!(|data: &[u8]| {
    let (document, config) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    for content_type in CONTENT_TYPES {
        let _ = kiln_registry::fuzzing::document(document, content_type, config);
    }

    let digest = Digest::of_bytes(document);
    if let Ok(image) = Image::from_documents(&digest, document, |_| Ok(config.to_vec())) {
        let _ = image.layers();
        let _ = image.size();
    }

    // Run settings from a tag's annotation, else from the image's config label.
    let parsed_config = serde_json::from_slice::<ImageConfig>(config).unwrap_or_default();
    if let Ok(index) = serde_json::from_slice::<ImageIndex>(document) {
        for desc in index.manifests() {
            let _ = Digest::try_from(desc);
            let _ = run_defaults(desc, &parsed_config);
        }
    }

    if let Ok(config) = serde_json::from_slice::<ImageConfig>(config) {
        // What kiln writes back must read back the same (unknown fields are kept).
        let again: ImageConfig =
            serde_json::from_slice(&kiln_store::canonical_json(&config)).expect("re-read");
        assert_eq!(again, config);
    }
});
