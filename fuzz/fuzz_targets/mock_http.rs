//! registry-mock's hand-written HTTP/1.1 request reader: request line, headers,
//! `Content-Length` and chunked bodies, `Expect: 100-continue`, keep-alive (several requests
//! on one connection), and the query's percent-decoding.
#![no_main]

use std::io::BufReader;

use libfuzzer_sys::fuzz_target;
use registry_mock::http::{percent_decode, percent_encode, read_request};

fuzz_target!(|data: &[u8]| {
    // A small buffer, so lines and bodies straddle refills as on a socket.
    let mut reader = BufReader::with_capacity(64, data);
    let mut written = Vec::new();
    for _ in 0..16 {
        match read_request(&mut reader, &mut written) {
            Ok(Some(request)) => {
                let _ = request.header("content-type");
                let _ = request.query_all("n").count();
                if !request.keep_alive {
                    break;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let decoded = percent_decode(text);
        assert_eq!(percent_decode(&percent_encode(&decoded)), decoded);
    }
});
