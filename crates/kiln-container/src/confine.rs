//! From the spec's words to a [`Confinement`]: one function for build steps and for
//! `kiln run`, so that `capabilities:`, `privileged:` and limits mean the same in both.
//!
//! A run step's `capabilities:`/`privileged:`/`resources:` and `kiln build --memory` etc.
//! go through [`confinement`]; `kiln run` first merges the image's `run:` defaults with its
//! flags into the same [`Privileges`] and [`Limits`], then calls it too. Both live here,
//! below the build engine, so running an image does not depend on building one.
//!
//! Limits are checked as a whole here (Docker's cross rules, on what the container really
//! gets after merging), and throttled devices are looked up on this machine: a spec or an
//! image names a path, the kernel wants the device's numbers.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use kiln_runtime::{
    CapabilityError, CapabilitySet, Confinement, CpuWeight, DevicePolicy, Resources, SeccompPolicy,
    Swap, Throttle, ThrottleKind,
};
use kiln_spec::values::{check_limits, LimitConflict};
use kiln_spec::{self as spec, DeviceThrottle, Limits, MemorySwap, Privileges};

/// Why a step's or container's confinement cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error(transparent)]
    Capabilities(#[from] CapabilityError),
    /// Limits that contradict each other once merged (named by their spec keys).
    #[error(transparent)]
    Limits(#[from] LimitConflict),
    /// A throttled device that is not a block device of this machine.
    #[error("device {}: {problem}", path.display())]
    Device {
        path: PathBuf,
        problem: DeviceProblem,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceProblem {
    #[error("no such device")]
    Missing,
    #[error("not a block device")]
    NotBlock,
    #[error("{0}")]
    Unreadable(std::io::Error),
}

/// `--security-opt` settings that are not capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityOptions {
    /// `seccomp=unconfined`.
    pub seccomp_unconfined: bool,
    /// `seccomp=FILE`: a Docker-format profile, as JSON.
    pub seccomp_profile: Option<Vec<u8>>,
    /// `no-new-privileges[=true|false]`; `None` keeps the default (on, off when privileged).
    pub no_new_privileges: Option<bool>,
}

/// The confinement that `privileges` and `limits` describe; everything else is a default
/// `kiln run`'s.
pub fn confinement(
    privileges: &Privileges,
    limits: &Limits,
    options: &SecurityOptions,
) -> Result<Confinement, ConfineError> {
    let resources = resources(limits)?;
    let mut confinement = match privileges.privileged {
        true => Confinement::privileged(resources),
        false => Confinement {
            capabilities: CapabilitySet::resolve(&privileges.cap_add, &privileges.cap_drop, false)?,
            resources,
            ..Confinement::default()
        },
    };
    if let Some(json) = &options.seccomp_profile {
        confinement.seccomp = SeccompPolicy::Profile(json.clone());
    }
    if options.seccomp_unconfined {
        confinement.seccomp = SeccompPolicy::Unconfined;
    }
    if let Some(on) = options.no_new_privileges {
        confinement.no_new_privileges = on;
    }
    Ok(confinement)
}

/// The cgroup resources `limits` describe, checked as a whole, devices looked up.
fn resources(limits: &Limits) -> Result<Resources, ConfineError> {
    check_limits(limits)?;
    Ok(Resources {
        memory: limits.memory,
        memory_reservation: limits.memory_reservation,
        memory_swap: limits.memory_swap.map(|swap| match swap {
            MemorySwap::Limit(bytes) => Swap::Limit(bytes),
            MemorySwap::Unlimited => Swap::Unlimited,
        }),
        cpus: limits.cpus,
        cpu_weight: limits.cpu_weight.map(|weight| match weight {
            spec::CpuWeight::Shares(n) => CpuWeight::Shares(n),
            spec::CpuWeight::Weight(n) => CpuWeight::Weight(n),
        }),
        cpuset_cpus: limits.cpuset_cpus.clone(),
        cpuset_mems: limits.cpuset_mems.clone(),
        blkio_weight: limits.blkio_weight,
        throttles: throttles(&limits.device_throttles)?,
        pids: limits.pids,
        devices: DevicePolicy::Default,
    })
}

/// The throttles with their devices' numbers; of several for one device and kind, the
/// last (a flag's over the image's `run:`).
fn throttles(given: &[DeviceThrottle]) -> Result<Vec<Throttle>, ConfineError> {
    let mut out: Vec<Throttle> = Vec::new();
    for t in given {
        let (major, minor) = block_device(&t.path)?;
        let kind = match t.kind {
            spec::ThrottleKind::DeviceReadBps => ThrottleKind::ReadBps,
            spec::ThrottleKind::DeviceWriteBps => ThrottleKind::WriteBps,
            spec::ThrottleKind::DeviceReadIops => ThrottleKind::ReadIops,
            spec::ThrottleKind::DeviceWriteIops => ThrottleKind::WriteIops,
        };
        out.retain(|o| (o.kind, o.major, o.minor) != (kind, major, minor));
        out.push(Throttle {
            kind,
            major,
            minor,
            rate: t.rate,
        });
    }
    Ok(out)
}

/// A host block device's major and minor numbers (symlinks followed, as `/dev/disk/by-id/`
/// paths are links).
fn block_device(path: &std::path::Path) -> Result<(u32, u32), ConfineError> {
    let problem = |problem| ConfineError::Device {
        path: path.to_owned(),
        problem,
    };
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => problem(DeviceProblem::Missing),
        _ => problem(DeviceProblem::Unreadable(e)),
    })?;
    if !meta.file_type().is_block_device() {
        return Err(problem(DeviceProblem::NotBlock));
    }
    let rdev = meta.rdev();
    Ok((libc::major(rdev), libc::minor(rdev)))
}

/// `limits` with `fallback`'s values where `limits` has none (a step's `resources:` over
/// `kiln build --memory`, `kiln run --memory` over the image's `run:`). Device throttles
/// add up, `limits`' after `fallback`'s, so that for one device and kind `limits`' wins.
pub fn limits_over(limits: &Limits, fallback: &Limits) -> Limits {
    Limits {
        memory: limits.memory.or(fallback.memory),
        cpus: limits.cpus.or(fallback.cpus),
        pids: limits.pids.or(fallback.pids),
        memory_reservation: limits.memory_reservation.or(fallback.memory_reservation),
        memory_swap: limits.memory_swap.or(fallback.memory_swap),
        cpu_weight: limits.cpu_weight.or(fallback.cpu_weight),
        cpuset_cpus: limits.cpuset_cpus.clone().or(fallback.cpuset_cpus.clone()),
        cpuset_mems: limits.cpuset_mems.clone().or(fallback.cpuset_mems.clone()),
        blkio_weight: limits.blkio_weight.or(fallback.blkio_weight),
        device_throttles: fallback
            .device_throttles
            .iter()
            .chain(&limits.device_throttles)
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_step_is_a_default_container() {
        let c = confinement(
            &Privileges::default(),
            &Limits::default(),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(c, Confinement::default());
        assert!(c.grants().is_empty());
    }

    #[test]
    fn privileges_and_limits_are_applied() {
        let privileged = Privileges {
            privileged: true,
            ..Default::default()
        };
        let limits = Limits {
            pids: Some(10),
            ..Default::default()
        };
        let c = confinement(&privileged, &limits, &Default::default()).unwrap();
        assert_eq!(c.grants(), ["privileged"]);
        assert_eq!(c.resources.pids, Some(10));
        let admin = Privileges {
            cap_add: vec!["SYS_ADMIN".into()],
            ..Default::default()
        };
        let c = confinement(&admin, &Limits::default(), &Default::default()).unwrap();
        assert_eq!(c.grants(), ["cap-add SYS_ADMIN"]);
        assert_eq!(c.seccomp, SeccompPolicy::Default);
    }

    #[test]
    fn step_limits_win_over_build_flags() {
        let step = Limits {
            memory: Some(1),
            ..Default::default()
        };
        let flags = Limits {
            memory: Some(2),
            pids: Some(3),
            ..Default::default()
        };
        let merged = limits_over(&step, &flags);
        assert_eq!((merged.memory, merged.pids), (Some(1), Some(3)));
    }
}
