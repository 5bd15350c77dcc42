//! cgroup v2: one `kiln/kiln-<id>` dir in the unified hierarchy, with the controllers it
//! needs enabled in the `subtree_control` of the root and of `kiln/`.

use std::fs;
use std::path::{Path, PathBuf};

use super::{
    cgroup_name, ensure_dir, keyed_value, kiln_children, read_file, write_file, CgroupError,
    Resources, CGROUP_PARENT, CPU_PERIOD_US,
};

/// The controllers kiln enables for its cgroups, when the host offers them.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

#[derive(Debug)]
pub(super) struct Group {
    root: PathBuf,
    dir: PathBuf,
    /// Controllers enabled for the group.
    controllers: Vec<&'static str>,
}

impl Group {
    pub(super) fn create(root: &Path, id: &str) -> Result<Group, CgroupError> {
        let offered = read_file(&root.join("cgroup.controllers"))?;
        let controllers: Vec<&'static str> = CONTROLLERS
            .into_iter()
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
        })
    }

    pub(super) fn dirs(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
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

    pub(super) fn apply(&self, res: &Resources) -> Result<(), CgroupError> {
        if let Some(bytes) = res.memory {
            self.require("memory", "a memory limit")?;
            write_file(&self.dir.join("memory.max"), &bytes.to_string())?;
            // No swap on top of the limit (the file exists only when swap is accounted).
            let swap = self.dir.join("memory.swap.max");
            if swap.is_file() {
                write_file(&swap, "0")?;
            }
        }
        if let Some(quota) = res.cpu_quota()? {
            self.require("cpu", "a CPU limit")?;
            write_file(
                &self.dir.join("cpu.max"),
                &format!("{quota} {CPU_PERIOD_US}"),
            )?;
        }
        match self.require("pids", "a pids limit") {
            Ok(()) => write_file(&self.dir.join("pids.max"), &res.pids_limit().to_string())?,
            Err(_) if res.pids.is_none() => {}
            Err(e) => return Err(e),
        }
        Ok(())
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
