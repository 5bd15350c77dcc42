//! Helpers for the tests of containers that run on their own (`kiln run -d`, `start`,
//! `exec`, restart policies): a busybox image, detached containers that are removed when
//! the test ends, and what the host says about a container (its processes, cgroups and
//! state). Every wait is bounded.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::Env;

/// A new env whose store holds `bb` and `app:1` (a step's `/hello` on top of it): an
/// image of two layers, for the tests that save, load and move images.
pub fn env_with_app_image() -> Env {
    let env = Env::new();
    busybox_image(&env);
    env.write(
        "app/kiln.yaml",
        "image: app:1\nfrom: bb\nsteps:\n  - run: echo saved-and-loaded > /hello\n    network: none\n",
    );
    env.kiln_ok(&["build", env.path("app").to_str().unwrap()]);
    env
}

/// A busybox image in the env's store, named `bb`, with root and nobody in its passwd.
pub fn busybox_image(env: &Env) {
    let root = super::busybox_rootfs(env, "bb");
    for dir in ["etc", "tmp", "mnt", "data"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    env.kiln_ok(&["import", root.to_str().unwrap(), "-t", "bb"]);
}

/// A detached container, removed (killed first) when the test ends, also when it fails:
/// a monitor left running would outlive the test's store.
pub struct Detached<'a> {
    pub env: &'a Env,
    pub id: String,
}

impl std::ops::Deref for Detached<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.id
    }
}

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        let _ = self.env.kiln(&["rm", "-f", &self.id]);
    }
}

/// `kiln run -d ARGS`: the full container ID it prints (the test removes the container).
pub fn run_detached_id(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["run", "-d"];
    all.extend_from_slice(args);
    let id = env.kiln_ok(&all);
    assert_eq!(id.len(), 64, "run -d prints the full ID: {id:?}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    id
}

/// `kiln run -d ARGS`: the container, removed when the test ends.
pub fn run_detached<'a>(env: &'a Env, args: &[&str]) -> Detached<'a> {
    Detached {
        env,
        id: run_detached_id(env, args),
    }
}

/// Polls `ready` every 20 ms until it holds; fails the test after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kiln ps -a --json`'s entry for the container with ID or name `key`.
pub fn ps_entry(env: &Env, key: &str) -> Option<serde_json::Value> {
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&env.kiln_ok(&["ps", "-a", "--json"])).unwrap();
    all.into_iter().find(|c| c["id"] == key || c["name"] == key)
}

/// `kiln ps -a --json`'s entry for `id`, which must be listed.
pub fn state_of(env: &Env, id: &str) -> serde_json::Value {
    ps_entry(env, id).unwrap_or_else(|| panic!("container {id} is not listed"))
}

/// The container's `state.json` as it is on disk.
pub fn state_file(env: &Env, id: &str) -> serde_json::Value {
    let path = env.root().join("containers").join(id).join("state.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Host processes in the container's cgroup (found through `/proc/*/cgroup`).
pub fn processes_of(id: &str) -> Vec<i32> {
    let marker = format!("kiln-{id}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.contains(&marker))
        })
        .collect()
}

/// The cgroup dirs kiln made for container `id`, on any controller.
pub fn cgroups_of(id: &str) -> Vec<String> {
    let mut left = Vec::new();
    for ctrl in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let dir = ctrl.path().join("kiln").join(format!("kiln-{id}"));
        if dir.exists() {
            left.push(dir.display().to_string());
        }
    }
    let v2 = Path::new("/sys/fs/cgroup/kiln").join(format!("kiln-{id}"));
    if v2.exists() {
        left.push(v2.display().to_string());
    }
    left
}

/// Sends `signal` (a name or number, as kill(1) takes it) to host process `pid`.
pub fn kill_pid(pid: i32, signal: &str) {
    super::run(
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string()),
    );
}

/// `GET /` on `ip:port`: the body, or `None` when nothing answers.
pub fn http_get(ip: &str, port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((ip, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}
