//! What a running container uses, read from its cgroup's interface files: CPU time,
//! memory (usage and limit), processes and block I/O, on v1 and v2 alike (`kiln stats`).
//!
//! Exists so that the command line never needs to know cgroup file names or the
//! difference between the two versions. Numbers are taken as docker takes them: memory
//! usage leaves out the inactive page cache (`total_inactive_file` on v1, `inactive_file`
//! on v2), which the kernel reclaims before it would kill anything; block I/O is the sum
//! of bytes read and written over every device.

use std::path::Path;

use super::{detect, keyed_value, procs, read_file, v1, CgroupError, CgroupMode, CGROUP_PARENT};

/// One sample of a container's usage. A field is `None` when the host does not account it
/// (its controller is not mounted or not enabled).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used since the container started, in nanoseconds.
    pub cpu_ns: Option<u64>,
    /// Memory in use, in bytes, without the inactive page cache.
    pub memory: Option<u64>,
    /// The memory limit in bytes; `None` when there is none.
    pub memory_limit: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// Bytes read from and written to block devices.
    pub block_read: Option<u64>,
    pub block_write: Option<u64>,
}

/// Limits at or above this are "no limit" (v1 writes `PAGE_COUNTER_MAX` pages as bytes).
const UNLIMITED: u64 = 1 << 62;

/// Reads container `id`'s usage under `root`. An error when it has no cgroup there.
pub fn usage(root: &Path, id: &str) -> Result<Usage, CgroupError> {
    match detect(root)? {
        CgroupMode::V2 => usage_v2(&root.join(CGROUP_PARENT).join(super::cgroup_name(id))),
        CgroupMode::V1 | CgroupMode::Hybrid => usage_v1(root, id),
    }
}

fn usage_v2(dir: &Path) -> Result<Usage, CgroupError> {
    // cgroup.procs exists in every cgroup: reading it tells a missing group from one
    // without some controller.
    read_file(&dir.join("cgroup.procs"))?;
    let optional = |name: &str| read_file(&dir.join(name)).ok();
    let memory_stat = optional("memory.stat").unwrap_or_default();
    let memory = optional("memory.current")
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(|current| {
            current.saturating_sub(keyed_value(&memory_stat, "inactive_file").unwrap_or(0))
        });
    let (block_read, block_write) = match optional("io.stat") {
        Some(text) => (
            Some(io_stat_sum(&text, "rbytes")),
            Some(io_stat_sum(&text, "wbytes")),
        ),
        None => (None, None),
    };
    Ok(Usage {
        cpu_ns: optional("cpu.stat")
            .and_then(|t| keyed_value(&t, "usage_usec"))
            .map(|us| us.saturating_mul(1000)),
        memory,
        memory_limit: optional("memory.max").and_then(|t| limit(&t)),
        pids: optional("pids.current").and_then(|t| t.trim().parse().ok()),
        block_read,
        block_write,
    })
}

fn usage_v1(root: &Path, id: &str) -> Result<Usage, CgroupError> {
    if super::container_dirs(root, id)?.is_empty() {
        return Err(no_cgroup(root, id));
    }
    let read = |controller: &str, name: &str| {
        v1::controller_dir(root, id, controller).and_then(|d| read_file(&d.join(name)).ok())
    };
    let memory_stat = read("memory", "memory.stat").unwrap_or_default();
    let memory = read("memory", "memory.usage_in_bytes")
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(|usage| {
            usage.saturating_sub(keyed_value(&memory_stat, "total_inactive_file").unwrap_or(0))
        });
    let (block_read, block_write) = match read("blkio", "blkio.throttle.io_service_bytes") {
        Some(text) => (
            Some(blkio_sum(&text, "Read")),
            Some(blkio_sum(&text, "Write")),
        ),
        None => (None, None),
    };
    Ok(Usage {
        cpu_ns: read("cpuacct", "cpuacct.usage").and_then(|t| t.trim().parse().ok()),
        memory,
        memory_limit: read("memory", "memory.limit_in_bytes").and_then(|t| limit(&t)),
        pids: read("pids", "pids.current").and_then(|t| t.trim().parse().ok()),
        block_read,
        block_write,
    })
}

fn no_cgroup(root: &Path, id: &str) -> CgroupError {
    CgroupError::Io {
        what: "find the cgroup",
        path: root.join(CGROUP_PARENT).join(super::cgroup_name(id)),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    }
}

/// A limit file's value: a number below [`UNLIMITED`], else (or `max`) none.
fn limit(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|&n| n < UNLIMITED)
}

/// The sum of `key=N` over the devices of v2's `io.stat` (`8:0 rbytes=1 wbytes=2 …`).
fn io_stat_sum(text: &str, key: &str) -> u64 {
    text.lines()
        .flat_map(|line| line.split_whitespace().skip(1))
        .filter_map(|field| field.split_once('='))
        .filter(|(k, _)| *k == key)
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// The sum of `MAJ:MIN OP N` lines for `op` in v1's `blkio.throttle.io_service_bytes`
/// (its `Total` line is left out, since the devices' lines are summed).
fn blkio_sum(text: &str, op: &str) -> u64 {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_device, kind, n) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == op).then(|| n.parse::<u64>().ok()).flatten()
        })
        .sum()
}

/// The processes of container `id`'s cgroup (host pids, each once, in order).
pub fn processes(root: &Path, id: &str) -> Result<Vec<i32>, CgroupError> {
    let dirs = super::container_dirs(root, id)?;
    if dirs.is_empty() {
        return Err(no_cgroup(root, id));
    }
    let mut pids = Vec::new();
    for dir in dirs {
        pids.extend(procs(&dir)?);
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lines_are_summed_per_operation() {
        let v2 = "8:0 rbytes=4096 wbytes=100 rios=1 wios=1 dbytes=0 dios=0\n\
                  259:0 rbytes=1 wbytes=2 rios=1 wios=1\n";
        assert_eq!(io_stat_sum(v2, "rbytes"), 4097);
        assert_eq!(io_stat_sum(v2, "wbytes"), 102);
        let v1 = "8:0 Read 10\n8:0 Write 20\n8:0 Sync 30\n8:16 Read 5\nTotal 65\n";
        assert_eq!(blkio_sum(v1, "Read"), 15);
        assert_eq!(blkio_sum(v1, "Write"), 20);
        assert_eq!(limit("max\n"), None);
        assert_eq!(limit("9223372036854771712\n"), None);
        assert_eq!(limit("67108864\n"), Some(64 << 20));
    }
}
