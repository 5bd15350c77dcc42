//! Real tests of `run_container`: busybox containers on the real kernel, as root.
//!
//! The container's output is captured through a bind mount: each test's script starts with
//! `exec >/out/log 2>&1`, `/out` being a host temp dir.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::cgroups::DEFAULT_CGROUP_ROOT;
use super::tests::{busybox_image_layer, root_process};
use super::*;

const DEFAULT_CAPS: &str = "00000000a80425fb";

struct Fixture {
    tmp: tempfile::TempDir,
}

/// Numbers runs across all tests of the process, so container ids never collide.
static RUNS: AtomicUsize = AtomicUsize::new(0);

struct Outcome {
    exit: Result<ContainerExit, RuntimeError>,
    log: String,
    upper: PathBuf,
}

impl Outcome {
    fn ok(&self) -> ContainerExit {
        match &self.exit {
            Ok(exit) => *exit,
            Err(e) => panic!("container failed to start: {e}\nlog: {}", self.log),
        }
    }

    fn status(&self) -> ExitStatus {
        self.ok().status
    }
}

impl Fixture {
    fn new() -> Fixture {
        assert!(
            nix::unistd::geteuid().is_root(),
            "container tests need root"
        );
        let fx = Fixture {
            tmp: tempfile::tempdir().unwrap(),
        };
        busybox_image_layer(&fx.layers_dir().join("base"));
        fx
    }

    fn layers_dir(&self) -> PathBuf {
        self.tmp.path().join("layers")
    }

    /// A spec running `script` under `sh -c` with Docker's defaults and its output in
    /// `<run dir>/out/log`.
    fn spec(&self, script: &str) -> ContainerSpec {
        let n = RUNS.fetch_add(1, Ordering::SeqCst);
        let dir = self.tmp.path().join(format!("runs/{n}"));
        for sub in ["upper", "work", "out", "state"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // Writable for tests that run as another user.
        fs::set_permissions(dir.join("out"), fs::Permissions::from_mode(0o777)).unwrap();
        ContainerSpec {
            overlay: Overlay {
                layers_dir: self.layers_dir(),
                lowers: vec!["base".into()],
                upper: dir.join("upper"),
                work: dir.join("work"),
            },
            read_only: false,
            process: root_process(
                "kiln-box",
                &["/bin/sh", "-c", &format!("exec >/out/log 2>&1; {script}")],
            ),
            mounts: vec![BindMount {
                source: dir.join("out"),
                target: "/out".into(),
                readonly: false,
            }],
            tmpfs: vec![],
            shm_size: None,
            sysctls: vec![],
            devices: vec![],
            etc_hosts: "127.0.0.1 localhost\n10.0.0.1 kiln-box\n".into(),
            etc_resolv_conf: "nameserver 10.0.0.53\n".into(),
            confinement: Confinement::default(),
            init: true,
            tty: false,
            interactive: false,
            capture_output: false,
            id: format!("t{}-{n}", std::process::id()),
            state_dir: dir.join("state"),
            cgroup_root: None,
            userns: Default::default(),
        }
    }

    fn run(&self, spec: &ContainerSpec) -> Outcome {
        let exit = run_container(spec);
        let out = &spec.mounts[0].source;
        Outcome {
            exit,
            log: fs::read_to_string(out.join("log")).unwrap_or_default(),
            upper: spec.overlay.upper.clone(),
        }
    }

    fn run_sh(&self, script: &str) -> Outcome {
        self.run(&self.spec(script))
    }
}

fn status_lines(log: &str) -> String {
    log.lines()
        .filter(|l| {
            l.starts_with("Cap") || l.starts_with("NoNewPrivs") || l.starts_with("Seccomp:")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn expected_status(caps: &str, no_new_privs: u8, seccomp: u8) -> String {
    format!(
        "CapInh:\t0000000000000000\nCapPrm:\t{caps}\nCapEff:\t{caps}\nCapBnd:\t{caps}\n\
         CapAmb:\t0000000000000000\nNoNewPrivs:\t{no_new_privs}\nSeccomp:\t{seccomp}\n"
    )
}

fn kiln_cgroups(id_prefix: &str) -> Vec<PathBuf> {
    ["memory", "cpu", "pids"]
        .iter()
        .flat_map(|c| fs::read_dir(Path::new(DEFAULT_CGROUP_ROOT).join(c).join("kiln")).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .starts_with(&format!("kiln-{id_prefix}"))
            })
        })
        .collect()
}

const STATUS_SCRIPT: &str = "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status";

#[test]
fn default_capabilities_no_new_privs_and_seccomp_are_exact() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let out = fx.run_sh(STATUS_SCRIPT);
    assert!(out.status().success(), "{}", out.log);
    assert_eq!(status_lines(&out.log), expected_status(DEFAULT_CAPS, 1, 2));
    // Without no_new_privs the filter goes in while kiln still has CAP_SYS_ADMIN.
    let mut spec = fx.spec(STATUS_SCRIPT);
    spec.confinement.no_new_privileges = false;
    let out = fx.run(&spec);
    assert_eq!(status_lines(&out.log), expected_status(DEFAULT_CAPS, 0, 2));
}

#[test]
fn drop_all_add_one_gives_exactly_that_one() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut spec = fx.spec(STATUS_SCRIPT);
    spec.confinement.capabilities =
        CapabilitySet::resolve(&["NET_BIND_SERVICE".into()], &["ALL".into()], false).unwrap();
    let out = fx.run(&spec);
    assert!(out.status().success(), "{}", out.log);
    assert_eq!(
        status_lines(&out.log),
        expected_status("0000000000000400", 1, 2)
    );
}

#[test]
fn privileged_has_every_capability() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut spec = fx.spec(STATUS_SCRIPT);
    spec.confinement.capabilities = CapabilitySet::resolve(&[], &[], true).unwrap();
    // All 41 capabilities of this kernel, less any this environment withholds from kiln.
    let all = format!("{:016x}", CapabilitySet::privileged().bounding);
    assert_eq!(
        all,
        format!("{:016x}", 0x1ff_ffff_ffffu64 & capabilities::own_bounding())
    );
    let out = fx.run(&spec);
    assert!(out.status().success(), "{:?} {}", out.exit, out.log);
    assert_eq!(status_lines(&out.log), expected_status(&all, 1, 2));
    spec.confinement.seccomp = SeccompPolicy::Unconfined;
    spec.confinement.no_new_privileges = false;
    let out = fx.run(&spec);
    assert_eq!(status_lines(&out.log), expected_status(&all, 0, 0));
}

#[test]
fn a_non_root_user_has_no_capabilities_unless_ambient() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut spec = fx.spec(&format!("id -u; {STATUS_SCRIPT}"));
    (spec.process.uid, spec.process.gid) = (1000, 1000);
    let out = fx.run(&spec);
    assert!(out.log.starts_with("1000\n"), "{}", out.log);
    assert!(
        out.log.contains("CapEff:\t0000000000000000\n"),
        "{}",
        out.log
    );
    assert!(out.log.contains(&format!("CapBnd:\t{DEFAULT_CAPS}\n")));
    spec.confinement.capabilities = CapabilitySet::uniform(0).with_ambient(1 << 10);
    let out = fx.run(&spec);
    assert!(
        out.log.contains("CapEff:\t0000000000000400\n"),
        "{}",
        out.log
    );
    assert!(out.log.contains("CapAmb:\t0000000000000400\n"));
}

#[test]
fn seccomp_blocks_mount_and_namespaces_even_for_root() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut spec =
        fx.spec("mkdir /m; mount -t tmpfs x /m; echo mount=$?; unshare -n true; echo unshare=$?");
    spec.confinement.capabilities = CapabilitySet::privileged();
    spec.confinement.capabilities.bounding &= !(1 << 21);
    spec.confinement.capabilities.effective &= !(1 << 21);
    spec.confinement.capabilities.permitted &= !(1 << 21);
    let out = fx.run(&spec);
    assert!(
        out.log.contains("mount=255\n") || out.log.contains("mount=1\n"),
        "{}",
        out.log
    );
    assert!(out.log.contains("unshare=1\n"), "{}", out.log);
    assert!(out.log.contains("Operation not permitted"), "{}", out.log);
}

#[test]
fn a_memory_hog_is_oom_killed_and_reported() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut spec = fx.spec("a=$(head -c 100000000 /dev/zero | tr '\\0' x); echo survived ${#a}");
    spec.confinement.resources.memory = Some(32 << 20);
    let out = fx.run(&spec);
    let exit = out.ok();
    assert!(exit.oom_killed, "{exit:?} {}", out.log);
    assert!(!out.log.contains("survived"), "{}", out.log);
    // The shell itself was killed (it held the string).
    assert_eq!(exit.status, ExitStatus::Signaled(9), "{}", out.log);
    assert_eq!(exit.status.code(), 137);

    let out = fx.run_sh("a=$(head -c 1000000 /dev/zero | tr '\\0' x); echo ${#a}");
    assert_eq!(out.log, "1000000\n");
    assert!(!out.ok().oom_killed);
}

#[test]
fn a_fork_loop_stops_at_the_pids_limit() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    // ash gives up at the first failed fork; /out/count holds how many sleeps started.
    let mut spec =
        fx.spec("i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); echo $i > /out/count; done");
    spec.confinement.resources.pids = Some(16);
    let started = Instant::now();
    let out = fx.run(&spec);
    assert!(!out.status().success(), "{}", out.log);
    let count = fs::read_to_string(spec.mounts[0].source.join("count")).unwrap();
    // 16 = the init + sh + 14 sleeps.
    assert_eq!(count, "14\n", "{}", out.log);
    assert!(out.log.contains("can't fork"), "{}", out.log);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the sleeps died with the init"
    );
}

#[test]
fn the_cpu_limit_is_written() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut spec = fx.spec("cat /proc/self/cgroup");
    spec.confinement.resources.cpus = Some(0.5);
    let out = fx.run(&spec);
    assert!(out.status().success());
    assert!(
        out.log.contains(&format!(":cpu:/kiln/kiln-{}\n", spec.id)),
        "{}",
        out.log
    );
}

#[test]
fn only_fds_0_to_2_reach_the_command() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    // A fd kiln leaks by mistake (no O_CLOEXEC) must not reach the container.
    // SAFETY: a plain open of a NUL-terminated path.
    let leaked = unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
    let out = fx.run_sh("ls /proc/self/fd");
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(leaked) };
    assert!(out.status().success());
    // 3 is ls's own handle on the directory.
    assert_eq!(out.log, "0\n1\n2\n3\n");
}

#[test]
fn masked_paths_are_empty_and_read_only_paths_refuse_writes() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    // This kernel has no /proc/kcore or /proc/sched_debug; these masked paths exist.
    let out = fx.run_sh(
        "wc -c < /proc/keys; wc -c < /proc/timer_list; ls /sys/firmware | wc -l; \
         ls /proc/acpi | wc -l; \
         echo x > /proc/keys; wc -c < /proc/keys; touch /sys/firmware/x || echo firmware-ro; \
         echo 1 > /proc/sys/kernel/ns_last_pid || echo sys-ro; \
         echo h > /proc/sysrq-trigger || echo sysrq-ro; \
         grep -c ' /proc/sys ' /proc/self/mountinfo",
    );
    assert!(out.status().success(), "{}", out.log);
    let kept: Vec<&str> = out
        .log
        .lines()
        .filter(|l| !l.contains("sh: ") && !l.starts_with("touch:"))
        .collect();
    // The fifth 0: a write to a masked file goes to /dev/null. (This kernel has no
    // /proc/sysrq-trigger; the read-only bind covers it where it exists.)
    assert_eq!(
        kept,
        [
            "0",
            "0",
            "0",
            "0",
            "0",
            "firmware-ro",
            "sys-ro",
            "sysrq-ro",
            "1"
        ],
        "{}",
        out.log
    );
    assert!(
        fs::read_dir("/sys/firmware").unwrap().count() > 0,
        "the host's is not empty"
    );
}

#[test]
fn hostname_and_etc_files_are_kilns_and_image_symlinks_are_not_followed() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let out = fx.run_sh(
        "hostname; cat /etc/hostname /etc/hosts /etc/resolv.conf /tmp/resolv-target; \
         readlink /etc/resolv.conf || echo not-a-link",
    );
    assert!(out.status().success(), "{}", out.log);
    assert_eq!(
        out.log,
        "kiln-box\nkiln-box\n127.0.0.1 localhost\n10.0.0.1 kiln-box\nnameserver 10.0.0.53\n\
         image resolv target\nnot-a-link\n"
    );
    assert_ne!(nix::unistd::gethostname().unwrap(), "kiln-box");
    assert!(
        !out.upper.join("etc").exists(),
        "nothing written into the container's layer"
    );
}

#[test]
fn network_none_has_only_loopback_and_host_shares_the_hosts() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let out = fx.run_sh("ls /sys/class/net; cat /sys/class/net/lo/flags");
    assert_eq!(out.log, "lo\n0x9\n");
    let mut spec = fx.spec("ls /sys/class/net | wc -l");
    spec.process.network = NetworkMode::Host;
    let out = fx.run(&spec);
    let host = fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(out.log, format!("{host}\n"));
}

#[test]
fn read_only_root_refuses_writes_outside_tmpfs_and_writable_binds() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut spec = fx.spec(
        "touch /x || echo root-ro; touch /tmp/x || echo tmp-ro; touch /scratch/x && echo tmpfs-rw; \
         touch /out/x && echo bind-rw; touch /ro/x || echo bind-ro; echo ok > /etc/hosts && echo hosts-rw",
    );
    spec.read_only = true;
    spec.tmpfs = vec!["/scratch".into()];
    let ro_source = fx.tmp.path().join("ro-source");
    fs::create_dir_all(&ro_source).unwrap();
    spec.mounts.push(BindMount {
        source: ro_source.clone(),
        target: "/ro".into(),
        readonly: true,
    });
    let out = fx.run(&spec);
    assert!(out.status().success(), "{}", out.log);
    let kept: Vec<&str> = out
        .log
        .lines()
        .filter(|l| !l.starts_with("touch:"))
        .collect();
    assert_eq!(
        kept,
        ["root-ro", "tmp-ro", "tmpfs-rw", "bind-rw", "bind-ro", "hosts-rw"]
    );
    assert_eq!(fs::read_dir(&ro_source).unwrap().count(), 0);
}

#[test]
fn mount_targets_are_created_inside_the_root_through_image_symlinks() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let layer = fx.layers_dir().join("links");
    fs::create_dir_all(&layer).unwrap();
    // An absolute symlink that would leave the root if resolved on the host.
    symlink("/", layer.join("escape")).unwrap();
    let mut spec = fx.spec("ls -d /deep/dir /escape/tmpdir && cat /file-target");
    spec.overlay.lowers.insert(0, "links".into());
    let file = fx.tmp.path().join("file-source");
    fs::write(&file, "file bound\n").unwrap();
    spec.mounts.push(BindMount {
        source: file,
        target: "/file-target".into(),
        readonly: true,
    });
    spec.tmpfs = vec!["/deep/dir".into(), "/escape/tmpdir".into()];
    let out = fx.run(&spec);
    assert!(out.status().success(), "{}", out.log);
    assert_eq!(out.log, "/deep/dir\n/escape/tmpdir\nfile bound\n");
    // /escape/tmpdir resolved to /tmpdir in the root, and nothing appeared on the host.
    assert!(out.upper.join("tmpdir").is_dir());
    assert!(!Path::new("/tmpdir").exists());
}

#[test]
fn exit_codes_and_signals_propagate() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    assert_eq!(fx.run_sh("exit 3").status(), ExitStatus::Exited(3));
    assert_eq!(fx.run_sh("kill -9 $$").status(), ExitStatus::Signaled(9));
    let mut spec = fx.spec("exit 5");
    spec.init = false;
    assert_eq!(fx.run(&spec).status(), ExitStatus::Exited(5));
}

#[test]
fn signals_sent_to_the_container_reach_the_command_through_the_init() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let spec = fx.spec("echo started; exec sleep 100");
    let running = start_container(&spec).unwrap();
    let log = spec.mounts[0].source.join("log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&log).is_ok_and(|l| l == "started\n") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    running.signal(Signal::SIGTERM).unwrap();
    let exit = running.wait().unwrap();
    assert_eq!(exit.status, ExitStatus::Signaled(15));
}

#[test]
fn orphans_are_reaped_by_the_init() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let out = fx.run_sh(
        "(sleep 0.2 &); sleep 1; echo $$; cat /proc/[0-9]*/stat | cut -d' ' -f3 | sort | uniq -c",
    );
    assert!(out.status().success(), "{}", out.log);
    assert!(!out.log.contains(" Z\n"), "a zombie remains: {}", out.log);
    assert!(out.log.starts_with("2\n"), "the init is PID 1: {}", out.log);
}

#[test]
fn the_workdir_is_created_and_entered() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut spec = fx.spec("pwd");
    spec.process.cwd = "/srv/./app/".into();
    let out = fx.run(&spec);
    assert_eq!(out.log, "/srv/app\n");
}

#[test]
fn setup_errors_leave_nothing_behind() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut spec = fx.spec("true");
    spec.process.argv = vec!["no-such-command".into()];
    let err = run_container(&spec).unwrap_err();
    assert!(matches!(err, RuntimeError::CommandNotFound { .. }), "{err}");
    assert_eq!(err.command_exit_code(), Some(127));
    spec.process.argv = vec!["/etc/hosts".into()];
    let err = run_container(&spec).unwrap_err();
    assert_eq!(err.command_exit_code(), Some(126), "{err}");
    spec.process.argv = vec!["/bin/true".into()];
    spec.mounts.push(BindMount {
        source: "/nonexistent/kiln".into(),
        target: "/x".into(),
        readonly: false,
    });
    let err = run_container(&spec).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/kiln"), "{err}");
    assert!(kiln_cgroups(&spec.id).is_empty());
}

#[test]
fn a_pty_is_the_controlling_terminal() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut spec = fx.spec("");
    spec.process.argv[2] = "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo tty > /out/log; \
                    : < /dev/tty && echo controlling >> /out/log; tty >> /out/log; \
                    echo to-the-pty"
        .into();
    spec.tty = true;
    let out = fx.run(&spec);
    assert!(out.status().success(), "{}", out.log);
    // The pty comes from the container's own devpts.
    assert_eq!(out.log, "tty\ncontrolling\n/dev/pts/0\n");
}

#[test]
fn fifty_runs_leave_no_mounts_or_cgroups() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let before = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut spec = fx.spec("true");
    let prefix = format!("cycle{}-", std::process::id());
    spec.process.argv = vec!["/bin/true".into()];
    spec.confinement.resources.memory = Some(64 << 20);
    for i in 0..50 {
        spec.id = format!("{prefix}{i}");
        assert!(run_container(&spec).unwrap().status.success());
    }
    assert!(kiln_cgroups(&prefix).is_empty());
    assert_eq!(before, fs::read_to_string("/proc/self/mountinfo").unwrap());
}

#[test]
fn a_container_mounts_five_hundred_lowers_and_the_top_most_wins() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    // 499 image layers plus the container's init layer: overlayfs's limit of 500 lowers.
    let mut spec = fx.spec("cat /n /bottom-only");
    let names: Vec<String> = (0..498).map(|i| format!("{i:064x}")).collect();
    for (i, name) in names.iter().enumerate() {
        let layer = fx.layers_dir().join(name);
        fs::create_dir_all(&layer).unwrap();
        fs::write(layer.join("n"), format!("{i}\n")).unwrap();
    }
    fs::write(
        fx.layers_dir().join(&names[497]).join("bottom-only"),
        "reached\n",
    )
    .unwrap();
    spec.overlay.lowers.splice(0..0, names);
    let out = fx.run(&spec);
    assert_eq!(out.log, "0\nreached\n");
}

#[test]
fn ulimits_shm_size_and_sysctls_reach_the_container_and_not_the_host() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let host_shmmax = fs::read_to_string("/proc/sys/kernel/shmmax").unwrap();
    let mut spec = fx.spec(
        "ulimit -n; ulimit -Hn; ulimit -c; df -k /dev/shm | tail -1; \
         cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_forward; \
         echo 1 > /proc/sys/kernel/shmmax || echo sys-ro",
    );
    spec.confinement.rlimits = vec![
        crate::Rlimit::new("nofile", 321, 654).unwrap(),
        crate::Rlimit::new("core", 0, crate::RLIM_INFINITY).unwrap(),
    ];
    spec.shm_size = Some(3 << 20);
    spec.sysctls = vec![
        ("kernel.shmmax".into(), "12345678".into()),
        ("net.ipv4.ip_forward".into(), "1".into()),
    ];
    let out = fx.run(&spec);
    assert!(out.status().success(), "{}", out.log);
    let lines: Vec<&str> = out.log.lines().filter(|l| !l.contains("sh: ")).collect();
    assert_eq!(lines[..3], ["321", "654", "0"], "{}", out.log);
    let df: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(df[1], "3072", "{}", out.log);
    assert_eq!(lines[4..], ["12345678", "1", "sys-ro"], "{}", out.log);
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/shmmax").unwrap(),
        host_shmmax
    );
}

#[test]
fn a_sysctl_the_namespace_lacks_fails_the_start_by_name() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut spec = fx.spec("true");
    spec.sysctls = vec![("net.no.such.key".into(), "1".into())];
    let err = run_container(&spec).unwrap_err();
    assert_eq!(
        err.to_string(),
        "write sysctl \"net.no.such.key\": No such file or directory"
    );
}

/// A child that fails while kiln still sets it up (here its workdir is a file) has closed
/// its end of the sync socket when kiln lets it go on: kiln must report the child's error,
/// not die of SIGPIPE (the kiln binary keeps SIGPIPE's default) or say "broken pipe".
#[test]
fn a_child_that_fails_while_kiln_attaches_it_reports_its_own_error() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut spec = fx.spec("true");
    spec.process.cwd = "/bin/busybox".into();
    // Returns only once the child has exited (WNOWAIT: kiln still reaps it).
    let mut wait_for_its_end = |pid: i32| {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid fills `info`; the pid is this process's child.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        assert_eq!(rc, 0, "waitid: {}", std::io::Error::last_os_error());
        Ok(())
    };
    let err = match start_container_attached(&spec, &mut wait_for_its_end) {
        Ok(_) => panic!("a workdir that is a file started"),
        Err(e) => e,
    };
    assert!(
        err.to_string().contains("Not a directory"),
        "the child's own error, not the sync socket's: {err}"
    );
    assert!(kiln_cgroups(&spec.id).is_empty());
}
