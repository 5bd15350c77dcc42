//! Docker's finer cgroup controls on this host's real cgroup v1 (issue 14): `--cpu-shares`,
//! `--cpu-weight`, `--cpuset-cpus`/`-mems`, `--memory-reservation`, `--memory-swap`,
//! `--blkio-weight` and the device throttles. Each reaches its cgroup file while the
//! container runs, bad values name their flag, a spec's `run:` key applies and a flag
//! overrides it, the throttle really throttles, and a container cannot raise its limits.
//! (The v2 files are checked against an imitation in kiln-cgroups' unit tests.)

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::containers::{busybox_image, run_detached};
use common::{text, Env, LoopDevice};

/// The value of `file` in container `id`'s cgroup of `controller`, read on the host.
fn cgroup_file(id: &str, controller: &str, file: &str) -> String {
    let path = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join("kiln")
        .join(format!("kiln-{id}"))
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// A detached container's stdout so far, once it holds `lines` lines.
fn logs(env: &Env, id: &str, lines: usize) -> String {
    let start = Instant::now();
    loop {
        let out = env.kiln_ok(&["logs", id]);
        if out.lines().count() >= lines {
            return out;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "logs of {id}: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the container itself sees: its cgroup path (as /proc/self/cgroup names it) and the
/// CPUs it may run on.
const SELF_VIEW: &str = "grep -E ':(cpu|cpuset|blkio):' /proc/self/cgroup; \
                         grep Cpus_allowed_list /proc/self/status; sleep 600";

#[test]
fn each_control_is_in_its_cgroup_file_while_the_container_runs() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let dev = LoopDevice::sized(&env, 4);
    let write_bps = format!("{}:1mb", dev.path);
    let read_iops = format!("{}:100", dev.path);
    let c = run_detached(
        &env,
        &[
            "--memory",
            "64m",
            "--memory-reservation",
            "32m",
            "--memory-swap",
            "128m",
            "--cpu-shares",
            "512",
            "--cpuset-cpus",
            "0",
            "--cpuset-mems",
            "0",
            "--device-write-bps",
            &write_bps,
            "--device-read-iops",
            &read_iops,
            "bb",
            "sh",
            "-c",
            SELF_VIEW,
        ],
    );
    // The container sees its own cgroups, the ones read below, and only CPU 0.
    let view = logs(&env, &c.id, 4);
    for controller in ["cpu", "cpuset", "blkio"] {
        assert!(
            view.contains(&format!(":{controller}:/kiln/kiln-{}\n", c.id)),
            "{view}"
        );
    }
    assert!(view.lines().any(|l| l == "Cpus_allowed_list:\t0"), "{view}");
    let numbers = dev.numbers();
    for (controller, file, value) in [
        ("memory", "memory.limit_in_bytes", "67108864".to_string()),
        ("memory", "memory.soft_limit_in_bytes", "33554432".into()),
        ("memory", "memory.memsw.limit_in_bytes", "134217728".into()),
        ("cpu", "cpu.shares", "512".into()),
        ("cpuset", "cpuset.cpus", "0".into()),
        ("cpuset", "cpuset.mems", "0".into()),
        (
            "blkio",
            "blkio.throttle.write_bps_device",
            format!("{numbers} 1048576"),
        ),
        (
            "blkio",
            "blkio.throttle.read_iops_device",
            format!("{numbers} 100"),
        ),
    ] {
        assert_eq!(cgroup_file(&c.id, controller, file), value, "{file}");
    }
    // stats still reads the container.
    let stats: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["stats", "--no-stream", "--json", &c.id])).unwrap();
    assert_eq!(stats["memory_limit"], 64u64 << 20);
    drop(c);

    // v2's scale converted to v1's as runc does; -1 is unlimited swap.
    let c = run_detached(
        &env,
        &[
            "--memory",
            "64m",
            "--memory-swap",
            "-1",
            "--cpu-weight",
            "100",
            "bb",
            "sleep",
            "600",
        ],
    );
    assert_eq!(cgroup_file(&c.id, "cpu", "cpu.shares"), "2597");
    let unlimited = cgroup_file(&c.id, "memory", "memory.memsw.limit_in_bytes");
    assert!(unlimited.parse::<u64>().unwrap() > 1 << 60, "{unlimited}");
    drop(c);

    // Without --memory-swap, no swap on top of the memory limit (kiln's default).
    let c = run_detached(&env, &["--memory", "64m", "bb", "sleep", "600"]);
    assert_eq!(
        cgroup_file(&c.id, "memory", "memory.memsw.limit_in_bytes"),
        "67108864"
    );
}

fn kiln_run(env: &Env, args: &[&str]) -> (i32, String) {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    let out = env.kiln(&all);
    (out.status.code().unwrap_or(-1), text(&out))
}

/// Bad values are refused before anything starts, naming the flag, exit 1 (kiln's rule
/// for a bad flag value, as for `--memory 1m`); a valid value this kernel cannot apply is
/// a container that cannot start, exit 125.
#[test]
fn bad_values_name_their_flag() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let dev = LoopDevice::sized(&env, 1);
    let on_loop = |rate: &str| format!("{}:{rate}", dev.path);
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let unknown_cpu = "64".to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--cpu-shares".into(), "1".into()],
            "--cpu-shares: cpu shares 1 is out of range",
        ),
        (
            vec!["--cpu-shares".into(), "262145".into()],
            "--cpu-shares: cpu shares 262145 is out of range",
        ),
        (
            vec!["--cpu-weight".into(), "0".into()],
            "--cpu-weight: cpu weight 0 is out of range",
        ),
        (
            vec!["--blkio-weight".into(), "9".into()],
            "--blkio-weight: blkio weight 9 is out of range",
        ),
        (
            vec!["--blkio-weight".into(), "1001".into()],
            "--blkio-weight: blkio weight 1001 is out of range",
        ),
        (
            vec!["--cpuset-cpus".into(), unknown_cpu],
            "--cpuset-cpus: CPU 64 is not on this machine",
        ),
        (
            vec!["--cpuset-cpus".into(), "1-0".into()],
            "--cpuset-cpus: invalid CPU list \"1-0\"",
        ),
        (
            vec!["--cpuset-mems".into(), "3".into()],
            "--cpuset-mems: memory node 3 is not on this machine",
        ),
        (
            vec!["--memory-reservation".into(), "1m".into()],
            "--memory-reservation: memory reservation 1 MiB is below the minimum of 6 MiB",
        ),
        (
            vec![
                "--memory".into(),
                "64m".into(),
                "--memory-swap".into(),
                "32m".into(),
            ],
            "--memory-swap 32 MiB is less than --memory 64 MiB",
        ),
        (
            vec!["--memory-swap".into(), "128m".into()],
            "--memory-swap is set, but the image's run: memory is not",
        ),
        (
            vec![
                "--memory".into(),
                "64m".into(),
                "--memory-reservation".into(),
                "128m".into(),
            ],
            "--memory-reservation 128 MiB is more than --memory 64 MiB",
        ),
        (
            vec!["--device-write-bps".into(), "/dev/null:1mb".into()],
            "--device-write-bps /dev/null: not a block device",
        ),
        (
            vec![
                "--device-read-bps".into(),
                "/dev/kiln-no-such-disk:1mb".into(),
            ],
            "--device-read-bps /dev/kiln-no-such-disk: no such device",
        ),
        (
            vec!["--device-read-iops".into(), on_loop("0")],
            "--device-read-iops",
        ),
        (
            vec!["--device-write-bps".into(), on_loop("fast")],
            "--device-write-bps",
        ),
        (
            vec!["--device-write-bps".into(), "sda:1mb".into()],
            "--device-write-bps sda:1mb: invalid device path \"sda\"",
        ),
    ];
    for (args, needle) in cases {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(["bb", "true"]);
        let (code, out) = kiln_run(&env, &all);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(out.contains(&format!("error: {needle}")), "{args:?}: {out}");
        assert!(out.contains("hint: "), "{args:?} has no hint: {out}");
    }
    assert!(
        !cpus.contains("64"),
        "this test assumes fewer than 65 CPUs: {cpus}"
    );
    // One control in two scales: clap refuses the pair (usage, exit 2).
    let (code, out) = kiln_run(
        &env,
        &["--cpu-shares", "512", "--cpu-weight", "50", "bb", "true"],
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("--cpu-weight"), "{out}");
    // This host's disks use no I/O scheduler with weights: valid, but not here.
    let (code, out) = kiln_run(&env, &["--blkio-weight", "500", "bb", "true"]);
    assert_eq!(code, 125, "{out}");
    assert!(out.contains("blkio.weight or blkio.bfq.weight"), "{out}");
    assert!(out.contains("BFQ"), "{out}");
    // Nothing was left behind by the refusals.
    assert_eq!(common::container_dirs(&env.root()), Vec::<String>::new());
}

/// `kiln build` in `env`'s project folder, from image `bb`.
fn build(env: &Env, spec: &str) {
    env.write("project/kiln.yaml", spec);
    let out = env.kiln_in("project", &["build"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn run_keys_apply_and_flags_override_them() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let dev = LoopDevice::sized(&env, 1);
    build(
        &env,
        &format!(
            "image: limited\nfrom: bb\nsteps:\n  - run: echo built > /built\nrun:\n  \
             memory: 64m\n  memory_reservation: 16m\n  cpu_shares: 256\n  cpuset_cpus: 0\n  \
             device_write_bps: [{{ path: {0}, rate: 2mb }}]\n  \
             device_read_bps: [{{ path: {0}, rate: 3mb }}]\n",
            dev.path
        ),
    );
    let numbers = dev.numbers();
    let c = run_detached(&env, &["limited", "sleep", "600"]);
    assert_eq!(
        cgroup_file(&c.id, "memory", "memory.soft_limit_in_bytes"),
        "16777216"
    );
    assert_eq!(cgroup_file(&c.id, "cpu", "cpu.shares"), "256");
    assert_eq!(cgroup_file(&c.id, "cpuset", "cpuset.cpus"), "0");
    let write_bps = cgroup_file(&c.id, "blkio", "blkio.throttle.write_bps_device");
    assert_eq!(write_bps, format!("{numbers} 2097152"));
    drop(c);

    // Flags win: a weight in the other scale, another reservation, another rate for the
    // same device (the image's read rate stays).
    let rate = format!("{}:1mb", dev.path);
    let c = run_detached(
        &env,
        &[
            "--cpu-weight",
            "50",
            "--memory-reservation",
            "8m",
            "--device-write-bps",
            &rate,
            "limited",
            "sleep",
            "600",
        ],
    );
    assert_eq!(
        cgroup_file(&c.id, "memory", "memory.soft_limit_in_bytes"),
        "8388608"
    );
    assert_eq!(cgroup_file(&c.id, "cpu", "cpu.shares"), "1286");
    let write_bps = cgroup_file(&c.id, "blkio", "blkio.throttle.write_bps_device");
    assert_eq!(write_bps, format!("{numbers} 1048576"));
    let read_bps = cgroup_file(&c.id, "blkio", "blkio.throttle.read_bps_device");
    assert_eq!(read_bps, format!("{numbers} 3145728"));
    drop(c);

    // A flag that contradicts the image's run: settings is named with them.
    let (code, out) = kiln_run(&env, &["--memory-reservation", "128m", "limited", "true"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "error: --memory-reservation 128 MiB is more than the image's run: memory 64 MiB"
        ),
        "{out}"
    );
    // The image's memory makes a swap flag valid.
    let c = run_detached(&env, &["--memory-swap", "96m", "limited", "sleep", "600"]);
    assert_eq!(
        cgroup_file(&c.id, "memory", "memory.memsw.limit_in_bytes"),
        "100663296"
    );
}

/// The acceptance test: `--device-write-bps DEV:1mb` holds direct writes to about
/// 1 MB/s, and without it the same writes are much faster.
#[test]
fn device_write_bps_throttles_direct_writes_to_its_rate() {
    common::require_root!("namespaces, overlayfs, cgroups, loop devices");
    let env = Env::new();
    busybox_image(&env);
    let mut dev = LoopDevice::sized(&env, 32);
    let mnt = env.path("mnt");
    dev.mount_ext4(&mnt);
    let volume = format!("{}:/data", mnt.display());
    let dd = "dd if=/dev/zero of=/data/out bs=64k count=48 oflag=direct 2>&1";
    let timed = |extra: &[&str]| {
        let mut args = vec!["-v", volume.as_str()];
        args.extend_from_slice(extra);
        args.extend(["bb", "sh", "-c", dd]);
        let start = Instant::now();
        let (code, out) = kiln_run(&env, &args);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("48+0 records out"), "{out}");
        start.elapsed()
    };
    let rate = format!("{}:1mb", dev.path);
    let throttled = timed(&["--device-write-bps", &rate]);
    let free = timed(&[]);
    eprintln!("3 MiB of direct writes: {throttled:?} at --device-write-bps 1mb, {free:?} without");
    let mib_per_s = |d: Duration| 3.0 / d.as_secs_f64();
    let limited = mib_per_s(throttled);
    assert!(
        (0.5..=1.6).contains(&limited),
        "3 MiB at --device-write-bps 1mb took {throttled:?}: {limited:.2} MiB/s"
    );
    assert!(
        mib_per_s(free) > 4.0 * limited,
        "unthrottled: {free:?}, throttled: {throttled:?}"
    );
}

/// A container cannot reach its cgroup files to raise its limits: there is no cgroupfs
/// in it and it cannot mount one of the throttling controllers; the host's files are as
/// kiln wrote them afterwards.
#[test]
fn a_container_cannot_raise_its_limits() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    let dev = LoopDevice::sized(&env, 1);
    let rate = format!("{}:1mb", dev.path);
    let attack = "mkdir -p /tmp/cg; \
        for opt in cpu,cpuacct cpuset blkio memory; do \
          mount -t cgroup -o $opt cgroup /tmp/cg 2>/dev/null && echo mounted-$opt; done; \
        mount -t cgroup2 none /tmp/cg 2>/dev/null && echo mounted-v2; \
        for f in /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu,cpuacct/cpu.shares \
                 /sys/fs/cgroup/blkio/blkio.throttle.write_bps_device; do \
          echo 262144 2>/dev/null > $f && echo wrote-$f; done; \
        echo tried; sleep 600";
    let c = run_detached(
        &env,
        &[
            "--tmpfs",
            "/tmp",
            "--cpu-shares",
            "512",
            "--device-write-bps",
            &rate,
            "bb",
            "sh",
            "-c",
            attack,
        ],
    );
    let out = logs(&env, &c.id, 1);
    assert_eq!(out.trim(), "tried", "{out}");
    assert_eq!(cgroup_file(&c.id, "cpu", "cpu.shares"), "512");
    assert_eq!(
        cgroup_file(&c.id, "blkio", "blkio.throttle.write_bps_device"),
        format!("{} 1048576", dev.numbers())
    );
}

/// A build step is a container: its `resources:` take the same keys, and it cannot mount
/// cgroupfs to raise them either (the build fails if any attempt succeeds).
#[test]
fn a_build_steps_resources_take_the_same_controls() {
    common::require_root!("namespaces, overlayfs, cgroups");
    let env = Env::new();
    busybox_image(&env);
    build(
        &env,
        "image: step\nfrom: bb\nsteps:\n  - run: |\n      \
         grep -x 'Cpus_allowed_list:.0' /proc/self/status\n      \
         grep -q ':cpu:/kiln/kiln-step-' /proc/self/cgroup\n      \
         mkdir -p /tmp/cg\n      \
         ! mount -t cgroup -o cpu,cpuacct cgroup /tmp/cg 2>/dev/null\n      \
         ! mount -t cgroup -o cpuset cgroup /tmp/cg 2>/dev/null\n      \
         echo ok > /ok\n    \
         resources: { cpuset_cpus: 0, cpu_shares: 256, memory: 64m, memory_swap: 64m }\n",
    );
    // The same keys' problems are located in the spec.
    env.write(
        "project/kiln.yaml",
        "image: step\nfrom: bb\nsteps:\n  - run: 'true'\n    resources: { cpu_weight: 0 }\n",
    );
    let out = env.kiln_in("project", &["build"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("kiln.yaml:5:30: cpu weight 0 is out of range"),
        "{}",
        text(&out)
    );
}

/// The container moves itself into its v1 cgroups (writing `0` to each `tasks` file, which
/// spares the kernel's global threadgroup lock): every controller kiln uses must hold it —
/// and its children — from its first instruction.
#[test]
fn a_container_its_children_and_exec_are_in_every_cgroup_from_the_start() {
    common::require_root!("cgroups");
    let env = Env::new();
    busybox_image(&env);
    let controllers = ["memory", "pids", "cpu", "cpuacct", "devices", "blkio"];
    let script = "cat /proc/self/cgroup; sh -c 'cat /proc/self/cgroup' | sed 's/^/child /'";
    let (code, out) = kiln_run(
        &env,
        &[
            "--network",
            "none",
            "--memory",
            "64m",
            "bb",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(code, 0, "{out}");
    for who in ["", "child "] {
        for controller in controllers {
            let line = out
                .lines()
                .filter_map(|l| l.strip_prefix(who))
                .find(|l| {
                    l.split(':')
                        .nth(1)
                        .is_some_and(|c| c.split(',').any(|c| c == controller))
                })
                .unwrap_or_else(|| panic!("no {controller} line for {who:?}: {out}"));
            assert!(
                line.contains(":/kiln/kiln-"),
                "{who}{controller}: {line}\n{out}"
            );
        }
    }
    // `kiln exec`'s process too (its intermediate moves itself in the same way).
    let running = run_detached(&env, &["--network", "none", "bb", "sleep", "600"]);
    let out = env.kiln_ok(&["exec", &running.id, "cat", "/proc/self/cgroup"]);
    for controller in controllers {
        let line = out
            .lines()
            .find(|l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == controller))
            })
            .unwrap_or_else(|| panic!("no {controller} line: {out}"));
        assert!(
            line.contains(&format!(":/kiln/kiln-{}", running.id)),
            "exec {controller}: {line}"
        );
    }
}
