//! Isolation attacked from the inside (SECURITY.md G19–G22, issue 10): the same probes run
//! in a default build step and in a default `kiln run` container, and every one of them
//! must be refused. The probes are a small static C program (`tests/probes/probe.c`, built
//! here with `gcc -static`) copied into a busybox image.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{require, run, text, Env, LoopDevice};

/// Builds the probe program into `dir/probe`.
fn build_probe(dir: &Path) -> PathBuf {
    require("gcc", "gcc libc6-dev");
    std::fs::create_dir_all(dir).unwrap();
    let out = dir.join("probe");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probes/probe.c");
    run(Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(source));
    out
}

/// A busybox rootfs with the files a real image has (`/etc/passwd`, `/etc/hosts`,
/// `/etc/resolv.conf` as regular files, so steps get the host's bound over them).
fn probe_rootfs(env: &Env) -> PathBuf {
    let root = common::busybox_rootfs(env, "rootfs");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(root.join("etc/resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
    root
}

/// [`probe_rootfs`] imported as image `name`.
fn import_probe_rootfs(env: &Env, name: &str) -> PathBuf {
    let rootfs = probe_rootfs(env);
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", name]);
    rootfs
}

/// The probes every default step and container must refuse. (A step also may not write
/// the host's `/etc/hosts` and `/etc/resolv.conf` bound into it; a container's are its own
/// copies, writable as with Docker.)
fn attack_args(dev: &LoopDevice, loopback_port: u16) -> String {
    format!(
        "status mount remount /etc/resolv.conf remount /etc/hosts handle /etc/resolv.conf \
         proc syscalls block {} {} pids 2100 localnet {loopback_port}",
        dev.major, dev.minor
    )
}

/// A service bound to the host's 127.0.0.1, which the `localnet` probe must not reach
/// (the kernel answers its SYNs from the listen queue; nothing needs to accept).
fn host_loopback_service() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Builds image `probe` whose last step runs the attacks and keeps their output in
/// `/step-results.txt`; `extra` is more spec text for that step.
fn build_probe_image(env: &Env, dev: &LoopDevice, loopback_port: u16, extra: &str) -> String {
    let rootfs = probe_rootfs(env);
    let probes = build_probe(&env.path("probes"));
    let spec = format!(
        "image: probe\n\
         from: rootfs:{rootfs}\n\
         contexts: {{ probes: {probes} }}\n\
         steps:\n\
         \x20 - copy: probe\n\
         \x20   from: probes\n\
         \x20   to: /probe\n\
         \x20   mode: \"0755\"\n\
         \x20 - run: /probe {args} write /etc/hosts write /etc/resolv.conf > /step-results.txt 2>&1\n{extra}",
        rootfs = rootfs.display(),
        probes = probes.parent().unwrap().display(),
        args = attack_args(dev, loopback_port),
    );
    let spec_path = env.write("ctx/kiln.yaml", &spec);
    let out = env.kiln(&["build", "-f", spec_path.to_str().unwrap()]);
    assert!(out.status.success(), "build failed: {}", text(&out));
    text(&out)
}

fn run_in_container(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    let out = env.kiln(&all);
    assert!(out.status.success(), "kiln {all:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every probe line that says ALLOWED, and the pids probe's count.
fn assert_all_refused(place: &str, results: &str) {
    let allowed: Vec<&str> = results.lines().filter(|l| l.contains("ALLOWED")).collect();
    assert!(
        allowed.is_empty(),
        "{place}: attacks that worked:\n{}\n\nall results:\n{results}",
        allowed.join("\n")
    );
    let pids: u32 = results
        .lines()
        .find_map(|l| l.strip_prefix("pids: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{place}: no pids result in\n{results}"));
    assert!(
        pids < 2048,
        "{place}: {pids} processes forked, over the default pids limit"
    );
    for must in [
        // Both on the bridge network; the control says the probe would have seen an answer.
        "localnet-control: answered",
        "localnet: refused",
        "mount: refused",
        "open_by_handle_at: refused",
        "bpf: refused",
    ] {
        assert!(results.contains(must), "{place}: no {must:?} in\n{results}");
    }
}

fn status_lines(results: &str) -> Vec<&str> {
    results
        .lines()
        .filter(|l| l.starts_with("status "))
        .collect()
}

#[test]
fn a_default_step_and_a_default_container_refuse_every_attack() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    let dev = LoopDevice::new(&env);
    let (_service, port) = host_loopback_service();
    build_probe_image(&env, &dev, port, "");
    let step = run_in_container(&env, &["probe", "cat", "/step-results.txt"]);
    assert_all_refused("build step", &step);
    let args = attack_args(&dev, port);
    let mut argv = vec!["probe", "/probe"];
    argv.extend(args.split(' '));
    let container = run_in_container(&env, &argv);
    assert_all_refused("container", &container);
    // G19: a step is confined exactly like a container.
    let (s, c) = (status_lines(&step), status_lines(&container));
    assert_eq!(s.len(), 8, "{step}");
    assert_eq!(s, c, "a step and a container differ");
    assert!(s.contains(&"status NoNewPrivs:\t1"), "{step}");
    assert!(s.contains(&"status Seccomp:\t2"), "{step}");
    // The host's loop device is untouched: its first bytes are still the test's.
    let data = std::fs::read(&dev.path).unwrap();
    assert!(data[..4096].iter().all(|b| *b == 0x5a));
}

#[test]
fn a_device_node_shipped_in_a_layer_cannot_be_opened() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    let dev = LoopDevice::new(&env);
    let rootfs = probe_rootfs(&env);
    let probes = build_probe(&env.path("probes"));
    std::fs::copy(&probes, rootfs.join("probe")).unwrap();
    // A world-writable node for the host's loop device and one for /dev/kmsg.
    for (name, kind, major, minor) in [
        (
            "shipped-blk",
            nix::sys::stat::SFlag::S_IFBLK,
            dev.major,
            dev.minor,
        ),
        ("shipped-kmsg", nix::sys::stat::SFlag::S_IFCHR, 1, 11),
    ] {
        let path = rootfs.join(name);
        nix::sys::stat::mknod(
            &path,
            kind,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
    }
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "shipped"]);
    let probe = ["/probe", "open", "/shipped-blk", "open", "/shipped-kmsg"];
    for extra in [
        &[][..],
        &["--cap-drop", "ALL", "-u", "65534"][..],
        &[
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
        ][..],
    ] {
        let mut args = extra.to_vec();
        args.push("shipped");
        args.extend(probe);
        let out = run_in_container(&env, &args);
        assert!(!out.contains("ALLOWED"), "{extra:?}:\n{out}");
        assert_eq!(out.matches("refused").count(), 2, "{extra:?}:\n{out}");
    }
    // And from a build step on that image.
    let spec = env.write(
        "ctx/kiln.yaml",
        "from: shipped\nsteps:\n  - run: /probe open /shipped-blk open /shipped-kmsg > /r.txt\n",
    );
    env.kiln_ok(&["build", "-f", spec.to_str().unwrap(), "-t", "shipped2"]);
    let out = run_in_container(&env, &["shipped2", "cat", "/r.txt"]);
    assert!(!out.contains("ALLOWED"), "{out}");
    assert_eq!(out.matches("refused").count(), 2, "{out}");
    let kinds: Vec<bool> = ["shipped-blk", "shipped-kmsg"]
        .iter()
        .map(|n| {
            let t = std::fs::symlink_metadata(rootfs.join(n))
                .unwrap()
                .file_type();
            t.is_block_device() || t.is_char_device()
        })
        .collect();
    assert_eq!(kinds, [true, true]);
}

#[test]
fn a_step_that_asks_for_more_gets_it_and_says_so() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    let rootfs = probe_rootfs(&env);
    let spec = format!(
        "from: rootfs:{}\n\
         steps:\n\
         \x20 - run: mkdir /m && mount -t tmpfs none /m && echo mounted > /admin.txt; umount /m; rmdir /m\n\
         \x20   capabilities: {{ add: [SYS_ADMIN] }}\n\
         \x20 - run: grep CapEff /proc/self/status > /priv.txt\n\
         \x20   privileged: true\n\
         \x20 - run: grep CapEff /proc/self/status > /default.txt\n",
        rootfs.display()
    );
    let spec = env.write("ctx/kiln.yaml", &spec);
    let out = env.kiln(&["build", "-f", spec.to_str().unwrap(), "-t", "more"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("[cap-add SYS_ADMIN]"), "{log}");
    assert!(log.contains("[privileged]"), "{log}");
    let files = run_in_container(
        &env,
        &["more", "cat", "/admin.txt", "/priv.txt", "/default.txt"],
    );
    assert!(files.starts_with("mounted\n"), "{files}");
    let eff: Vec<u64> = files
        .lines()
        .filter_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .collect();
    assert_eq!(eff.len(), 2, "{files}");
    assert!(eff[0] & (1 << 21) != 0, "privileged step lacks SYS_ADMIN");
    assert_eq!(eff[1], 0xa80425fb, "a default step has Docker's set");
}

#[test]
fn step_limits_come_from_the_spec_and_the_command_line() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    let dev = LoopDevice::new(&env);
    let _ = dev;
    let rootfs = probe_rootfs(&env);
    let probes = build_probe(&env.path("probes"));
    let spec = format!(
        "from: rootfs:{}\n\
         contexts: {{ probes: {} }}\n\
         steps:\n\
         \x20 - copy: probe\n\
         \x20   from: probes\n\
         \x20   to: /probe\n\
         \x20   mode: \"0755\"\n\
         \x20 - run: /probe pids 200 > /flag.txt\n\
         \x20 - run: /probe pids 200 > /spec.txt\n\
         \x20   resources: {{ pids: 20 }}\n",
        rootfs.display(),
        probes.parent().unwrap().display()
    );
    let spec = env.write("ctx/kiln.yaml", &spec);
    let spec = spec.to_str().unwrap();
    env.kiln_ok(&["build", "-f", spec, "--pids-limit", "50", "-t", "lim"]);
    let out = run_in_container(&env, &["lim", "cat", "/flag.txt", "/spec.txt"]);
    let counts: Vec<u32> = out
        .lines()
        .filter_map(|l| l.strip_prefix("pids: "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    // The probe itself is one of the processes.
    assert_eq!(counts, [49, 19], "{out}");
}

/// Runs `kiln run` with stdout appended to a host file that already holds a secret; the
/// container tries to read and truncate that file through `/proc/self/fd/1`.
#[test]
fn a_container_cannot_reach_the_file_or_terminal_kilns_output_goes_to() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    import_probe_rootfs(&env, "bb");
    let log = env.path("out.log");
    std::fs::write(&log, "SECRET-FROM-THE-HOST\n").unwrap();
    let file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let script = "ls -l /proc/self/fd/ | grep -o ' [012] -> .*'; \
                  (dd if=/proc/self/fd/1 bs=64 count=1 iflag=nonblock 2>/dev/null || true) | od -c | head -2; \
                  : > /proc/self/fd/1; echo done";
    let status = env
        .command()
        .args(["run", "--rm", "bb", "sh", "-c", script])
        .stdout(Stdio::from(file))
        .status()
        .unwrap();
    assert!(status.success());
    let after = std::fs::read_to_string(&log).unwrap();
    assert!(
        after.starts_with("SECRET-FROM-THE-HOST\n"),
        "the host file was truncated: {after:?}"
    );
    assert_eq!(
        after.matches("SECRET").count(),
        1,
        "the container read the host file: {after}"
    );
    assert!(after.contains(" 1 -> pipe:"), "{after}");
    assert!(after.contains("done"), "{after}");
    assert!(!after.contains(&log.display().to_string()), "{after}");
}

/// The same with kiln on a terminal: without `-t` the container must not be able to
/// change the terminal's settings (`stty -echo` through fd 1).
#[test]
fn a_container_without_a_tty_cannot_change_kilns_terminal() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    import_probe_rootfs(&env, "bb");
    let pty = nix::pty::openpty(None, None).unwrap();
    let before = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    assert!(before
        .local_flags
        .contains(nix::sys::termios::LocalFlags::ECHO));
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    let status = env
        .command()
        .args([
            "run",
            "--rm",
            "bb",
            "sh",
            "-c",
            "stty -echo raw <&1; stty -F /proc/self/fd/1 -echo; true",
        ])
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .status()
        .unwrap();
    assert!(status.success());
    let after = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    assert!(
        after
            .local_flags
            .contains(nix::sys::termios::LocalFlags::ECHO),
        "the container turned the host terminal's echo off"
    );
}

/// `kiln run img yes | head -1` ends: when kiln's output is closed, the container's
/// writes fail as if it wrote there itself. And large output arrives whole.
#[test]
fn output_through_the_relay_is_complete_and_a_closed_reader_stops_the_writer() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    import_probe_rootfs(&env, "bb");
    let out = env.kiln(&[
        "run",
        "--rm",
        "bb",
        "sh",
        "-c",
        "head -c 50000000 /dev/zero; echo end >&2",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout.len(), 50_000_000);
    assert!(String::from_utf8_lossy(&out.stderr).contains("end"));
    let head = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 20 {} --root {} run --rm bb yes | head -1",
            env!("CARGO_BIN_EXE_kiln"),
            env.root().display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout), "y\n");
    // kiln itself is not killed by the closed pipe (it keeps SIGPIPE's default): the
    // container's command is, kiln exits with its code and leaves nothing behind.
    let mut kiln = env
        .command()
        .args(["run", "--rm", "bb", "yes"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 2];
    use std::io::Read;
    kiln.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let status = kiln.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + 13),
        "{status:?}: yes ends by SIGPIPE"
    );
    assert_eq!(common::container_dirs(&env.root()), Vec::<String>::new());
    // The other way round: a command that does not read its stdin ends, and kiln copying
    // more of it meets a closed pipe.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "yes | timeout 20 {} --root {} run --rm -i bb true; echo \"kiln $?\"",
            env!("CARGO_BIN_EXE_kiln"),
            env.root().display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "kiln 0\n",
        "{}",
        text(&out)
    );
    assert_eq!(common::container_dirs(&env.root()), Vec::<String>::new());
    // -i passes stdin through and ends it.
    let mut child = env
        .command()
        .args(["run", "--rm", "-i", "bb", "wc", "-c"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "6");
}

/// G22: run settings that grant privileges apply (and are named) for an image built here;
/// for an image from elsewhere they are refused unless `--allow-image-privileges`, while
/// settings that restrict always apply.
#[test]
fn image_run_settings_grant_only_for_images_built_here() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    let rootfs = probe_rootfs(&env);
    let shared = env.path("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("host-file"), "from the host\n").unwrap();
    let spec = format!(
        "image: granted\n\
         from: rootfs:{}\n\
         run:\n\
         \x20 privileged: true\n\
         \x20 capabilities: {{ add: [NET_ADMIN], drop: [MKNOD] }}\n\
         \x20 mounts: [{{ source: {}, target: /host }}]\n\
         \x20 network: host\n\
         \x20 pids: 10\n",
        rootfs.display(),
        shared.display()
    );
    let spec = env.write("ctx/kiln.yaml", &spec);
    env.kiln_ok(&["build", "-f", spec.to_str().unwrap()]);
    let probe = [
        "granted",
        "sh",
        "-c",
        "grep CapEff /proc/self/status; cat /host/host-file 2>&1; \
         (for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 1 & done; wait) 2>&1 | grep -c 'can.t fork' ",
    ];
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&probe);
        let out = env.kiln(&args);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cap_eff = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap_or_else(|| panic!("no CapEff in {out}"))
    };
    // Built here: applied, and each grant named.
    let (out, err) = run(&[]);
    for grant in [
        "grant: privileged",
        "grant: cap-add NET_ADMIN",
        "grant: mount",
        "grant: network host",
    ] {
        assert!(err.contains(grant), "{grant} not named: {err}");
    }
    assert!(cap_eff(&out) & (1 << 21) != 0, "{out}");
    assert!(out.contains("from the host"), "{out}");
    // From elsewhere: the store's record of where the settings came from is gone, as for
    // an image that arrives with settings of its own.
    let index_path = env.root().join("index.json");
    let index = std::fs::read_to_string(&index_path).unwrap();
    assert!(index.contains("\"dev.kiln.origin\""), "{index}");
    let mut doc: serde_json::Value = serde_json::from_str(&index).unwrap();
    for m in doc["manifests"].as_array_mut().unwrap() {
        m["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("dev.kiln.origin");
    }
    std::fs::write(&index_path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (out, err) = run(&[]);
    assert!(err.contains("refused"), "{err}");
    for item in ["privileged", "cap-add NET_ADMIN", "mount ", "network host"] {
        assert!(err.contains(item), "{item} not named as refused: {err}");
    }
    let eff = cap_eff(&out);
    assert_eq!(
        eff,
        0xa80425fb & !(1 << 27),
        "default caps minus MKNOD: {out}"
    );
    assert!(!out.contains("from the host"), "{out}");
    // The pids limit (a restriction) still holds: some of the 12 sleeps could not fork.
    let failed: u32 = out.lines().last().unwrap().trim().parse().unwrap();
    assert!(failed > 0, "pids: 10 was not applied: {out}");
    // The user may allow them.
    let (out, err) = run(&["--allow-image-privileges"]);
    assert!(err.contains("grant: privileged"), "{err}");
    assert!(out.contains("from the host"), "{out}");
}

/// The OOM killer taking a child of the command is a warning; the command's own status
/// stands.
#[test]
fn an_oom_killed_child_is_a_warning_not_the_containers_death() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    import_probe_rootfs(&env, "bb");
    let out = env.kiln(&[
        "run",
        "--rm",
        "--memory",
        "32m",
        "bb",
        "sh",
        "-c",
        "tail /dev/zero; echo survived; exit 3",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("survived"));
    assert!(
        err.contains("warning: a process in the container was killed: out of memory"),
        "{err}"
    );
    assert!(!err.contains("kiln: killed: out of memory"), "{err}");
}

/// `--security-opt seccomp=FILE` loads a Docker-format profile (relative to the cwd); a bad
/// profile is an error that names the field, before anything starts.
#[test]
fn a_docker_format_seccomp_profile_is_loaded_from_a_file() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    import_probe_rootfs(&env, "bb");
    env.write(
        "cwd/deny-mkdir.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
              {"names": ["mkdir", "mkdirat", "chown32"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]}"#,
    );
    let out = env
        .command()
        .current_dir(env.path("cwd"))
        .args([
            "run",
            "--rm",
            "--security-opt",
            "seccomp=deny-mkdir.json",
            "bb",
            "sh",
            "-c",
            "mkdir /made || echo refused; touch /file && echo touched",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout.contains("refused") && stdout.contains("touched"),
        "{stdout}"
    );
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(
        stderr.contains("1 syscalls this machine does not have"),
        "{stderr}"
    );
    env.write(
        "cwd/bad.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_MAYBE"}]}"#,
    );
    let out = env
        .command()
        .current_dir(env.path("cwd"))
        .args([
            "run",
            "--rm",
            "--security-opt",
            "seccomp=bad.json",
            "bb",
            "true",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("syscalls[0].action"), "{err}");
    assert_eq!(common::container_dirs(&env.root()), Vec::<String>::new());
}

/// A step over its memory limit is OOM-killed and the build says so, with the remedy.
#[test]
fn a_step_over_its_memory_limit_fails_as_out_of_memory() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    let rootfs = probe_rootfs(&env);
    let spec = format!(
        "from: rootfs:{}\nsteps:\n  - run: tail /dev/zero\n    resources: {{ memory: 32m }}\n",
        rootfs.display()
    );
    let spec = env.write("ctx/kiln.yaml", &spec);
    let out = env.kiln(&["build", "-f", spec.to_str().unwrap(), "-t", "hog"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    assert!(err.contains("failed: killed: out of memory"), "{err}");
    assert!(err.contains("resources: { memory"), "{err}");
}
