//! cgroup tests: v1 for real on this host's cgroupfs, v2 against a directory imitating the
//! unified hierarchy.

use std::io::Write;
use std::process::{Child, Command, Stdio};

use super::*;

fn unique_id(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("test-{tag}-{}-{n}", std::process::id())
}

/// A host process blocked reading its stdin, to be moved into cgroups.
fn idle_process(script: &str) -> Child {
    Command::new("/bin/busybox")
        .args(["sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn real_root() -> &'static Path {
    Path::new(DEFAULT_CGROUP_ROOT)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap().trim().to_string()
}

/// A temp dir laid out like a fresh cgroup v2 root.
pub(crate) fn fake_v2_root() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(
        tmp.path().join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    )
    .unwrap();
    fs::write(tmp.path().join("cgroup.subtree_control"), "").unwrap();
    fs::write(tmp.path().join("cgroup.procs"), "").unwrap();
    tmp
}

#[test]
fn this_host_is_detected_as_hybrid_and_imitations_as_what_they_imitate() {
    assert_eq!(detect(real_root()).unwrap(), CgroupMode::Hybrid);
    let v2 = fake_v2_root();
    assert_eq!(detect(v2.path()).unwrap(), CgroupMode::V2);
    let v1 = tempfile::tempdir().unwrap();
    assert!(matches!(detect(v1.path()), Err(CgroupError::NotMounted(_))));
    fs::create_dir(v1.path().join("pids")).unwrap();
    fs::write(v1.path().join("pids/cgroup.procs"), "").unwrap();
    assert_eq!(detect(v1.path()).unwrap(), CgroupMode::V1);
    fs::create_dir(v1.path().join("unified")).unwrap();
    fs::write(v1.path().join("unified/cgroup.controllers"), "").unwrap();
    assert_eq!(detect(v1.path()).unwrap(), CgroupMode::Hybrid);
}

#[test]
fn cpus_become_a_cfs_quota_and_nonsense_is_rejected() {
    let cpus = |c| Resources {
        cpus: Some(c),
        ..Resources::default()
    };
    assert_eq!(cpus(1.5).cpu_quota().unwrap(), Some(150_000));
    assert_eq!(cpus(0.01).cpu_quota().unwrap(), Some(1_000));
    for bad in [0.0, -1.0, 0.001, f64::NAN, f64::INFINITY] {
        assert!(
            matches!(cpus(bad).cpu_quota(), Err(CgroupError::InvalidCpus(_))),
            "{bad}"
        );
    }
    assert_eq!(Resources::default().pids_limit(), DEFAULT_PIDS_LIMIT);
}

#[test]
fn ids_that_are_not_plain_names_are_rejected() {
    for bad in ["", ".", "..", "a/b", "a b", "x\n"] {
        assert!(
            matches!(
                Cgroup::create(real_root(), bad, &Resources::default()),
                Err(CgroupError::InvalidId(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn v1_limits_are_written_joined_and_removed() {
    require_root!("cgroups");
    let id = unique_id("v1");
    let res = Resources {
        memory: Some(32 << 20),
        cpus: Some(0.5),
        pids: Some(16),
        ..Resources::default()
    };
    let cg = Cgroup::create(real_root(), &id, &res).unwrap();
    let name = format!("kiln-{id}");
    let memory = real_root().join("memory/kiln").join(&name);
    let cpu = real_root().join("cpu/kiln").join(&name);
    let pids = real_root().join("pids/kiln").join(&name);
    let devices = real_root().join("devices/kiln").join(&name);
    let cpuacct = real_root().join("cpuacct/kiln").join(&name);
    let blkio = real_root().join("blkio/kiln").join(&name);
    assert_eq!(
        cg.paths(),
        [
            memory.clone(),
            cpu.clone(),
            pids.clone(),
            devices.clone(),
            cpuacct,
            blkio
        ]
    );
    assert!(!cg.wants_namespace());
    assert_eq!(read(&memory.join("memory.limit_in_bytes")), "33554432");
    assert_eq!(
        read(&memory.join("memory.memsw.limit_in_bytes")),
        "33554432"
    );
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&pids.join("pids.max")), "16");

    let mut child = idle_process("read x");
    cg.join(child.id() as i32).unwrap();
    let membership = fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
    assert!(
        membership.contains(&format!(":memory:/kiln/{name}\n")),
        "{membership}"
    );
    assert!(membership.contains(&format!(":pids:/kiln/{name}\n")));
    assert!(membership.contains(&format!(":devices:/kiln/{name}\n")));
    assert!(!cg.oom_killed().unwrap());
    cg.remove().unwrap();
    // Removal killed the process left inside.
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    for dir in [memory, cpu, pids, devices] {
        assert!(!dir.exists(), "{} remains", dir.display());
    }
}

#[test]
fn v1_default_pids_limit_and_no_other_limits() {
    require_root!("cgroups");
    let id = unique_id("v1-default");
    let cg = Cgroup::create(real_root(), &id, &Resources::default()).unwrap();
    let dir = |c: &str| real_root().join(c).join("kiln").join(format!("kiln-{id}"));
    assert_eq!(read(&dir("pids").join("pids.max")), "2048");
    assert_eq!(read(&dir("cpu").join("cpu.cfs_quota_us")), "-1");
    assert_eq!(
        read(&dir("memory").join("memory.limit_in_bytes")),
        read(&real_root().join("memory/kiln/memory.limit_in_bytes"))
    );
    drop(cg);
    assert!(!dir("pids").exists(), "dropping removes the cgroup");
}

#[test]
fn v1_oom_kill_is_detected() {
    require_root!("cgroups");
    let id = unique_id("v1-oom");
    let res = Resources {
        memory: Some(16 << 20),
        ..Resources::default()
    };
    let cg = Cgroup::create(real_root(), &id, &res).unwrap();
    // Waits for a line on stdin (sent once it is in the cgroup), then holds 64 MB in a
    // shell variable.
    let mut hog = idle_process("read x; a=$(head -c 64000000 /dev/zero | tr '\\0' x); echo ${#a}");
    cg.join(hog.id() as i32).unwrap();
    hog.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = hog.wait().unwrap();
    assert!(!status.success());
    assert!(cg.oom_killed().unwrap());
    cg.remove().unwrap();
}

#[test]
fn v1_stale_cgroups_are_killed_and_removed_but_owned_ones_kept() {
    require_root!("cgroups");
    let live_id = unique_id("v1-live");
    let live = Cgroup::create(real_root(), &live_id, &Resources::default()).unwrap();
    let stale_dirs = |id: &str, controllers: &[&str]| -> Vec<PathBuf> {
        controllers
            .iter()
            .map(|c| real_root().join(c).join("kiln").join(format!("kiln-{id}")))
            .collect()
    };
    // A kiln that died: its cgroup exists with a process in it, and nobody holds the lock.
    let stale_id = unique_id("v1-stale");
    let stale = stale_dirs(&stale_id, &["memory", "pids", "devices"]);
    // One that died while removing its cgroup: only the devices dir is left.
    let half_id = unique_id("v1-half");
    let half = stale_dirs(&half_id, &["devices"]);
    let mut orphan = idle_process("read x");
    for dir in stale.iter().chain(&half) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("cgroup.procs"), orphan.id().to_string()).unwrap();
    }
    let removed = clean_stale(real_root()).unwrap();
    // A concurrent test's cleanup may have got there first; either way they are gone.
    assert!(
        removed.contains(&stale_id) || !stale[0].exists(),
        "{removed:?}"
    );
    assert!(
        removed.contains(&half_id) || !half[0].exists(),
        "{removed:?}"
    );
    assert!(!removed.contains(&live_id));
    for dir in stale.iter().chain(&half) {
        assert!(!dir.exists(), "{} remains", dir.display());
    }
    assert!(orphan.wait().is_ok());
    assert!(live.paths().iter().all(|p| p.is_dir()));
    live.remove().unwrap();
}

#[test]
fn v2_controllers_limits_join_oom_and_removal_in_an_imitation() {
    let root = fake_v2_root();
    let res = Resources {
        memory: Some(32 << 20),
        cpus: Some(1.5),
        pids: Some(16),
        ..Resources::default()
    };
    let cg = Cgroup::create(root.path(), "abc", &res).unwrap();
    let dir = root.path().join("kiln/kiln-abc");
    assert_eq!(cg.paths(), std::slice::from_ref(&dir));
    assert_eq!(cg.mode(), CgroupMode::V2);
    assert!(cg.wants_namespace());
    assert_eq!(
        read(&root.path().join("cgroup.subtree_control")),
        "+memory +cpu +pids +io"
    );
    assert_eq!(
        read(&root.path().join("kiln/cgroup.subtree_control")),
        "+memory +cpu +pids +io"
    );
    assert_eq!(read(&dir.join("memory.max")), "33554432");
    assert_eq!(read(&dir.join("cpu.max")), "150000 100000");
    assert_eq!(read(&dir.join("pids.max")), "16");

    let mut child = idle_process("read x");
    cg.join(child.id() as i32).unwrap();
    assert_eq!(read(&dir.join("cgroup.procs")), child.id().to_string());
    fs::write(
        dir.join("memory.events"),
        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    )
    .unwrap();
    assert!(!cg.oom_killed().unwrap());
    fs::write(
        dir.join("memory.events"),
        "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
    )
    .unwrap();
    assert!(cg.oom_killed().unwrap());
    cg.remove().unwrap();
    assert!(!dir.exists());
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
}

#[test]
fn v2_missing_controllers_fail_only_when_a_limit_needs_them() {
    let root = fake_v2_root();
    fs::write(root.path().join("cgroup.controllers"), "cpu io\n").unwrap();
    let cg = Cgroup::create(root.path(), "nolimits", &Resources::default()).unwrap();
    assert_eq!(
        read(&root.path().join("cgroup.subtree_control")),
        "+cpu +io"
    );
    assert!(!root.path().join("kiln/kiln-nolimits/pids.max").exists());
    cg.remove().unwrap();
    let err = Cgroup::create(
        root.path(),
        "mem",
        &Resources {
            memory: Some(1 << 20),
            ..Resources::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::ControllerMissing {
                controller: "memory",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        !root.path().join("kiln/kiln-mem").exists(),
        "nothing left behind"
    );
}

#[test]
fn v2_stale_cleanup_skips_owned_cgroups() {
    let root = fake_v2_root();
    let live = Cgroup::create(root.path(), "live", &Resources::default()).unwrap();
    let dead = root.path().join("kiln/kiln-dead");
    fs::create_dir(&dead).unwrap();
    fs::write(dead.join("cgroup.procs"), "").unwrap();
    fs::create_dir(root.path().join("kiln/not-kiln")).unwrap();
    assert_eq!(clean_stale(root.path()).unwrap(), ["dead"]);
    assert!(!dead.exists());
    assert!(root.path().join("kiln/not-kiln").exists());
    assert!(root.path().join("kiln/kiln-live").exists());
    live.remove().unwrap();
    assert_eq!(clean_stale(root.path()).unwrap(), Vec::<String>::new());
}

#[test]
fn a_root_without_cgroups_has_nothing_stale() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(clean_stale(tmp.path()).unwrap().is_empty());
}

/// A temp dir laid out like a cgroup v1 root with `controllers` mounted.
pub(crate) fn fake_v1_root(controllers: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for c in controllers {
        fs::create_dir(tmp.path().join(c)).unwrap();
        fs::write(tmp.path().join(c).join("cgroup.procs"), "").unwrap();
    }
    tmp
}

fn with_devices(devices: DevicePolicy) -> Resources {
    Resources {
        devices,
        ..Resources::default()
    }
}

#[test]
fn v1_imitation_gets_deny_all_then_the_default_allow_list() {
    let root = fake_v1_root(&["memory", "cpu", "pids", "devices"]);
    let cg = Cgroup::create(root.path(), "dev", &Resources::default()).unwrap();
    let dir = root.path().join("devices/kiln/kiln-dev");
    assert_eq!(cg.paths().last(), Some(&dir));
    assert_eq!(read(&dir.join("devices.deny")), "a");
    assert_eq!(
        fs::read_to_string(dir.join("devices.allow")).unwrap(),
        "c *:* m\nb *:* m\n\
         c 1:3 rwm\nc 1:5 rwm\nc 1:7 rwm\nc 1:8 rwm\nc 1:9 rwm\n\
         c 5:0 rwm\nc 5:1 rwm\nc 5:2 rwm\nc 136:* rwm\n"
    );
    cg.remove().unwrap();
    assert!(!dir.exists());
}

#[test]
fn v1_imitation_gets_a_given_device_after_the_default_list() {
    let root = fake_v1_root(&["memory", "cpu", "pids", "devices"]);
    let loop_rw = DeviceRule::device(DeviceKind::Block, 7, 3, Access::READ.union(Access::WRITE));
    let cg = Cgroup::create(
        root.path(),
        "dev",
        &with_devices(DevicePolicy::Default.and(&[loop_rw])),
    )
    .unwrap();
    let allow =
        fs::read_to_string(root.path().join("devices/kiln/kiln-dev/devices.allow")).unwrap();
    assert!(allow.ends_with("c 136:* rwm\nb 7:3 rw\n"), "{allow}");
    cg.remove().unwrap();
}

#[test]
fn v1_imitation_privileged_allows_every_device() {
    let root = fake_v1_root(&["memory", "cpu", "pids", "devices"]);
    let cg = Cgroup::create(root.path(), "priv", &with_devices(DevicePolicy::All)).unwrap();
    let dir = root.path().join("devices/kiln/kiln-priv");
    assert_eq!(read(&dir.join("devices.deny")), "a");
    assert_eq!(read(&dir.join("devices.allow")), "a *:* rwm");
    cg.remove().unwrap();
}

#[test]
fn v1_without_a_devices_controller_refuses_a_default_container() {
    let root = fake_v1_root(&["memory", "cpu", "pids"]);
    let err = Cgroup::create(root.path(), "nodev", &Resources::default()).unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::ControllerMissing {
                controller: "devices",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("devices cgroup controller"),
        "{err}"
    );
    assert!(
        !root.path().join("pids/kiln/kiln-nodev").exists(),
        "nothing left behind"
    );
    // Allowing every device needs no controller.
    let cg = Cgroup::create(root.path(), "priv", &with_devices(DevicePolicy::All)).unwrap();
    cg.remove().unwrap();
}

fn v2_device_filter(cg: &Cgroup) -> v2::DeviceFilter {
    match &cg.backend {
        Some(Backend::V2(g)) => g.device_filter(),
        other => panic!("not a v2 cgroup: {other:?}"),
    }
}

#[test]
fn v2_imitation_writes_no_device_files_and_attaches_no_program() {
    let root = fake_v2_root();
    for (id, policy, filter) in [
        ("dflt", DevicePolicy::Default, v2::DeviceFilter::NotCgroupfs),
        ("all", DevicePolicy::All, v2::DeviceFilter::None),
    ] {
        let cg = Cgroup::create(root.path(), id, &with_devices(policy.clone())).unwrap();
        assert_eq!(v2_device_filter(&cg), filter, "{policy:?}");
        let dir = root.path().join("kiln").join(format!("kiln-{id}"));
        let files: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!files.iter().any(|f| f.starts_with("devices")), "{files:?}");
        cg.remove().unwrap();
    }
}

#[test]
fn v2_usage_is_read_from_the_imitation_as_docker_counts_it() {
    let root = fake_v2_root();
    let cg = Cgroup::create(root.path(), "stats", &Resources::default()).unwrap();
    let dir = root.path().join("kiln/kiln-stats");
    assert_eq!(
        container_dirs(root.path(), "stats").unwrap(),
        std::slice::from_ref(&dir)
    );
    let files = [
        (
            "cpu.stat",
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
        ),
        ("memory.current", "10485760\n"),
        (
            "memory.stat",
            "anon 8388608\nfile 2097152\ninactive_file 1048576\n",
        ),
        ("memory.max", "67108864\n"),
        ("pids.current", "3\n"),
        (
            "io.stat",
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
        ),
        ("cgroup.procs", "41\n42\n"),
    ];
    for (name, text) in files {
        fs::write(dir.join(name), text).unwrap();
    }
    assert_eq!(
        usage_of(&root, "stats"),
        Usage {
            cpu_ns: Some(2_500_000),
            memory: Some(9 << 20),
            memory_limit: Some(64 << 20),
            pids: Some(3),
            block_read: Some(4096),
            block_write: Some(8192),
        }
    );
    assert_eq!(processes(root.path(), "stats").unwrap(), [41, 42]);
    fs::write(dir.join("memory.max"), "max\n").unwrap();
    assert_eq!(usage_of(&root, "stats").memory_limit, None);
    // Joining writes the pid to the group's cgroup.procs.
    join_container(root.path(), "stats", 77).unwrap();
    assert_eq!(read(&dir.join("cgroup.procs")), "77");
    cg.remove().unwrap();
    assert!(container_dirs(root.path(), "stats").unwrap().is_empty());
    assert!(usage(root.path(), "stats").is_err());
    assert!(join_container(root.path(), "stats", 77).is_err());
}

fn usage_of(root: &tempfile::TempDir, id: &str) -> Usage {
    usage(root.path(), id).unwrap()
}

#[test]
fn v1_co_mounted_controllers_share_one_dir() {
    let root = fake_v1_root(&["memory", "cpu,cpuacct", "pids", "devices"]);
    std::os::unix::fs::symlink("cpu,cpuacct", root.path().join("cpu")).unwrap();
    std::os::unix::fs::symlink("cpu,cpuacct", root.path().join("cpuacct")).unwrap();
    let res = Resources {
        cpus: Some(0.5),
        ..Resources::default()
    };
    let cg = Cgroup::create(root.path(), "co", &res).unwrap();
    let cpu = root.path().join("cpu/kiln/kiln-co");
    assert_eq!(cg.paths().iter().filter(|p| **p == cpu).count(), 1);
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
    fs::write(cpu.join("cpuacct.usage"), "123456\n").unwrap();
    assert_eq!(usage_of(&root, "co").cpu_ns, Some(123_456));
    cg.remove().unwrap();
    assert!(!cpu.exists());
}

#[test]
fn weights_convert_between_v1_and_v2_as_runc_does() {
    // runc's and crun's shares → weight mapping, and its inverse onto the shares' range.
    assert_eq!(CpuWeight::Shares(2).weight(), 1);
    assert_eq!(CpuWeight::Shares(1024).weight(), 39);
    assert_eq!(CpuWeight::Shares(262_144).weight(), 10_000);
    assert_eq!(CpuWeight::Weight(1).shares(), 2);
    assert_eq!(CpuWeight::Weight(100).shares(), 2_597);
    assert_eq!(CpuWeight::Weight(10_000).shares(), 262_144);
    assert_eq!(CpuWeight::Shares(512).shares(), 512);
    assert_eq!(CpuWeight::Weight(50).weight(), 50);
    // runc's blkio weight → io.weight.
    assert_eq!(io_weight(10), 1);
    assert_eq!(io_weight(500), 4_950);
    assert_eq!(io_weight(1_000), 10_000);
}

/// The major:minor of a block device this host has (a loop device: it exists, bound or
/// not, and can take throttle rules).
fn some_block_device() -> (u32, u32) {
    let dev = read(Path::new("/sys/block/loop0/dev"));
    let (major, minor) = dev.split_once(':').unwrap();
    (major.parse().unwrap(), minor.parse().unwrap())
}

fn throttles(major: u32, minor: u32) -> Vec<Throttle> {
    [
        (ThrottleKind::ReadBps, 2 << 20),
        (ThrottleKind::WriteBps, 1 << 20),
        (ThrottleKind::ReadIops, 300),
        (ThrottleKind::WriteIops, 200),
    ]
    .into_iter()
    .map(|(kind, rate)| Throttle {
        kind,
        major,
        minor,
        rate,
    })
    .collect()
}

#[test]
fn v1_finer_controls_are_written_and_a_process_can_join_the_cpuset() {
    require_root!("cgroups");
    let id = unique_id("v1-finer");
    let (major, minor) = some_block_device();
    let res = Resources {
        memory: Some(64 << 20),
        memory_reservation: Some(32 << 20),
        memory_swap: Some(Swap::Limit(128 << 20)),
        cpu_weight: Some(CpuWeight::Weight(100)),
        cpuset_cpus: Some("0".into()),
        throttles: throttles(major, minor),
        ..Resources::default()
    };
    let cg = Cgroup::create(real_root(), &id, &res).unwrap();
    let dir = |c: &str| real_root().join(c).join("kiln").join(format!("kiln-{id}"));
    assert_eq!(
        read(&dir("memory").join("memory.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(
        read(&dir("memory").join("memory.soft_limit_in_bytes")),
        "33554432"
    );
    assert_eq!(
        read(&dir("memory").join("memory.memsw.limit_in_bytes")),
        "134217728"
    );
    assert_eq!(read(&dir("cpu").join("cpu.shares")), "2597");
    assert_eq!(read(&dir("cpuset").join("cpuset.cpus")), "0");
    // Not asked for: the parent's, which kiln filled from the root.
    assert_eq!(
        read(&dir("cpuset").join("cpuset.mems")),
        read(&real_root().join("cpuset/cpuset.mems"))
    );
    assert!(!read(&real_root().join("cpuset/kiln/cpuset.cpus")).is_empty());
    let blkio = dir("blkio");
    for (file, value) in [
        ("blkio.throttle.read_bps_device", 2 << 20),
        ("blkio.throttle.write_bps_device", 1 << 20),
        ("blkio.throttle.read_iops_device", 300),
        ("blkio.throttle.write_iops_device", 200),
    ] {
        assert_eq!(
            read(&blkio.join(file)),
            format!("{major}:{minor} {value}"),
            "{file}"
        );
    }
    assert!(cg.paths().contains(&dir("cpuset")));
    let mut child = idle_process("read x");
    cg.join(child.id() as i32).unwrap();
    let membership = fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
    assert!(
        membership.contains(&format!(":cpuset:/kiln/kiln-{id}\n")),
        "{membership}"
    );
    cg.remove().unwrap();
    let _ = child.wait();
    assert!(!dir("cpuset").exists());
}

#[test]
fn v1_without_a_cpuset_asked_for_has_no_cpuset_dir() {
    require_root!("cgroups");
    let id = unique_id("v1-nocpuset");
    let cg = Cgroup::create(real_root(), &id, &Resources::default()).unwrap();
    assert!(!cg
        .paths()
        .iter()
        .any(|p| p.starts_with(real_root().join("cpuset"))));
    cg.remove().unwrap();
}

#[test]
fn v1_controls_this_kernel_lacks_are_errors_that_leave_nothing() {
    require_root!("cgroups");
    // This host's disks use no scheduler with weights (no BFQ), so no blkio weight file.
    let id = unique_id("v1-blkio-weight");
    let res = Resources {
        blkio_weight: Some(500),
        ..Resources::default()
    };
    let err = Cgroup::create(real_root(), &id, &res).unwrap_err();
    assert!(matches!(err, CgroupError::Unsupported { .. }), "{err}");
    assert!(
        err.to_string().contains("blkio.weight or blkio.bfq.weight"),
        "{err}"
    );
    assert!(!real_root()
        .join("memory/kiln")
        .join(format!("kiln-{id}"))
        .exists());
    // In an imitation without swap accounting, a swap limit is refused, unlimited swap
    // needs nothing.
    let root = fake_v1_root(&["memory", "cpu", "pids", "devices"]);
    let swap = |swap| Resources {
        memory: Some(64 << 20),
        memory_swap: Some(swap),
        devices: DevicePolicy::All,
        ..Resources::default()
    };
    let err = Cgroup::create(root.path(), "swap", &swap(Swap::Limit(128 << 20))).unwrap_err();
    assert!(err.to_string().contains("swap limit capabilities"), "{err}");
    assert!(!root.path().join("memory/kiln/kiln-swap").exists());
    Cgroup::create(root.path(), "swap", &swap(Swap::Unlimited))
        .unwrap()
        .remove()
        .unwrap();
    // A swap limit below the memory limit is nonsense whoever asks.
    let below = Resources {
        memory: Some(64 << 20),
        memory_swap: Some(Swap::Limit(32 << 20)),
        ..Resources::default()
    };
    assert!(matches!(
        Cgroup::create(root.path(), "below", &below),
        Err(CgroupError::InvalidSwap)
    ));
}

#[test]
fn v1_imitation_fills_an_empty_cpuset_parent_from_the_root() {
    let root = fake_v1_root(&["memory", "cpu", "pids", "devices", "cpuset"]);
    fs::write(root.path().join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
    fs::write(root.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
    let res = Resources {
        cpuset_mems: Some("0".into()),
        ..Resources::default()
    };
    let cg = Cgroup::create(root.path(), "set", &res).unwrap();
    assert_eq!(read(&root.path().join("cpuset/kiln/cpuset.cpus")), "0-3");
    assert_eq!(read(&root.path().join("cpuset/kiln/cpuset.mems")), "0");
    let dir = root.path().join("cpuset/kiln/kiln-set");
    assert_eq!(read(&dir.join("cpuset.cpus")), "0-3");
    assert_eq!(read(&dir.join("cpuset.mems")), "0");
    cg.remove().unwrap();
}

#[test]
fn v2_imitation_gets_the_finer_controls_on_v2_scales() {
    let root = fake_v2_root();
    // What this imitated kernel offers: swap accounting and BFQ's weight, shown by kiln/.
    fs::create_dir(root.path().join("kiln")).unwrap();
    for file in ["memory.swap.max", "io.bfq.weight", "io.weight"] {
        fs::write(root.path().join("kiln").join(file), "").unwrap();
    }
    let res = Resources {
        memory: Some(64 << 20),
        memory_reservation: Some(32 << 20),
        memory_swap: Some(Swap::Limit(96 << 20)),
        cpu_weight: Some(CpuWeight::Shares(1024)),
        cpuset_cpus: Some("0-1".into()),
        cpuset_mems: Some("0".into()),
        blkio_weight: Some(300),
        throttles: throttles(8, 0),
        ..Resources::default()
    };
    let cg = Cgroup::create(root.path(), "finer", &res).unwrap();
    let dir = root.path().join("kiln/kiln-finer");
    assert_eq!(
        read(&root.path().join("kiln/cgroup.subtree_control")),
        "+memory +cpu +pids +io +cpuset"
    );
    assert_eq!(read(&dir.join("memory.max")), "67108864");
    // memory.swap.max is swap alone: 96 MiB of memory+swap over 64 MiB of memory.
    assert_eq!(read(&dir.join("memory.swap.max")), "33554432");
    assert_eq!(read(&dir.join("memory.low")), "33554432");
    assert_eq!(read(&dir.join("cpu.weight")), "39");
    assert_eq!(read(&dir.join("cpuset.cpus")), "0-1");
    assert_eq!(read(&dir.join("cpuset.mems")), "0");
    // BFQ's weight has Docker's scale.
    assert_eq!(read(&dir.join("io.bfq.weight")), "300");
    assert!(!dir.join("io.weight").exists());
    assert_eq!(
        fs::read_to_string(dir.join("io.max")).unwrap(),
        "8:0 rbps=2097152\n8:0 wbps=1048576\n8:0 riops=300\n8:0 wiops=200\n"
    );
    cg.remove().unwrap();

    // Without BFQ, io.weight on its own scale; unlimited swap is "max"; weight as given.
    fs::remove_file(root.path().join("kiln/io.bfq.weight")).unwrap();
    let res = Resources {
        memory: Some(64 << 20),
        memory_swap: Some(Swap::Unlimited),
        cpu_weight: Some(CpuWeight::Weight(50)),
        blkio_weight: Some(500),
        ..Resources::default()
    };
    let cg = Cgroup::create(root.path(), "generic", &res).unwrap();
    let dir = root.path().join("kiln/kiln-generic");
    assert_eq!(read(&dir.join("io.weight")), "default 4950");
    assert_eq!(read(&dir.join("memory.swap.max")), "max");
    assert_eq!(read(&dir.join("cpu.weight")), "50");
    assert!(!dir.join("cpuset.cpus").exists(), "no cpuset asked for");
    cg.remove().unwrap();

    // No swap accounting, no weight file: a swap limit or a weight cannot be applied.
    for file in ["memory.swap.max", "io.weight"] {
        fs::remove_file(root.path().join("kiln").join(file)).unwrap();
    }
    let swap = Resources {
        memory: Some(64 << 20),
        memory_swap: Some(Swap::Limit(128 << 20)),
        ..Resources::default()
    };
    let err = Cgroup::create(root.path(), "swap", &swap).unwrap_err();
    assert!(err.to_string().contains("memory.swap.max"), "{err}");
    let weight = Resources {
        blkio_weight: Some(500),
        ..Resources::default()
    };
    let err = Cgroup::create(root.path(), "weight", &weight).unwrap_err();
    assert!(
        err.to_string().contains("io.bfq.weight or io.weight"),
        "{err}"
    );
    assert!(!root.path().join("kiln/kiln-swap").exists());
    assert!(!root.path().join("kiln/kiln-weight").exists());
}
