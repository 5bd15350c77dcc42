//! cgroup v2: one `kiln/kiln-<id>` dir in the unified hierarchy, with the controllers it
//! needs enabled in the `subtree_control` of the root and of `kiln/` (`cpuset` only for a
//! container that asks for one, as on v1).
//!
//! v2 has its own scales and files for Docker's v1-shaped controls, mapped as runc maps
//! them: CPU shares become `cpu.weight`, a memory+swap limit becomes `memory.swap.max`
//! (swap alone), the reservation `memory.low`, the block I/O weight `io.bfq.weight` (same
//! scale) or `io.weight` (converted), and device throttles `io.max`.
//!
//! The device allow-list is an eBPF program attached to the dir ([`super::bpf`]). A
//! program can only be attached to a real cgroup2 directory, so on a test imitation of
//! cgroupfs (a plain temp dir, where joining moves no process anywhere either) kiln does
//! not try: the imitation tests cover the interface-file writes only, and the program is
//! tested on this host's real (controller-less) cgroup2 hierarchy.

use std::fs::{self, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::bpf::attach_device_filter;
use super::devices::DevicePolicy;
use super::{
    cgroup_name, ensure_dir, io_weight, keyed_value, kiln_children, no_swap_accounting, read_file,
    write_file, write_lines, CgroupError, Resources, Swap, BLKIO_WEIGHT_WHY, CGROUP_PARENT,
    CPU_PERIOD_US,
};

/// How a v2 group's devices are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeviceFilter {
    /// Not applied yet, or the policy confines nothing: no program.
    None,
    /// The allow-list program is attached to the group's dir.
    Attached,
    /// The dir is not on a cgroup2 filesystem (a test imitation), so nothing could be
    /// attached, nor can a process really join it.
    NotCgroupfs,
}

/// The controllers kiln enables for its cgroups, when the host offers them (`io` sets no
/// limit: it accounts block I/O in `io.stat`, for `kiln stats`).
const CONTROLLERS: [&str; 4] = ["memory", "cpu", "pids", "io"];

#[derive(Debug)]
pub(super) struct Group {
    root: PathBuf,
    dir: PathBuf,
    /// Controllers enabled for the group.
    controllers: Vec<&'static str>,
    devices: DeviceFilter,
}

impl Group {
    pub(super) fn create(root: &Path, id: &str, res: &Resources) -> Result<Group, CgroupError> {
        let offered = read_file(&root.join("cgroup.controllers"))?;
        let cpuset = res.wants_cpuset().then_some("cpuset");
        let controllers: Vec<&'static str> = CONTROLLERS
            .into_iter()
            .chain(cpuset)
            .filter(|c| offered.split_whitespace().any(|o| o == *c))
            .collect();
        let parent = root.join(CGROUP_PARENT);
        enable(root, &controllers)?;
        ensure_dir(&parent)?;
        enable(&parent, &controllers)?;
        let dir = parent.join(cgroup_name(id));
        fs::create_dir(&dir).map_err(CgroupError::io("create cgroup", &dir))?;
        Ok(Group {
            root: root.to_path_buf(),
            dir,
            controllers,
            devices: DeviceFilter::None,
        })
    }

    pub(super) fn dirs(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }

    /// Whether the kernel gives the group interface file `file`, which depends on the
    /// kernel (swap accounting, the BFQ scheduler) and not only on the controller. Asked of
    /// `kiln/`: it is a non-root cgroup with the group's controllers (the root enables them
    /// for it), so it shows the same files, and a test imitation can lay them out there
    /// before the group exists.
    fn offers(&self, file: &str) -> bool {
        self.dir.parent().is_some_and(|p| p.join(file).is_file())
    }

    fn require(&self, controller: &'static str, what: &'static str) -> Result<(), CgroupError> {
        if self.controllers.contains(&controller) {
            Ok(())
        } else {
            Err(CgroupError::ControllerMissing {
                controller,
                root: self.root.clone(),
                what,
            })
        }
    }

    pub(super) fn apply(&mut self, res: &Resources) -> Result<(), CgroupError> {
        self.apply_memory(res)?;
        self.apply_cpu(res)?;
        match self.require("pids", "a pids limit") {
            Ok(()) => write_file(&self.dir.join("pids.max"), &res.pids_limit().to_string())?,
            Err(_) if res.pids.is_none() => {}
            Err(e) => return Err(e),
        }
        self.apply_io(res)?;
        self.devices = self.apply_devices(&res.devices)?;
        Ok(())
    }

    fn apply_memory(&self, res: &Resources) -> Result<(), CgroupError> {
        if let Some(bytes) = res.memory {
            self.require("memory", "a memory limit")?;
            write_file(&self.dir.join("memory.max"), &bytes.to_string())?;
            // Swap alone, unlike v1's memory+swap; the file exists only when swap is
            // accounted.
            let file = self.dir.join("memory.swap.max");
            let accounted = self.offers("memory.swap.max");
            let swap = match res.memory_swap {
                // No swap on top of the limit.
                None => "0".to_owned(),
                Some(Swap::Limit(total)) => total.saturating_sub(bytes).to_string(),
                Some(Swap::Unlimited) => "max".to_owned(),
            };
            if accounted {
                write_file(&file, &swap)?;
            } else if matches!(res.memory_swap, Some(Swap::Limit(_))) {
                return Err(no_swap_accounting("memory.swap.max"));
            }
        }
        if let Some(bytes) = res.memory_reservation {
            self.require("memory", "a memory reservation")?;
            write_file(&self.dir.join("memory.low"), &bytes.to_string())?;
        }
        Ok(())
    }

    fn apply_cpu(&self, res: &Resources) -> Result<(), CgroupError> {
        if let Some(quota) = res.cpu_quota()? {
            self.require("cpu", "a CPU limit")?;
            write_file(
                &self.dir.join("cpu.max"),
                &format!("{quota} {CPU_PERIOD_US}"),
            )?;
        }
        if let Some(weight) = res.cpu_weight {
            self.require("cpu", "a CPU weight")?;
            write_file(&self.dir.join("cpu.weight"), &weight.weight().to_string())?;
        }
        for (file, wanted) in [
            ("cpuset.cpus", &res.cpuset_cpus),
            ("cpuset.mems", &res.cpuset_mems),
        ] {
            // Unlike v1, an empty v2 cpuset means "the parent's".
            if let Some(list) = wanted {
                self.require("cpuset", "a cpuset")?;
                write_file(&self.dir.join(file), list)?;
            }
        }
        Ok(())
    }

    fn apply_io(&self, res: &Resources) -> Result<(), CgroupError> {
        if let Some(weight) = res.blkio_weight {
            self.require("io", "a block I/O weight")?;
            // BFQ's weight has Docker's scale; the generic io.weight is 1-10000.
            if self.offers("io.bfq.weight") {
                write_file(&self.dir.join("io.bfq.weight"), &weight.to_string())?;
            } else if self.offers("io.weight") {
                let value = format!("default {}", io_weight(weight));
                write_file(&self.dir.join("io.weight"), &value)?;
            } else {
                return Err(CgroupError::Unsupported {
                    what: "a block I/O weight",
                    missing: "io.bfq.weight or io.weight".into(),
                    why: BLKIO_WEIGHT_WHY,
                });
            }
        }
        if !res.throttles.is_empty() {
            self.require("io", "a device I/O limit")?;
            // One entry per write; keys not written keep their value.
            let lines: Vec<String> = res
                .throttles
                .iter()
                .map(|t| format!("{}:{} {}={}", t.major, t.minor, t.kind.v2_key(), t.rate))
                .collect();
            write_lines(&self.dir.join("io.max"), &lines)?;
        }
        Ok(())
    }

    /// Attaches the allow-list program, before any process joins.
    fn apply_devices(&self, policy: &DevicePolicy) -> Result<DeviceFilter, CgroupError> {
        if !policy.confines() {
            return Ok(DeviceFilter::None);
        }
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&self.dir)
            .map_err(CgroupError::io("open cgroup", &self.dir))?;
        // Checked on the fd the program is attached through, so it is the same dir.
        let on_cgroup2 = nix::sys::statfs::fstatfs(&dir)
            .map_err(|e| CgroupError::io("statfs", &self.dir)(e.into()))?
            .filesystem_type()
            == nix::sys::statfs::CGROUP2_SUPER_MAGIC;
        if !on_cgroup2 {
            return Ok(DeviceFilter::NotCgroupfs);
        }
        attach_device_filter(dir.as_fd(), &policy.rules())?;
        Ok(DeviceFilter::Attached)
    }

    /// How the group's devices are confined.
    #[cfg(test)]
    pub(super) fn device_filter(&self) -> DeviceFilter {
        self.devices
    }

    /// `oom_kill N` in `memory.events`.
    pub(super) fn oom_killed(&self) -> Result<bool, CgroupError> {
        if !self.controllers.contains(&"memory") {
            return Ok(false);
        }
        let events = read_file(&self.dir.join("memory.events"))?;
        Ok(keyed_value(&events, "oom_kill").is_some_and(|n| n > 0))
    }
}

/// Adds `controllers` to `dir`'s `cgroup.subtree_control`, skipping enabled ones.
fn enable(dir: &Path, controllers: &[&str]) -> Result<(), CgroupError> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = match read_file(&control) {
        Ok(text) => text,
        Err(CgroupError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            String::new()
        }
        Err(e) => return Err(e),
    };
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write_file(&control, &missing.join(" "))
}

/// Every `kiln-<id>` cgroup under `root`: (id, [its dir]).
pub(super) fn existing(root: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, CgroupError> {
    Ok(kiln_children(&root.join(CGROUP_PARENT))?
        .into_iter()
        .map(|(id, dir)| (id, vec![dir]))
        .collect())
}
