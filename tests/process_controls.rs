//! `kiln run --ulimit`, `--shm-size`, `--sysctl`, `--device` and `--init` (issue 14), and
//! their `run:` keys with `env_file:` and `extra_hosts:`: each applied in a real container,
//! each bad value refused with the flag named, and the attacks they could open tried from
//! inside (SECURITY.md rules 12 and 15: sysctls and devices never reach the host beyond
//! what was given, and an image's stored settings never grant a device).

mod common;

use std::process::Output;

use common::{text, Env, LoopDevice};

/// A store with busybox imported as `bb`.
fn busybox_env() -> Env {
    let env = Env::new();
    let rootfs = common::busybox_rootfs(&env, "rootfs");
    env.kiln_ok(&["import", rootfs.to_str().unwrap(), "-t", "bb"]);
    env
}

/// `kiln run --rm FLAGS... bb sh -c SCRIPT`.
fn run_sh(env: &Env, flags: &[&str], script: &str) -> Output {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["bb", "sh", "-c", script]);
    env.kiln(&args)
}

/// Its stdout, after checking it exited 0.
fn run_sh_ok(env: &Env, flags: &[&str], script: &str) -> String {
    let out = run_sh(env, flags, script);
    assert!(out.status.success(), "{flags:?} {script}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Checks that `kiln run FLAGS bb true` exits with `code` and that stderr starts with
/// `error: {message}` and has a hint; returns stderr.
fn refused(env: &Env, flags: &[&str], code: i32, message: &str) -> String {
    let out = run_sh(env, flags, "true");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{flags:?}: {}", text(&out));
    assert!(
        err.starts_with(&format!("error: {message}")),
        "{flags:?}: {err}"
    );
    err
}

fn host_sysctl(path: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{path}")).unwrap()
}

#[test]
fn ulimits_are_set_for_the_container_and_its_exec_processes() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = busybox_env();
    let limits = ["--ulimit", "nofile=1024:2048", "--ulimit", "core=0"];
    let out = run_sh_ok(
        &env,
        &limits,
        "ulimit -n; ulimit -Hn; ulimit -c; ulimit -Hc",
    );
    assert_eq!(out, "1024\n2048\n0\n0\n");
    let out = run_sh_ok(&env, &["--ulimit", "core=-1:unlimited"], "ulimit -Hc");
    assert_eq!(out, "unlimited\n");

    // kiln exec's process is kiln's child, not the init's: it gets them set again.
    let id = env.kiln_ok(&[
        "run",
        "-d",
        "--ulimit",
        "nofile=1000:1500",
        "bb",
        "sleep",
        "60",
    ]);
    let out = env.kiln_ok(&["exec", &id, "sh", "-c", "ulimit -n; ulimit -Hn"]);
    assert_eq!(out, "1000\n1500");
    env.kiln_ok(&["rm", "-f", &id]);

    let err = refused(
        &env,
        &["--ulimit", "nofiles=1"],
        1,
        "--ulimit nofiles=1: unknown ulimit \"nofiles\"",
    );
    assert!(err.contains("hint: did you mean \"nofile\"?"), "{err}");
    let err = refused(
        &env,
        &["--ulimit", "nofile=2048:1024"],
        1,
        "--ulimit nofile=2048:1024: the soft limit 2048 of nofile is above its hard limit 1024",
    );
    assert!(err.contains("hint: "), "{err}");
    refused(&env, &["--ulimit", "nofile"], 1, "--ulimit nofile: ");
    // Valid, but more than the kernel allows (fs.nr_open): the container cannot start.
    let nr_open: u64 = host_sysctl("fs/nr_open").trim().parse().unwrap();
    let too_many = format!("nofile={}", nr_open + 1);
    refused(
        &env,
        &["--ulimit", &too_many],
        125,
        "set ulimit \"nofile\": Operation not permitted",
    );
}

#[test]
fn shm_size_sets_the_size_of_dev_shm() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = busybox_env();
    let size = |flags: &[&str]| {
        let out = run_sh_ok(&env, flags, "grep ' /dev/shm ' /proc/mounts");
        out.split_whitespace()
            .nth(3)
            .unwrap()
            .split(',')
            .find_map(|o| o.strip_prefix("size=").map(str::to_owned))
            .unwrap_or_else(|| panic!("no size in {out}"))
    };
    assert_eq!(size(&[]), "65536k", "docker's default");
    assert_eq!(size(&["--shm-size", "128m"]), "131072k");
    let out = run_sh_ok(
        &env,
        &["--shm-size", "1m"],
        "dd if=/dev/zero of=/dev/shm/fill bs=1k count=2048 2>/dev/null || echo full",
    );
    assert_eq!(out, "full\n");
    let err = refused(
        &env,
        &["--shm-size", "0"],
        1,
        "--shm-size 0: size \"0\" must be more than 0 bytes",
    );
    assert!(err.contains("hint: "), "{err}");
    refused(
        &env,
        &["--shm-size", "64X"],
        1,
        "--shm-size 64X: invalid size",
    );
}

#[test]
fn sysctls_of_the_containers_namespaces_apply_inside_and_never_on_the_host() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = busybox_env();
    let host_shmmax = host_sysctl("kernel/shmmax");
    let host_msgmax = host_sysctl("kernel/msgmax");
    let host_forward = host_sysctl("net/ipv4/ip_forward");
    let out = run_sh_ok(
        &env,
        &[
            "--sysctl",
            "kernel.shmmax=123456789",
            "--sysctl",
            "kernel.msgmax=4321",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--sysctl",
            "fs.mqueue.msg_max=20",
        ],
        "cat /proc/sys/kernel/shmmax /proc/sys/kernel/msgmax /proc/sys/net/ipv4/ip_forward \
         /proc/sys/fs/mqueue/msg_max; \
         echo 1 > /proc/sys/kernel/shmmax 2>/dev/null || echo still-read-only",
    );
    assert_eq!(out, "123456789\n4321\n1\n20\nstill-read-only\n");
    assert_eq!(host_sysctl("kernel/shmmax"), host_shmmax);
    assert_eq!(host_sysctl("kernel/msgmax"), host_msgmax);
    assert_eq!(host_sysctl("net/ipv4/ip_forward"), host_forward);

    // Attack: without --sysctl, the container writes /proc/sys directly.
    let out = run_sh_ok(
        &env,
        &[],
        "echo 1 > /proc/sys/kernel/shmmax || echo refused; \
         echo 3 > /proc/sys/vm/drop_caches || echo refused; \
         mount -o remount,rw /proc/sys 2>/dev/null || echo refused",
    );
    assert_eq!(out, "refused\nrefused\nrefused\n");
    assert_eq!(host_sysctl("kernel/shmmax"), host_shmmax);

    for key in ["kernel.panic=1", "vm.swappiness=10"] {
        let err = refused(
            &env,
            &["--sysctl", key],
            1,
            &format!(
                "--sysctl {key}: sysctl {} is not allowed",
                &key[..key.find('=').unwrap()]
            ),
        );
        assert!(err.contains("hint: a container may set only"), "{err}");
    }
    let err = refused(
        &env,
        &["--sysctl", "kernel.hostname=x"],
        1,
        "--sysctl kernel.hostname=x: ",
    );
    assert!(err.contains("--hostname"), "{err}");
    let err = refused(
        &env,
        &["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"],
        1,
        "--sysctl: sysctl net.ipv4.ip_forward cannot be set with the host's network",
    );
    assert!(err.contains("hint: "), "{err}");
    assert_eq!(host_sysctl("net/ipv4/ip_forward"), host_forward);
}

#[test]
fn a_given_device_opens_with_its_permissions_and_nothing_else_does() {
    common::require_root!("namespaces, overlayfs, cgroups, loop devices");
    let env = busybox_env();
    let dev = LoopDevice::new(&env);
    let (maj, min) = (dev.major, dev.minor);
    // The backing file is 0x5a bytes: "ZZZZ".
    let out = run_sh_ok(
        &env,
        &["--device", &dev.path],
        &format!(
            "head -c 4 {p}; echo; printf abcd | dd of={p} conv=notrunc 2>/dev/null && \
             head -c 4 {p}; echo; stat -c '%F %t:%T' {p}",
            p = dev.path
        ),
    );
    assert_eq!(
        out,
        format!("ZZZZ\nabcd\nblock special file {maj:x}:{min:x}\n"),
        "{out}"
    );

    // Read-only, under another name: reads work; writes, and any other device, do not,
    // even through a node made with mknod.
    let flag = format!("{}:/dev/xvda:r", dev.path);
    let out = run_sh_ok(
        &env,
        &["--device", &flag],
        &format!(
            "head -c 4 /dev/xvda; echo; \
             printf x | dd of=/dev/xvda 2>/dev/null || echo write-refused; \
             mknod /dev/same b {maj} {min} && (printf x | dd of=/dev/same 2>/dev/null || echo same-write-refused); \
             mknod /dev/other b {maj} {next} && (head -c 1 /dev/other >/dev/null 2>&1 || echo other-refused); \
             mknod /dev/kmsg2 c 1 11 && (head -c 1 /dev/kmsg2 >/dev/null 2>&1 || echo kmsg-refused); \
             test -e {p} || echo host-name-absent",
            next = min + 1,
            p = dev.path
        ),
    );
    assert_eq!(
        out,
        "abcd\nwrite-refused\nsame-write-refused\nother-refused\nkmsg-refused\nhost-name-absent\n",
        "{out}"
    );

    // Without --device, a node made inside for the same device cannot be opened.
    let out = run_sh_ok(
        &env,
        &[],
        &format!("mknod /dev/loopx b {maj} {min} && (head -c 1 /dev/loopx || echo refused)"),
    );
    assert!(out.ends_with("refused\n"), "{out}");

    let err = refused(
        &env,
        &["--device", "/dev/nosuchdevice"],
        1,
        "--device: device /dev/nosuchdevice: No such file or directory",
    );
    assert!(err.contains("hint: "), "{err}");
    refused(
        &env,
        &["--device", "/etc/hostname:/dev/hostname"],
        1,
        "--device: device /etc/hostname: not a device node",
    );
    refused(
        &env,
        &["--device", &format!("{}:/dev/null", dev.path)],
        1,
        &format!("--device: device {}: /dev/null is kiln's own", dev.path),
    );
    refused(
        &env,
        &["--device", &format!("{}:/data/disk", dev.path)],
        1,
        &format!(
            "--device {}:/data/disk: the container path \"/data/disk\" must be a file under /dev",
            dev.path
        ),
    );
    refused(
        &env,
        &["--device", &format!("{}:/dev/x:rx", dev.path)],
        1,
        "--device ",
    );
}

#[test]
fn init_is_pid_1_unless_no_init_and_both_are_refused() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = busybox_env();
    // kiln's init is kiln's own process image, without an exec; without it, PID 1 is the
    // command (busybox sh execs its last command: cat).
    assert_eq!(run_sh_ok(&env, &["--init"], "cat /proc/1/comm"), "kiln\n");
    assert_eq!(run_sh_ok(&env, &[], "cat /proc/1/comm"), "kiln\n");
    assert_eq!(run_sh_ok(&env, &["--no-init"], "cat /proc/1/comm"), "cat\n");
    let out = run_sh(&env, &["--init", "--no-init"], "true");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        text(&out)
    );
}

/// A spec with every new `run:` key.
fn spec_with_every_key(env: &Env, dev: &LoopDevice) -> std::path::PathBuf {
    env.write("project/app.env", "# app\nFROM_FILE=file\nBOTH=file\n");
    let spec = format!(
        "image: knobs\n\
         from: bb\n\
         run:\n\
         \x20 env_file: ./app.env\n\
         \x20 env: {{ BOTH: spec }}\n\
         \x20 extra_hosts: [\"db:10.0.0.5\"]\n\
         \x20 ulimits: {{ nofile: {{ soft: 512, hard: 1024 }} }}\n\
         \x20 shm_size: 32m\n\
         \x20 sysctls: {{ kernel.shmmax: 987654321 }}\n\
         \x20 devices: [\"{}:/dev/disk0:r\"]\n\
         \x20 init: false\n",
        dev.path
    );
    env.write("project/kiln.yaml", &spec)
}

const PROBE: &str = "echo $FROM_FILE $BOTH; grep -w db /etc/hosts; ulimit -n; \
    grep ' /dev/shm ' /proc/mounts | grep -o 'size=[0-9a-z]*'; cat /proc/sys/kernel/shmmax; \
    head -c 2 /dev/disk0; echo; cat /proc/1/comm";

#[test]
fn run_keys_apply_and_flags_override_them() {
    common::require_root!("namespaces, overlayfs, cgroups, loop devices");
    let env = busybox_env();
    let dev = LoopDevice::new(&env);
    let spec = spec_with_every_key(&env, &dev);
    // The build reads the env file, from the spec's folder; then it may go.
    let out = env.kiln_in("project", &["build"]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::remove_file(env.path("project/app.env")).unwrap();
    let run = |flags: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["knobs", "sh", "-c", PROBE]);
        let out = env.kiln(&args);
        assert!(out.status.success(), "{flags:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (String::from_utf8_lossy(&out.stdout).into_owned(), err)
    };
    let (out, err) = run(&[]);
    assert_eq!(
        out, "file spec\n10.0.0.5\tdb\n512\nsize=32768k\n987654321\nZZ\ncat\n",
        "{err}"
    );
    assert!(
        err.contains(&format!("grant: device {}:/dev/disk0:r", dev.path)),
        "{err}"
    );
    let (out, _) = run(&[
        "-e",
        "BOTH=flag",
        "--add-host",
        "db:10.0.0.6",
        "--ulimit",
        "nofile=256",
        "--shm-size",
        "16m",
        "--sysctl",
        "kernel.shmmax=1234",
        "--init",
    ]);
    assert_eq!(
        out,
        "file flag\n10.0.0.5\tdb\n10.0.0.6\tdb\n256\nsize=16384k\n1234\nZZ\nkiln\n"
    );
    let _ = spec;
}

#[test]
fn an_image_from_elsewhere_gets_no_device_from_its_stored_settings() {
    common::require_root!("namespaces, overlayfs, cgroups, loop devices");
    let env = busybox_env();
    let dev = LoopDevice::new(&env);
    let spec = spec_with_every_key(&env, &dev);
    env.kiln_ok(&["build", "-f", spec.to_str().unwrap()]);
    // As for a pulled image: no record that it was built here.
    let index_path = env.root().join("index.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    for m in doc["manifests"].as_array_mut().unwrap() {
        if let Some(a) = m["annotations"].as_object_mut() {
            a.remove("dev.kiln.origin");
        }
    }
    std::fs::write(&index_path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let probe = "ulimit -n; head -c 2 /dev/disk0 2>/dev/null || echo no-device";
    let out = env.kiln(&["run", "--rm", "knobs", "sh", "-c", probe]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        err.contains("refused") && err.contains(&format!("device {}:/dev/disk0:r", dev.path)),
        "{err}"
    );
    // What restricts still applies.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "512\nno-device\n");
    let out = env.kiln(&[
        "run",
        "--rm",
        "--allow-image-privileges",
        "knobs",
        "sh",
        "-c",
        probe,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "512\nZZ");

    // Stored settings are not read by the spec's parser: a sysctl of the host's kernel
    // put there by hand is refused all the same, even with --allow-image-privileges.
    let host_panic = host_sysctl("kernel/panic");
    for m in doc["manifests"].as_array_mut().unwrap() {
        let Some(stored) = m["annotations"]["dev.kiln.run-defaults"].as_str() else {
            continue;
        };
        let mut run: serde_json::Value = serde_json::from_str(stored).unwrap();
        run["sysctls"] = serde_json::json!([["kernel.panic", "77"]]);
        m["annotations"]["dev.kiln.run-defaults"] = run.to_string().into();
    }
    std::fs::write(&index_path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = env.kiln(&["run", "--rm", "--allow-image-privileges", "knobs", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sysctl kernel.panic is not allowed"),
        "{}",
        text(&out)
    );
    assert_eq!(host_sysctl("kernel/panic"), host_panic);
}
