//! Real tests of the runtime: real overlayfs, namespaces and busybox steps, as root.

use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::*;

pub(super) const BUSYBOX: &str = "/bin/busybox";

/// `argv` run as root in `/` with the default `PATH`, without network: the process every
/// step and container test starts from (shared with `container_tests` and `oci::tests`).
pub(super) fn root_process(hostname: &str, argv: &[&str]) -> Process {
    Process {
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: vec![format!("PATH={DEFAULT_PATH}")],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        groups: vec![],
        hostname: hostname.into(),
        network: NetworkMode::None,
    }
}

/// A temp dir with `layers/base` (busybox with its applets in /bin, a regular /etc/hosts and
/// a symlinked /etc/resolv.conf) and numbered step dirs with fresh upper and work dirs.
pub(super) struct Fixture {
    pub(super) tmp: tempfile::TempDir,
    steps: AtomicUsize,
}

pub(super) struct Outcome {
    pub(super) status: Result<ExitStatus, RuntimeError>,
    pub(super) stdout: String,
    pub(super) stderr: String,
    pub(super) upper: PathBuf,
}

impl Outcome {
    pub(super) fn ok(&self) -> ExitStatus {
        match &self.status {
            Ok(status) => *status,
            Err(e) => panic!("step failed to start: {e}\nstderr: {}", self.stderr),
        }
    }

    pub(super) fn err(&self) -> &RuntimeError {
        match &self.status {
            Ok(status) => panic!("step ran ({status:?}) but should have failed to start"),
            Err(e) => e,
        }
    }
}

/// A busybox layer dir (applets linked by hand, not with `--install`).
pub(super) fn busybox_layer(dir: &Path) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
    }
}

/// The base image of the step and container tests: busybox, an `/etc/hosts` of its own,
/// and `/etc/resolv.conf` as a symlink where kiln binds its own file (it must be replaced,
/// not followed).
pub(super) fn busybox_image_layer(dir: &Path) {
    busybox_layer(dir);
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/hosts"), "127.0.0.1 image-hosts\n").unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::write(dir.join("tmp/resolv-target"), "image resolv target\n").unwrap();
    symlink("/tmp/resolv-target", dir.join("etc/resolv.conf")).unwrap();
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        assert!(
            nix::unistd::geteuid().is_root(),
            "runtime tests need root (namespaces, overlayfs)"
        );
        assert!(
            Path::new(BUSYBOX).exists(),
            "install busybox-static: apt-get install busybox-static"
        );
        let fx = Fixture {
            tmp: tempfile::tempdir().unwrap(),
            steps: AtomicUsize::new(0),
        };
        busybox_image_layer(&fx.layer("base"));
        fx
    }

    pub(super) fn layers_dir(&self) -> PathBuf {
        self.tmp.path().join("layers")
    }

    pub(super) fn layer(&self, name: &str) -> PathBuf {
        let dir = self.layers_dir().join(name);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(super) fn overlay(&self, lowers: &[&str]) -> Overlay {
        let n = self.steps.fetch_add(1, Ordering::SeqCst);
        let step = self.tmp.path().join(format!("steps/{n}"));
        fs::create_dir_all(step.join("upper")).unwrap();
        fs::create_dir_all(step.join("work")).unwrap();
        Overlay {
            layers_dir: self.layers_dir(),
            lowers: lowers.iter().map(|l| l.to_string()).collect(),
            upper: step.join("upper"),
            work: step.join("work"),
        }
    }

    pub(super) fn sandbox(&self, lowers: &[&str], argv: &[&str]) -> StepSandbox {
        let overlay = self.overlay(lowers);
        let capture = |name: &str| -> OwnedFd {
            File::create(overlay.upper.parent().unwrap().join(name))
                .unwrap()
                .into()
        };
        StepSandbox {
            process: root_process("kiln-test", argv),
            stdout: capture("stdout"),
            stderr: capture("stderr"),
            mounts: Vec::new(),
            overlay,
            confinement: Confinement::default(),
            etc_files: Vec::new(),
        }
    }

    pub(super) fn sh(&self, script: &str) -> StepSandbox {
        self.sandbox(&["base"], &["/bin/sh", "-c", script])
    }

    pub(super) fn run(&self, sb: StepSandbox) -> Outcome {
        let status = run_step(&sb).map(|exit| exit.status);
        let step = sb.overlay.upper.parent().unwrap();
        Outcome {
            status,
            stdout: fs::read_to_string(step.join("stdout")).unwrap(),
            stderr: fs::read_to_string(step.join("stderr")).unwrap(),
            upper: sb.overlay.upper.clone(),
        }
    }

    pub(super) fn run_sh(&self, script: &str) -> Outcome {
        self.run(self.sh(script))
    }
}

/// Every path under `dir`, relative, sorted.
pub(super) fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn host_mounts() -> String {
    fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// The host pid of the process whose command line is exactly `argv`, waiting for it to
/// appear (a step's PID 1 after its execve).
pub(super) fn wait_for_process(argv: &[&str]) -> i32 {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == wanted) {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no process {argv:?} appeared");
}

pub(super) fn kill9(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
}

#[test]
fn a_step_leaves_exactly_its_change_in_the_upper_dir() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let out = fx.run_sh("echo hi > /x");
    assert_eq!(out.ok(), ExitStatus::Exited(0), "stderr: {}", out.stderr);
    // No /proc, /dev, /sys or /etc mount points: they live in the scaffold's init layer.
    assert_eq!(tree(&out.upper), ["x"]);
    assert_eq!(fs::read_to_string(out.upper.join("x")).unwrap(), "hi\n");
    let merged = out.upper.parent().unwrap().join("merged");
    assert_eq!(
        fs::read_dir(merged).unwrap().count(),
        0,
        "the host mount point stays empty"
    );
}

#[test]
fn stdout_and_stderr_go_to_the_given_fds() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let out = fx.run_sh("echo to-out; echo to-err >&2; read line; echo \"stdin:[$line]\"");
    assert!(out.ok().success());
    assert_eq!(out.stdout, "to-out\nstdin:[]\n");
    assert_eq!(out.stderr, "to-err\n");
}

#[test]
fn exit_codes_are_propagated() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let status = fx.run_sh("exit 3").ok();
    assert_eq!(status, ExitStatus::Exited(3));
    assert_eq!(status.code(), 3);
}

#[test]
fn a_step_killed_by_a_signal_reports_it() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let argv = ["sleep", "987001"];
    let sb = fx.sandbox(&["base"], &argv);
    let killer = std::thread::spawn(move || kill9(wait_for_process(&argv)));
    let status = fx.run(sb).ok();
    killer.join().unwrap();
    assert_eq!(status, ExitStatus::Signaled(9));
    assert_eq!(status.code(), 137);
}

#[test]
fn only_stdio_fds_reach_the_step() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    // An fd kiln leaks by mistake (no O_CLOEXEC) must still not reach the step.
    // SAFETY: a plain open of a NUL-terminated path.
    let leaked = unsafe { libc::open(c"/etc/hostname".as_ptr(), libc::O_RDONLY) };
    assert!(leaked > 2);
    let argv = ["sleep", "987002"];
    let sb = fx.sandbox(&["base"], &argv);
    let inspector = std::thread::spawn(move || {
        let pid = wait_for_process(&argv);
        let mut fds: Vec<i32> = fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
            .collect();
        fds.sort();
        let stdin = fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
        kill9(pid);
        (fds, stdin)
    });
    let status = fx.run(sb).ok();
    let (fds, stdin) = inspector.join().unwrap();
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(leaked) };
    assert_eq!(status, ExitStatus::Signaled(9));
    assert_eq!(fds, [0, 1, 2]);
    assert_eq!(stdin, Path::new("/dev/null"));
}

#[test]
fn the_step_is_pid_1_with_its_own_hostname_proc_and_dev() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let out = fx.run_sh(
        "echo pid=$$; hostname; ls /proc/self/status; echo /proc/[0-9]*; \
         echo x > /dev/null && wc -c < /dev/null; head -c 4 /dev/urandom | wc -c; \
         ls /dev; readlink /dev/ptmx; echo shm > /dev/shm/f && cat /dev/shm/f; \
         grep -c ' /dev/pts .* - devpts ' /proc/self/mountinfo",
    );
    assert!(
        out.ok().success(),
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    let expected_dev =
        "fd\nfull\nnull\nptmx\npts\nrandom\nshm\nstderr\nstdin\nstdout\ntty\nurandom\nzero";
    let expected = format!(
        "pid=1\nkiln-test\n/proc/self/status\n/proc/1\n0\n4\n{expected_dev}\npts/ptmx\nshm\n1\n"
    );
    assert_eq!(out.stdout, expected, "stderr: {}", out.stderr);
    assert_ne!(nix::unistd::gethostname().unwrap(), "kiln-test");
}

#[test]
fn network_none_has_only_loopback_and_it_is_up() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let out = fx.run_sh("ls /sys/class/net; cat /sys/class/net/lo/flags; touch /sys/x || echo ro");
    assert!(out.ok().success(), "stderr: {}", out.stderr);
    // 0x9 = IFF_UP | IFF_LOOPBACK.
    assert_eq!(out.stdout, "lo\n0x9\nro\n");
}

#[test]
fn host_network_binds_host_etc_files_over_regular_files_only() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut sb = fx.sh("cat /etc/hosts; echo x >> /etc/hosts || echo ro; cat /etc/resolv.conf");
    sb.process.network = NetworkMode::Host;
    let out = fx.run(sb);
    assert!(out.ok().success(), "stderr: {}", out.stderr);
    let host_hosts = fs::read_to_string("/etc/hosts").unwrap();
    // The image's /etc/resolv.conf is a symlink: left alone, never followed for a mount.
    assert_eq!(out.stdout, format!("{host_hosts}ro\nimage resolv target\n"));
    assert!(tree(&out.upper).is_empty(), "upper: {:?}", tree(&out.upper));
    assert!(
        fs::read_dir("/sys/class/net").unwrap().count() > 1,
        "host has more than lo"
    );
}

#[test]
fn the_workdir_is_created_and_entered() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut sb = fx.sh("pwd; echo data > file");
    sb.process.cwd = "/srv/./app/".into();
    let out = fx.run(sb);
    assert!(out.ok().success(), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "/srv/app\n");
    assert_eq!(tree(&out.upper), ["srv", "srv/app", "srv/app/file"]);
    assert_eq!(
        fs::metadata(out.upper.join("srv/app")).unwrap().mode() & 0o7777,
        0o755
    );
}

#[test]
fn a_workdir_that_is_a_file_is_a_setup_error() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut sb = fx.sh("true");
    sb.process.cwd = "/etc/hosts".into();
    let out = fx.run(sb);
    let err = out.err();
    assert!(
        matches!(err, RuntimeError::Setup { errno: Errno::ENOTDIR, target: Some(t), .. } if t == "/etc/hosts"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "chdir \"/etc/hosts\": Not a directory");
    assert_eq!(err.command_exit_code(), None);
}

#[test]
fn user_group_and_supplementary_groups_are_applied() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut sb = fx.sh("id -u; id -g; id -G; ls / > /dev/null && echo can-list-root");
    (sb.process.uid, sb.process.gid, sb.process.groups) = (1000, 1001, vec![1001, 27]);
    let out = fx.run(sb);
    assert!(out.ok().success(), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "1000\n1001\n1001 27\ncan-list-root\n");
}

#[test]
fn the_upper_root_takes_the_top_layers_root_mode() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let sb = fx.sh("true");
    fs::set_permissions(&sb.overlay.upper, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(fx.run(sb).ok().success());
    let base = fs::metadata(fx.layers_dir().join("base")).unwrap().mode();
    let upper = fs::metadata(fx.tmp.path().join("steps/0/upper"))
        .unwrap()
        .mode();
    assert_eq!(upper & 0o7777, base & 0o7777);
}

#[test]
fn missing_commands_are_reported_with_shell_exit_codes() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let out = fx.run(fx.sandbox(&["base"], &["no-such-command"]));
    assert!(
        matches!(out.err(), RuntimeError::CommandNotFound { .. }),
        "{:?}",
        out.err()
    );
    assert_eq!(out.err().command_exit_code(), Some(127));
    assert!(out
        .err()
        .to_string()
        .starts_with("exec \"no-such-command\": executable file not found in $PATH"));

    let out = fx.run(fx.sandbox(&["base"], &["/usr/bin/foo"]));
    assert_eq!(
        out.err().to_string(),
        "exec \"/usr/bin/foo\": No such file or directory"
    );
    assert_eq!(out.err().command_exit_code(), Some(127));

    let layer = fx.layer("script");
    fs::write(layer.join("not-exec"), "#!/bin/sh\n").unwrap();
    let out = fx.run(fx.sandbox(&["script", "base"], &["/not-exec"]));
    assert!(
        matches!(
            out.err(),
            RuntimeError::Setup {
                errno: Errno::EACCES,
                ..
            }
        ),
        "{:?}",
        out.err()
    );
    assert_eq!(out.err().command_exit_code(), Some(126));
}

#[test]
fn commands_are_searched_in_the_steps_path() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut sb = fx.sandbox(&["base"], &["echo", "found"]);
    sb.process.env = vec!["PATH=/nonexistent:/etc/hosts:/bin".into()];
    let out = fx.run(sb);
    assert!(out.ok().success(), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "found\n");
}

#[test]
fn nothing_stays_mounted_on_the_host() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let before = host_mounts();
    assert!(fx.run_sh("echo hi > /x").ok().success());
    let mut sb = fx.sh("true");
    sb.process.network = NetworkMode::Host;
    assert!(fx.run(sb).ok().success());
    with_overlay(&fx.overlay(&["base"]), |_| ()).unwrap();
    assert_eq!(before, host_mounts());
}

#[test]
fn sixty_layers_mount_and_the_top_most_wins() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    // Real store names are 64 hex digits; 59 of them plus the base layer.
    let names: Vec<String> = (0..59).map(|i| format!("{i:064x}")).collect();
    for (i, name) in names.iter().enumerate() {
        let layer = fx.layer(name);
        fs::write(layer.join("which"), format!("{i}\n")).unwrap();
        fs::write(layer.join(format!("only-{i}")), "").unwrap();
    }
    let mut lowers: Vec<&str> = names.iter().map(String::as_str).collect();
    lowers.push("base");
    let out = fx.run(fx.sandbox(
        &lowers,
        &["/bin/sh", "-c", "cat /which; ls / | grep -c only-"],
    ));
    assert!(out.ok().success(), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "0\n59\n");
}

/// `count` layers named like store layers (64 hex digits), top-most first; each has a file
/// `n` holding its index, and the bottom one also has `bottom-only`.
fn numbered_layers(fx: &Fixture, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("{i:064x}")).collect();
    for (i, name) in names.iter().enumerate() {
        fs::write(fx.layer(name).join("n"), format!("{i}\n")).unwrap();
    }
    fs::write(fx.layer(&names[count - 1]).join("bottom-only"), "reached\n").unwrap();
    names
}

#[test]
fn five_hundred_lowers_mount_for_a_step_and_the_top_most_wins() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    // 499 image layers (the busybox base last) plus the step's init layer: overlayfs's
    // limit of 500 lowers, far past what one page of mount options holds.
    let names = numbered_layers(&fx, 498);
    let mut lowers: Vec<&str> = names.iter().map(String::as_str).collect();
    lowers.push("base");
    let out = fx.run(fx.sandbox(
        &lowers,
        &["/bin/sh", "-c", "cat /n /bottom-only; ls /bin/busybox"],
    ));
    assert!(out.ok().success(), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "0\nreached\n/bin/busybox\n");
}

#[test]
fn five_hundred_layers_mount_with_overlay_and_the_top_most_wins() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let names = numbered_layers(&fx, 500);
    let lowers: Vec<&str> = names.iter().map(String::as_str).collect();
    let (top, bottom) = with_overlay(&fx.overlay(&lowers), |root| {
        (
            fs::read_to_string(root.join("n")).unwrap(),
            fs::read_to_string(root.join("bottom-only")).unwrap(),
        )
    })
    .unwrap();
    assert_eq!((top.as_str(), bottom.as_str()), ("0\n", "reached\n"));
}

#[test]
fn more_layers_than_overlayfs_stacks_is_a_clear_error() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let names = numbered_layers(&fx, 1000);
    let lowers: Vec<&str> = names.iter().map(String::as_str).collect();
    let out = fx.run(fx.sandbox(&lowers, &["/bin/true"]));
    let err = out.err().to_string();
    assert!(
        err.contains("the image has 1000 layers, more than the 499 overlayfs can stack"),
        "{err}"
    );
    let merged = out.upper.parent().unwrap().join("merged");
    assert!(
        !merged.exists(),
        "a rejected description prepares nothing on disk"
    );
    let too_many = with_overlay(&fx.overlay(&lowers), |_| ()).unwrap_err();
    assert!(
        too_many
            .to_string()
            .contains("the image has 1000 layers, more than the 500 "),
        "{too_many}"
    );
}

#[test]
fn legacy_mount_options_over_one_page_are_a_clear_error() {
    let names: Vec<String> = (0..70).map(|i| format!("{i:064x}")).collect();
    let lowers: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
    let err = overlay::overlay_options(&lowers, Path::new("/u"), Path::new("/w")).unwrap_err();
    assert!(
        matches!(err, RuntimeError::OverlayOptionsTooLong { layers: 70, len, max } if len > max),
        "{err:?}"
    );
    let fits = overlay::overlay_options(&lowers[..50], Path::new("/u"), Path::new("/w")).unwrap();
    let fits = fits.to_str().unwrap();
    assert!(
        fits.starts_with(&format!("lowerdir={}:", names[0])),
        "{fits}"
    );
    assert!(
        fits.ends_with(",upperdir=/u,workdir=/w,redirect_dir=nofollow,metacopy=off,index=off"),
        "{fits}"
    );
}

#[test]
fn missing_and_malformed_layers_are_rejected_before_mounting() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let out = fx.run(fx.sandbox(&["nope", "base"], &["/bin/true"]));
    assert!(matches!(out.err(), RuntimeError::MissingLayer(p) if p.ends_with("nope")));
    let out = fx.run(fx.sandbox(&["base:../x"], &["/bin/true"]));
    assert!(matches!(out.err(), RuntimeError::Invalid(_)));
}

#[test]
fn image_symlinks_at_mount_points_are_shadowed_not_followed() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let evil = fx.layer("evil");
    symlink("/etc", evil.join("proc")).unwrap();
    symlink("/etc", evil.join("dev")).unwrap();
    let out = fx.run(fx.sandbox(
        &["evil", "base"],
        &["/bin/sh", "-c", "ls /etc; ls /proc/self/status"],
    ));
    assert!(out.ok().success(), "stderr: {}", out.stderr);
    assert_eq!(out.stdout, "hosts\nresolv.conf\n/proc/self/status\n");
}

#[test]
fn a_symlink_in_the_upper_dir_at_a_mount_point_is_refused() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let sb = fx.sh("true");
    symlink("/etc", sb.overlay.upper.join("dev")).unwrap();
    let out = fx.run(sb);
    assert!(
        matches!(out.err(), RuntimeError::Setup { errno: Errno::ENOTDIR, target: Some(t), .. } if t == "/dev"),
        "{:?}",
        out.err()
    );
}

#[test]
fn with_overlay_mounts_only_in_its_own_thread() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let ov = fx.overlay(&["base"]);
    let before = host_mounts();
    let main_thread = format!("/proc/self/task/{}/mountinfo", std::process::id());
    let (seen_by_main, seen_here, hosts) = with_overlay(&ov, |root| {
        fs::write(root.join("copied"), "c").unwrap();
        let root = root.display().to_string();
        let mounted_in = |mountinfo: &str| fs::read_to_string(mountinfo).unwrap().contains(&root);
        let hosts = fs::read_to_string(Path::new(&root).join("etc/hosts")).unwrap();
        (
            mounted_in(&main_thread),
            mounted_in("/proc/thread-self/mountinfo"),
            hosts,
        )
    })
    .unwrap();
    assert!(
        !seen_by_main,
        "the overlay leaked into kiln's mount namespace"
    );
    assert!(seen_here);
    assert_eq!(hosts, "127.0.0.1 image-hosts\n");
    assert_eq!(tree(&ov.upper), ["copied"]);
    assert_eq!(before, host_mounts());
}

#[test]
fn a_read_only_overlay_reads_the_image_and_writes_nothing() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    for layers in [&["base"][..], &[]] {
        let ov = fx.overlay(layers);
        let (hosts, write) = with_overlay_read_only(&ov, |root| {
            let hosts = fs::read_to_string(root.join("etc/hosts")).ok();
            (
                hosts,
                fs::write(root.join("new"), "x").map_err(|e| e.raw_os_error()),
            )
        })
        .unwrap();
        assert_eq!(hosts.is_some(), !layers.is_empty());
        assert_eq!(write, Err(Some(libc::EROFS)));
        assert!(tree(&ov.upper).is_empty());
    }
}

/// Kernels before 6.8 mount with an option string: read-only there too.
#[test]
fn a_read_only_overlay_from_legacy_options_is_read_only() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let ov = fx.overlay(&["base"]);
    let mut plan = ov.prepare(overlay::InitLayer::OnlyIfNoLowers).unwrap();
    let options = overlay::overlay_options(&[b"base"], &ov.upper, &ov.work).unwrap();
    plan.overlay = overlay::OverlayMount::Options(options);
    plan.read_only = true;
    let write = overlay::in_private_mount(&ov, plan, |root| {
        assert!(root.join("etc/hosts").exists());
        fs::write(root.join("new"), "x").map_err(|e| e.raw_os_error())
    })
    .unwrap();
    assert_eq!(write, Err(Some(libc::EROFS)));
}

#[test]
fn with_overlay_works_without_layers() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let ov = fx.overlay(&[]);
    let listing = with_overlay(&ov, |root| {
        let listing: Vec<_> = fs::read_dir(root).unwrap().collect();
        fs::create_dir(root.join("etc")).unwrap();
        listing.len()
    })
    .unwrap();
    assert_eq!(listing, 0);
    assert_eq!(tree(&ov.upper), ["etc"]);
    assert_eq!(fs::metadata(&ov.upper).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn steps_run_concurrently_from_many_threads() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let fx = &fx;
                scope.spawn(move || {
                    for i in 0..4 {
                        let out = fx.run_sh(&format!("echo {t}-{i}"));
                        assert!(out.ok().success(), "stderr: {}", out.stderr);
                        assert_eq!(out.stdout, format!("{t}-{i}\n"));
                    }
                })
            })
            .collect();
        workers.into_iter().for_each(|w| w.join().unwrap());
    });
}

#[test]
fn output_can_be_streamed_through_one_pipe() {
    require_root!("namespaces, overlayfs, cgroups");
    let fx = Fixture::new();
    let mut sb = fx.sh("echo one; echo two >&2; echo three");
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    sb.stderr = write_end.try_clone().unwrap();
    sb.stdout = write_end;
    let reader = std::thread::spawn(move || std::io::read_to_string(File::from(read_end)).unwrap());
    let status = run_step(&sb);
    drop(sb);
    assert!(status.unwrap().status.success());
    assert_eq!(reader.join().unwrap(), "one\ntwo\nthree\n");
}
