//! Rootless kiln: build, run, exec, push and pull as ordinary users the test makes — one
//! with subordinate ids, one without — and the rules that keep them apart from root.

mod common;

use common::outside::Outside;
use common::registry::Registry;
use common::users::{shared_dir, TestUser, SUBIDS};
use common::{text, Env};

/// A multi-step spec whose layers hold what a user namespace must get right: a file
/// owned by uid 1000, a whiteout and an opaque directory.
const SPEC: &str = r#"
image: rl:1
from: scratch
contexts:
  hostbin: /bin
env:
  PATH: /bin
steps:
  - copy: busybox
    from: hostbin
    to: /bin/busybox
    mode: "0755"
  - run: [/bin/busybox, --install, -s, /bin]
    network: none
  - run: mkdir -p /data /gone /redo && echo hi > /data/f && touch /gone/x /redo/old && chown 1000:1000 /data/f
    network: none
  - run: rm -rf /gone /redo && mkdir /redo && touch /redo/new
    network: none
"#;

/// The image ID `kiln build` prints last.
fn built_id(out: &std::process::Output) -> String {
    assert!(out.status.success(), "build failed:\n{}", text(out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().unwrap().trim().to_owned()
}

fn project(env: &Env, spec: &str) -> std::path::PathBuf {
    let app = shared_dir(env, "app");
    std::fs::write(app.join("kiln.yaml"), spec).unwrap();
    app
}

/// `kiln run --rm --network none ARGS` as `user`.
fn run_none(user: &TestUser, args: &[&str]) -> std::process::Output {
    user.kiln(&[&["run", "--rm", "--network", "none"], args].concat())
}

/// The test's env and an ordinary user with subordinate ids who built [`SPEC`].
fn user_with_image() -> (Env, TestUser) {
    let env = Env::new();
    let app = project(&env, SPEC);
    let user = TestUser::create(true);
    assert_ok(&user.kiln_in(&app, &["build"]));
    (env, user)
}

fn assert_ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", text(out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn an_ordinary_user_builds_and_runs_the_image_root_builds() {
    common::require_root!("useradd, user namespaces");
    let env = Env::new();
    let app = project(&env, SPEC);
    let user = TestUser::create(true);

    let theirs = built_id(&user.kiln_in(&app, &["build"]));
    let ours = built_id(&env.kiln_in("app", &["build"]));
    assert_eq!(
        theirs, ours,
        "a rootless build gives root's image, bit for bit"
    );

    // Inside, the files have their in-image owners; on disk, the user's subordinate ids.
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "none", "rl:1"];
        all.extend_from_slice(args);
        assert_ok(&user.kiln(&all))
    };
    assert_eq!(run(&["stat", "-c", "%u:%g", "/data/f"]), "1000:1000");
    assert_eq!(run(&["ls", "/redo"]), "new");
    assert_eq!(run(&["sh", "-c", "test -e /gone || echo gone"]), "gone");
    let start = user.subid_start.unwrap();
    let map = run(&["cat", "/proc/self/uid_map"]);
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (uid, sub) = (user.uid.to_string(), start.to_string());
    let count = (SUBIDS - 1).to_string();
    assert_eq!(lines, [vec!["0", &uid, "1"], vec!["1", &sub, &count]]);
    let on_disk = common::run(std::process::Command::new("find").args([
        user.store().join("layers").to_str().unwrap(),
        "-path",
        "*/data/f",
        "-printf",
        "%U\n",
    ]));
    assert_eq!(on_disk.trim(), (start + 999).to_string());

    // The same capabilities as root's container: the default set, nothing more.
    let caps = |out: String| {
        out.lines()
            .filter(|l| l.starts_with("Cap"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let status = ["grep", "Cap", "/proc/self/status"];
    let root_caps =
        caps(env.kiln_ok(&[&["run", "--rm", "--network", "none", "rl:1"], &status[..]].concat()));
    assert_eq!(caps(run(&status)), root_caps);
    assert!(!root_caps.is_empty());
}

#[test]
fn without_subordinate_ids_only_the_users_own_id_exists() {
    common::require_root!("useradd, user namespaces");
    let env = Env::new();
    let app = project(&env, SPEC);
    let user = TestUser::create(false);

    let out = user.kiln_in(&app, &["build"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("Invalid argument"), "{said}");
    assert!(
        said.contains("no subordinate ids for you in /etc/subuid"),
        "{said}"
    );
    assert!(said.contains("kiln check"), "{said}");

    // Without another id the same kind of image builds and runs.
    let simple = SPEC.replace(" && chown 1000:1000 /data/f", "");
    std::fs::write(app.join("kiln.yaml"), simple).unwrap();
    assert_ok(&user.kiln_in(&app, &["build"]));
    let id = assert_ok(&run_none(&user, &["rl:1", "id", "-u"]));
    assert_eq!(id, "0");
    let map = assert_ok(&run_none(&user, &["rl:1", "cat", "/proc/self/uid_map"]));
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", &user.uid.to_string(), "1"]
    );
}

#[test]
fn a_limit_an_ordinary_user_cannot_apply_is_an_error_unless_ignored() {
    common::require_root!("useradd, user namespaces");
    let (_env, user) = user_with_image();

    let out = run_none(&user, &["--memory", "64m", "rl:1", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("cannot apply the memory limit"), "{said}");
    assert!(
        said.contains("--ignore-limits") && said.contains("kiln check"),
        "{said}"
    );

    let out = run_none(
        &user,
        &[
            "--memory",
            "64m",
            "--pids-limit",
            "50",
            "--ignore-limits",
            "rl:1",
            "echo",
            "ran",
        ],
    );
    assert_eq!(assert_ok(&out), "ran");
    assert!(
        text(&out).contains("running without the memory, pids limits"),
        "{}",
        text(&out)
    );
    // Nor is a bandwidth limit dropped: it shapes the bridge's veth, which needs root.
    let out = user.kiln(&["run", "--rm", "--network-rate-out", "8mbit", "rl:1", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(
        text(&out).contains("bandwidth limits need root"),
        "{}",
        text(&out)
    );
    // A device would need a node made and a cgroup rule: said plainly, not as a limit.
    let out = run_none(&user, &["--device", "/dev/null:/dev/x", "rl:1", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("devices need root"), "{}", text(&out));
    // Without limits nothing is asked of cgroups.
    assert_eq!(assert_ok(&run_none(&user, &["rl:1", "echo", "ok"])), "ok");
}

#[test]
fn a_users_store_is_its_own() {
    common::require_root!("useradd, user namespaces");
    let (env, user) = user_with_image();
    env.kiln_ok(&["images"]);

    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(user.store()).unwrap();
    assert_eq!(meta.uid(), user.uid);
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);

    let root_store = env.root();
    let out = user.kiln(&["--root", root_store.to_str().unwrap(), "images"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("belongs to another user"),
        "{}",
        text(&out)
    );
    let out = std::process::Command::new(common::kiln_bin())
        .args(["--root", user.store().to_str().unwrap(), "images"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("belongs to another user"),
        "{}",
        text(&out)
    );
}

#[test]
fn an_ordinary_user_runs_detached_containers_and_execs_into_them() {
    common::require_root!("useradd, user namespaces");
    let (_env, user) = user_with_image();

    assert_ok(&user.kiln(&[
        "run",
        "-d",
        "--name",
        "bg",
        "--network",
        "none",
        "rl:1",
        "sleep",
        "600",
    ]));
    assert_eq!(assert_ok(&user.kiln(&["exec", "bg", "id", "-u"])), "0");
    assert_eq!(
        assert_ok(&user.kiln(&["exec", "-u", "1000", "bg", "id", "-u"])),
        "1000"
    );
    // The exec'd process is in the container's namespaces: it sees the container's PID 1.
    let init = assert_ok(&user.kiln(&["exec", "bg", "cat", "/proc/1/cmdline"]));
    assert!(!init.is_empty());
    assert!(assert_ok(&user.kiln(&["ps"])).contains("bg"));
    assert_ok(&user.kiln(&["stop", "-t", "1", "bg"]));
    assert_ok(&user.kiln(&["rm", "bg"]));
    // Housekeeping is the user's too: no host cgroup or bridge is touched.
    assert_ok(&user.kiln(&["gc"]));
    assert!(!assert_ok(&user.kiln(&["ps", "-a"])).contains("bg"));
}

#[test]
fn an_ordinary_users_container_gets_a_terminal_with_it() {
    common::require_root!("useradd, user namespaces");
    let (_env, user) = user_with_image();
    assert_ok(&user.kiln(&["--version"]));
    let script =
        "test -t 0 && test -t 1 && echo on-a-terminal; ls -ln $(tty); read line; echo got-$line";
    let mut command = user.kiln_command();
    command.args([
        "run",
        "--rm",
        "-it",
        "--network",
        "none",
        "rl:1",
        "sh",
        "-c",
        script,
    ]);
    let (ok, output) = common::on_a_terminal(command, b"typed\n");
    assert!(ok, "{output}");
    assert!(output.contains("on-a-terminal"), "{output}");
    // The container's own devpts, its pty owned by root and the tty group (gid 5, which
    // the subordinate range maps), as with root's kiln.
    assert!(
        output.contains(" 0        5 ") && output.contains("/dev/pts/0"),
        "{output}"
    );
    assert!(output.contains("got-typed"), "{output}");
}

#[test]
fn an_id_above_65535_is_refused_with_the_reason() {
    common::require_root!("useradd, user namespaces");
    let (_env, user) = user_with_image();

    let out = run_none(&user, &["-u", "70000", "rl:1", "id"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{said}");
    assert!(said.contains("Invalid argument"), "{said}");
    assert!(
        said.contains("0…65535") && said.contains("root's kiln"),
        "{said}"
    );
}

#[test]
fn an_ordinary_users_login_is_kept_in_their_own_docker_config() {
    common::require_root!("useradd, user namespaces");
    let (_env, user) = user_with_image();
    let server = registry_mock::Server::start(registry_mock::Config {
        auth: registry_mock::AuthMode::Basic,
        users: vec![registry_mock::User::new("alice", "s3cret")],
        anonymous_pull: false,
        ..registry_mock::Config::default()
    })
    .unwrap();
    let host = server.host();
    assert_ok(&user.kiln(&["--version"]));
    let mut login = user
        .kiln_command()
        .args(["login", &host, "-u", "alice", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut login.stdin.take().unwrap(), b"s3cret\n").unwrap();
    let out = login.wait_with_output().unwrap();
    assert_ok(&out);

    // In the user's own ~/.docker/config.json, theirs and private, as docker keeps it.
    let config = user.home.join(".docker/config.json");
    let meta = std::fs::metadata(&config).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.uid(), user.uid);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&config).unwrap().contains(&host));

    // The push (in kiln's user namespace) finds them there.
    let target = format!("{host}/team/rl:1");
    assert_ok(&user.kiln(&["push", "rl:1", &target]));
    assert!(server.tag_digest("team/rl", "1").is_some());
    assert_ok(&user.kiln(&["logout", &host]));
    assert!(!std::fs::read_to_string(&config).unwrap().contains(&host));
}

#[test]
fn an_ordinary_user_pushes_and_pulls() {
    common::require_root!("useradd, user namespaces");
    let env = Env::new();
    let app = project(&env, SPEC);
    let registry = Registry::start(env.dir.path());
    let user = TestUser::create(true);
    let built = built_id(&user.kiln_in(&app, &["build"]));

    let reference = format!("{}/rootless/rl:1", registry.host());
    assert_ok(&user.kiln(&["tag", "rl:1", &reference]));
    assert_ok(&user.kiln(&["push", &reference]));
    let other = user.home.join("other-store");
    let pulled = assert_ok(&user.kiln(&["--root", other.to_str().unwrap(), "pull", &reference]));
    assert_eq!(pulled.lines().last().unwrap(), built);

    // A device node in an image from elsewhere becomes a placeholder, not a failed pull.
    let rootfs = common::busybox_rootfs(&env, "devroot");
    std::fs::create_dir_all(rootfs.join("dev")).unwrap();
    common::run(std::process::Command::new("mknod").args([
        rootfs.join("dev/mydev").to_str().unwrap(),
        "c",
        "1",
        "3",
    ]));
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "devimg"]);
    let with_device = format!("{}/rootless/dev:1", registry.host());
    env.kiln_ok(&["tag", "devimg", &with_device]);
    env.kiln_ok(&["push", &with_device]);
    let out = user.kiln(&["pull", &with_device]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("device node /dev/mydev in the image became an empty file"),
        "{}",
        text(&out)
    );
    let placeholder = common::run(std::process::Command::new("find").args([
        user.store().join("layers").to_str().unwrap(),
        "-path",
        "*/dev/mydev",
        "-type",
        "f",
        "-empty",
    ]));
    assert_eq!(placeholder.lines().count(), 1, "{placeholder}");
}

#[test]
fn an_ordinary_users_network_reaches_out_publishes_ports_and_not_the_hosts_loopback() {
    common::require_root!("useradd, network namespaces");
    common::require("pasta", "passt");
    common::require("ip", "iproute2");
    let env = Env::new();
    let outside = Outside::new(&env, 1, None);
    let url = format!("http://{}:8080/", outside.address);
    // A build step on the default network fetches from outside.
    let spec = format!("{SPEC}  - run: wget -qO /fetched {url}\n");
    let app = project(&env, &spec);
    let user = TestUser::create(true);
    assert_ok(&user.kiln_in(&app, &["build"]));
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "rl:1"];
        all.extend_from_slice(args);
        user.kiln(&all)
    };
    assert_eq!(assert_ok(&run(&["cat", "/fetched"])), "outside-page");
    let resolv = assert_ok(&run(&["cat", "/etc/resolv.conf"]));
    assert!(
        resolv.lines().any(|l| l == "nameserver 169.254.1.1"),
        "{resolv}"
    );

    // A page published on the host's 127.0.0.1 answers there.
    let port = common::free_port().to_string();
    let publish = format!("127.0.0.1:{port}:80");
    assert_ok(&user.kiln(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &publish,
        "rl:1",
        "sh",
        "-c",
        "mkdir /w && echo rootless-page > /w/index.html && exec httpd -f -p 80 -h /w",
    ]));
    let page = (0..100).find_map(|_| {
        let out = std::process::Command::new("busybox")
            .args(["wget", "-qO-", &format!("http://127.0.0.1:{port}/")])
            .output()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    assert_eq!(page.as_deref(), Some("rootless-page"));
    // The mapping is shown as for root's containers; the default network is pasta's.
    assert_eq!(
        assert_ok(&user.kiln(&["port", "web"])),
        format!("80/tcp -> 127.0.0.1:{port}")
    );
    let networks = assert_ok(&user.kiln(&["network", "ls"]));
    assert!(
        networks
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["bridge", "bridge", "pasta", "false"]),
        "{networks}"
    );

    // A service only on the host's loopback is out of reach (pasta forwards nothing of
    // the host into the container, and maps no gateway address to it), while the same
    // fetch to the outside works.
    let secret_port = common::free_port().to_string();
    let www = env.write("secret/index.html", "secret\n");
    let secret = KillOnDrop(
        std::process::Command::new("busybox")
            .args([
                "httpd",
                "-f",
                "-p",
                &format!("127.0.0.1:{secret_port}"),
                "-h",
            ])
            .arg(www.parent().unwrap())
            .spawn()
            .unwrap(),
    );
    // (busybox's `wget -T` crashes; `timeout` bounds it instead.)
    let probe = format!(
        "timeout 2 wget -qO- http://127.0.0.1:{secret_port}/ || timeout 2 wget -qO- http://$(ip route | awk '/default/ {{print $3}}'):{secret_port}/ || echo unreachable; timeout 5 wget -qO- {url}"
    );
    let said = assert_ok(&run(&["sh", "-c", &probe]));
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        ["unreachable", "outside-page"]
    );
    // The same from a build step, which gets its own pasta the same way.
    let spec = format!(
        "{}  - run: |\n      ({probe}) 2>/dev/null > /probed\n",
        SPEC.replace("image: rl:1", "image: rl:probe")
    );
    let probe_app = shared_dir(&env, "probe");
    std::fs::write(probe_app.join("kiln.yaml"), spec).unwrap();
    assert_ok(&user.kiln_in(&probe_app, &["build"]));
    drop(secret);
    let probed = assert_ok(&run_none(&user, &["rl:probe", "cat", "/probed"]));
    assert_eq!(
        probed.lines().collect::<Vec<_>>(),
        ["unreachable", "outside-page"],
        "{probed}"
    );

    // A runner killed outright leaves its pasta (Debian 12's outlives the namespace,
    // holding the port): `kiln rm` ends it.
    common::run(std::process::Command::new("pkill").args([
        "-KILL",
        "-u",
        &user.name,
        "-f",
        "container-monitor",
    ]));
    std::thread::sleep(std::time::Duration::from_millis(200));
    let pastas = || {
        let out = std::process::Command::new("pgrep")
            .args(["-u", &user.name, "-f", "^pasta "])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert!(!pastas().is_empty(), "the killed runner's pasta runs on");
    assert_ok(&user.kiln(&["rm", "-f", "web"]));
    let left = pastas();
    assert!(left.is_empty(), "pasta left running: {left}");
}

/// A child process killed when the test ends, also when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
