//! cgroup v1: one hierarchy per controller, so one `kiln/kiln-<id>` dir in each of the
//! `memory`, `cpu`, `pids`, `devices`, `cpuacct` and `blkio` hierarchies that the host has
//! mounted, and in `cpuset` when the container asks for a cpuset.
//!
//! A v1 cpuset cgroup starts with no CPUs and no memory nodes, and the kernel refuses a
//! process into it until both are set; so `kiln/` in the cpuset hierarchy is filled from
//! the hierarchy's root when it is empty, and a container's dir gets the asked-for lists
//! or `kiln/`'s, before anything joins it.
//!
//! The `devices` controller takes the allow-list as "deny all" (`a` to `devices.deny`)
//! followed by one `devices.allow` write per rule; the kernel only accepts exceptions that
//! the parent allows, and `kiln/` inherits the root's "allow all".

use std::fs;
use std::path::{Path, PathBuf};

use super::devices::DevicePolicy;
use super::{
    cgroup_name, ensure_dir, keyed_value, kiln_children, no_swap_accounting, read_file,
    remove_dirs, write_file, write_lines, CgroupError, Resources, Swap, BLKIO_WEIGHT_WHY,
    CGROUP_PARENT, CPU_PERIOD_US,
};

/// The controllers kiln uses, in a fixed order: the first present one holds the lock.
/// (Later additions go last, so that the lock stays where kilns before them put it.)
/// `cpuacct` and `blkio` account the container's CPU time and block I/O (`kiln stats`)
/// even without a limit. `cpuset` is used only by containers that ask for one.
const CONTROLLERS: [&str; 7] = [
    "memory", "cpu", "pids", "devices", "cpuacct", "blkio", "cpuset",
];

/// Controllers mounted under `root`: (name, hierarchy root).
pub(super) fn available_controllers(root: &Path) -> Vec<(&'static str, PathBuf)> {
    CONTROLLERS
        .iter()
        .map(|c| (*c, root.join(c)))
        .filter(|(_, dir)| dir.join("cgroup.procs").is_file())
        .collect()
}

#[derive(Debug)]
pub(super) struct Group {
    root: PathBuf,
    /// (controller, the container's dir in that hierarchy).
    dirs: Vec<(&'static str, PathBuf)>,
    /// Controllers co-mounted with one in `dirs`: (controller, the same dir by its name).
    aliases: Vec<(&'static str, PathBuf)>,
}

impl Group {
    pub(super) fn create(root: &Path, id: &str, res: &Resources) -> Result<Group, CgroupError> {
        let mut group = Group {
            root: root.to_path_buf(),
            dirs: Vec::new(),
            aliases: Vec::new(),
        };
        let mut hierarchies: Vec<PathBuf> = Vec::new();
        for (controller, hierarchy) in available_controllers(root) {
            if controller == "cpuset" && !res.wants_cpuset() {
                continue;
            }
            let parent = hierarchy.join(CGROUP_PARENT);
            let dir = parent.join(cgroup_name(id));
            // Co-mounted controllers (`cpu,cpuacct`, linked as `cpu` and `cpuacct`) share
            // one hierarchy, hence one dir.
            let real = fs::canonicalize(&hierarchy).unwrap_or_else(|_| hierarchy.clone());
            if hierarchies.contains(&real) {
                group.aliases.push((controller, dir));
                continue;
            }
            hierarchies.push(real);
            let created = ensure_dir(&parent)
                .and_then(|()| match controller {
                    "cpuset" => fill_cpuset(&hierarchy, &parent),
                    _ => Ok(()),
                })
                .and_then(|()| {
                    fs::create_dir(&dir).map_err(CgroupError::io("create cgroup", &dir))
                });
            if let Err(e) = created {
                let _ = remove_dirs(&group.dirs());
                return Err(e);
            }
            group.dirs.push((controller, dir));
        }
        Ok(group)
    }

    pub(super) fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.clone()).collect()
    }

    fn dir(&self, controller: &'static str, what: &'static str) -> Result<&Path, CgroupError> {
        self.dirs
            .iter()
            .chain(&self.aliases)
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
            .ok_or_else(|| CgroupError::ControllerMissing {
                controller,
                root: self.root.clone(),
                what,
            })
    }

    pub(super) fn apply(&self, res: &Resources) -> Result<(), CgroupError> {
        self.apply_memory(res)?;
        self.apply_cpu(res)?;
        match self.dir("pids", "a pids limit") {
            Ok(dir) => write_file(&dir.join("pids.max"), &res.pids_limit().to_string())?,
            // The default limit is a safety net, not something the user asked for.
            Err(_) if res.pids.is_none() => {}
            Err(e) => return Err(e),
        }
        self.apply_blkio(res)?;
        self.apply_devices(&res.devices)
    }

    fn apply_memory(&self, res: &Resources) -> Result<(), CgroupError> {
        if let Some(bytes) = res.memory {
            let dir = self.dir("memory", "a memory limit")?;
            write_file(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // memsw is memory+swap, and exists only when the kernel accounts swap. Written
            // after the memory limit, which it may never be below.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            match res.memory_swap {
                // No swap on top of the limit: memory+swap equal to memory.
                None if memsw.is_file() => write_file(&memsw, &bytes.to_string())?,
                None => {}
                Some(Swap::Limit(total)) if memsw.is_file() => {
                    write_file(&memsw, &total.to_string())?
                }
                Some(Swap::Limit(_)) => {
                    return Err(no_swap_accounting("memory.memsw.limit_in_bytes"))
                }
                Some(Swap::Unlimited) if memsw.is_file() => write_file(&memsw, "-1")?,
                // Without swap accounting, swap is unlimited anyway.
                Some(Swap::Unlimited) => {}
            }
        }
        if let Some(bytes) = res.memory_reservation {
            let dir = self.dir("memory", "a memory reservation")?;
            write_file(&dir.join("memory.soft_limit_in_bytes"), &bytes.to_string())?;
        }
        Ok(())
    }

    fn apply_cpu(&self, res: &Resources) -> Result<(), CgroupError> {
        if let Some(quota) = res.cpu_quota()? {
            let dir = self.dir("cpu", "a CPU limit")?;
            write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        if let Some(weight) = res.cpu_weight {
            let dir = self.dir("cpu", "CPU shares")?;
            write_file(&dir.join("cpu.shares"), &weight.shares().to_string())?;
        }
        if res.wants_cpuset() {
            let dir = self.dir("cpuset", "a cpuset")?;
            let parent = dir.parent().unwrap_or(dir);
            for (file, wanted) in [
                ("cpuset.cpus", &res.cpuset_cpus),
                ("cpuset.mems", &res.cpuset_mems),
            ] {
                let value = match wanted {
                    Some(list) => list.clone(),
                    None => read_file(&parent.join(file))?.trim().to_owned(),
                };
                write_file(&dir.join(file), &value)?;
            }
        }
        Ok(())
    }

    fn apply_blkio(&self, res: &Resources) -> Result<(), CgroupError> {
        if let Some(weight) = res.blkio_weight {
            let dir = self.dir("blkio", "a block I/O weight")?;
            // CFQ's file (kernels before 5.0), else BFQ's; neither when no disk of the
            // host uses an I/O scheduler with weights.
            let file = ["blkio.weight", "blkio.bfq.weight"]
                .into_iter()
                .map(|f| dir.join(f))
                .find(|f| f.is_file())
                .ok_or(CgroupError::Unsupported {
                    what: "a block I/O weight",
                    missing: "blkio.weight or blkio.bfq.weight".into(),
                    why: BLKIO_WEIGHT_WHY,
                })?;
            write_file(&file, &weight.to_string())?;
        }
        if !res.throttles.is_empty() {
            let dir = self.dir("blkio", "a device I/O limit")?;
            for t in &res.throttles {
                let line = format!("{}:{} {}", t.major, t.minor, t.rate);
                write_lines(&dir.join(t.kind.v1_file()), &[line])?;
            }
        }
        Ok(())
    }

    /// Replaces the inherited "allow all" with the policy's rules. Without the controller
    /// only a policy that confines nothing can be honoured.
    fn apply_devices(&self, policy: &DevicePolicy) -> Result<(), CgroupError> {
        let dir = match self.dir("devices", "the device allow-list every container needs") {
            Ok(dir) => dir,
            Err(_) if !policy.confines() => return Ok(()),
            Err(e) => return Err(e),
        };
        write_file(&dir.join("devices.deny"), "a")?;
        let lines: Vec<String> = policy.rules().iter().map(|r| r.v1_line()).collect();
        write_lines(&dir.join("devices.allow"), &lines)
    }

    /// `oom_kill N` in `memory.oom_control` (kernel 4.13+), else any limit hit.
    pub(super) fn oom_killed(&self) -> Result<bool, CgroupError> {
        let Ok(dir) = self.dir("memory", "OOM detection") else {
            return Ok(false);
        };
        let control = read_file(&dir.join("memory.oom_control"))?;
        if let Some(kills) = keyed_value(&control, "oom_kill") {
            return Ok(kills > 0);
        }
        let failcnt = read_file(&dir.join("memory.failcnt"))?;
        Ok(failcnt.trim().parse::<u64>().is_ok_and(|n| n > 0))
    }
}

/// Fills `kiln/`'s empty `cpuset.cpus` and `cpuset.mems` from the hierarchy's root, which
/// has everything: a v1 cpuset cgroup takes no process (nor a child's lists) until both
/// are set. Kilns doing this at once write the same values.
fn fill_cpuset(hierarchy: &Path, parent: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let current = match read_file(&parent.join(file)) {
            Ok(text) => text,
            // A test imitation's new dir has no interface files.
            Err(CgroupError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                String::new()
            }
            Err(e) => return Err(e),
        };
        if current.trim().is_empty() {
            let all = read_file(&hierarchy.join(file))?;
            write_file(&parent.join(file), all.trim())?;
        }
    }
    Ok(())
}

/// Every `kiln-<id>` cgroup under `root`: (id, its dirs, the lock-holding one first).
pub(super) fn existing(root: &Path) -> Result<Vec<(String, Vec<PathBuf>)>, CgroupError> {
    let mut groups: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for (_, hierarchy) in available_controllers(root) {
        for (id, dir) in kiln_children(&hierarchy.join(CGROUP_PARENT))? {
            match groups.iter_mut().find(|(i, _)| *i == id) {
                Some((_, dirs)) => dirs.push(dir),
                None => groups.push((id, vec![dir])),
            }
        }
    }
    Ok(groups)
}

/// The dir of container `id` in `controller`'s hierarchy, when it exists.
pub(super) fn controller_dir(root: &Path, id: &str, controller: &str) -> Option<PathBuf> {
    let dir = root
        .join(controller)
        .join(CGROUP_PARENT)
        .join(cgroup_name(id));
    dir.is_dir().then_some(dir)
}
