//! Every injected fault, observed on the wire by a client that reads raw bytes.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::*;
use registry_mock::{AuthMode, Config, Listener, Server, User};

/// A registry holding `TestImage::new("faults")` as `app:v1`.
fn start_with_image(config: Config) -> (Server, TestImage) {
    let server = Server::start(config).expect("start registry");
    let image = TestImage::new("faults");
    image.push(server.addr(), "app", "v1", None);
    server.clear_log();
    (server, image)
}

fn start() -> (Server, TestImage) {
    start_with_image(Config::default())
}

fn layer_path(spec: &str, image: &TestImage) -> String {
    format!("/v2/fault/{spec}/app/blobs/{}", image.layer_digest())
}

#[test]
fn e503x2_fails_each_request_twice_then_succeeds() {
    let (server, image) = start();
    let addr = server.addr();
    let manifest = "/v2/fault/e503x2/app/manifests/v1";
    for _ in 0..2 {
        let reply = call(addr, req("GET", manifest));
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (503, "UNAVAILABLE")
        );
        assert!(reply.header("Retry-After").is_none());
    }
    let reply = call(addr, req("GET", manifest));
    assert_eq!((reply.status, reply.body), (200, image.manifest.clone()));
    // Another request has its own count.
    assert_eq!(
        call(addr, req("GET", &layer_path("e503x2", &image))).status,
        503
    );
    let faults: Vec<_> = server.log().into_iter().map(|e| e.fault).collect();
    let fired = Some("e503x2".to_string());
    assert_eq!(faults, [fired.clone(), fired.clone(), None, fired]);
}

#[test]
fn e429_sends_retry_after() {
    let (server, _) = start();
    let addr = server.addr();
    let throttled = call(addr, req("GET", "/v2/fault/e429x1/app/manifests/v1"));
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.error_code(), "TOOMANYREQUESTS");
    assert_eq!(throttled.header("Retry-After"), Some("1"));
    assert_eq!(
        call(addr, req("GET", "/v2/fault/e429x1/app/manifests/v1")).status,
        200
    );

    let now = call(addr, req("GET", "/v2/fault/e429x1.after0/app/manifests/v1"));
    assert_eq!(now.header("Retry-After"), Some("0"));
    let later = call(addr, req("GET", "/v2/fault/e500.after3/app/manifests/v1"));
    assert_eq!(
        (later.status, later.header("Retry-After")),
        (500, Some("3"))
    );
}

#[test]
fn registry_wide_faults_hit_repository_requests_only() {
    let config = Config {
        faults: "e500x1".parse().unwrap(),
        ..Config::default()
    };
    let server = Server::start(config).unwrap();
    let addr = server.addr();
    assert_eq!(call(addr, req("GET", "/v2/")).status, 200);
    let first = call(addr, req("POST", "/v2/app/blobs/uploads/"));
    assert_eq!(first.status, 500);
    assert_eq!(
        call(addr, req("POST", "/v2/app/blobs/uploads/")).status,
        202
    );
}

#[test]
fn faults_wait_until_the_client_is_authorized() {
    let config = Config {
        auth: AuthMode::Basic,
        anonymous_pull: false,
        users: vec![User::new("alice", "secret")],
        ..Config::default()
    };
    let (server, _) = {
        let server = Server::start(config).unwrap();
        let alice = basic("alice", "secret");
        TestImage::new("faults").push(server.addr(), "app", "v1", Some(&alice));
        (server, ())
    };
    let addr = server.addr();
    let manifest = req("GET", "/v2/fault/e503x1/app/manifests/v1");
    assert_eq!(call(addr, manifest.clone()).status, 401);
    let alice = basic("alice", "secret");
    assert_eq!(call(addr, manifest.clone().auth(Some(&alice))).status, 503);
    assert_eq!(call(addr, manifest.auth(Some(&alice))).status, 200);
}

#[test]
fn several_faults_fire_in_order() {
    let (server, image) = start();
    let path = layer_path("e503x1.reset5x1", &image);
    assert_eq!(call(server.addr(), req("GET", &path)).status, 503);
    let mut conn = Conn::open(server.addr());
    conn.send(&req("GET", &path));
    conn.head().unwrap();
    let (got, end) = conn.drain();
    assert_eq!(
        (got.len(), end.unwrap_err().kind()),
        (5, ErrorKind::ConnectionReset)
    );
    assert_eq!(call(server.addr(), req("GET", &path)).body, image.layer);
}

#[test]
fn stall_never_answers_and_shutdown_still_ends_it() {
    let (server, _) = start();
    let mut conn = Conn::open(server.addr());
    conn.set_read_timeout(Duration::from_millis(400));
    conn.send(&req("GET", "/v2/fault/stall/app/manifests/v1"));
    let err = conn.read_some(100).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err}"
    );
    let entry = server.log().pop().unwrap();
    assert_eq!((entry.status, entry.fault.as_deref()), (0, Some("stall")));

    let started = Instant::now();
    drop(server);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited for the stall"
    );
}

#[test]
fn reset_sends_k_bytes_then_a_tcp_reset() {
    let (server, image) = start();
    let mut conn = Conn::open(server.addr());
    conn.send(&req("GET", &layer_path("reset20", &image)));
    let (status, headers) = conn.head().unwrap();
    assert_eq!(status, 200);
    let declared = header_in(&headers, "Content-Length").unwrap();
    assert_eq!(
        declared,
        image.layer.len().to_string(),
        "the headers are honest"
    );
    let (got, end) = conn.drain();
    assert_eq!(got, image.layer[..20]);
    assert_eq!(end.unwrap_err().kind(), ErrorKind::ConnectionReset);
}

#[test]
fn a_ranged_get_resumes_after_a_reset() {
    let (server, image) = start();
    let path = layer_path("reset20x1", &image);
    let mut conn = Conn::open(server.addr());
    conn.send(&req("GET", &path));
    conn.head().unwrap();
    let (first, _) = conn.drain();
    let rest = call(
        server.addr(),
        req("GET", &path).header("Range", &format!("bytes={}-", first.len())),
    );
    assert_eq!(rest.status, 206);
    assert_eq!([first, rest.body].concat(), image.layer);
}

#[test]
fn hang_sends_k_bytes_then_nothing() {
    let (server, image) = start();
    let mut conn = Conn::open(server.addr());
    conn.send(&req("GET", &layer_path("hang10", &image)));
    conn.head().unwrap();
    conn.set_read_timeout(Duration::from_millis(400));
    let (got, end) = conn.drain();
    assert_eq!(got, image.layer[..10]);
    let kind = end.unwrap_err().kind();
    assert!(
        matches!(kind, ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{kind:?}"
    );
}

#[test]
fn trickle_sends_one_byte_at_a_time() {
    let (server, image) = start();
    let mut conn = Conn::open(server.addr());
    let started = Instant::now();
    conn.send(&req("GET", &layer_path("trickle5", &image)));
    let (status, headers) = conn.head().unwrap();
    assert_eq!(status, 200);
    let first = conn.read_some(1000).unwrap();
    assert_eq!(first.len(), 1, "a trickle delivers single bytes");
    let rest = conn.body(
        &[("Content-Length".into(), (image.layer.len() - 1).to_string())],
        false,
    );
    assert_eq!([first, rest.unwrap()].concat(), image.layer);
    let minimum = Duration::from_millis(5 * (image.layer.len() as u64 - 1));
    assert!(
        started.elapsed() >= minimum,
        "{:?} < {minimum:?}",
        started.elapsed()
    );
    assert!(header_in(&headers, "Connection").is_none());
    assert_eq!(
        conn.call(&req("GET", "/v2/")).status,
        200,
        "still keep-alive"
    );
}

#[test]
fn longlen_declares_more_than_it_sends() {
    let (server, image) = start();
    let mut conn = Conn::open(server.addr());
    conn.send(&req("GET", &layer_path("longlen", &image)));
    let (_, headers) = conn.head().unwrap();
    let declared: usize = header_in(&headers, "Content-Length")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(declared, image.layer.len() + 1);
    let (got, end) = conn.drain();
    assert_eq!(
        (got, end.is_ok()),
        (image.layer.clone(), true),
        "closed after the real body"
    );
}

#[test]
fn shortlen_declares_and_sends_one_byte_less() {
    let (server, image) = start();
    let mut conn = Conn::open(server.addr());
    let reply = conn.call(&req("GET", &layer_path("shortlen", &image)));
    assert_eq!(reply.body, image.layer[..image.layer.len() - 1]);
    assert_eq!(
        conn.call(&req("GET", "/v2/")).status,
        200,
        "framing stays intact"
    );
}

#[test]
fn corrupt_flips_a_byte_and_keeps_the_length() {
    let (server, image) = start();
    for path in [
        layer_path("corrupt", &image),
        "/v2/fault/corrupt/app/manifests/v1".into(),
    ] {
        let reply = call(server.addr(), req("GET", &path));
        let digest = reply.header("Docker-Content-Digest").unwrap().to_string();
        assert_ne!(
            sha256(&reply.body),
            digest,
            "{path}: digest check must fail"
        );
        let original = match path.contains("/blobs/") {
            true => &image.layer,
            false => &image.manifest,
        };
        assert_eq!(reply.body.len(), original.len());
        let differing = reply
            .body
            .iter()
            .zip(original)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differing, 1);
    }
}

#[test]
fn endless_bodies_never_end() {
    let (server, _) = start();
    let mut conn = Conn::open(server.addr());
    conn.send(&req("GET", "/v2/fault/endless/app/manifests/v1"));
    let (status, headers) = conn.head().unwrap();
    assert_eq!(status, 200);
    assert_eq!(header_in(&headers, "Transfer-Encoding"), Some("chunked"));
    assert!(header_in(&headers, "Content-Length").is_none());
    let mut received = 0;
    while received < 4 << 20 {
        received += conn.read_some(64 << 10).unwrap().len();
    }
    drop(conn);
    let started = Instant::now();
    drop(server);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn redirect_sends_blob_gets_to_a_second_listener_that_records_credentials() {
    let (server, image) = start();
    let path = layer_path("redirect", &image);
    let moved = call(
        server.addr(),
        req("GET", &path).header("Authorization", "Bearer secret"),
    );
    assert_eq!(moved.status, 307);
    let location = moved.header("Location").unwrap();
    let expected = format!(
        "http://localhost:{}/redirected/app/{}",
        server.redirect_addr().port(),
        image.layer_digest()
    );
    assert_eq!(location, expected);
    let target = location
        .split_once(&server.redirect_addr().port().to_string())
        .unwrap()
        .1;

    let careful = call(server.redirect_addr(), req("GET", target));
    assert_eq!(careful.body, image.layer);
    assert!(server.redirect_authorizations().is_empty());
    let leaky = call(
        server.redirect_addr(),
        req("GET", target).header("Authorization", "Bearer secret"),
    );
    assert_eq!(leaky.status, 200);
    assert_eq!(server.redirect_authorizations(), ["Bearer secret"]);
    let redirected: Vec<bool> = server
        .log()
        .iter()
        .filter(|e| e.listener == Listener::Redirect)
        .map(|e| e.authorization)
        .collect();
    assert_eq!(redirected, [false, true]);
    let escape = target.replace("/app/", "/../app/");
    assert_eq!(
        call(server.redirect_addr(), req("GET", &escape)).status,
        404
    );

    // Only blob GETs move: HEAD and manifests are served in place.
    assert_eq!(call(server.addr(), req("HEAD", &path)).status, 200);
    let manifest = call(
        server.addr(),
        req("GET", "/v2/fault/redirect/app/manifests/v1"),
    );
    assert_eq!(manifest.status, 200);
}

#[test]
fn nomount_declines_cross_repository_mounts() {
    let (server, image) = start();
    let digest = image.layer_digest();
    let declined = format!("/v2/fault/nomount/dest/blobs/uploads/?mount={digest}&from=app");
    let reply = call(server.addr(), req("POST", &declined));
    assert_eq!(reply.status, 202);
    assert!(reply
        .header("Location")
        .unwrap()
        .starts_with("/v2/fault/nomount/dest/blobs/uploads/"));
    assert!(!server.has_blob("dest", &digest));
    let mounted = format!("/v2/dest/blobs/uploads/?mount={digest}&from=app");
    assert_eq!(call(server.addr(), req("POST", &mounted)).status, 201);
}

#[test]
fn forget_loses_the_upload_offset() {
    let (server, _) = start();
    let addr = server.addr();
    let data = b"0123456789";
    let digest = sha256(data);
    let started = call(addr, req("POST", "/v2/fault/forgetx1/app/blobs/uploads/"));
    let location = started.header("Location").unwrap().to_string();
    assert!(
        location.starts_with("/v2/fault/forgetx1/app/"),
        "{location}"
    );

    let first = call(
        addr,
        req("PATCH", &location)
            .header("Content-Range", "0-4")
            .body(&data[..5]),
    );
    assert_eq!((first.status, first.header("Range")), (202, Some("0-4")));
    let next = call(
        addr,
        req("PATCH", &location)
            .header("Content-Range", "5-9")
            .body(&data[5..]),
    );
    assert_eq!((next.status, next.header("Range")), (416, Some("0-0")));
    let status = call(addr, req("GET", &location));
    assert_eq!(
        status.header("Range"),
        Some("0-0"),
        "the session starts over"
    );

    // The fault fired once for this PATCH; a client that restarts from 0 succeeds.
    let again = call(
        addr,
        req("PATCH", &location)
            .header("Content-Range", "0-9")
            .body(data),
    );
    assert_eq!(again.header("Range"), Some("0-9"));
    let done = call(addr, req("PUT", &format!("{location}?digest={digest}")));
    assert_eq!(done.status, 201);
    assert!(server.has_blob("app", &digest));
}

#[test]
fn a_forgetful_session_fails_the_digest_check() {
    let (server, _) = start();
    let addr = server.addr();
    let started = call(addr, req("POST", "/v2/fault/forget/app/blobs/uploads/"));
    let location = started.header("Location").unwrap().to_string();
    call(addr, req("PATCH", &location).body(b"all of it"));
    let done = call(
        addr,
        req(
            "PUT",
            &format!("{location}?digest={}", sha256(b"all of it")),
        ),
    );
    assert_eq!(
        (done.status, done.error_code().as_str()),
        (400, "DIGEST_INVALID")
    );
}

#[test]
fn an_endpoint_prefix_aims_a_fault_at_blobs_only() {
    let (server, image) = start();
    let blob = call(
        server.addr(),
        req("GET", &layer_path("blobcorrupt", &image)),
    );
    assert_eq!(blob.body.len(), image.layer.len());
    assert_ne!(blob.body, image.layer, "blobs are corrupted");
    let manifest = call(
        server.addr(),
        req("GET", "/v2/fault/blobcorrupt/app/manifests/v1"),
    );
    assert_eq!(
        (manifest.status, manifest.body),
        (200, image.manifest.clone()),
        "manifests are not"
    );
    // And the other way round.
    let manifest = call(
        server.addr(),
        req("GET", "/v2/fault/manifeste500/app/manifests/v1"),
    );
    assert_eq!(manifest.status, 500);
    let blob = call(
        server.addr(),
        req("GET", &layer_path("manifeste500", &image)),
    );
    assert_eq!((blob.status, blob.body), (200, image.layer.clone()));
    let faults: Vec<_> = server.log().into_iter().map(|e| e.fault).collect();
    assert_eq!(
        faults,
        [
            Some("blobcorrupt".to_string()),
            None,
            Some("manifeste500".to_string()),
            None
        ]
    );
}

/// Sends `request` and expects the connection to end without any answer.
fn expect_no_answer(addr: std::net::SocketAddr, request: &Req) {
    let mut conn = Conn::open(addr);
    conn.send(request);
    let (got, end) = conn.drain();
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert_eq!(end.unwrap_err().kind(), ErrorKind::ConnectionReset);
}

#[test]
fn uploadreset_keeps_k_bytes_of_a_patch_and_the_session_resumes() {
    let (server, _) = start();
    let addr = server.addr();
    let data: Vec<u8> = (0..100u8).collect();
    let digest = sha256(&data);
    let started = call(
        addr,
        req("POST", "/v2/fault/uploadreset40x1/app/blobs/uploads/"),
    );
    let location = started.header("Location").unwrap().to_string();
    expect_no_answer(
        addr,
        &req("PATCH", &location)
            .header("Content-Range", "0-99")
            .body(&data),
    );
    let status = call(addr, req("GET", &location));
    assert_eq!((status.status, status.header("Range")), (204, Some("0-39")));
    // The client sends the rest; the fault fired once for this PATCH.
    let rest = call(
        addr,
        req("PATCH", &location)
            .header("Content-Range", "40-99")
            .body(&data[40..]),
    );
    assert_eq!((rest.status, rest.header("Range")), (202, Some("0-99")));
    let done = call(addr, req("PUT", &format!("{location}?digest={digest}")));
    assert_eq!(done.status, 201);
    assert!(server.has_blob("app", &digest));
    let cut = &server.log()[1];
    assert_eq!(
        (cut.status, cut.request_bytes, cut.fault.as_deref()),
        (0, 100, Some("uploadreset40x1"))
    );
}

#[test]
fn uploadreset_cuts_a_closing_put_body_too() {
    let (server, _) = start();
    let addr = server.addr();
    let data = vec![7u8; 64];
    let digest = sha256(&data);
    let started = call(
        addr,
        req("POST", "/v2/fault/uploadreset10x1/app/blobs/uploads/"),
    );
    let location = started.header("Location").unwrap().to_string();
    let put = format!("{location}?digest={digest}");
    expect_no_answer(addr, &req("PUT", &put).body(&data));
    assert!(!server.has_blob("app", &digest));
    let status = call(addr, req("GET", &location));
    assert_eq!(status.header("Range"), Some("0-9"));
    // The PATCH with the rest is another request, and is cut once too.
    let rest = req("PATCH", &location)
        .header("Content-Range", "10-63")
        .body(&data[10..]);
    expect_no_answer(addr, &rest);
    let status = call(addr, req("GET", &location));
    assert_eq!(status.header("Range"), Some("0-19"));
    let rest = call(
        addr,
        req("PATCH", &location)
            .header("Content-Range", "20-63")
            .body(&data[20..]),
    );
    assert_eq!((rest.status, rest.header("Range")), (202, Some("0-63")));
    // The closing PUT carries no body now: nothing to cut.
    assert_eq!(call(addr, req("PUT", &put)).status, 201);
    assert!(server.has_blob("app", &digest));
}

#[test]
fn an_unaimed_reset_leaves_uploads_alone() {
    let (server, _) = start();
    let addr = server.addr();
    let data = vec![1u8; 64];
    let digest = sha256(&data);
    let started = call(addr, req("POST", "/v2/fault/reset10/app/blobs/uploads/"));
    let location = started.header("Location").unwrap().to_string();
    assert_eq!(call(addr, req("PATCH", &location).body(&data)).status, 202);
    let done = call(addr, req("PUT", &format!("{location}?digest={digest}")));
    assert_eq!(done.status, 201);
}

#[test]
fn a_bad_fault_spec_is_a_clear_error() {
    let (server, _) = start();
    let reply = call(server.addr(), req("GET", "/v2/fault/explode/app/tags/list"));
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (400, "NAME_INVALID")
    );
    let message = reply.json()["errors"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("unknown fault"), "{message}");
}
