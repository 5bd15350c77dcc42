//! The `WWW-Authenticate` challenge a registry answers a 401 with (`Basic …` or
//! `Bearer realm=…,service=…,scope=…`), as kiln's transport parses it.
//! kiln has no `Link` header parser (it pages no tag or catalog lists), so there is no
//! target for one.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Header values reach the parser as text (`to_str`), so only UTF-8 is fed.
    if let Ok(header) = std::str::from_utf8(data) {
        let _ = kiln_registry::fuzzing::challenge(header);
    }
});
