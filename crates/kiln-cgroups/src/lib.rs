//! Control groups for `kiln run`: memory, CPU and pids limits, Docker's finer controls
//! (CPU weight, cpusets, memory reservation and swap, block I/O weight and device
//! throttles), the device allow-list, OOM detection, cleanup.
//!
//! A container's processes are put in a cgroup of their own, `kiln-<id>`, below a `kiln`
//! parent: on cgroup v1 one directory per controller (`<root>/memory/kiln/kiln-<id>`,
//! `<root>/cpu/kiln/kiln-<id>`, `<root>/pids/kiln/kiln-<id>`,
//! `<root>/devices/kiln/kiln-<id>`), on cgroup v2 one directory (`<root>/kiln/kiln-<id>`)
//! with the controllers enabled in the parents' `subtree_control`. A hybrid host (v1
//! controllers plus an empty v2 hierarchy at `<root>/unified`) is driven through v1, where
//! the controllers are.
//!
//! Devices ([`devices`]): the allow-list is written to the v1 `devices` controller, or on
//! v2 (which has no such controller) enforced by an eBPF program attached to the cgroup
//! ([`bpf`]). A container is never started without it: a v1 host lacking the `devices`
//! controller is an error unless the policy allows every device (`--privileged`).
//!
//! Every path is relative to a configurable root (normally `/sys/fs/cgroup`), so the v2
//! logic can be tested against a directory that imitates cgroupfs on this v1 machine.
//!
//! Ownership and stale cleanup: the kiln process that creates a cgroup holds an exclusive
//! `flock` on it (the v2 dir, or the first v1 controller dir) until it removes it. A `kiln-*`
//! cgroup whose lock is free belongs to a kiln that died (its container died with it through
//! `PR_SET_PDEATHSIG`), and [`clean_stale`] kills whatever is left in it and removes it.

#[cfg(test)]
#[macro_use]
extern crate kiln_testing;

mod bpf;
pub mod devices;
pub mod rootless;
mod stats;
mod v1;
mod v2;

pub use bpf::attach_device_filter;
pub use devices::{Access, DeviceKind, DevicePolicy, DeviceRule};
pub use rootless::{delegated_root, CgroupReport, DelegationError};
pub use stats::{processes, usage, Usage};

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Where cgroupfs is mounted on a normal host.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The pids limit when none is given (podman's default).
pub const DEFAULT_PIDS_LIMIT: u64 = 2048;
/// The directory under which every kiln cgroup lives (per controller on v1).
pub const CGROUP_PARENT: &str = "kiln";
/// The prefix of a container's cgroup name: `kiln-<id>`.
pub const CGROUP_PREFIX: &str = "kiln-";
/// The CFS period kiln uses for `--cpus` (the kernel's and Docker's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel accepts.
const MIN_CPU_QUOTA_US: u64 = 1_000;
/// Cgroup interface files are small; anything longer is not what kiln expects.
const MAX_FILE_LEN: u64 = 1 << 20;
/// How long removal waits for a cgroup's last processes to finish exiting.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The cgroup layout of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Controllers in per-controller v1 hierarchies.
    V1,
    /// v1 controllers plus a controller-less v2 hierarchy at `unified/` (systemd's hybrid
    /// mode); kiln uses the v1 controllers.
    Hybrid,
    /// One unified v2 hierarchy.
    V2,
}

/// Limits for a container. `None` and empty mean no limit, except for `pids` (see
/// [`DEFAULT_PIDS_LIMIT`]) and swap (none on top of `memory`); devices are confined to the
/// default allow-list unless `devices` says otherwise.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Soft memory limit in bytes (v1 `memory.soft_limit_in_bytes`, v2 `memory.low`).
    pub memory_reservation: Option<u64>,
    /// Memory plus swap; `None` allows no swap on top of `memory`.
    pub memory_swap: Option<Swap>,
    /// CPUs' worth of time per period, e.g. 1.5.
    pub cpus: Option<f64>,
    /// The relative CPU weight, in either scale.
    pub cpu_weight: Option<CpuWeight>,
    /// CPUs and memory nodes, as the kernel's list syntax (`0-1,3`).
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Block I/O weight, 10 to 1000 (v1's scale).
    pub blkio_weight: Option<u16>,
    /// Per-device I/O limits.
    pub throttles: Vec<Throttle>,
    /// The most processes and threads the container may have at once.
    pub pids: Option<u64>,
    /// Which devices the container may create and open.
    pub devices: DevicePolicy,
}

/// A memory+swap limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Swap {
    /// Memory plus swap in bytes, at least the memory limit.
    Limit(u64),
    Unlimited,
}

/// The CPU weight, as given: v1 shares (2–262144, default 1024) or v2 weight (1–10000,
/// default 100). Each hierarchy gets its own scale, converted the way runc and crun do, so a
/// value means the same under kiln as under them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CpuWeight {
    Shares(u64),
    Weight(u64),
}

impl CpuWeight {
    /// v1 `cpu.shares`.
    pub fn shares(self) -> u64 {
        match self {
            CpuWeight::Shares(s) => s,
            // The inverse of the mapping below, onto 2..=262144.
            CpuWeight::Weight(w) => 2 + (w.clamp(1, 10_000) - 1) * 262_142 / 9_999,
        }
    }

    /// v2 `cpu.weight`: runc's `1 + ((shares - 2) * 9999) / 262142`.
    pub fn weight(self) -> u64 {
        match self {
            CpuWeight::Weight(w) => w,
            CpuWeight::Shares(s) => 1 + (s.clamp(2, 262_144) - 2) * 9_999 / 262_142,
        }
    }
}

/// One device's I/O limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Throttle {
    pub kind: ThrottleKind,
    /// The block device's numbers.
    pub major: u32,
    pub minor: u32,
    /// Bytes or operations per second.
    pub rate: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ThrottleKind {
    ReadBps,
    WriteBps,
    ReadIops,
    WriteIops,
}

impl ThrottleKind {
    /// v1's file, `blkio.throttle.<name>_device`.
    fn v1_file(self) -> &'static str {
        match self {
            ThrottleKind::ReadBps => "blkio.throttle.read_bps_device",
            ThrottleKind::WriteBps => "blkio.throttle.write_bps_device",
            ThrottleKind::ReadIops => "blkio.throttle.read_iops_device",
            ThrottleKind::WriteIops => "blkio.throttle.write_iops_device",
        }
    }

    /// v2's key in `io.max`.
    fn v2_key(self) -> &'static str {
        match self {
            ThrottleKind::ReadBps => "rbps",
            ThrottleKind::WriteBps => "wbps",
            ThrottleKind::ReadIops => "riops",
            ThrottleKind::WriteIops => "wiops",
        }
    }
}

/// Why a block I/O weight may have no file: weights belong to the I/O scheduler.
const BLKIO_WEIGHT_WHY: &str =
    "; weights need a disk that uses the BFQ I/O scheduler (see /sys/block/*/queue/scheduler)";

/// Docker's warning, as an error: a swap limit that is not applied would be no limit.
fn no_swap_accounting(file: &str) -> CgroupError {
    CgroupError::Unsupported {
        what: "a memory+swap limit",
        missing: file.to_owned(),
        why: "; the kernel does not account swap (Docker: \"Your kernel does not support swap limit capabilities\"); boot it with swapaccount=1",
    }
}

/// Docker's `--blkio-weight` (10–1000) on v2's `io.weight` scale (1–10000), as runc maps it.
fn io_weight(blkio_weight: u16) -> u64 {
    1 + (u64::from(blkio_weight).clamp(10, 1_000) - 10) * 9_999 / 990
}

impl Resources {
    /// The CFS quota (µs per [`CPU_PERIOD_US`]) for `cpus`, checked.
    pub fn cpu_quota(&self) -> Result<Option<u64>, CgroupError> {
        let Some(cpus) = self.cpus else {
            return Ok(None);
        };
        let quota = cpus * CPU_PERIOD_US as f64;
        if !quota.is_finite() || quota.round() < MIN_CPU_QUOTA_US as f64 || quota > u64::MAX as f64
        {
            return Err(CgroupError::InvalidCpus(cpus));
        }
        Ok(Some(quota.round() as u64))
    }

    /// The limits asked for, by the names `docker run` gives their flags' subjects; empty
    /// for a container with only the defaults (the default pids limit and device list).
    pub fn requested(&self) -> Vec<&'static str> {
        let asked = [
            ("memory", self.memory.is_some()),
            ("memory reservation", self.memory_reservation.is_some()),
            ("memory+swap", self.memory_swap.is_some()),
            ("cpus", self.cpus.is_some()),
            ("cpu shares", self.cpu_weight.is_some()),
            ("cpuset", self.wants_cpuset()),
            ("blkio weight", self.blkio_weight.is_some()),
            ("device I/O limits", !self.throttles.is_empty()),
            ("pids", self.pids.is_some()),
            (
                "devices",
                matches!(self.devices, DevicePolicy::DefaultAnd(_)),
            ),
        ];
        asked
            .iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| *name)
            .collect()
    }

    /// The pids limit to apply: the given one or the default.
    pub fn pids_limit(&self) -> u64 {
        self.pids.unwrap_or(DEFAULT_PIDS_LIMIT)
    }

    fn check(&self) -> Result<(), CgroupError> {
        self.cpu_quota()?;
        if self.memory == Some(0) {
            return Err(CgroupError::ZeroMemory);
        }
        if self.pids == Some(0) {
            return Err(CgroupError::ZeroPids);
        }
        match (self.memory_swap, self.memory) {
            (Some(Swap::Limit(swap)), Some(memory)) if swap >= memory => Ok(()),
            (Some(Swap::Limit(_)), _) => Err(CgroupError::InvalidSwap),
            _ => Ok(()),
        }
    }

    /// Whether a cpuset is asked for: only then does the container get a cpuset cgroup
    /// (on v1 one that must be filled before anything joins it).
    fn wants_cpuset(&self) -> bool {
        self.cpuset_cpus.is_some() || self.cpuset_mems.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup filesystem found at {0} (neither cgroup v1 controllers nor cgroup v2)")]
    NotMounted(PathBuf),
    #[error("the {controller} cgroup controller is not available under {root}, so {what} cannot be applied")]
    ControllerMissing {
        controller: &'static str,
        root: PathBuf,
        what: &'static str,
    },
    /// A CPU limit (from wherever it was given: a flag, a spec's `resources:`, an image's
    /// `run:`) the kernel cannot apply.
    #[error("invalid CPU limit {0}: it must be a number of CPUs of at least 0.01")]
    InvalidCpus(f64),
    #[error("invalid limit: memory limit of 0 bytes")]
    ZeroMemory,
    #[error("invalid limit: pids limit of 0")]
    ZeroPids,
    #[error("invalid limit: a memory+swap limit needs a memory limit no larger than it")]
    InvalidSwap,
    /// A control whose interface file this kernel does not have.
    #[error("this kernel cannot apply {what}: {missing} is not there{why}")]
    Unsupported {
        what: &'static str,
        /// The interface file(s) looked for.
        missing: String,
        /// Why, when it is known (a boot option), with a leading separator.
        why: &'static str,
    },
    #[error(
        "invalid container id {0:?} for a cgroup name (letters, digits, '_', '-' and '.' only)"
    )]
    InvalidId(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cgroup {path} still has processes after {secs} s and cannot be removed")]
    Busy { path: PathBuf, secs: u64 },
    #[error("cannot {what} the eBPF program that enforces the device allow-list on cgroup v2: {source}{log}")]
    DeviceFilter {
        what: &'static str,
        source: io::Error,
        /// The verifier's log, with a leading newline, or empty.
        log: String,
    },
}

impl CgroupError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
        let path = path.to_path_buf();
        move |source| CgroupError::Io { what, path, source }
    }
}

/// Finds out how cgroups are mounted under `root`.
pub fn detect(root: &Path) -> Result<CgroupMode, CgroupError> {
    if root.join("cgroup.controllers").is_file() {
        return Ok(CgroupMode::V2);
    }
    if v1::available_controllers(root).is_empty() {
        return Err(CgroupError::NotMounted(root.to_path_buf()));
    }
    if root.join("unified/cgroup.controllers").is_file() {
        Ok(CgroupMode::Hybrid)
    } else {
        Ok(CgroupMode::V1)
    }
}

/// A container's cgroup, removed by [`Cgroup::remove`] (or, best effort, on drop).
#[derive(Debug)]
pub struct Cgroup {
    id: String,
    mode: CgroupMode,
    /// `None` once removed.
    backend: Option<Backend>,
    /// The open, `flock`ed anchor dir that marks this cgroup as owned by a live kiln.
    lock: Option<File>,
}

#[derive(Debug)]
enum Backend {
    V1(v1::Group),
    V2(v2::Group),
}

impl Cgroup {
    /// Creates `kiln-<id>` under `root` and applies `resources`. Nothing is left behind on
    /// error.
    pub fn create(root: &Path, id: &str, resources: &Resources) -> Result<Cgroup, CgroupError> {
        check_id(id)?;
        resources.check()?;
        let mode = detect(root)?;
        // Held shared until this group is locked as ours, so a concurrent `clean_stale`
        // (which holds it exclusively) never sees a half-made group as stale.
        let _creating = lock_root(root, libc::LOCK_SH)?;
        for _ in 0..3 {
            let backend = match mode {
                CgroupMode::V2 => Backend::V2(v2::Group::create(root, id, resources)?),
                CgroupMode::V1 | CgroupMode::Hybrid => {
                    Backend::V1(v1::Group::create(root, id, resources)?)
                }
            };
            let anchor = backend.anchor();
            let mut cgroup = Cgroup {
                id: id.to_owned(),
                mode,
                backend: Some(backend),
                lock: None,
            };
            match lock_owned(&anchor)? {
                Some(lock) => cgroup.lock = Some(lock),
                None => continue,
            }
            cgroup.apply(resources)?;
            tracing::debug!(
                paths = ?cgroup.paths(),
                mode = ?mode,
                memory = resources.memory,
                cpus = resources.cpus,
                pids = resources.pids_limit(),
                "cgroup created"
            );
            return Ok(cgroup);
        }
        Err(CgroupError::Io {
            what: "create cgroup (removed by a concurrent cleanup each time)",
            path: root.join(CGROUP_PARENT).join(cgroup_name(id)),
            source: io::Error::from(io::ErrorKind::Interrupted),
        })
    }

    fn apply(&mut self, resources: &Resources) -> Result<(), CgroupError> {
        match &mut self.backend {
            Some(Backend::V1(g)) => g.apply(resources),
            Some(Backend::V2(g)) => g.apply(resources),
            None => Ok(()),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// Whether the container should get a cgroup namespace (only meaningful on v2).
    pub fn wants_namespace(&self) -> bool {
        self.mode == CgroupMode::V2
    }

    /// The cgroup's directories (one per controller on v1).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.backend.as_ref().map(Backend::dirs).unwrap_or_default()
    }

    /// The dirs in the order of removal: the locked anchor last. Were it removed first, a
    /// concurrent [`clean_stale`] would find the other controllers' dirs with no lock on
    /// them, take the group for stale and remove it under this kiln's feet.
    fn paths_anchor_last(&self) -> Vec<PathBuf> {
        let mut paths = self.paths();
        if !paths.is_empty() {
            paths.rotate_left(1);
        }
        paths
    }

    /// On v1, the `tasks` file of each hierarchy, open for writing, for a single-threaded
    /// process to move itself in by writing `0` to each: the kernel then skips its global
    /// threadgroup lock, whose write side waits for an RCU grace period (5–15 ms on an
    /// otherwise quiet machine, most of a container's start). Empty on v2 (and without
    /// controllers): [`Cgroup::join`] it is.
    pub fn self_join_files(&self) -> Result<Vec<std::fs::File>, CgroupError> {
        let Some(Backend::V1(_)) = &self.backend else {
            return Ok(Vec::new());
        };
        open_tasks_files(&self.paths())
    }

    /// Moves process `pid` (and, on v1, its threads) into the cgroup.
    pub fn join(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in self.paths() {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Whether the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_killed(&self) -> Result<bool, CgroupError> {
        match &self.backend {
            Some(Backend::V1(g)) => g.oom_killed(),
            Some(Backend::V2(g)) => g.oom_killed(),
            None => Ok(false),
        }
    }

    /// Kills whatever is still in the cgroup and removes it.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        tracing::debug!(id = %self.id, "removing cgroup");
        let result = remove_dirs(&self.paths_anchor_last());
        // Unlock only once the dirs are gone, so no cleaner races with the removal.
        self.lock = None;
        self.backend = None;
        result
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = remove_dirs(&self.paths_anchor_last());
    }
}

impl Backend {
    fn dirs(&self) -> Vec<PathBuf> {
        match self {
            Backend::V1(g) => g.dirs(),
            Backend::V2(g) => g.dirs(),
        }
    }

    /// The dir whose `flock` marks ownership.
    fn anchor(&self) -> PathBuf {
        self.dirs().into_iter().next().unwrap_or_default()
    }
}

/// Removes every `kiln-*` cgroup under `root` that no live kiln owns, killing any process
/// still in it. Returns the ids removed. A root without cgroups has nothing stale.
pub fn clean_stale(root: &Path) -> Result<Vec<String>, CgroupError> {
    let mode = match detect(root) {
        Ok(mode) => mode,
        Err(CgroupError::NotMounted(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let _cleaning = lock_root(root, libc::LOCK_EX)?;
    let groups = match mode {
        CgroupMode::V2 => v2::existing(root)?,
        CgroupMode::V1 | CgroupMode::Hybrid => v1::existing(root)?,
    };
    let mut removed = Vec::new();
    for (id, dirs) in groups {
        let Some(anchor) = dirs.first() else {
            continue;
        };
        // Held while removing, so a kiln starting with the same id cannot interleave.
        let Some(_lock) = lock_owned(anchor)? else {
            continue;
        };
        remove_dirs(&dirs)?;
        removed.push(id);
    }
    Ok(removed)
}

/// The `kiln-*` cgroups under `root` whose kiln is gone, as (id, dir), without touching
/// them: what [`clean_stale`] would remove (`kiln fsck`, `kiln gc --dry-run`).
pub fn stale(root: &Path) -> Result<Vec<(String, PathBuf)>, CgroupError> {
    let mode = match detect(root) {
        Ok(mode) => mode,
        Err(CgroupError::NotMounted(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let groups = match mode {
        CgroupMode::V2 => v2::existing(root)?,
        CgroupMode::V1 | CgroupMode::Hybrid => v1::existing(root)?,
    };
    let mut out = Vec::new();
    for (id, dirs) in groups {
        let Some(anchor) = dirs.into_iter().next() else {
            continue;
        };
        // Taking the lock and letting it go at once tells whether a kiln holds it.
        if lock_owned(&anchor)?.is_some() {
            out.push((id, anchor));
        }
    }
    Ok(out)
}

/// The dirs of container `id`'s cgroup under `root` (one per hierarchy on v1), made by
/// the kiln that runs it; empty when it has none (it is not running).
pub fn container_dirs(root: &Path, id: &str) -> Result<Vec<PathBuf>, CgroupError> {
    check_id(id)?;
    let groups = match detect(root)? {
        CgroupMode::V2 => v2::existing(root)?,
        CgroupMode::V1 | CgroupMode::Hybrid => v1::existing(root)?,
    };
    let mut dirs: Vec<PathBuf> = groups
        .into_iter()
        .filter(|(i, _)| i == id)
        .flat_map(|(_, dirs)| dirs)
        .collect();
    dirs.dedup();
    Ok(dirs)
}

/// [`Cgroup::self_join_files`] of container `id`'s existing cgroup (`kiln exec`); empty on
/// v2, where [`join_container`] it is.
pub fn container_self_join_files(root: &Path, id: &str) -> Result<Vec<std::fs::File>, CgroupError> {
    match detect(root)? {
        CgroupMode::V2 => Ok(Vec::new()),
        CgroupMode::V1 | CgroupMode::Hybrid => open_tasks_files(&container_dirs(root, id)?),
    }
}

/// Each v1 dir's `tasks` file, open for writing.
fn open_tasks_files(dirs: &[PathBuf]) -> Result<Vec<std::fs::File>, CgroupError> {
    dirs.iter()
        .map(|dir| {
            let path = dir.join("tasks");
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| CgroupError::Io {
                    what: "open",
                    path,
                    source,
                })
        })
        .collect()
}

/// Moves process `pid` into container `id`'s existing cgroup, in every hierarchy kiln
/// made it in (`kiln exec`: the new process is counted and limited with the container).
pub fn join_container(root: &Path, id: &str, pid: i32) -> Result<(), CgroupError> {
    let dirs = container_dirs(root, id)?;
    if dirs.is_empty() {
        return Err(CgroupError::Io {
            what: "join cgroup",
            path: root.join(CGROUP_PARENT).join(cgroup_name(id)),
            source: io::Error::from(io::ErrorKind::NotFound),
        });
    }
    for dir in dirs {
        write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
    }
    Ok(())
}

fn cgroup_name(id: &str) -> String {
    format!("{CGROUP_PREFIX}{id}")
}

fn check_id(id: &str) -> Result<(), CgroupError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidId(id.to_owned()))
    }
}

/// Takes the exclusive lock of the cgroup dir `dir` without waiting. `None` when another
/// process holds it, or when the dir vanished or was replaced before the lock was taken.
/// A blocking `flock` (`LOCK_SH` or `LOCK_EX`) on the cgroupfs root, released on drop.
fn lock_root(root: &Path, operation: libc::c_int) -> Result<File, CgroupError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(root)
        .map_err(CgroupError::io("open cgroup root", root))?;
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(file);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(CgroupError::io("lock cgroup root", root)(err));
        }
    }
}

fn lock_owned(dir: &Path) -> Result<Option<File>, CgroupError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(dir)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CgroupError::io("open cgroup", dir)(e)),
    };
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => Ok(None),
            _ => Err(CgroupError::io("lock cgroup", dir)(err)),
        };
    }
    let opened = file
        .metadata()
        .map_err(CgroupError::io("stat cgroup", dir))?;
    match fs::symlink_metadata(dir) {
        Ok(now) if now.ino() == opened.ino() && now.dev() == opened.dev() => Ok(Some(file)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CgroupError::io("stat cgroup", dir)(e)),
    }
}

/// Creates `dir` if it does not exist yet.
fn ensure_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(CgroupError::io("create cgroup", dir)(e)),
    }
}

/// Writes `value` to a cgroup interface file (one `write`, as the kernel wants).
fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        // A plain file in a test imitation; an existing interface file on cgroupfs.
        .create(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| CgroupError::Io {
            what: "open cgroup file",
            path: path.to_path_buf(),
            source,
        })?;
    file.write_all(value.as_bytes())
        .map_err(|source| CgroupError::Io {
            what: "write to",
            path: path.to_path_buf(),
            source,
        })
}

/// Writes each of `values` to a cgroup interface file that takes one entry per `write`
/// (`devices.allow`). The file is opened once and not truncated, so a test imitation
/// collects every entry, one per line.
fn write_lines(path: &Path, values: &[String]) -> Result<(), CgroupError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(CgroupError::io("open cgroup file", path))?;
    for value in values {
        file.write_all(format!("{value}\n").as_bytes())
            .map_err(CgroupError::io("write to", path))?;
    }
    Ok(())
}

/// Reads a cgroup interface file, bounded.
fn read_file(path: &Path) -> Result<String, CgroupError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(CgroupError::io("open cgroup file", path))?;
    let mut text = String::new();
    file.take(MAX_FILE_LEN)
        .read_to_string(&mut text)
        .map_err(CgroupError::io("read", path))?;
    Ok(text)
}

/// The value of `key` in a flat-keyed file such as `memory.events` (`key value` lines).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Pids listed in a dir's `cgroup.procs`; a missing dir has none.
fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    match read_file(&dir.join("cgroup.procs")) {
        Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        // ENODEV: the cgroup was removed while being read.
        Err(CgroupError::Io { source, .. })
            if source.kind() == io::ErrorKind::NotFound
                || source.raw_os_error() == Some(libc::ENODEV) =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// Kills every process of the cgroups and removes their dirs, retrying while the kernel
/// still counts exiting processes.
fn remove_dirs(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    for dir in dirs {
        let mut pause = Duration::from_micros(200);
        loop {
            kill_all(dir)?;
            match fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                // Only a plain directory (a test imitation of cgroupfs) says ENOTEMPTY: real
                // cgroupfs removes a cgroup with its interface files, or answers EBUSY.
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && !is_cgroupfs(dir) => {
                    remove_plain_files(dir)?;
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    return Err(CgroupError::Busy {
                        path: dir.clone(),
                        secs: REMOVE_TIMEOUT.as_secs(),
                    });
                }
                Err(e) => return Err(CgroupError::io("remove cgroup", dir)(e)),
            }
        }
    }
    Ok(())
}

fn kill_all(dir: &Path) -> Result<(), CgroupError> {
    for pid in procs(dir)? {
        if pid > 0 {
            // SAFETY: kill takes plain integers; the process may already be gone.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    Ok(())
}

fn is_cgroupfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|s| {
        let magic = s.filesystem_type();
        magic == nix::sys::statfs::CGROUP_SUPER_MAGIC
            || magic == nix::sys::statfs::CGROUP2_SUPER_MAGIC
    })
}

fn remove_plain_files(dir: &Path) -> Result<(), CgroupError> {
    for entry in fs::read_dir(dir).map_err(CgroupError::io("list", dir))? {
        let entry = entry.map_err(CgroupError::io("list", dir))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            fs::remove_file(entry.path()).map_err(CgroupError::io("remove", &entry.path()))?;
        }
    }
    Ok(())
}

/// `kiln-<id>` entries of a `kiln` parent dir: (id, path).
fn kiln_children(parent: &Path) -> Result<Vec<(String, PathBuf)>, CgroupError> {
    let entries = match fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CgroupError::io("list", parent)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(CgroupError::io("list", parent))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_prefix(CGROUP_PREFIX)) else {
            continue;
        };
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push((id.to_owned(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod rootless_tests;
#[cfg(test)]
mod tests;
