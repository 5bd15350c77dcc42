//! `kiln push`, `pull` and `login` against real registries: Debian's `docker-registry`
//! (CNCF distribution) for the ordinary cases, skopeo as a second client, and
//! registry-mock for authentication and faults.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{require, run, text, Env};
use registry_mock::{AuthMode, Config, Server, User};

/// A `docker-registry` on a free loopback port with its storage in a temp dir; killed on
/// drop, also when a test panics.
struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        require("docker-registry", "docker-registry");
        let port = free_port();
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.join("registry-data").display()
            ),
        )
        .unwrap();
        let log = dir.join("registry.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry { child, port, log };
        registry.wait_ready();
        registry
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "docker-registry did not answer on /v2/:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Access-log lines of requests that carried blob data (upload PUTs and PATCHes).
    fn blob_uploads(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| {
                (l.contains("\"PUT /v2/") || l.contains("\"PATCH /v2/"))
                    && l.contains("/blobs/uploads/")
            })
            .count()
    }

    fn access_lines(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| l.contains(" /v2/"))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    let mut child = env
        .command()
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn digest_line(out: &str) -> String {
    out.lines().last().unwrap_or_default().trim().to_owned()
}

#[test]
fn push_pull_run_and_repush_against_docker_registry() {
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

    // A fresh store pulls it back, with the same manifest digest, and runs it.
    let other = Env::new();
    let pulled = digest_line(&other.kiln_ok(&["pull", &target]));
    assert_eq!(pulled, built);
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
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 blobs uploaded"));
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
    let env = Env::new();
    let server = mock(AuthMode::Basic);
    let config = env.path("docker");
    build_busybox(&env);

    let wrong = kiln_with_stdin(
        &env,
        &["login", &server.host(), "-u", "alice", "--password-stdin"],
        "nope\n",
        &config,
    );
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("authentication required"), "{err}");
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

    let ok = kiln_with_stdin(
        &env,
        &["login", &server.host(), "-u", "alice", "--password-stdin"],
        "s3cret\n",
        &config,
    );
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

    let out = kiln_with_stdin(&env, &["logout", &server.host()], "", &config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!std::fs::read_to_string(&file)
        .unwrap()
        .contains(&server.host()));
}

#[test]
fn bearer_token_flow_and_faults() {
    let env = Env::new();
    let server = mock(AuthMode::Token);
    let config = env.path("docker");
    let built = build_busybox(&env);
    let login = kiln_with_stdin(
        &env,
        &["login", &server.host(), "-u", "alice", "--password-stdin"],
        "s3cret",
        &config,
    );
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
        String::from_utf8_lossy(&out.stderr).contains("larger than 4 MiB"),
        "{}",
        text(&out)
    );

    // A blob redirected to another host gets no Authorization there.
    let other = Env::new();
    let reference = format!("{}/fault/redirect/app/bb:1", server.host());
    let out = kiln_with_stdin(&other, &["pull", &reference], "", &config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(server.redirect_authorizations().is_empty());

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
