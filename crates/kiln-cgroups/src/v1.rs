//! cgroup v1: one hierarchy per controller, so one `kiln/kiln-<id>` dir in each of the
//! `memory`, `cpu`, `pids` and `devices` hierarchies that the host has mounted.
//!
//! The `devices` controller takes the allow-list as "deny all" (`a` to `devices.deny`)
//! followed by one `devices.allow` write per rule; the kernel only accepts exceptions that
//! the parent allows, and `kiln/` inherits the root's "allow all".

use std::fs;
use std::path::{Path, PathBuf};

use super::devices::DevicePolicy;
use super::{
    cgroup_name, ensure_dir, keyed_value, kiln_children, read_file, remove_dirs, write_file,
    write_lines, CgroupError, Resources, CGROUP_PARENT, CPU_PERIOD_US,
};

/// The controllers kiln uses, in a fixed order: the first present one holds the lock.
/// (Later additions go last, so that the lock stays where kilns before them put it.)
/// `cpuacct` and `blkio` set no limit: they account the container's CPU time and block
/// I/O on their own (`kiln stats`).
const CONTROLLERS: [&str; 6] = ["memory", "cpu", "pids", "devices", "cpuacct", "blkio"];

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
    pub(super) fn create(root: &Path, id: &str) -> Result<Group, CgroupError> {
        let mut group = Group {
            root: root.to_path_buf(),
            dirs: Vec::new(),
            aliases: Vec::new(),
        };
        let mut hierarchies: Vec<PathBuf> = Vec::new();
        for (controller, hierarchy) in available_controllers(root) {
            let parent = hierarchy.join(CGROUP_PARENT);
            let dir = parent.join(cgroup_name(id));
            // Co-mounted controllers (`cpu,cpuacct`, linked as `cpu` and `cpuacct`) share
            // one hierarchy, hence one dir.
            let real = fs::canonicalize(&hierarchy).unwrap_or(hierarchy);
            if hierarchies.contains(&real) {
                group.aliases.push((controller, dir));
                continue;
            }
            hierarchies.push(real);
            let created = ensure_dir(&parent).and_then(|()| {
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
        if let Some(bytes) = res.memory {
            let dir = self.dir("memory", "a memory limit")?;
            write_file(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // memory+swap equal to memory: no swap on top of the limit (memsw exists only
            // when the kernel accounts swap).
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.is_file() {
                write_file(&memsw, &bytes.to_string())?;
            }
        }
        if let Some(quota) = res.cpu_quota()? {
            let dir = self.dir("cpu", "a CPU limit")?;
            write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
            write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        match self.dir("pids", "a pids limit") {
            Ok(dir) => write_file(&dir.join("pids.max"), &res.pids_limit().to_string())?,
            // The default limit is a safety net, not something the user asked for.
            Err(_) if res.pids.is_none() => {}
            Err(e) => return Err(e),
        }
        self.apply_devices(&res.devices)
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
