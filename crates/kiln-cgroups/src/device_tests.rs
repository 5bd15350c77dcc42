//! The device allow-list enforced for real on this host: through the v1 `devices`
//! controller, and through the eBPF program on the real (controller-less) cgroup2
//! hierarchy at `/sys/fs/cgroup/unified`. A forked child is moved into the cgroup and
//! then creates and opens device nodes; the parent checks what the kernel allowed.
//!
//! The nodes live in a temp dir on the root filesystem, which is not `nodev`: the child
//! opening its own `null` node there proves that a denied open is the cgroup's doing.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::Command;

use super::*;

const V2_ROOT: &str = "/sys/fs/cgroup/unified";
const MAX_PROBES: usize = 16;
const LOOP_MARKER: &[u8] = b"kiln device test backing file";

fn unique_name(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("test-{tag}-{}-{n}", std::process::id())
}

/// A loop device over a small temp file, detached on drop.
struct LoopDevice {
    path: PathBuf,
    major: u32,
    minor: u32,
}

impl LoopDevice {
    fn attach(backing: &Path) -> LoopDevice {
        let mut content = LOOP_MARKER.to_vec();
        content.resize(1 << 20, 0);
        fs::write(backing, content).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup -f --show {}: {}",
            backing.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let mut device = LoopDevice {
            path,
            major: 0,
            minor: 0,
        };
        let meta = fs::metadata(&device.path).unwrap();
        assert!(meta.file_type().is_block_device());
        device.major = libc::major(meta.rdev());
        device.minor = libc::minor(meta.rdev());
        device
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// A bare cgroup dir on the real cgroup2 hierarchy, emptied and removed on drop.
struct V2Dir(PathBuf);

impl Drop for V2Dir {
    fn drop(&mut self) {
        let _ = remove_dirs(std::slice::from_ref(&self.0));
    }
}

/// A forked child, killed and reaped on drop unless it was waited for.
struct ForkedChild(Option<libc::pid_t>);

impl ForkedChild {
    /// The child's exit status.
    fn wait(&mut self) -> libc::c_int {
        let pid = self.0.take().expect("waited twice");
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }
}

impl Drop for ForkedChild {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// What the kernel must say to a mknod or open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allowed,
    Denied,
    /// Not EPERM, whatever else the device says (`/dev/tty` without a controlling
    /// terminal is ENXIO).
    NotDenied,
}

impl Expect {
    fn holds(self, errno: i32) -> bool {
        match self {
            Expect::Allowed => errno == 0,
            Expect::Denied => errno == libc::EPERM,
            Expect::NotDenied => errno != libc::EPERM,
        }
    }
}

/// A device node the child opens, after making it with mknod when `make` is set.
struct Probe {
    label: &'static str,
    path: CString,
    make: Option<(libc::mode_t, libc::dev_t)>,
    mknod: Expect,
    open: Expect,
}

impl Probe {
    fn made(
        label: &'static str,
        dir: &Path,
        kind: libc::mode_t,
        (major, minor): (u32, u32),
        open: Expect,
    ) -> Probe {
        Probe {
            label,
            path: c_path(&dir.join(label)),
            make: Some((kind, libc::makedev(major, minor))),
            mknod: Expect::Allowed,
            open,
        }
    }

    fn existing(label: &'static str, path: &Path, open: Expect) -> Probe {
        Probe {
            label,
            path: c_path(path),
            make: None,
            mknod: Expect::Allowed,
            open,
        }
    }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// The default allow-list's verdicts: the listed char devices open, mknod of anything
/// works, and kmsg, the loop device (made by the child, shipped 0666 like in an image
/// layer, or the host's own node) do not open.
fn default_matrix(dir: &Path, dev: &LoopDevice, shipped: &Path) -> Vec<Probe> {
    let (chr, blk) = (libc::S_IFCHR, libc::S_IFBLK);
    let loop_dev = (dev.major, dev.minor);
    vec![
        Probe::made("null", dir, chr, (1, 3), Expect::Allowed),
        Probe::made("zero", dir, chr, (1, 5), Expect::Allowed),
        Probe::made("urandom", dir, chr, (1, 9), Expect::Allowed),
        Probe::made("tty", dir, chr, (5, 0), Expect::NotDenied),
        Probe::made("kmsg", dir, chr, (1, 11), Expect::Denied),
        Probe::made("loop", dir, blk, loop_dev, Expect::Denied),
        Probe::existing("shipped-loop", shipped, Expect::Denied),
        Probe::existing("host-loop", &dev.path, Expect::Denied),
        Probe::existing("host-null", Path::new("/dev/null"), Expect::Allowed),
    ]
}

/// A 0666 node for the loop device made by the test (as an image layer would ship it),
/// checked to reach the backing file from outside the cgroup.
fn shipped_node(dir: &Path, dev: &LoopDevice) -> PathBuf {
    let path = dir.join("shipped");
    let c = c_path(&path);
    let rdev = libc::makedev(dev.major, dev.minor);
    // SAFETY: mknod with a valid C path.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o666, rdev) };
    assert_eq!(made, 0, "mknod {}", path.display());
    let mut head = vec![0u8; LOOP_MARKER.len()];
    fs::File::open(&path)
        .and_then(|mut f| f.read_exact(&mut head))
        .unwrap_or_else(|e| panic!("the test's own node {} must open: {e}", path.display()));
    assert_eq!(head, LOOP_MARKER);
    path
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds that nothing else owns.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are new and ours.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// The forked child: waits until it is in the cgroup, then mknods and opens each probe
/// and writes the errnos (0 for success) back. Allocation-free, as after a fork of a
/// multi-threaded process.
fn child_probes(probes: &[Probe], go: RawFd, results: RawFd) -> ! {
    let mut byte = 0u8;
    // SAFETY: plain syscalls on fds and C strings the child owns copies of; _exit never
    // returns.
    unsafe {
        if libc::read(go, (&mut byte as *mut u8).cast(), 1) != 1 {
            libc::_exit(2);
        }
        let mut out = [0i32; 2 * MAX_PROBES];
        for (i, probe) in probes.iter().enumerate() {
            if let Some((kind, rdev)) = probe.make {
                let made = libc::mknod(probe.path.as_ptr(), kind | 0o666, rdev);
                out[2 * i] = if made == 0 { 0 } else { errno() };
            }
            let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
            let fd = libc::open(probe.path.as_ptr(), flags);
            out[2 * i + 1] = if fd >= 0 {
                libc::close(fd);
                0
            } else {
                errno()
            };
        }
        let len = std::mem::size_of_val(&out);
        let ok = libc::write(results, out.as_ptr().cast(), len) == len as isize;
        libc::_exit(if ok { 0 } else { 3 });
    }
}

/// Forks a child, lets `join` put it into a cgroup, runs the probes in it and checks each
/// verdict; every mismatch is reported at once.
fn assert_probes_in_cgroup(probes: &[Probe], join: impl FnOnce(i32)) {
    assert!(probes.len() <= MAX_PROBES);
    let (go_read, go_write) = pipe();
    let (results_read, results_write) = pipe();
    // SAFETY: the child runs only `child_probes`, which is async-signal-safe.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        child_probes(probes, go_read.as_raw_fd(), results_write.as_raw_fd());
    }
    let mut child = ForkedChild(Some(pid));
    drop((go_read, results_write));
    join(pid);
    let mut go = fs::File::from(go_write);
    std::io::Write::write_all(&mut go, b"g").unwrap();
    let mut raw = Vec::new();
    fs::File::from(results_read).read_to_end(&mut raw).unwrap();
    let status = child.wait();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "probe child: status {status:#x}"
    );
    let errnos: Vec<i32> = raw
        .chunks_exact(4)
        .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
        .collect();
    let describe = |e: i32| match e {
        0 => "ok".to_owned(),
        e => std::io::Error::from_raw_os_error(e).to_string(),
    };
    let mut wrong = Vec::new();
    for (i, probe) in probes.iter().enumerate() {
        let (mknod, open) = (errnos[2 * i], errnos[2 * i + 1]);
        if probe.make.is_some() && !probe.mknod.holds(mknod) {
            wrong.push(format!(
                "mknod {}: {} (want {:?})",
                probe.label,
                describe(mknod),
                probe.mknod
            ));
        }
        if !probe.open.holds(open) {
            wrong.push(format!(
                "open {}: {} (want {:?})",
                probe.label,
                describe(open),
                probe.open
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The temp dir for the nodes, a loop device, and its "shipped" node.
struct Bench {
    // Fields drop in order: the loop device is detached before its backing file goes.
    dev: LoopDevice,
    shipped: PathBuf,
    tmp: tempfile::TempDir,
}

impl Bench {
    fn new() -> Bench {
        let tmp = tempfile::tempdir().unwrap();
        let dev = LoopDevice::attach(&tmp.path().join("backing"));
        let shipped = shipped_node(tmp.path(), &dev);
        let nodes = tmp.path().join("nodes");
        fs::create_dir(&nodes).unwrap();
        Bench { dev, shipped, tmp }
    }

    fn nodes(&self) -> PathBuf {
        self.tmp.path().join("nodes")
    }

    fn default_matrix(&self) -> Vec<Probe> {
        default_matrix(&self.nodes(), &self.dev, &self.shipped)
    }
}

fn v1_devices_list(cg: &Cgroup) -> String {
    let dir = cg
        .paths()
        .into_iter()
        .find(|p| p.starts_with(Path::new(DEFAULT_CGROUP_ROOT).join("devices")))
        .expect("a devices cgroup");
    read_file(&dir.join("devices.list")).unwrap()
}

#[test]
fn v1_default_devices_deny_opening_a_loop_device_or_kmsg_but_allow_mknod() {
    require_root!("cgroups");
    let bench = Bench::new();
    let root = Path::new(DEFAULT_CGROUP_ROOT);
    let cg = Cgroup::create(root, &unique_name("v1-devices"), &Resources::default()).unwrap();
    assert_probes_in_cgroup(&bench.default_matrix(), |pid| cg.join(pid).unwrap());
    assert_eq!(
        v1_devices_list(&cg),
        "c *:* m\nb *:* m\nc 1:3 rwm\nc 1:5 rwm\nc 1:7 rwm\nc 1:8 rwm\nc 1:9 rwm\n\
         c 5:0 rwm\nc 5:1 rwm\nc 5:2 rwm\nc 136:* rwm\n"
    );
    cg.remove().unwrap();
}

#[test]
fn v1_privileged_devices_allow_everything() {
    require_root!("cgroups");
    let root = Path::new(DEFAULT_CGROUP_ROOT);
    let res = Resources {
        devices: DevicePolicy::All,
        ..Resources::default()
    };
    let cg = Cgroup::create(root, &unique_name("v1-all"), &res).unwrap();
    assert_eq!(v1_devices_list(&cg), "a *:* rwm\n");
    cg.remove().unwrap();
}

/// Checks that `/sys/fs/cgroup/unified` is a real cgroup2 filesystem, which the v2 tests
/// need; a host without it fails them rather than skipping.
fn real_v2_root() -> &'static Path {
    let root = Path::new(V2_ROOT);
    let magic = nix::sys::statfs::statfs(root)
        .unwrap_or_else(|e| panic!("statfs {V2_ROOT}: {e} (the v2 device tests need it)"))
        .filesystem_type();
    assert_eq!(
        magic,
        nix::sys::statfs::CGROUP2_SUPER_MAGIC,
        "{V2_ROOT} is not a cgroup2 filesystem"
    );
    root
}

#[test]
fn v2_device_program_attached_to_a_cgroup_fd_denies_a_loop_device_and_kmsg() {
    require_root!("cgroups");
    let bench = Bench::new();
    let dir = V2Dir(real_v2_root().join(format!("kiln-{}", unique_name("v2-fd"))));
    fs::create_dir(&dir.0).unwrap();
    let fd = fs::File::open(&dir.0).unwrap();
    attach_device_filter(fd.as_fd(), &devices::DEFAULT_RULES).unwrap_or_else(|e| {
        panic!("the kernel refused the cgroup v2 device program (is bpf available?): {e}")
    });
    drop(fd);
    assert_probes_in_cgroup(&bench.default_matrix(), |pid| {
        write_file(&dir.0.join("cgroup.procs"), &pid.to_string()).unwrap()
    });
    remove_dirs(std::slice::from_ref(&dir.0)).unwrap();
    assert!(!dir.0.exists());
}

#[test]
fn v2_cgroup_on_a_real_cgroup2_fs_attaches_the_program_and_privileged_does_not() {
    require_root!("cgroups");
    let bench = Bench::new();
    let root = real_v2_root();
    let cg = Cgroup::create(root, &unique_name("v2-dflt"), &Resources::default())
        .unwrap_or_else(|e| panic!("a v2 cgroup with the device program: {e}"));
    assert_eq!(cg.mode(), CgroupMode::V2);
    match &cg.backend {
        Some(Backend::V2(g)) => assert_eq!(g.device_filter(), v2::DeviceFilter::Attached),
        other => panic!("not v2: {other:?}"),
    }
    assert_probes_in_cgroup(&bench.default_matrix(), |pid| cg.join(pid).unwrap());
    cg.remove().unwrap();

    let res = Resources {
        devices: DevicePolicy::All,
        ..Resources::default()
    };
    let cg = Cgroup::create(root, &unique_name("v2-all"), &res).unwrap();
    let nodes = bench.nodes().join("all");
    fs::create_dir(&nodes).unwrap();
    let (chr, blk) = (libc::S_IFCHR, libc::S_IFBLK);
    let unconfined = [
        Probe::made("kmsg", &nodes, chr, (1, 11), Expect::Allowed),
        Probe::made(
            "loop",
            &nodes,
            blk,
            (bench.dev.major, bench.dev.minor),
            Expect::Allowed,
        ),
        Probe::existing("shipped-loop", &bench.shipped, Expect::Allowed),
    ];
    assert_probes_in_cgroup(&unconfined, |pid| cg.join(pid).unwrap());
    cg.remove().unwrap();
}
