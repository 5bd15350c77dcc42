//! `kiln push`, `pull` and `login` against real registries: Debian's `docker-registry`
//! (CNCF distribution) for the ordinary cases, skopeo as a second client, and
//! registry-mock for authentication and faults.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::registry::Registry;
use common::{require, run, text, Env};
use registry_mock::{AuthMode, Config, Listener, Server, User};

fn busybox_rootfs(env: &Env) -> PathBuf {
    common::busybox_rootfs(env, "base")
}

/// A two-layer busybox image named `bb` in `env`'s store; returns its digest.
fn build_busybox(env: &Env) -> String {
    busybox_rootfs(env);
    env.write(
        "kiln.yaml",
        "image: bb:latest\nfrom: rootfs:./base\nsteps:\n  - run: echo pushed-and-pulled > /hello\n",
    );
    env.kiln_ok(&["build", env.dir.path().to_str().unwrap(), "-q"])
}

fn kiln_with_stdin(
    env: &Env,
    args: &[&str],
    stdin: &str,
    docker_config: &Path,
) -> std::process::Output {
    kiln_with(env, args, stdin, &[("DOCKER_CONFIG", docker_config)])
}

/// kiln with `vars` set, stdin fed, and no auth file but the ones `vars` name.
fn kiln_with(
    env: &Env,
    args: &[&str],
    stdin: &str,
    vars: &[(&str, &Path)],
) -> std::process::Output {
    let mut command = env.command();
    command
        .args(args)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::piped());
    for (name, value) in vars {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `kiln login` to the mock as its user alice, the password on stdin.
fn login_alice(env: &Env, server: &Server, password: &str, config: &Path) -> std::process::Output {
    kiln_with_stdin(
        env,
        &["login", &server.host(), "-u", "alice", "--password-stdin"],
        password,
        config,
    )
}

fn digest_line(out: &str) -> String {
    out.lines().last().unwrap_or_default().trim().to_owned()
}

#[test]
fn push_pull_run_and_repush_against_docker_registry() {
    common::require_root!("namespaces, overlayfs");
    require("skopeo", "skopeo");
    let env = Env::new();
    let registry = Registry::start(env.dir.path());
    let built = build_busybox(&env);
    let target = format!("{}/kiln/bb:1", registry.host());

    let pushed = digest_line(&env.kiln_ok(&["push", "bb", &target]));
    assert_eq!(pushed, built);
    let uploads = registry.blob_uploads();
    assert!(
        uploads >= 3,
        "expected config and two layers uploaded, saw {uploads}"
    );

    // A fresh store pulls it back, with the same manifest digest, and runs it. Off a
    // terminal, each blob gets one plain line.
    let other = Env::new();
    let pull = other.kiln(&["pull", &target]);
    assert!(pull.status.success(), "{}", text(&pull));
    let lines = String::from_utf8_lossy(&pull.stderr);
    assert_eq!(lines.matches(": pulled ").count(), 3, "{lines}");
    assert!(!lines.contains('\r') && !lines.contains('\x1b'), "{lines}");
    assert_eq!(digest_line(&String::from_utf8_lossy(&pull.stdout)), built);
    let out = other.kiln_ok(&["run", "--rm", &target, "cat", "/hello"]);
    assert_eq!(out, "pushed-and-pulled");
    // Pulling again fetches nothing.
    let again = other.kiln(&["pull", &target]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("0 blobs fetched"),
        "{}",
        text(&again)
    );

    // Pushing the unchanged image again uploads no blob.
    let before = registry.access_lines();
    let out = env.kiln(&["push", "bb", &target]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(registry.blob_uploads(), uploads, "{}", text(&out));
    let lines = String::from_utf8_lossy(&out.stderr);
    assert!(lines.contains("0 blobs uploaded"), "{lines}");
    assert_eq!(lines.matches(": exists ").count(), 3, "{lines}");
    let log = std::fs::read_to_string(&registry.log).unwrap();
    let new_requests: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" /v2/"))
        .skip(before)
        .collect();
    assert!(
        new_requests.iter().all(|l| l.contains("\"HEAD /v2/")
            || l.contains("\"PUT /v2/kiln/bb/manifests/1")
            || l.contains("\"GET /v2/ ")),
        "a re-push did more than HEAD requests and the manifest PUT:\n{}",
        new_requests.join("\n")
    );

    // `-q` prints only the digest.
    let quiet = env.kiln(&["push", "-q", "bb", &target]);
    assert_eq!(String::from_utf8_lossy(&quiet.stdout).trim(), built);
    assert!(quiet.stderr.is_empty(), "{}", text(&quiet));

    // skopeo reads what kiln pushed.
    let inspect = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]));
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], built.as_str());
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
}

#[test]
fn a_build_pulls_its_from_image_when_the_store_lacks_it() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let registry = Registry::start(env.dir.path());
    build_busybox(&env);
    let base = format!("{}/base/bb:1", registry.host());
    env.kiln_ok(&["push", "-q", "bb", &base]);
    let other = Env::new();
    other.write(
        "kiln.yaml",
        &format!("image: child\nfrom: {base}\nsteps:\n  - run: cat /hello > /child\n"),
    );
    // --no-pull keeps a build offline: the missing base is an error with a hint.
    let offline = other.kiln(&["build", other.dir.path().to_str().unwrap(), "--no-pull"]);
    assert_eq!(offline.status.code(), Some(1), "{}", text(&offline));
    assert!(String::from_utf8_lossy(&offline.stderr).contains("is not in the store"));
    other.kiln_ok(&["build", other.dir.path().to_str().unwrap()]);
    let out = other.kiln_ok(&["run", "--rm", "child", "cat", "/child"]);
    assert_eq!(out, "pushed-and-pulled");
    // The pulled base is tagged like `kiln pull` would tag it.
    other.kiln_ok(&["inspect", &base]);
}

#[test]
fn kiln_pulls_what_skopeo_pushed_from_an_oci_layout() {
    common::require_root!("namespaces, overlayfs");
    require("skopeo", "skopeo");
    let env = Env::new();
    let registry = Registry::start(env.dir.path());
    build_busybox(&env);
    let layout = format!("oci:{}:localhost/bb:latest", env.root().display());
    let target = format!("{}/skopeo/bb:2", registry.host());
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &layout,
        &format!("docker://{target}"),
    ]));
    let other = Env::new();
    other.kiln_ok(&["pull", &target]);
    let out = other.kiln_ok(&["run", "--rm", &target, "cat", "/hello"]);
    assert_eq!(out, "pushed-and-pulled");
}

fn mock(auth: AuthMode) -> Server {
    Server::start(Config {
        auth,
        users: vec![User::new("alice", "s3cret")],
        ..Config::default()
    })
    .unwrap()
}

#[test]
fn basic_auth_login_push_and_wrong_password() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    // No anonymous pulls: every request must carry Basic credentials, the redirected blob
    // GETs below too.
    let server = Server::start(Config {
        auth: AuthMode::Basic,
        users: vec![User::new("alice", "s3cret")],
        anonymous_pull: false,
        ..Config::default()
    })
    .unwrap();
    let config = env.path("docker");
    build_busybox(&env);

    let wrong = login_alice(&env, &server, "nope\n", &config);
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("invalid username or password"), "{err}");
    assert!(!err.contains("nope"), "the password leaked: {err}");
    assert!(!config.join("config.json").exists());

    // Without credentials the push is refused with a hint to log in.
    let target = format!("{}/team/bb:1", server.host());
    let refused = kiln_with_stdin(&env, &["push", "bb", &target], "", &config);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("kiln login"),
        "{}",
        text(&refused)
    );

    let ok = login_alice(&env, &server, "s3cret\n", &config);
    assert!(ok.status.success(), "{}", text(&ok));
    let file = config.join("config.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pushed = kiln_with_stdin(&env, &["push", "bb", &target], "", &config);
    assert!(pushed.status.success(), "{}", text(&pushed));
    assert!(server.tag_digest("team/bb", "1").is_some());

    // A blob redirected to another host gets no Authorization there, though the registry's
    // own requests carried Basic credentials.
    let other = Env::new();
    let reference = format!("{}/fault/redirect/team/bb:1", server.host());
    let out = kiln_with_stdin(&other, &["pull", &reference], "", &config);
    assert!(out.status.success(), "{}", text(&out));
    assert_redirected_without_authorization(&server);

    let out = kiln_with_stdin(&env, &["logout", &server.host()], "", &config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!std::fs::read_to_string(&file)
        .unwrap()
        .contains(&server.host()));
}

/// A wrong password is named as such, exits 1, and saves nothing: for basic auth and for
/// a token service alike (the user typed `kiln login HOST -u alice --password-stdin`).
#[test]
fn a_wrong_login_password_is_invalid_username_or_password() {
    for auth in [AuthMode::Basic, AuthMode::Token] {
        let env = Env::unprivileged();
        let server = mock(auth);
        let config = env.path("docker");
        let wrong = login_alice(&env, &server, "not-the-password\n", &config);
        let err = String::from_utf8_lossy(&wrong.stderr);
        assert_eq!(wrong.status.code(), Some(1), "{auth:?}: {err}");
        assert_eq!(
            err,
            format!(
                "error: {}: invalid username or password\n\
                 hint: check the user name after -u and the password or token piped into --password-stdin\n",
                server.host()
            ),
            "{auth:?}"
        );
        assert!(wrong.stdout.is_empty());
        assert!(!config.join("config.json").exists());
        let right = login_alice(&env, &server, "s3cret\n", &config);
        assert_eq!(right.status.code(), Some(0), "{auth:?}: {}", text(&right));
    }
}

/// Blob GETs were redirected (307) with `Authorization` on the registry, and none reached
/// the redirect listener (another host: `localhost` for the registry's `127.0.0.1`).
fn assert_redirected_without_authorization(server: &Server) {
    let log = server.log();
    let redirected: Vec<_> = log
        .iter()
        .filter(|e| e.listener == Listener::Registry && e.status == 307)
        .collect();
    assert!(!redirected.is_empty(), "{log:#?}");
    assert!(redirected.iter().all(|e| e.authorization), "{log:#?}");
    assert!(
        log.iter().any(|e| e.listener == Listener::Redirect),
        "{log:#?}"
    );
    assert!(server.redirect_authorizations().is_empty());
}

#[test]
fn bearer_token_flow_and_faults() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let server = mock(AuthMode::Token);
    let config = env.path("docker");
    let built = build_busybox(&env);
    let login = login_alice(&env, &server, "s3cret", &config);
    assert!(login.status.success(), "{}", text(&login));
    let target = format!("{}/app/bb:1", server.host());
    let pushed = kiln_with_stdin(&env, &["push", "bb", &target], "", &config);
    assert!(pushed.status.success(), "{}", text(&pushed));

    // Anonymous pulls get a token too; 503 twice and 429 are retried.
    for prefix in ["", "fault/e503x2/", "fault/e429x1/"] {
        let other = Env::new();
        let reference = format!("{}/{prefix}app/bb:1", server.host());
        let out = kiln_with_stdin(&other, &["pull", &reference], "", &other.path("none"));
        assert!(out.status.success(), "{reference}: {}", text(&out));
        assert_eq!(digest_line(&String::from_utf8_lossy(&out.stdout)), built);
    }

    // An endless manifest is cut at 4 MiB.
    let other = Env::new();
    let reference = format!("{}/fault/endless/app/bb:1", server.host());
    let out = kiln_with_stdin(&other, &["pull", &reference], "", &config);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("larger than kiln's limit of 4194304 bytes (image_limits: document_size"),
        "{}",
        text(&out)
    );

    // A blob redirected to another host gets no Authorization there.
    let other = Env::new();
    let reference = format!("{}/fault/redirect/app/bb:1", server.host());
    let out = kiln_with_stdin(&other, &["pull", &reference], "", &config);
    assert!(out.status.success(), "{}", text(&out));
    assert_redirected_without_authorization(&server);

    // Corrupted content is refused (registry-mock flips a byte of manifests and blobs
    // alike): by tag the manifest no longer parses, by digest it no longer matches.
    // Either way nothing is tagged and nothing is left half-written.
    for (name, why) in [
        ("app/bb:1".to_owned(), "not JSON"),
        (format!("app/bb@{built}"), "expected"),
    ] {
        let other = Env::new();
        let reference = format!("{}/fault/corrupt/{name}", server.host());
        let out = kiln_with_stdin(&other, &["pull", &reference], "", &config);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{}",
            text(&out)
        );
        let images = other.kiln_ok(&["images", "--json"]);
        assert_eq!(images, "[]");
        let leftovers: Vec<_> = std::fs::read_dir(other.root().join("tmp"))
            .unwrap()
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

#[test]
fn a_blob_download_cut_by_a_reset_resumes_with_a_range() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let server = mock(AuthMode::None);
    let built = build_busybox(&env);
    let none = env.path("none");
    let pushed = kiln_with_stdin(
        &env,
        &["push", "bb", &format!("{}/app/bb:1", server.host())],
        "",
        &none,
    );
    assert!(pushed.status.success(), "{}", text(&pushed));

    // Every GET answers 100000 bytes, then a TCP reset; its second try is served whole.
    let other = Env::new();
    let reference = format!("{}/fault/reset100000x1/app/bb:1", server.host());
    let out = kiln_with_stdin(&other, &["pull", &reference], "", &none);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(digest_line(&String::from_utf8_lossy(&out.stdout)), built);
    let run = other.kiln_ok(&["run", "--rm", &reference, "cat", "/hello"]);
    assert_eq!(run, "pushed-and-pulled");

    let blob_gets: Vec<_> = server
        .log()
        .into_iter()
        .filter(|e| e.method == "GET" && e.target.contains("/fault/reset100000x1/app/bb/blobs/"))
        .collect();
    let cut = blob_gets
        .iter()
        .filter(|e| e.fault.is_some() && e.response_bytes > 100_000)
        .count();
    let resumed: Vec<_> = blob_gets.iter().filter(|e| e.status == 206).collect();
    assert!(cut >= 1, "no blob download was cut: {blob_gets:#?}");
    // Each cut layer resumes (a reset may also lose bytes of a small blob already in
    // flight, which then resumes too), and a resumed answer carries only the rest.
    assert!(
        resumed.len() >= cut,
        "a cut download restarted: {blob_gets:#?}"
    );
    for e in resumed {
        let whole = blob_gets
            .iter()
            .find(|w| w.target == e.target && w.status == 200)
            .expect("the first try of the blob");
        assert!(e.response_bytes < whole.response_bytes, "{e:?}");
    }
}

#[test]
fn a_blob_known_in_another_repository_is_mounted_not_uploaded() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let registry = Registry::start(env.dir.path());
    build_busybox(&env);
    env.kiln_ok(&[
        "push",
        "-q",
        "bb",
        &format!("{}/team/base:1", registry.host()),
    ]);
    let uploads = registry.blob_uploads();

    // Same registry, another repository: every blob is mounted from team/base.
    let target = format!("{}/team/app:1", registry.host());
    let out = env.kiln(&["push", "bb", &target]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0 blobs uploaded") && err.contains("3 mounted"),
        "{err}"
    );
    assert_eq!(registry.blob_uploads(), uploads, "{err}");
    let log = std::fs::read_to_string(&registry.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"POST /v2/team/app/blobs/uploads/?")
                && l.contains("from=team%2Fbase")),
        "no mount request in the registry's log"
    );
    // What was mounted is pullable from the new repository.
    let other = Env::new();
    other.kiln_ok(&["pull", &target]);
    assert_eq!(
        other.kiln_ok(&["run", "--rm", &target, "cat", "/hello"]),
        "pushed-and-pulled"
    );
}

#[test]
fn a_declined_mount_falls_back_to_an_upload() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let server = mock(AuthMode::None);
    let none = env.path("none");
    build_busybox(&env);
    let push = |target: String| {
        let out = kiln_with_stdin(&env, &["push", "bb", &target], "", &none);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    push(format!("{}/base/bb:1", server.host()));
    // The first push recorded `base/bb` as the blobs' source; under `fault/nomount`
    // registry-mock declines every mount with a fresh upload session instead.
    let declined = push(format!("{}/fault/nomount/app/bb:1", server.host()));
    assert!(declined.contains("3 blobs uploaded"), "{declined}");
    assert!(server.tag_digest("app/bb", "1").is_some());
    let log = server.log();
    let mounts: Vec<_> = log
        .iter()
        .filter(|e| e.method == "POST" && e.target.contains("mount="))
        .collect();
    assert_eq!(mounts.len(), 3, "{log:#?}");
    assert!(mounts.iter().all(|e| e.status == 202), "{mounts:#?}");
    // Each blob went up in the session its declined mount opened: no other POST.
    let posts = log
        .iter()
        .filter(|e| e.method == "POST" && e.target.contains("/fault/nomount/app/bb/"))
        .count();
    assert_eq!(posts, 3, "{log:#?}");
    let uploaded = log
        .iter()
        .filter(|e| e.target.contains("/fault/nomount/") && e.uploaded_blob_data())
        .count();
    assert_eq!(uploaded, 3, "{log:#?}");
}

/// sha256 of `bytes` as an OCI digest.
fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Writes `bytes` as a blob of the OCI layout at `layout`; returns its digest.
fn put_layout_blob(layout: &Path, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let path = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    std::fs::write(path, bytes).unwrap();
    digest
}

fn read_layout_blob(layout: &Path, digest: &str) -> serde_json::Value {
    let path = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The architecture kiln runs on, as OCI names it, and another one.
#[test]
fn a_multi_arch_index_pushed_by_skopeo_resolves_to_the_host_platform() {
    common::require_root!("namespaces, overlayfs");
    require("skopeo", "skopeo");
    let env = Env::new();
    let registry = Registry::start(env.dir.path());
    busybox_rootfs(&env);
    let (host, other) = common::host_and_other_arch();
    let mut manifests = Vec::new();
    for (arch, name) in [(host, "multi:host"), (other, "multi:other")] {
        env.write(
            "kiln.yaml",
            &format!("image: {name}\nfrom: rootfs:./base\nsteps:\n  - run: echo {arch} > /arch\n"),
        );
        let digest = env.kiln_ok(&["build", env.dir.path().to_str().unwrap(), "-q"]);
        manifests.push((arch, digest));
    }
    // An OCI layout with the store's blobs, where the second image's config says it is
    // for the other architecture, and an index naming both.
    let layout = env.path("layout");
    std::fs::create_dir_all(&layout).unwrap();
    run(Command::new("cp")
        .arg("-r")
        .arg(env.root().join("blobs"))
        .arg(&layout));
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let (other_arch, other_digest) = manifests[1].clone();
    let mut manifest = read_layout_blob(&layout, &other_digest);
    let mut config = read_layout_blob(&layout, manifest["config"]["digest"].as_str().unwrap());
    config["architecture"] = other_arch.into();
    let config_bytes = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = put_layout_blob(&layout, &config_bytes).into();
    manifest["config"]["size"] = config_bytes.len().into();
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    manifests[1].1 = put_layout_blob(&layout, &manifest_bytes);
    let entries: Vec<serde_json::Value> = manifests
        .iter()
        .map(|(arch, digest)| {
            let size = std::fs::metadata(layout.join("blobs/sha256").join(&digest[7..]))
                .unwrap()
                .len();
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": size,
                "platform": {"os": "linux", "architecture": arch},
            })
        })
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    }))
    .unwrap();
    let index_digest = put_layout_blob(&layout, &index);
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": index_digest,
                "size": index.len(),
                "annotations": {"org.opencontainers.image.ref.name": "multi"},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    let target = format!("{}/multi/bb:1", registry.host());
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{target}"),
    ]));

    // This machine's platform by default, and runnable.
    let native = Env::new();
    let pulled = digest_line(&native.kiln_ok(&["pull", &target]));
    assert_eq!(pulled, manifests[0].1);
    assert_eq!(
        native.kiln_ok(&["run", "--rm", &target, "cat", "/arch"]),
        host
    );
    // --platform picks the other one.
    let foreign = Env::new();
    let platform = format!("linux/{other}");
    let pulled = digest_line(&foreign.kiln_ok(&["pull", "--platform", &platform, &target]));
    assert_eq!(pulled, manifests[1].1);
    let inspect = foreign.kiln_ok(&["inspect", &target]);
    assert!(inspect.contains(&format!("\"{other}\"")), "{inspect}");
    // A platform the index lacks is a clear error listing what it has.
    let out = foreign.kiln(&["pull", "--platform", "linux/s390x", &target]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no image for linux/s390x") && err.contains(&format!("linux/{other}")),
        "{err}"
    );
}

#[test]
fn kiln_pulls_and_runs_an_image_made_by_umoci() {
    common::require_root!("namespaces, overlayfs");
    require("skopeo", "skopeo");
    require("umoci", "umoci");
    let env = Env::new();
    let registry = Registry::start(env.dir.path());
    let rootfs = busybox_rootfs(&env);
    let layout = env.path("umoci-layout");
    let bundle = env.path("bundle");
    let image = format!("{}:bb", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout));
    run(Command::new("umoci").args(["new", "--image", &image]));
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle));
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", rootfs.display()))
        .arg(bundle.join("rootfs")));
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(Command::new("umoci").args(["config", "--image", &image, "--config.env", "PATH=/bin"]));
    let target = format!("{}/umoci/bb:1", registry.host());
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{image}"),
        &format!("docker://{target}"),
    ]));
    let other = Env::new();
    other.kiln_ok(&["pull", &target]);
    assert_eq!(
        other.kiln_ok(&["run", "--rm", &target, "/bin/busybox", "echo", "ok"]),
        "ok"
    );
}

/// Every file and dir under `root` with its size, except lock files (which only exist
/// for locking), sorted.
#[test]
fn a_corrupted_blob_is_refused_and_leaves_the_store_as_it_was() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let server = mock(AuthMode::None);
    let none = env.path("none");
    build_busybox(&env);
    let pushed = kiln_with_stdin(
        &env,
        &["push", "bb", &format!("{}/app/bb:1", server.host())],
        "",
        &none,
    );
    assert!(pushed.status.success(), "{}", text(&pushed));

    // A store that already holds something, so "unchanged" means more than "empty".
    let other = Env::new();
    busybox_rootfs(&other);
    other.write(
        "kiln.yaml",
        "image: mine\nfrom: rootfs:./base\nsteps:\n  - run: echo mine > /mine\n",
    );
    other.kiln_ok(&["build", other.dir.path().to_str().unwrap(), "-q"]);
    let before = common::store_listing(&other.root());
    // Manifests are served intact, blobs with one byte flipped.
    let reference = format!("{}/fault/blobcorrupt/app/bb:1", server.host());
    let out = kiln_with_stdin(&other, &["pull", &reference], "", &none);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("digest mismatch: its content has digest")
            && err.contains("nothing of it was stored"),
        "{err}"
    );
    assert_eq!(common::store_listing(&other.root()), before, "{err}");
    // The blobs were served: it was their content that was refused.
    assert!(server
        .log()
        .iter()
        .any(|e| e.fault.as_deref() == Some("blobcorrupt") && e.target.contains("/blobs/")));
    let fsck = other.kiln(&["fsck"]);
    assert!(fsck.status.success(), "{}", text(&fsck));
}

/// An image `big` with a 20 MiB layer of random bytes (above kiln's resumable-upload
/// size) on top of busybox; returns its digest.
fn build_big(env: &Env) -> String {
    busybox_rootfs(env);
    let mut random = vec![0u8; 20 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut random)
        .unwrap();
    std::fs::write(env.path("random.bin"), &random).unwrap();
    env.write(
        "kiln.yaml",
        "image: big\nfrom: rootfs:./base\nsteps:\n  - copy: random.bin\n    to: /random.bin\n",
    );
    env.kiln_ok(&["build", env.dir.path().to_str().unwrap(), "-q"])
}

#[test]
fn an_interrupted_upload_resumes_where_the_registry_stopped() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let server = mock(AuthMode::None);
    let none = env.path("none");
    let built = build_big(&env);
    // Upload bodies longer than 8 MB are cut after 8 MB, once per request.
    const KEPT: u64 = 8_000_000;
    let target = format!("{}/fault/uploadreset{KEPT}x1/app/big:1", server.host());
    let out = kiln_with_stdin(&env, &["push", "big", &target], "", &none);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        server.tag_digest("app/big", "1").as_deref(),
        Some(built.as_str())
    );

    let log = server.log();
    let cut: Vec<_> = log
        .iter()
        .filter(|e| e.method == "PATCH" && e.status == 0)
        .collect();
    assert_eq!(cut.len(), 1, "{log:#?}");
    let session = cut[0].target.clone();
    let size = cut[0].request_bytes;
    assert!(size >= 20 << 20, "{log:#?}");
    // kiln asked where the registry stopped, then sent only the rest, then closed the
    // session.
    let after: Vec<_> = log
        .iter()
        .skip_while(|e| e.status != 0)
        .filter(|e| e.target.starts_with(&session))
        .map(|e| (e.method.as_str(), e.status, e.request_bytes))
        .collect();
    assert_eq!(
        after,
        [
            ("PATCH", 0, size),
            ("GET", 204, 0),
            ("PATCH", 202, size - KEPT),
            ("PUT", 201, 0),
        ],
        "{log:#?}"
    );

    // What went up is the image.
    let other = Env::new();
    let reference = format!("{}/app/big:1", server.host());
    let pulled = kiln_with_stdin(&other, &["pull", &reference], "", &none);
    assert!(pulled.status.success(), "{}", text(&pulled));
    assert_eq!(digest_line(&String::from_utf8_lossy(&pulled.stdout)), built);
}

#[test]
fn a_large_blob_goes_up_in_a_session_that_docker_registry_accepts() {
    common::require_root!("namespaces, overlayfs");
    require("skopeo", "skopeo");
    let env = Env::new();
    let registry = Registry::start(env.dir.path());
    let built = build_big(&env);
    let target = format!("{}/kiln/big:1", registry.host());
    let pushed = digest_line(&env.kiln_ok(&["push", "big", &target]));
    assert_eq!(pushed, built);
    let log = std::fs::read_to_string(&registry.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"PATCH /v2/kiln/big/blobs/uploads/")),
        "the large layer did not go up in a PATCH"
    );
    let inspect = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]));
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], built.as_str());
    let other = Env::new();
    assert_eq!(digest_line(&other.kiln_ok(&["pull", &target])), built);
}

#[test]
fn a_mount_asks_the_token_service_for_the_source_repository_too() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let server = mock(AuthMode::Token);
    let config = env.path("docker");
    build_busybox(&env);
    let login = login_alice(&env, &server, "s3cret", &config);
    assert!(login.status.success(), "{}", text(&login));
    let push = |repo: &str| {
        let target = format!("{}/{repo}:1", server.host());
        let out = kiln_with_stdin(&env, &["push", "bb", &target], "", &config);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    push("team/base");
    server.clear_log();
    let second = push("team/app");
    assert!(
        second.contains("0 blobs uploaded") && second.contains("3 mounted"),
        "{second}"
    );
    // One line per blob says what became of it.
    assert_eq!(second.matches(": mounted ").count(), 3, "{second}");
    let log = server.log();
    let token_requests: Vec<String> = log
        .iter()
        .filter(|e| e.target.starts_with("/token"))
        .map(|e| {
            e.target
                .replace("%3A", ":")
                .replace("%2F", "/")
                .replace("%2C", ",")
        })
        .collect();
    assert!(
        token_requests
            .iter()
            .any(|t| t.contains("scope=repository:team/app:pull,push")
                && t.contains("scope=repository:team/base:pull")),
        "{token_requests:#?}"
    );
    let mounts: Vec<_> = log
        .iter()
        .filter(|e| e.method == "POST" && e.target.contains("mount="))
        .map(|e| e.status)
        .collect();
    assert_eq!(mounts, [201, 201, 201], "{log:#?}");
}

#[test]
fn insecure_registries_come_from_the_config_file_too() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    let server = mock(AuthMode::None);
    let none = env.path("none");
    build_busybox(&env);
    // `127.1` is this machine, but not spelled as a loopback address: https by default.
    let host = format!("127.1:{}", server.addr().port());
    let target = format!("{host}/app/bb:1");
    let refused = kiln_with_stdin(&env, &["push", "bb", &target], "", &none);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--insecure-registry"),
        "{}",
        text(&refused)
    );
    let config = env.write(
        "config.yaml",
        &format!("# registries without TLS\ninsecure_registries:\n  - {host}\n"),
    );
    let with_config = |args: &[&str]| {
        env.command()
            .args(args)
            .env("KILN_CONFIG", &config)
            .env("DOCKER_CONFIG", &none)
            .output()
            .unwrap()
    };
    let out = with_config(&["push", "bb", &target]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(server.tag_digest("app/bb", "1").is_some());
    // A mistake in the file is an error that says where.
    std::fs::write(
        &config,
        "insecure_registries:\n  - ok.lan\ninsecure_registry: [x]\n",
    )
    .unwrap();
    let out = with_config(&["push", "bb", &target]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.yaml:3:1"), "{err}");
}

/// A docker `config.json` under `env` holding alice's credentials (`alice:s3cret`) for
/// `host`; returns its directory, for `DOCKER_CONFIG`.
fn alice_docker_config(env: &Env, host: &str) -> PathBuf {
    env.write(
        "docker/config.json",
        &format!(r#"{{"auths":{{"{host}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#),
    );
    env.path("docker")
}

/// kiln with `DOCKER_CONFIG` and `KILN_CONFIG` set and nothing else to find credentials in.
fn kiln_configured(
    env: &Env,
    args: &[&str],
    stdin: &str,
    docker_config: &Path,
    kiln_config: &Path,
) -> std::process::Output {
    kiln_with(
        env,
        args,
        stdin,
        &[
            ("DOCKER_CONFIG", docker_config),
            ("KILN_CONFIG", kiln_config),
        ],
    )
}

/// SECURITY.md §3 rule 16: which token requests carry alice's credentials, by where the
/// token service is. The registry (on `127.0.0.1`, plain http) refuses anonymous pulls, so
/// an anonymous token gets nothing.
#[test]
fn credentials_go_only_to_a_token_realm_that_is_trusted() {
    // (case, the token service's host name, trusted_token_realms, credentials sent)
    let cases: [(&str, Option<&str>, &str, bool); 4] = [
        ("same host and port", None, "", true),
        ("same host, another port", Some("127.0.0.1"), "", true),
        ("another name, not trusted", Some("localhost"), "", false),
        (
            "another name, trusted in the config",
            Some("localhost"),
            "trusted_token_realms:\n  - localhost\n",
            true,
        ),
    ];
    for (case, token_host, kiln_config, trusted) in cases {
        let env = Env::unprivileged();
        let server = Server::start(Config {
            auth: AuthMode::Token,
            users: vec![User::new("alice", "s3cret")],
            anonymous_pull: false,
            token_host: token_host.map(str::to_owned),
            ..Config::default()
        })
        .unwrap();
        let token_listener = match token_host {
            Some(_) => Listener::Token,
            None => Listener::Registry,
        };
        let docker = alice_docker_config(&env, &server.host());
        let kiln_config = env.write("config.yaml", kiln_config);
        let token_requests = |server: &Server| -> Vec<(Listener, bool)> {
            server
                .log()
                .iter()
                .filter(|e| e.target.starts_with("/token"))
                .map(|e| (e.listener, e.authorization))
                .collect()
        };

        // A pull with stored credentials: a token with them (the image is missing: 404), or
        // an anonymous one, refused, with an error that says why and what to do.
        let reference = format!("{}/app/missing:1", server.host());
        let out = kiln_configured(&env, &["pull", &reference], "", &docker, &kiln_config);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{case}: {}", text(&out));
        let tokens = token_requests(&server);
        assert!(!tokens.is_empty(), "{case}: {:#?}", server.log());
        assert!(
            tokens.iter().all(|t| *t == (token_listener, trusted)),
            "{case}: {tokens:?}"
        );
        if trusted {
            assert!(err.contains("not found"), "{case}: {err}");
        } else {
            let realm = format!("localhost:{}", server.token_addr().unwrap().port());
            assert!(
                err.contains(&format!("the token service {realm} is not trusted"))
                    && err.contains(
                        "list localhost under trusted_token_realms: in kiln's config file"
                    ),
                "{case}: {err}"
            );
            assert!(!err.contains("kiln login"), "{case}: {err}");
        }

        // `kiln login` checks the password with the token service it trusts, and refuses
        // to check it with one it does not trust, sending it nothing.
        server.clear_log();
        let args = ["login", &server.host(), "-u", "alice", "--password-stdin"];
        let login = kiln_configured(&env, &args, "s3cret\n", &docker, &kiln_config);
        assert_eq!(login.status.success(), trusted, "{case}: {}", text(&login));
        let tokens = token_requests(&server);
        if trusted {
            assert!(
                tokens.contains(&(token_listener, true)),
                "{case}: {tokens:?}"
            );
        } else {
            assert!(tokens.is_empty(), "{case}: {tokens:?}");
            assert!(
                String::from_utf8_lossy(&login.stderr).contains("trusted_token_realms"),
                "{case}: {}",
                text(&login)
            );
        }
        assert!(
            server
                .log()
                .iter()
                .all(|e| e.listener != Listener::Token || e.authorization == trusted),
            "{case}: {:#?}",
            server.log()
        );
    }
}

/// A registry that is not on loopback is reached over https unless it is listed as
/// insecure, so its credentials never travel in plain http to it by default.
#[test]
fn a_plain_http_registry_gets_credentials_only_when_it_is_listed_as_insecure() {
    let env = Env::unprivileged();
    let server = Server::start(Config {
        auth: AuthMode::Basic,
        users: vec![User::new("alice", "s3cret")],
        anonymous_pull: false,
        ..Config::default()
    })
    .unwrap();
    // `127.1` is this machine, but not spelled as a loopback address.
    let host = format!("127.1:{}", server.addr().port());
    let docker = alice_docker_config(&env, &host);
    let reference = format!("{host}/app/missing:1");
    let no_config = env.write("none.yaml", "");
    let out = kiln_configured(&env, &["pull", &reference], "", &docker, &no_config);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let log = server.log();
    // kiln spoke TLS, which the plain-http registry could not read: no request, no header.
    assert!(
        log.iter().all(|e| !e.authorization && e.method.is_empty()),
        "{log:#?}"
    );

    let insecure = env.write(
        "insecure.yaml",
        &format!("insecure_registries:\n  - {host}\n"),
    );
    server.clear_log();
    let out = kiln_configured(&env, &["pull", &reference], "", &docker, &insecure);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        text(&out)
    );
    assert!(
        server.log().iter().any(|e| e.authorization),
        "{:#?}",
        server.log()
    );
}
