//! `kiln bundle`: the OCI runtime configuration (`config.json`) equivalent to a
//! [`ContainerSpec`], so that `runc run` (or any OCI runtime) runs the container with the
//! same process, namespaces, mounts, limits, capabilities and seccomp profile as
//! `kiln run`. It is the proof that kiln's run configuration is standard.
//!
//! The configuration is written as JSON and read back into `oci_spec`'s types, which checks
//! it against the specification's schema as that crate models it. The rootfs is `rootfs`
//! next to `config.json`; the `/etc` files kiln generates are bound from the spec's state
//! dir (write them with [`write_state_files`]).

use serde_json::{json, Value};

use super::capabilities::CapabilitySet;
use super::cgroups::{
    self, CgroupMode, DevicePolicy, Resources, Swap, ThrottleKind, CPU_PERIOD_US,
    DEFAULT_CGROUP_ROOT,
};
use super::confinement::SeccompPolicy;
use super::container::{etc_file_sources, ContainerSpec};
use super::container_mounts::{MASKED_PATHS, READONLY_PATHS};
use super::devices::DEFAULT_SHM_SIZE;
use super::error::{InvalidSandbox, RuntimeError};
use super::process::NetworkMode;
use super::seccomp;

/// The OCI runtime spec version the configuration follows (runc 1.1 implements it).
const OCI_VERSION: &str = "1.0.2";
/// The cgroup parent used in bundles, apart from `kiln/` so that kiln's stale-cgroup
/// cleanup never touches a cgroup that another runtime manages.
const BUNDLE_CGROUP_PARENT: &str = "kiln-oci";

/// Writes the `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` files the
/// configuration binds into `spec.state_dir`.
pub fn write_state_files(spec: &ContainerSpec) -> Result<(), RuntimeError> {
    super::container::write_etc_files(spec).map(drop)
}

/// The `config.json` for running `spec` with an OCI runtime.
pub fn oci_config(spec: &ContainerSpec) -> Result<oci_spec::runtime::Spec, RuntimeError> {
    if spec.userns.is_private() {
        // Its root would have to be idmapped, which the bundle's plain rootfs dir is not.
        return Err(RuntimeError::UsernsUnsupported(
            "a bundle runs with the host's ids: a user namespace of the container's own is kiln run's",
        ));
    }
    let config = config_json(spec)?;
    serde_json::from_value(config).map_err(|e| InvalidSandbox::OciConfig(e).into())
}

fn config_json(spec: &ContainerSpec) -> Result<Value, RuntimeError> {
    let caps = &spec.confinement.capabilities;
    let process = &spec.process;
    let mut linux = json!({
        "namespaces": namespaces(spec),
        "devices": device_nodes(spec),
        "sysctl": spec.sysctls.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<String, Value>>(),
        "maskedPaths": proc_paths(&MASKED_PATHS),
        "readonlyPaths": proc_paths(&READONLY_PATHS),
        "resources": resources(spec)?,
        "cgroupsPath": format!("/{BUNDLE_CGROUP_PARENT}/kiln-{}", spec.id),
    });
    match &spec.confinement.seccomp {
        SeccompPolicy::Default => linux["seccomp"] = seccomp::oci_profile(caps.bounding),
        SeccompPolicy::Unconfined => {}
        SeccompPolicy::Profile(json) => {
            linux["seccomp"] = seccomp::oci_profile_of_docker(json, caps.bounding)
                .map_err(RuntimeError::Seccomp)?
        }
    }
    Ok(json!({
        "ociVersion": OCI_VERSION,
        "root": {"path": "rootfs", "readonly": spec.read_only},
        "hostname": process.hostname,
        "process": {
            "terminal": spec.tty,
            "user": {"uid": process.uid, "gid": process.gid, "additionalGids": process.groups},
            "args": process.argv,
            "env": process.env,
            "cwd": process.cwd,
            "capabilities": capabilities(caps),
            "noNewPrivileges": spec.confinement.no_new_privileges,
            "rlimits": spec.confinement.rlimits.iter().map(|l| json!({
                "type": l.oci_type(), "soft": l.soft, "hard": l.hard,
            })).collect::<Vec<_>>(),
        },
        "mounts": mounts(spec)?,
        "linux": linux,
    }))
}

fn capabilities(caps: &CapabilitySet) -> Value {
    json!({
        "bounding": CapabilitySet::names(caps.bounding),
        "effective": CapabilitySet::names(caps.effective),
        "permitted": CapabilitySet::names(caps.permitted),
        "inheritable": CapabilitySet::names(caps.inheritable),
        "ambient": CapabilitySet::names(caps.ambient),
    })
}

fn namespaces(spec: &ContainerSpec) -> Value {
    let mut list = vec!["pid", "ipc", "uts", "mount"];
    if spec.process.network != NetworkMode::Host {
        // A new network namespace: runc brings up its loopback interface, as kiln does.
        list.push("network");
    }
    let root = spec
        .cgroup_root
        .clone()
        .unwrap_or_else(|| DEFAULT_CGROUP_ROOT.into());
    if cgroups::detect(&root).is_ok_and(|m| m == CgroupMode::V2) {
        list.push("cgroup");
    }
    list.into_iter().map(|t| json!({"type": t})).collect()
}

fn proc_paths(rels: &[&std::ffi::CStr]) -> Vec<String> {
    rels.iter()
        .map(|r| format!("/{}", r.to_string_lossy()))
        .collect()
}

/// The `--device` nodes, which runc makes in the container's `/dev`.
fn device_nodes(spec: &ContainerSpec) -> Vec<Value> {
    spec.devices
        .iter()
        .map(|d| {
            json!({
                "path": d.path,
                "type": d.kind.letter().to_string(),
                "major": d.major,
                "minor": d.minor,
                "fileMode": d.mode,
                "uid": d.uid,
                "gid": d.gid,
            })
        })
        .collect()
}

/// `linux.resources`: the same limits in the OCI spec's v1-shaped words, which runc maps
/// onto v2 the way kiln does (shares → weight, memory+swap → swap alone, blkio → io).
fn resources(spec: &ContainerSpec) -> Result<Value, RuntimeError> {
    let res = &spec.resources();
    let mut out = json!({
        "devices": devices(&res.devices),
        "pids": {"limit": res.pids_limit()},
    });
    if let Some(memory) = memory(res) {
        out["memory"] = memory;
    }
    let mut cpu = serde_json::Map::new();
    if let Some(quota) = res.cpu_quota()? {
        cpu.insert("quota".into(), quota.into());
        cpu.insert("period".into(), CPU_PERIOD_US.into());
    }
    if let Some(weight) = res.cpu_weight {
        cpu.insert("shares".into(), weight.shares().into());
    }
    if let Some(cpus) = &res.cpuset_cpus {
        cpu.insert("cpus".into(), cpus.clone().into());
    }
    if let Some(mems) = &res.cpuset_mems {
        cpu.insert("mems".into(), mems.clone().into());
    }
    if !cpu.is_empty() {
        out["cpu"] = cpu.into();
    }
    if res.blkio_weight.is_some() || !res.throttles.is_empty() {
        out["blockIO"] = block_io(res);
    }
    Ok(out)
}

fn memory(res: &Resources) -> Option<Value> {
    let mut memory = serde_json::Map::new();
    if let Some(bytes) = res.memory {
        // `swap` is memory plus swap: equal to the limit means no swap, kiln's default.
        let swap: i64 = match res.memory_swap {
            None => bytes as i64,
            Some(Swap::Limit(total)) => total as i64,
            Some(Swap::Unlimited) => -1,
        };
        memory.insert("limit".into(), bytes.into());
        memory.insert("swap".into(), swap.into());
    }
    if let Some(bytes) = res.memory_reservation {
        memory.insert("reservation".into(), bytes.into());
    }
    (!memory.is_empty()).then(|| memory.into())
}

fn block_io(res: &Resources) -> Value {
    let mut out = json!({});
    if let Some(weight) = res.blkio_weight {
        out["weight"] = weight.into();
    }
    for t in &res.throttles {
        let key = match t.kind {
            ThrottleKind::ReadBps => "throttleReadBpsDevice",
            ThrottleKind::WriteBps => "throttleWriteBpsDevice",
            ThrottleKind::ReadIops => "throttleReadIOPSDevice",
            ThrottleKind::WriteIops => "throttleWriteIOPSDevice",
        };
        let entry = json!({"major": t.major, "minor": t.minor, "rate": t.rate});
        match out[key].as_array_mut() {
            Some(list) => list.push(entry),
            None => out[key] = json!([entry]),
        }
    }
    out
}

/// kiln's device allow-list as OCI device cgroup entries: deny everything, then allow
/// each rule (an absent major or minor is a wildcard). runc appends its own defaults,
/// which the list already contains, so runc enforces exactly what kiln does.
fn devices(policy: &DevicePolicy) -> Vec<Value> {
    let deny_all = json!({"allow": false, "type": "a", "access": "rwm"});
    let allows = policy.rules().into_iter().map(|rule| {
        let mut entry = json!({
            "allow": true,
            "type": rule.kind.letter().to_string(),
            "access": rule.access.letters(),
        });
        if let Some(major) = rule.major {
            entry["major"] = major.into();
        }
        if let Some(minor) = rule.minor {
            entry["minor"] = minor.into();
        }
        entry
    });
    std::iter::once(deny_all).chain(allows).collect()
}

/// The same filesystems kiln mounts, in the order a runtime must mount them.
fn mounts(spec: &ContainerSpec) -> Result<Vec<Value>, RuntimeError> {
    let shm_size = match spec.shm_size {
        Some(bytes) => format!("size={bytes}"),
        None => format!("size={}", DEFAULT_SHM_SIZE.to_string_lossy()),
    };
    let mount = |dest: &str, kind: &str, source: &str, options: &[&str]| json!({"destination": dest, "type": kind, "source": source, "options": options});
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ];
    for (host, target) in etc_file_sources(spec)? {
        let host = host.to_string_lossy();
        out.push(mount(
            &target,
            "bind",
            &host,
            &["bind", "nosuid", "nodev", "noexec"],
        ));
    }
    // Parents before children, as kiln mounts them.
    let mut user: Vec<(usize, Value)> = Vec::new();
    for bind in &spec.mounts {
        let source = std::path::absolute(&bind.source)
            .map_err(RuntimeError::io("bind mount source", bind.source.clone()))?;
        let mode = if bind.readonly { "ro" } else { "rw" };
        let value = mount(
            &bind.target,
            "bind",
            &source.to_string_lossy(),
            &["rbind", "nodev", mode],
        );
        user.push((depth(&bind.target), value));
    }
    for target in &spec.tmpfs {
        let options = ["nosuid", "nodev", "noexec", "mode=1777"];
        user.push((depth(target), mount(target, "tmpfs", "tmpfs", &options)));
    }
    user.sort_by_key(|(d, _)| *d);
    out.extend(user.into_iter().map(|(_, v)| v));
    Ok(out)
}

/// The number of path components of a mount target.
fn depth(target: &str) -> usize {
    target
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .count()
}

#[cfg(test)]
mod tests;
