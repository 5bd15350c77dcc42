//! Shared helpers for kiln's integration tests: they run the real binary against a private
//! store in a temp dir, as root, except for the root-free tier: tests that need root start
//! with `require_root!`, which in a run as another user with `KILN_TEST_UNPRIVILEGED=1`
//! prints `skipped (needs root: …): NAME` to stderr and returns (and fails without it).
#![allow(dead_code)]

pub mod containers;
pub mod outside;
pub mod registry;
pub mod users;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A private kiln store and a scratch area, removed at the end of the test.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    /// The env of a test that needs root (it calls `require_root!` first).
    pub fn new() -> Env {
        assert!(
            nix_is_root(),
            "this test needs root (namespaces, overlayfs): start it with `require_root!`"
        );
        Env::unprivileged()
    }

    /// The env of a test of the root-free tier: kiln runs as whoever runs the tests.
    pub fn unprivileged() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("kiln-test")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A kiln command with `--root` set to this env's store, output captured.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(kiln_bin());
        cmd.arg("--root")
            .arg(self.root())
            .env_remove("SOURCE_DATE_EPOCH")
            // The debug channel stays off unless a test turns it on.
            .env_remove("KILN_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    }

    /// Runs kiln with `--root` set to this env's store.
    pub fn kiln(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run kiln")
    }

    /// Runs kiln from the env's folder `rel`, as a user types it in their project.
    pub fn kiln_in(&self, rel: &str, args: &[&str]) -> Output {
        self.command()
            .current_dir(self.path(rel))
            .args(args)
            .output()
            .expect("run kiln")
    }

    /// Runs kiln and fails the test with its output when it does not exit 0.
    pub fn kiln_ok(&self, args: &[&str]) -> String {
        let out = self.kiln(args);
        assert!(
            out.status.success(),
            "kiln {args:?} failed: {}\n{}",
            out.status,
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Writes a file (creating parents) under the env's dir.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl Drop for Env {
    /// A test that failed half-way may leave detached containers running, whose monitors
    /// would outlive the store: they are removed (killed first) with it.
    fn drop(&mut self) {
        let kept = std::fs::read_dir(self.root().join("containers"))
            .is_ok_and(|mut entries| entries.next().is_some());
        if !kept {
            return;
        }
        let Ok(listed) = self.command().args(["ps", "-a", "-q"]).output() else {
            return;
        };
        let ids = String::from_utf8_lossy(&listed.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = self.command().args(["rm", "-f"]).args(&ids).output();
        }
    }
}

/// The kiln binary under test: this build's, or `$KILN_TEST_BIN`, to check that a new test
/// fails on an older build (`KILN_TEST_BIN=/path/to/old/kiln cargo test --test NAME`).
pub fn kiln_bin() -> PathBuf {
    std::env::var_os("KILN_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kiln")))
}

pub fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn nix_is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A TCP port nothing listens on now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loop device over a file of the test's env (1 MiB of 0x5a bytes, or `mib` MiB),
/// detached on drop after whatever was mounted from it is unmounted: a host device to give
/// to, hide from or throttle for a container.
pub struct LoopDevice {
    pub path: String,
    pub major: u64,
    pub minor: u64,
    /// Where an ext4 made on it is mounted, if one is.
    mounted: Option<PathBuf>,
}

impl LoopDevice {
    pub fn new(env: &Env) -> LoopDevice {
        LoopDevice::sized(env, 1)
    }

    pub fn sized(env: &Env, mib: usize) -> LoopDevice {
        require("losetup", "mount");
        let backing = env.path("loop.img");
        std::fs::write(&backing, vec![0x5a; mib << 20]).unwrap();
        let path = run(std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&backing))
        .trim()
        .to_owned();
        let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(&path).unwrap());
        LoopDevice {
            major: nix::sys::stat::major(rdev),
            minor: nix::sys::stat::minor(rdev),
            path,
            mounted: None,
        }
    }

    /// `MAJOR:MINOR`.
    pub fn numbers(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    /// An ext4 on the device, mounted at `dir`: direct writes to a file there are writes to
    /// the device, throttled by its rules, without the container opening the device (its
    /// device allow-list forbids that).
    pub fn mount_ext4(&mut self, dir: &Path) {
        require("mkfs.ext4", "e2fsprogs");
        run(Command::new("mkfs.ext4").args(["-q", "-F", &self.path]));
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("mount").arg(&self.path).arg(dir));
        self.mounted = Some(dir.to_owned());
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Some(dir) = &self.mounted {
            let _ = Command::new("umount").arg(dir).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
    }
}

/// See `kiln_testing::privileged`; the skip line names this test binary.
pub fn privileged(why: &str) -> bool {
    kiln_testing::privileged(why, Some(env!("CARGO_CRATE_NAME")))
}

/// First statement of a test that needs root: returns from it in the root-free tier.
#[allow(unused_macros)] // spec_errors has no privileged test
macro_rules! require_root {
    ($why:expr) => {
        if !$crate::common::privileged($why) {
            return;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use require_root;

/// Fails (never skips) when a peer tool is missing, saying what to install.
pub fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .unwrap()
        .status
        .success();
    assert!(
        found,
        "{tool} is missing: install it with `apt-get install {package}` (tests/run.sh does this)"
    );
}

/// `kiln kube ARGS` in `env`, checked by kubernetes-validate `--strict` (Kubernetes' own
/// schemas, offline), as JSON.
pub fn kube_validated(env: &Env, args: &[&str]) -> serde_json::Value {
    require(
        "kubernetes-validate",
        "kubernetes-validate (pip install kubernetes-validate)",
    );
    let yaml = env.kiln_ok(&[&["kube"], args].concat());
    let file = env.write("manifest.yaml", &format!("{yaml}\n"));
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{yaml}\n{}", text(&out));
    serde_saphyr::from_str(&yaml).unwrap()
}

/// The container dirs of the store at `root` (kiln's index of live containers,
/// `containers/.live`, is not one).
pub fn container_dirs(root: &Path) -> Vec<String> {
    names_in(&root.join("containers"))
}

/// The names in `dir` but kiln's own dot-files (`.live`, `.complete`); none when it does
/// not exist.
pub fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect()
}

/// Runs a command and fails the test with its output when it does not exit 0.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The mount table, to check that kiln leaves no mounts behind.
pub fn mounts() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// Mount lines that mention `path`.
pub fn mounts_under(path: &Path) -> Vec<String> {
    let p = path.to_string_lossy().into_owned();
    mounts()
        .lines()
        .filter(|l| l.contains(&p))
        .map(str::to_owned)
        .collect()
}

/// The mounts kiln could leave behind: anything under `env`'s dir, and overlays anywhere.
/// Tests compare these, not the whole table, which other programs change meanwhile.
pub fn kiln_mounts(env: &Env) -> Vec<String> {
    let mut lines = mounts_under(env.dir.path());
    lines.extend(
        mounts()
            .lines()
            .filter(|l| l.contains(" - overlay "))
            .map(str::to_owned),
    );
    lines
}

/// A busybox root filesystem at `env`'s `rel`: the static binary and its applets, linked by
/// hand (`busybox --install` would link to the host path of the binary).
pub fn busybox_rootfs(env: &Env, rel: &str) -> PathBuf {
    require("busybox", "busybox-static");
    let root = env.path(rel);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in run(Command::new("/bin/busybox").arg("--list")).lines() {
        let link = root.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    root
}

/// Every file and dir under a store (lock files aside) with its size: equal listings
/// before and after a refused command mean it left the store as it was.
pub fn store_listing(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if rel.ends_with("lock") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            out.push(format!(
                "{rel} {}",
                if meta.is_dir() { 0 } else { meta.len() }
            ));
            if meta.is_dir() {
                walk(&path, root, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// The Go names of this machine's architecture and of another one.
pub fn host_and_other_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "arm64"),
        "aarch64" => ("arm64", "amd64"),
        other => panic!("add {other} to this test's architectures"),
    }
}

/// Runs `command` with a new pty as its stdin, stdout and stderr, as on a user's terminal,
/// types `input` into it, and returns whether it succeeded and everything it wrote (reading
/// ends, EIO, once no process holds the pty any more).
pub fn on_a_terminal(mut command: Command, input: &[u8]) -> (bool, String) {
    use std::io::{Read, Write};
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = || std::process::Stdio::from(pty.slave.try_clone().unwrap());
    let mut child = command
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    // The command keeps its copies of the slave until dropped.
    drop(command);
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    master.write_all(input).unwrap();
    let mut output = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = master.read(&mut buf) {
        output.extend_from_slice(&buf[..n]);
    }
    let ok = child.wait().unwrap().success();
    (ok, String::from_utf8_lossy(&output).into_owned())
}
