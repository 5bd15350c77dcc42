//! The `registry-mock` binary as a process, and interoperability with a real client:
//! `skopeo copy` pushes to and pulls from the registry, with and without authentication.
//! A missing skopeo fails these tests (install it with `apt-get install skopeo`).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use registry_mock::{AuthMode, Config, Server, User};
use serde_json::{json, Value};

const SKOPEO_TIMEOUT: Duration = Duration::from_secs(120);

/// A `registry-mock` process, killed if a test fails before stopping it.
struct Process {
    child: Option<Child>,
    addr: SocketAddr,
}

impl Process {
    fn spawn(args: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_registry-mock"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run registry-mock");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(TIMEOUT)
            .expect("registry-mock printed no address");
        let addr = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("first line {line:?}"));
        Process {
            child: Some(child),
            addr,
        }
    }

    /// Sends SIGTERM and returns the exit code.
    fn terminate(mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        wait_bounded(&mut child, TIMEOUT).code()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_prints_its_address_and_exits_cleanly_on_sigterm() {
    let process = Process::spawn(&["--listen", "127.0.0.1:0"]);
    assert!(process.addr.ip().is_loopback() && process.addr.port() != 0);
    assert_eq!(call(process.addr, req("GET", "/v2/")).status, 200);
    assert_eq!(process.terminate(), Some(0));
}

#[test]
fn binary_refuses_non_loopback_addresses_unless_told() {
    let output = Command::new(env!("CARGO_BIN_EXE_registry-mock"))
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}

#[test]
fn binary_takes_auth_users_and_storage() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "# test accounts\nalice:secret\n").unwrap();
    let storage = dir.path().join("store");
    let args = [
        "--auth",
        "token",
        "--users",
        users.to_str().unwrap(),
        "--storage",
        storage.to_str().unwrap(),
    ];
    let process = Process::spawn(&args);
    let addr = process.addr;
    let challenge = call(addr, req("GET", "/v2/"));
    assert!(challenge
        .header("WWW-Authenticate")
        .unwrap()
        .starts_with("Bearer realm="));
    let target = "/token?service=registry-mock&scope=repository%3Aapp%3Apull%2Cpush";
    let token = call(
        addr,
        req("GET", target).auth(Some(&basic("alice", "secret"))),
    );
    let bearer = format!("Bearer {}", token.json()["token"].as_str().unwrap());
    TestImage::new("binary").push(addr, "app", "v1", Some(&bearer));
    assert_eq!(process.terminate(), Some(0));

    let again = Process::spawn(&["--storage", storage.to_str().unwrap()]);
    assert_eq!(
        call(again.addr, req("GET", "/v2/app/manifests/v1")).status,
        200
    );
}

#[test]
fn binary_applies_registry_wide_faults() {
    let process = Process::spawn(&["--fault", "e503x1", "--decline-mounts"]);
    let upload = req("POST", "/v2/app/blobs/uploads/");
    assert_eq!(call(process.addr, upload.clone()).status, 503);
    assert_eq!(call(process.addr, upload).status, 202);
    let digest = sha256(b"layer");
    let monolithic = req("POST", &format!("/v2/app/blobs/uploads/?digest={digest}")).body(b"layer");
    assert_eq!(call(process.addr, monolithic.clone()).status, 503);
    assert_eq!(call(process.addr, monolithic).status, 201);
    let mount = format!("/v2/other/blobs/uploads/?mount={digest}&from=app");
    assert_eq!(call(process.addr, req("POST", &mount)).status, 503);
    assert_eq!(
        call(process.addr, req("POST", &mount)).status,
        202,
        "mount declined"
    );
}

/// An OCI layout with one image, `v1`: a real one-file tar layer and its config.
struct Layout {
    dir: tempfile::TempDir,
}

fn write_blob(layout: &Path, data: &[u8]) -> String {
    let digest = sha256(data);
    let path = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
    std::fs::write(path, data).unwrap();
    digest
}

fn oci_layout() -> Layout {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("src");
    std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
    std::fs::write(root.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let layer = tar_with_file("hello.txt", b"hello from registry-mock\n");
    let layer_digest = write_blob(&root, &layer);
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string();
    let config_digest = write_blob(&root, config.as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_MANIFEST,
        "config": {"mediaType": IMAGE_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": layer.len()}],
    })
    .to_string();
    let manifest_digest = write_blob(&root, manifest.as_bytes());
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": IMAGE_MANIFEST, "digest": manifest_digest, "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "v1"},
    }]});
    std::fs::write(root.join("index.json"), index.to_string()).unwrap();
    Layout { dir }
}

/// A ustar archive holding one regular file.
fn tar_with_file(name: &str, content: &[u8]) -> Vec<u8> {
    fn octal(field: &mut [u8], value: usize) {
        let text = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    }
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut header[100..108], 0o644);
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    octal(&mut header[124..136], content.len());
    octal(&mut header[136..148], 0);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].fill(b' ');
    let checksum: usize = header.iter().map(|&b| b as usize).sum();
    header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
    let padding = (512 - content.len() % 512) % 512;
    [&header[..], content, &vec![0; padding], &[0; 1024]].concat()
}

/// Runs skopeo with no user configuration, bounded in time.
fn skopeo(home: &Path, args: &[&str]) -> Output {
    let mut command = Command::new("skopeo");
    command
        .arg("--insecure-policy")
        .args(args)
        .env("HOME", home)
        .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("skopeo is not installed; install it with: apt-get install skopeo")
        }
        Err(e) => panic!("cannot run skopeo: {e}"),
    };
    wait_bounded(&mut child, SKOPEO_TIMEOUT);
    child.wait_with_output().unwrap()
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn push(layout: &Layout, host: &str, name: &str, creds: Option<&str>) -> Output {
    let source = format!("oci:{}:v1", layout.dir.path().join("src").display());
    let dest = format!("docker://{host}/{name}:v1");
    let mut args = vec!["copy", "--dest-tls-verify=false"];
    if let Some(creds) = creds {
        args.extend(["--dest-creds", creds]);
    }
    args.extend([source.as_str(), dest.as_str()]);
    skopeo(layout.dir.path(), &args)
}

/// Pulls into a new OCI layout; returns its directory on success.
fn pull(layout: &Layout, host: &str, name: &str, creds: Option<&str>) -> (Output, PathBuf) {
    let out = layout
        .dir
        .path()
        .join(format!("pulled-{}", name.replace('/', "_")));
    let source = format!("docker://{host}/{name}:v1");
    let dest = format!("oci:{}:v1", out.display());
    let mut args = vec!["copy", "--src-tls-verify=false"];
    if let Some(creds) = creds {
        args.extend(["--src-creds", creds]);
    }
    args.extend([source.as_str(), dest.as_str()]);
    (skopeo(layout.dir.path(), &args), out)
}

fn pulled_manifest_digest(out: &Path) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn skopeo_pushes_and_pulls_without_auth() {
    let layout = oci_layout();
    let server = Server::start(Config::default()).unwrap();
    assert_ok(&push(&layout, &server.host(), "team/app", None), "push");
    // skopeo compresses the layer for a registry, so the manifest it pushes is its own.
    let pushed = server.tag_digest("team/app", "v1").expect("v1 was tagged");

    let (output, out) = pull(&layout, &server.host(), "team/app", None);
    assert_ok(&output, "pull");
    assert_eq!(pulled_manifest_digest(&out), pushed);
    let manifest = call(server.addr(), req("GET", "/v2/team/app/manifests/v1")).json();
    let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap();
    let layer = call(
        server.addr(),
        req("GET", &format!("/v2/team/app/blobs/{layer_digest}")),
    );
    let pulled_layer = out.join("blobs/sha256").join(&layer_digest[7..]);
    assert_eq!(std::fs::read(pulled_layer).unwrap(), layer.body);

    // Pushing again finds every blob in place: no blob data is sent.
    server.clear_log();
    assert_ok(
        &push(&layout, &server.host(), "team/app", None),
        "second push",
    );
    let uploads: Vec<_> = server
        .log()
        .into_iter()
        .filter(|e| e.uploaded_blob_data())
        .collect();
    assert!(uploads.is_empty(), "{uploads:?}");
}

#[test]
fn skopeo_rejects_a_corrupted_blob_served_through_a_fault_prefix() {
    let layout = oci_layout();
    let server = Server::start(Config::default()).unwrap();
    assert_ok(&push(&layout, &server.host(), "app", None), "push");
    // Corrupted layer bytes must make a real client fail its digest check.
    let (output, _) = pull(&layout, &server.host(), "fault/corrupt/app", None);
    assert!(!output.status.success(), "skopeo accepted a corrupted blob");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.to_lowercase().contains("digest"), "{stderr}");
}

#[test]
fn skopeo_uses_token_auth_with_credentials() {
    let layout = oci_layout();
    let server = Server::start(Config {
        auth: AuthMode::Token,
        users: vec![
            User::new("alice", "secret"),
            User::read_only("bob", "reader"),
        ],
        ..Config::default()
    })
    .unwrap();
    let host = server.host();

    let anonymous = push(&layout, &host, "team/app", None);
    assert!(!anonymous.status.success(), "anonymous push must fail");
    let read_only = push(&layout, &host, "team/app", Some("bob:reader"));
    assert!(!read_only.status.success(), "read-only push must fail");
    assert!(
        server.log().iter().all(|e| !e.uploaded_blob_data()),
        "no blob was uploaded"
    );

    assert_ok(
        &push(&layout, &host, "team/app", Some("alice:secret")),
        "push",
    );
    let log = server.log();
    let token_requests = log
        .iter()
        .filter(|e| e.target.starts_with("/token"))
        .count();
    assert!(token_requests > 0);
    assert!(log
        .iter()
        .filter(|e| e.target.starts_with("/v2/team/app/") && e.status < 400)
        .all(|e| e.authorization));

    let (output, out) = pull(&layout, &host, "team/app", None);
    assert_ok(&output, "anonymous pull");
    assert_eq!(
        Some(pulled_manifest_digest(&out)),
        server.tag_digest("team/app", "v1")
    );
    assert_ok(
        &pull(&layout, &host, "team/app", Some("bob:reader")).0,
        "pull as bob",
    );
}

#[test]
fn skopeo_uses_basic_auth() {
    let layout = oci_layout();
    let server = Server::start(Config {
        auth: AuthMode::Basic,
        anonymous_pull: false,
        users: vec![User::new("alice", "secret")],
        ..Config::default()
    })
    .unwrap();
    assert!(!push(&layout, &server.host(), "app", Some("alice:wrong"))
        .status
        .success());
    assert_ok(
        &push(&layout, &server.host(), "app", Some("alice:secret")),
        "push",
    );
    assert!(!pull(&layout, &server.host(), "app", None)
        .0
        .status
        .success());
    assert_ok(
        &pull(&layout, &server.host(), "app", Some("alice:secret")).0,
        "pull",
    );
}
