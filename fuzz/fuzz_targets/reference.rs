//! Image references and digests: `Reference::parse` (local and Docker Hub defaults),
//! `Reference::candidates`, `Digest::parse`/`from_hex`, a digest read from JSON and through
//! oci-spec's type, and `--platform` parsing. What parses must print to a form that parses
//! back to the same value (store tags are printed references, read again later).
#![no_main]

use std::str::FromStr;

use kiln_registry::Platform;
use kiln_store::reference::{DOCKER_HUB, LOCAL_DOMAIN};
use kiln_store::{Digest, Reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    for domain in [LOCAL_DOMAIN, DOCKER_HUB] {
        if let Ok(reference) = Reference::parse(input, domain) {
            let printed = reference.to_string();
            if printed.len() <= 255 {
                let again = Reference::parse(&printed, domain)
                    .unwrap_or_else(|e| panic!("{input:?} printed as {printed:?}: {e}"));
                assert_eq!(again, reference, "{input:?} printed as {printed:?}");
            }
        }
    }
    if let Ok(all) = Reference::candidates(input) {
        assert!(!all.is_empty());
    }

    if let Ok(digest) = Digest::parse(input) {
        assert_eq!(digest.to_string(), input);
        assert_eq!(digest.short().len(), 12);
        assert_eq!(Digest::from_hex(digest.hex()).unwrap(), digest);
    }
    let _ = Digest::from_hex(input);
    let json = serde_json::to_string(input).unwrap();
    let from_json = serde_json::from_str::<Digest>(&json).ok();
    assert_eq!(from_json, Digest::parse(input).ok());
    if let Ok(oci) = oci_spec::image::Digest::from_str(input) {
        if let Ok(digest) = Digest::try_from(&oci) {
            assert_eq!(oci_spec::image::Digest::from(&digest), oci);
        }
    }

    if let Ok(platform) = Platform::parse(input) {
        assert_eq!(Platform::parse(&platform.to_string()).unwrap(), platform);
    }
});
