//! `kiln run` end to end: the real binary, real namespaces, cgroups, capabilities.

mod common;

use std::process::Command;

use common::{require, text, Env};

/// A busybox image in the env's store, named `bb`.
fn busybox_image(env: &Env) {
    let root = common::busybox_rootfs(env, "bb");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nwww:x:33:\n").unwrap();
    env.kiln_ok(&["import", root.to_str().unwrap(), "-t", "bb"]);
}

fn kiln_run(env: &Env, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    let out = env.kiln(&all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("{key} missing in {status}"))
}

/// Docker's default capability set as a mask.
const DEFAULT_CAPS: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 10)
    | (1 << 13)
    | (1 << 18)
    | (1 << 27)
    | (1 << 29)
    | (1 << 31);

fn caps(status: &str) -> [u64; 5] {
    ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
        .map(|k| u64::from_str_radix(&status_field(status, k), 16).unwrap())
}

#[test]
fn capability_sets_are_exact() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    // --privileged gives every capability kiln itself holds (a sandboxed root may lack some).
    let all = caps(&std::fs::read_to_string("/proc/self/status").unwrap())[3];

    let (code, out, err) = kiln_run(&env, &["bb", "cat", "/proc/self/status"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(caps(&out), [0, DEFAULT_CAPS, DEFAULT_CAPS, DEFAULT_CAPS, 0]);
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
    assert_eq!(status_field(&out, "Seccomp"), "2");

    let (code, out, err) = kiln_run(
        &env,
        &[
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_BIND_SERVICE",
            "bb",
            "cat",
            "/proc/self/status",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(caps(&out), [0, 1 << 10, 1 << 10, 1 << 10, 0]);

    let (code, out, err) = kiln_run(&env, &["--privileged", "bb", "cat", "/proc/self/status"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(caps(&out), [0, all, all, all, 0]);
    assert_eq!(status_field(&out, "Seccomp"), "0");
    assert!(
        err.contains("--privileged"),
        "privileged must be loud: {err}"
    );
}

#[test]
fn limits_are_enforced_and_reported() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    // A memory hog: tail buffers an endless line until the limit stops it.
    let (code, _, err) = kiln_run(&env, &["--memory", "32m", "bb", "tail", "/dev/zero"]);
    assert_eq!(code, 137, "{err}");
    assert!(
        err.contains("killed: out of memory (limit 32 MiB)"),
        "{err}"
    );
    // A fork loop stops at the pids limit, and the same loop fits under a higher one.
    let fork_40 = "for i in $(seq 40); do sleep 5 & done";
    let (code, _, err) = kiln_run(&env, &["--pids-limit", "16", "bb", "sh", "-c", fork_40]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("can't fork"), "{err}");
    let (code, _, err) = kiln_run(&env, &["--pids-limit", "64", "bb", "sh", "-c", fork_40]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_container_sees_only_what_it_should() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let (code, out, err) = kiln_run(&env, &["bb", "ls", "/proc/self/fd"]);
    assert_eq!(code, 0, "{err}");
    let fds: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        fds,
        ["0", "1", "2", "3"],
        "only stdio and ls's own directory fd"
    );
    // Masked paths (those this kernel has): files read empty, directories list empty.
    let masked =
        "cat /proc/keys /proc/timer_list | wc -c; ls -A /proc/acpi /sys/firmware | grep -v ':$' | grep -c .";
    let (_, out, err) = kiln_run(&env, &["bb", "sh", "-c", masked]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "0"],
        "{err}"
    );
    let (_, out, _) = kiln_run(&env, &["--hostname", "box1", "bb", "hostname"]);
    assert_eq!(out.trim(), "box1");
    let (_, out, _) = kiln_run(&env, &["--network", "none", "bb", "ls", "/sys/class/net"]);
    assert_eq!(out.trim(), "lo");
    let (code, _, _) = kiln_run(
        &env,
        &[
            "--read-only",
            "--tmpfs",
            "/tmp",
            "bb",
            "sh",
            "-c",
            "echo x > /tmp/ok && ! echo x > /nope",
        ],
    );
    assert_eq!(code, 0);
}

#[test]
fn exit_codes_and_signals_propagate() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    assert_eq!(kiln_run(&env, &["bb", "sh", "-c", "exit 7"]).0, 7);
    assert_eq!(kiln_run(&env, &["bb", "sh", "-c", "kill -9 $$"]).0, 137);
    let (code, _, err) = kiln_run(&env, &["bb", "/no/such"]);
    assert_eq!(code, 127, "{err}");
    let (code, _, err) = kiln_run(&env, &["bb", "/etc/passwd"]);
    assert_eq!(code, 126, "{err}");
    // A background process left by the command is reaped by the init, and the run ends.
    let (code, _, err) = kiln_run(&env, &["bb", "sh", "-c", "sleep 0.2 & exit 0"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_nothing() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let before = common::kiln_mounts(&env);
    for (args, needle) in [
        (vec!["nope"], "no such image: nope"),
        (
            vec!["--cap-add", "CAP_NET_BIND", "bb", "true"],
            "NET_BIND_SERVICE",
        ),
        (vec!["--memory", "64X", "bb", "true"], "64X"),
        (vec!["--user", "nobody", "bb", "true"], "nobody"),
        (vec!["-v", "/no/such/dir:/x", "bb", "true"], "/no/such/dir"),
    ] {
        let (code, _, err) = kiln_run(&env, &args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
    }
    assert_eq!(common::kiln_mounts(&env), before);
    assert_eq!(common::container_dirs(&env.root()), Vec::<String>::new());
}

#[test]
fn kept_containers_are_listed_and_removed() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    env.kiln_ok(&["run", "--name", "kept", "bb", "true"]);
    let ps: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["ps", "-a", "--json"])).unwrap();
    assert_eq!(ps[0]["name"], "kept");
    assert_eq!(ps[0]["state"], "exited");
    assert_eq!(ps[0]["exit_code"], 0);
    assert!(ps[0]["status"].as_str().unwrap().starts_with("Exited (0) "));
    env.kiln_ok(&["rm", "kept"]);
    assert_eq!(env.kiln_ok(&["ps", "-a", "--json"]), "[]");
}

#[test]
fn many_run_rm_cycles_leave_nothing_behind() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let before = common::kiln_mounts(&env);
    for _ in 0..200 {
        let (code, _, err) = kiln_run(&env, &["--memory", "64m", "bb", "true"]);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(common::kiln_mounts(&env), before);
    assert_eq!(common::container_dirs(&env.root()), Vec::<String>::new());
    for ctrl in ["memory", "pids", "cpu"] {
        let kiln = std::path::Path::new("/sys/fs/cgroup")
            .join(ctrl)
            .join("kiln");
        // `kiln run` containers have 64-hex ids. Other kiln tests (and other stores) on the
        // machine may run containers beside this one: theirs hold processes or are gone
        // within moments, while a cgroup this test left stays, empty.
        let is_run_container = |n: &str| n.strip_prefix("kiln-").is_some_and(|id| id.len() == 64);
        let abandoned = || -> Vec<String> {
            std::fs::read_dir(&kiln)
                .map(|d| {
                    d.flatten()
                        .filter(|e| is_run_container(&e.file_name().to_string_lossy()))
                        .filter(|e| {
                            std::fs::read_to_string(e.path().join("cgroup.procs"))
                                .is_ok_and(|procs| procs.trim().is_empty())
                        })
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let first = abandoned();
        std::thread::sleep(std::time::Duration::from_secs(if first.is_empty() {
            0
        } else {
            3
        }));
        let left: Vec<String> = abandoned()
            .into_iter()
            .filter(|n| first.contains(n))
            .collect();
        assert!(
            left.is_empty(),
            "cgroups left in {}: {left:?}",
            kiln.display()
        );
    }
}

#[test]
fn runc_runs_a_bundle_with_the_same_capabilities() {
    common::require_root!("namespaces, overlayfs, cgroups");
    require("runc", "runc");
    let env = Env::new();
    busybox_image(&env);
    let (_, ours, _) = kiln_run(
        &env,
        &[
            "--cap-drop",
            "ALL",
            "--cap-add",
            "CHOWN",
            "bb",
            "cat",
            "/proc/self/status",
        ],
    );
    let bundle = env.path("bundle");
    env.kiln_ok(&[
        "bundle",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "CHOWN",
        "bb",
        bundle.to_str().unwrap(),
        "cat",
        "/proc/self/status",
    ]);
    let name = format!("kiln-test-{}", std::process::id());
    let out = Command::new("runc")
        .args(["run", "-b"])
        .arg(&bundle)
        .arg(&name)
        .output()
        .unwrap();
    let _ = Command::new("runc").args(["delete", "-f", &name]).output();
    assert!(out.status.success(), "{}", text(&out));
    let theirs = String::from_utf8_lossy(&out.stdout);
    assert_eq!(caps(&theirs), caps(&ours));
    assert_eq!(status_field(&theirs, "NoNewPrivs"), "1");
}

/// `kiln bundle IMAGE DIR` from a project folder: a relative DIR is the one below the
/// working directory, though the rootfs is written by a thread that has `chdir`ed to `/`.
#[test]
fn a_bundle_written_to_a_relative_dir_lands_below_the_working_directory() {
    common::require_root!("namespaces, overlayfs");
    let env = Env::new();
    busybox_image(&env);
    std::fs::create_dir(env.path("project")).unwrap();
    let out = env
        .command()
        .current_dir(env.path("project"))
        .args(["bundle", "bb", "out/bundle", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let bundle = env.path("project/out/bundle");
    assert!(bundle.join("config.json").is_file(), "{}", text(&out));
    assert!(
        bundle.join("rootfs/bin/busybox").is_file(),
        "{}",
        text(&out)
    );
    assert!(!std::path::Path::new("/out/bundle").exists());
}

/// CVE-2019-5736: the container must not reach the runtime's binary on the host. kiln's
/// init (PID 1) is kiln's own process image, so `/proc/1/exe` would be kiln's binary; the
/// init is not dumpable, so the container's root cannot open it (nor `/proc/1/mem`).
#[test]
fn the_container_cannot_open_kilns_binary_through_its_init() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    // `head -c 0` only opens the file; opening needs the access a dumpable init would give.
    let probe = "for f in /proc/1/exe /proc/1/mem /proc/1/environ; do \
                 head -c 0 $f 2>/dev/null && echo open $f; done; \
                 ls /proc/1/root/ > /dev/null 2>&1 && echo open /proc/1/root; \
                 echo done";
    let (code, out, err) = kiln_run(&env, &["bb", "sh", "-c", probe]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "done", "the container reached its init: {out}");
    // The command itself stays an ordinary process: its own /proc/self/exe works.
    let (code, out, err) = kiln_run(
        &env,
        &[
            "bb",
            "sh",
            "-c",
            "cat /proc/self/exe > /dev/null && echo ok",
        ],
    );
    assert_eq!((code, out.trim()), (0, "ok"), "{err}");
}

/// CVE-2022-0492: a container that can mount cgroupfs can write `release_agent` and run a
/// host command. kiln mounts no cgroupfs into containers, and a default container cannot
/// mount one (no CAP_SYS_ADMIN; seccomp and the mount namespace's locked mounts besides).
#[test]
fn the_container_has_no_cgroupfs_and_cannot_mount_one() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let probe = "grep -c cgroup /proc/self/mounts; \
                 mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg 2>/dev/null && echo mounted; \
                 mount -t cgroup2 none /tmp/cg 2>/dev/null && echo mounted2; \
                 echo done";
    let (_, out, err) = kiln_run(&env, &["--tmpfs", "/tmp", "bb", "sh", "-c", probe]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, ["0", "done"], "{out}{err}");
}

#[test]
fn env_files_and_extra_hosts_reach_the_container() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    // As a user types it: a relative env file, from the project folder.
    env.write(
        "app/app.env",
        "# database\nDB_HOST=db\nGREETING=hello world\nFROM_KILN\nDB_PORT=1\n",
    );
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        env.command()
            .current_dir(env.path("app"))
            .env("FROM_KILN", "inherited")
            .args(&all)
            .output()
            .unwrap()
    };
    let out = run(&[
        "--env-file",
        "app.env",
        "-e",
        "DB_PORT=5432",
        "--add-host",
        "db:10.0.0.5",
        "--add-host",
        "db6:[2001:db8::5]",
        "bb",
        "sh",
        "-c",
        "echo \"$DB_HOST|$GREETING|$FROM_KILN|$DB_PORT\"; cat /etc/hosts",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(
        stdout.starts_with("db|hello world|inherited|5432\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\n10.0.0.5\tdb\n2001:db8::5\tdb6\n"),
        "{stdout}"
    );
    // Mistakes are named, with the line of the file, before anything starts.
    env.write("app/bad.env", "OK=1\nMY VAR=2\n");
    let out = run(&["--env-file", "bad.env", "bb", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad.env:2: the variable name \"MY VAR\" contains whitespace"),
        "{err}"
    );
    let out = run(&["--add-host", "db:10.0.0.999", "bb", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--add-host db:10.0.0.999: \"10.0.0.999\" is not an IP address"),
        "{err}"
    );
    let out = run(&["--env-file", "missing.env", "bb", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out));
    assert_eq!(common::container_dirs(&env.root()), Vec::<String>::new());
}
