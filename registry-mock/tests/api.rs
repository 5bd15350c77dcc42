//! Every endpoint of the distribution API, driven with a plain HTTP client against a
//! registry without authentication.

mod common;

use common::*;
use registry_mock::{Config, Listener, Server, Storage};
use serde_json::json;

fn start() -> Server {
    Server::start(Config::default()).expect("start registry")
}

#[test]
fn version_check_answers_with_the_api_version_header() {
    let server = start();
    let reply = call(server.addr(), req("GET", "/v2/"));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({}));
    assert_eq!(
        reply.header("Docker-Distribution-API-Version"),
        Some("registry/2.0")
    );
    assert!(server.addr().ip().is_loopback());
}

#[test]
fn monolithic_blob_upload_then_get_head_range_and_delete() {
    let server = start();
    let addr = server.addr();
    let data = b"0123456789";
    let digest = push_blob(addr, "team/app", data, None);
    let path = format!("/v2/team/app/blobs/{digest}");

    let head = call(addr, req("HEAD", &path));
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), Some("10"));
    assert_eq!(head.header("Docker-Content-Digest"), Some(digest.as_str()));
    assert!(head.body.is_empty());

    assert_eq!(call(addr, req("GET", &path)).body, data);
    let part = call(addr, req("GET", &path).header("Range", "bytes=2-5"));
    assert_eq!((part.status, part.body.as_slice()), (206, &b"2345"[..]));
    assert_eq!(part.header("Content-Range"), Some("bytes 2-5/10"));
    let beyond = call(addr, req("GET", &path).header("Range", "bytes=10-"));
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.header("Content-Range"), Some("bytes */10"));

    let other_repo = call(addr, req("GET", &format!("/v2/other/blobs/{digest}")));
    assert_eq!(
        (other_repo.status, other_repo.error_code().as_str()),
        (404, "BLOB_UNKNOWN")
    );

    assert_eq!(call(addr, req("DELETE", &path)).status, 202);
    assert_eq!(call(addr, req("GET", &path)).status, 404);
}

#[test]
fn a_wrong_digest_is_rejected_and_nothing_is_stored() {
    let server = start();
    let claimed = sha256(b"what the client meant");
    let target = format!("/v2/app/blobs/uploads/?digest={claimed}");
    let reply = call(server.addr(), req("POST", &target).body(b"what it sent"));
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (400, "DIGEST_INVALID")
    );
    assert!(!server.has_blob("app", &claimed));
    let malformed = call(
        server.addr(),
        req("POST", "/v2/app/blobs/uploads/?digest=sha256:xyz"),
    );
    assert_eq!(malformed.error_code(), "DIGEST_INVALID");
}

#[test]
fn chunked_upload_with_status_resume_and_offset_checks() {
    let server = start();
    let addr = server.addr();
    let started = call(addr, req("POST", "/v2/app/blobs/uploads/"));
    assert_eq!(started.status, 202);
    assert_eq!(started.header("Range"), Some("0-0"));
    let location = started.header("Location").unwrap().to_string();
    assert!(location.starts_with("/v2/app/blobs/uploads/"), "{location}");

    let first = call(
        addr,
        req("PATCH", &location)
            .header("Content-Range", "0-4")
            .body(b"hello"),
    );
    assert_eq!((first.status, first.header("Range")), (202, Some("0-4")));

    let status = call(addr, req("GET", &location));
    assert_eq!((status.status, status.header("Range")), (204, Some("0-4")));

    let out_of_order = call(
        addr,
        req("PATCH", &location)
            .header("Content-Range", "7-9")
            .body(b"abc"),
    );
    assert_eq!(
        (out_of_order.status, out_of_order.header("Range")),
        (416, Some("0-4"))
    );

    // A chunk without Content-Range, sent with chunked transfer encoding as Go clients do.
    let second = call(
        addr,
        req("PATCH", &location)
            .header("Transfer-Encoding", "chunked")
            .body(b", world"),
    );
    assert_eq!((second.status, second.header("Range")), (202, Some("0-11")));

    let digest = sha256(b"hello, world!");
    let done = call(
        addr,
        req("PUT", &format!("{location}?digest={digest}")).body(b"!"),
    );
    assert_eq!(done.status, 201);
    assert_eq!(
        done.header("Location"),
        Some(format!("/v2/app/blobs/{digest}").as_str())
    );
    assert_eq!(done.header("Docker-Content-Digest"), Some(digest.as_str()));
    assert!(server.has_blob("app", &digest));
    assert_eq!(
        call(addr, req("GET", &location)).error_code(),
        "BLOB_UPLOAD_UNKNOWN"
    );
}

#[test]
fn upload_sessions_can_be_cancelled_and_belong_to_their_repository() {
    let server = start();
    let addr = server.addr();
    let location = call(addr, req("POST", "/v2/app/blobs/uploads/"))
        .header("Location")
        .unwrap()
        .to_string();
    let foreign = location.replace("/v2/app/", "/v2/other/");
    assert_eq!(call(addr, req("GET", &foreign)).status, 404);
    assert_eq!(call(addr, req("DELETE", &location)).status, 204);
    assert_eq!(call(addr, req("PATCH", &location).body(b"x")).status, 404);
}

#[test]
fn cross_repository_mount_links_without_uploading() {
    let server = start();
    let addr = server.addr();
    let digest = push_blob(addr, "source/app", b"shared layer", None);
    let mount = format!("/v2/dest/app/blobs/uploads/?mount={digest}&from=source%2Fapp");
    let reply = call(addr, req("POST", &mount));
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("Docker-Content-Digest"), Some(digest.as_str()));
    assert!(server.has_blob("dest/app", &digest));

    let missing = sha256(b"not anywhere");
    let fallback = call(
        addr,
        req(
            "POST",
            &format!("/v2/dest/app/blobs/uploads/?mount={missing}&from=source/app"),
        ),
    );
    assert_eq!(
        fallback.status, 202,
        "an unknown blob opens a session instead"
    );
    assert!(fallback
        .header("Location")
        .unwrap()
        .contains("/blobs/uploads/"));
}

#[test]
fn declined_mounts_open_a_session() {
    let server = Server::start(Config {
        decline_mounts: true,
        ..Config::default()
    })
    .unwrap();
    let digest = push_blob(server.addr(), "a", b"layer", None);
    let reply = call(
        server.addr(),
        req(
            "POST",
            &format!("/v2/b/blobs/uploads/?mount={digest}&from=a"),
        ),
    );
    assert_eq!(reply.status, 202);
    assert!(!server.has_blob("b", &digest));
}

#[test]
fn manifests_by_tag_and_digest_keep_their_bytes_and_media_type() {
    let server = start();
    let addr = server.addr();
    let image = TestImage::new("manifests");
    image.push(addr, "team/app", "v1", None);
    let digest = image.digest();
    assert_eq!(server.tag_digest("team/app", "v1"), Some(digest.clone()));

    for reference in ["v1", digest.as_str()] {
        let path = format!("/v2/team/app/manifests/{reference}");
        let got = call(addr, req("GET", &path));
        assert_eq!(got.status, 200);
        assert_eq!(got.body, image.manifest);
        assert_eq!(got.header("Content-Type"), Some(IMAGE_MANIFEST));
        assert_eq!(got.header("Docker-Content-Digest"), Some(digest.as_str()));
        let head = call(addr, req("HEAD", &path));
        assert_eq!(
            head.header("Content-Length"),
            Some(image.manifest.len().to_string().as_str())
        );
    }
    let by_digest = put_manifest(
        addr,
        "team/app",
        &digest,
        &image.manifest,
        IMAGE_MANIFEST,
        None,
    );
    assert_eq!(by_digest.status, 201);
    assert_eq!(
        by_digest.header("Location"),
        Some(format!("/v2/team/app/manifests/{digest}").as_str())
    );

    let unknown = call(addr, req("GET", "/v2/team/app/manifests/nope"));
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
}

#[test]
fn manifest_pushes_are_verified() {
    let server = start();
    let addr = server.addr();
    let image = TestImage::new("verified");
    let no_blobs = put_manifest(addr, "app", "v1", &image.manifest, IMAGE_MANIFEST, None);
    assert_eq!(
        (no_blobs.status, no_blobs.error_code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );

    image.push(addr, "app", "v1", None);
    let wrong_digest = sha256(b"something else");
    let reply = put_manifest(
        addr,
        "app",
        &wrong_digest,
        &image.manifest,
        IMAGE_MANIFEST,
        None,
    );
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (400, "DIGEST_INVALID")
    );
    let not_json = put_manifest(addr, "app", "v2", b"{not json", IMAGE_MANIFEST, None);
    assert_eq!(not_json.error_code(), "MANIFEST_INVALID");
    let bad_tag = put_manifest(addr, "app", "-bad", &image.manifest, IMAGE_MANIFEST, None);
    assert_eq!(bad_tag.error_code(), "MANIFEST_INVALID");
}

#[test]
fn an_index_needs_its_manifests_first() {
    let server = start();
    let addr = server.addr();
    let image = TestImage::new("child");
    let index_type = "application/vnd.oci.image.index.v1+json";
    let index = json!({
        "schemaVersion": 2,
        "mediaType": index_type,
        "manifests": [{"mediaType": IMAGE_MANIFEST, "digest": image.digest(), "size": image.manifest.len()}],
    })
    .to_string();
    let early = put_manifest(addr, "app", "multi", index.as_bytes(), index_type, None);
    assert_eq!(early.error_code(), "MANIFEST_BLOB_UNKNOWN");
    image.push(addr, "app", "child", None);
    let reply = put_manifest(addr, "app", "multi", index.as_bytes(), index_type, None);
    assert_eq!(reply.status, 201);
    let got = call(addr, req("GET", "/v2/app/manifests/multi"));
    assert_eq!(got.header("Content-Type"), Some(index_type));
}

#[test]
fn deleting_a_tag_keeps_the_manifest_deleting_a_digest_removes_it() {
    let server = start();
    let addr = server.addr();
    let image = TestImage::new("delete");
    image.push(addr, "app", "v1", None);
    image.push(addr, "app", "v2", None);
    let by_digest = format!("/v2/app/manifests/{}", image.digest());

    assert_eq!(
        call(addr, req("DELETE", "/v2/app/manifests/v1")).status,
        202
    );
    assert_eq!(call(addr, req("GET", "/v2/app/manifests/v1")).status, 404);
    assert_eq!(call(addr, req("GET", &by_digest)).status, 200);

    assert_eq!(call(addr, req("DELETE", &by_digest)).status, 202);
    assert_eq!(
        call(addr, req("GET", "/v2/app/manifests/v2")).status,
        404,
        "tags go too"
    );
    assert_eq!(call(addr, req("DELETE", &by_digest)).status, 404);
}

#[test]
fn tags_list_paginates_with_link_headers() {
    let server = start();
    let addr = server.addr();
    let image = TestImage::new("tags");
    for tag in ["t5", "t1", "t3", "t2", "t4"] {
        image.push(addr, "app", tag, None);
    }
    let all = call(addr, req("GET", "/v2/app/tags/list"));
    assert_eq!(
        all.json(),
        json!({"name": "app", "tags": ["t1", "t2", "t3", "t4", "t5"]})
    );
    assert!(all.header("Link").is_none());

    let mut pages = Vec::new();
    let mut next = Some("/v2/app/tags/list?n=2".to_string());
    while let Some(target) = next {
        let page = call(addr, req("GET", &target));
        pages.push(page.json()["tags"].clone());
        next = page.header("Link").map(|link| {
            let (url, rel) = link.split_once(';').unwrap();
            assert_eq!(rel.trim(), "rel=\"next\"");
            url.trim_matches(['<', '>']).to_string()
        });
    }
    assert_eq!(
        pages,
        [json!(["t1", "t2"]), json!(["t3", "t4"]), json!(["t5"])]
    );

    let unknown = call(addr, req("GET", "/v2/nothing/tags/list"));
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (404, "NAME_UNKNOWN")
    );
}

#[test]
fn referrers_lists_manifests_whose_subject_is_the_digest() {
    let server = start();
    let addr = server.addr();
    let image = TestImage::new("subject");
    image.push(addr, "app", "v1", None);
    let empty_config = push_blob(addr, "app", b"{}", None);
    let signature = json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_config, "size": 2},
        "layers": [],
        "subject": {"mediaType": IMAGE_MANIFEST, "digest": image.digest(), "size": image.manifest.len()},
        "annotations": {"made.by": "test"},
    })
    .to_string();
    let signature_digest = sha256(signature.as_bytes());
    let pushed = put_manifest(
        addr,
        "app",
        &signature_digest,
        signature.as_bytes(),
        IMAGE_MANIFEST,
        None,
    );
    assert_eq!(pushed.header("OCI-Subject"), Some(image.digest().as_str()));

    let path = format!("/v2/app/referrers/{}", image.digest());
    let listed = call(addr, req("GET", &path));
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.header("Content-Type"),
        Some("application/vnd.oci.image.index.v1+json")
    );
    let manifests = listed.json()["manifests"].clone();
    assert_eq!(
        manifests,
        json!([{
            "mediaType": IMAGE_MANIFEST,
            "digest": signature_digest,
            "size": signature.len(),
            "artifactType": "application/vnd.example.signature",
            "annotations": {"made.by": "test"},
        }])
    );
    let filtered = call(
        addr,
        req("GET", &format!("{path}?artifactType=application/other")),
    );
    assert_eq!(filtered.header("OCI-Filters-Applied"), Some("artifactType"));
    assert_eq!(filtered.json()["manifests"], json!([]));
}

#[test]
fn bad_names_methods_and_non_http_are_refused() {
    let server = start();
    let addr = server.addr();
    let bad_name = call(addr, req("GET", "/v2/Upper/tags/list"));
    assert_eq!(
        (bad_name.status, bad_name.error_code().as_str()),
        (400, "NAME_INVALID")
    );
    assert_eq!(call(addr, req("POST", "/v2/app/tags/list")).status, 405);
    assert_eq!(call(addr, req("GET", "/elsewhere")).status, 404);

    // A TLS ClientHello gets a plain-HTTP 400 at once, which makes clients retry in HTTP.
    let mut conn = Conn::open(addr);
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(&mut raw, &[0x16, 0x03, 0x01, 0x00, 0x05]).unwrap();
    raw.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut raw, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    // The registry still serves others.
    assert_eq!(conn.call(&req("GET", "/v2/")).status, 200);
}

#[test]
fn keep_alive_connections_carry_many_requests() {
    let server = start();
    let mut conn = Conn::open(server.addr());
    for _ in 0..3 {
        assert_eq!(conn.call(&req("GET", "/v2/")).status, 200);
    }
}

#[test]
fn the_request_log_records_what_happened() {
    let server = start();
    let addr = server.addr();
    let digest = push_blob(addr, "app", b"twelve bytes", Some("Bearer not-checked"));
    call(addr, req("GET", &format!("/v2/app/blobs/{digest}")));
    let log = server.log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].method, "POST");
    assert_eq!((log[0].status, log[0].request_bytes), (201, 12));
    assert!(log[0].authorization && log[0].uploaded_blob_data());
    assert_eq!(log[0].listener, Listener::Registry);
    assert_eq!(log[1].target, format!("/v2/app/blobs/{digest}"));
    assert_eq!((log[1].response_bytes, log[1].authorization), (12, false));
    assert!(log.iter().all(|e| e.fault.is_none()));
    server.clear_log();
    assert!(server.log().is_empty());
}

#[test]
fn directory_storage_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        storage: Storage::Directory(dir.path().join("store")),
        ..Config::default()
    };
    let image = TestImage::new("persisted");
    {
        let server = Server::start(config.clone()).unwrap();
        image.push(server.addr(), "team/app", "v1", None);
    }
    let server = Server::start(config).unwrap();
    let got = call(server.addr(), req("GET", "/v2/team/app/manifests/v1"));
    assert_eq!(got.body, image.manifest);
    let layer = call(
        server.addr(),
        req(
            "GET",
            &format!("/v2/team/app/blobs/{}", image.layer_digest()),
        ),
    );
    assert_eq!(layer.body, image.layer);
    assert!(dir
        .path()
        .join("store/repositories/team/app/_tags/v1")
        .is_file());
}

#[test]
fn shutdown_closes_idle_connections_and_frees_the_port() {
    let server = start();
    let addr = server.addr();
    let mut idle = Conn::open(addr);
    assert_eq!(idle.call(&req("GET", "/v2/")).status, 200);
    let started = std::time::Instant::now();
    server.shutdown();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let (rest, _) = idle.drain();
    assert!(rest.is_empty(), "the idle connection was closed");
    assert!(std::net::TcpStream::connect_timeout(&addr, TIMEOUT).is_err());
}
