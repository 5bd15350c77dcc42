//! The cgroup limit flags (`--memory`, `--cpus`, `--pids-limit` and Docker's finer ones:
//! `--cpu-shares`, `--cpuset-cpus`, `--memory-swap`, `--blkio-weight`,
//! `--device-read-bps`, …): the same flags, with the same meaning, for `kiln build` (every
//! run step) and `kiln run`/`kiln bundle` (the container). Values are read by the spec's
//! parsers, so a flag and its `run:`/`resources:` key always agree.

use std::path::Path;

use clap::Args;

use super::Failure;
use kiln_spec::values::{self, LimitConflict};
use kiln_spec::{Limits, ThrottleKind};

#[derive(Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Memory limit, e.g. 64m (units are powers of 1024)
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Soft memory limit, e.g. 32m (at most --memory)
    #[arg(long = "memory-reservation", value_name = "SIZE")]
    memory_reservation: Option<String>,
    /// Memory plus swap, e.g. 128m, or -1 for unlimited swap (needs --memory; default: no
    /// swap on top of --memory)
    #[arg(long = "memory-swap", value_name = "SIZE", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// CPU limit, e.g. 0.5
    #[arg(long)]
    cpus: Option<String>,
    /// Relative CPU weight, cgroup v1's scale: 2-262144 (default 1024)
    #[arg(long = "cpu-shares", value_name = "N")]
    cpu_shares: Option<String>,
    /// Relative CPU weight, cgroup v2's scale: 1-10000 (default 100)
    #[arg(long = "cpu-weight", value_name = "N", conflicts_with = "cpu_shares")]
    cpu_weight: Option<String>,
    /// CPUs the container may run on, e.g. 0-1,3
    #[arg(long = "cpuset-cpus", value_name = "LIST")]
    cpuset_cpus: Option<String>,
    /// Memory nodes the container may use, e.g. 0
    #[arg(long = "cpuset-mems", value_name = "LIST")]
    cpuset_mems: Option<String>,
    /// Relative block I/O weight: 10-1000
    #[arg(long = "blkio-weight", value_name = "N")]
    blkio_weight: Option<String>,
    /// Limit reads from a host block device, e.g. /dev/sda:1mb (bytes per second)
    #[arg(long = "device-read-bps", value_name = "DEV:RATE")]
    device_read_bps: Vec<String>,
    /// Limit writes to a host block device, e.g. /dev/sda:1mb (bytes per second)
    #[arg(long = "device-write-bps", value_name = "DEV:RATE")]
    device_write_bps: Vec<String>,
    /// Limit reads from a host block device, e.g. /dev/sda:1000 (operations per second)
    #[arg(long = "device-read-iops", value_name = "DEV:N")]
    device_read_iops: Vec<String>,
    /// Limit writes to a host block device, e.g. /dev/sda:1000 (operations per second)
    #[arg(long = "device-write-iops", value_name = "DEV:N")]
    device_write_iops: Vec<String>,
    /// Process limit (default 2048, like podman)
    #[arg(long = "pids-limit", value_name = "N")]
    pids_limit: Option<u64>,
}

impl LimitArgs {
    /// The limits given, checked like the spec's (Docker's rules: at least 6 MiB of memory,
    /// at most this machine's CPUs, swap not below memory, …). A swap limit without
    /// `--memory` is left to the merge: the image's `run:` may give the memory.
    pub fn limits(&self) -> Result<Limits, Failure> {
        if self.pids_limit == Some(0) {
            return Err(Failure::user("--pids-limit must be at least 1"));
        }
        let mut limits = Limits {
            memory: parse("--memory", &self.memory, values::memory)?,
            cpus: parse("--cpus", &self.cpus, values::cpus)?,
            pids: self.pids_limit,
            memory_reservation: parse(
                "--memory-reservation",
                &self.memory_reservation,
                values::memory_reservation,
            )?,
            memory_swap: parse("--memory-swap", &self.memory_swap, values::memory_swap)?,
            cpu_weight: parse("--cpu-shares", &self.cpu_shares, values::cpu_shares)?.or(parse(
                "--cpu-weight",
                &self.cpu_weight,
                values::cpu_weight,
            )?),
            cpuset_cpus: parse("--cpuset-cpus", &self.cpuset_cpus, values::cpuset_cpus)?,
            cpuset_mems: parse("--cpuset-mems", &self.cpuset_mems, values::cpuset_mems)?,
            blkio_weight: parse("--blkio-weight", &self.blkio_weight, values::blkio_weight)?,
            device_throttles: Vec::new(),
        };
        for kind in ThrottleKind::ALL {
            for text in self.throttle_values(kind) {
                let throttle = values::device_throttle(kind, text)
                    .map_err(|e| flag_failure(&format!("{} {text}", flag_of(kind.key())), e))?;
                limits.device_throttles.push(throttle);
            }
        }
        values::check_partial_limits(&limits).map_err(|c| self.conflict(c))?;
        Ok(limits)
    }

    /// A conflict found once these flags were merged with an image's `run:` settings (or a
    /// step's `resources:`), each setting named by its flag when it was given.
    pub fn conflict(&self, conflict: LimitConflict) -> Failure {
        let (message, hint) = conflict.describe(|key| {
            if self.gives(key) {
                flag_of(key)
            } else {
                format!("the image's run: {key}")
            }
        });
        Failure::user(message).hint(Some(hint))
    }

    /// The flag that names throttled device `path`, if one does.
    pub fn device_flag(&self, path: &Path) -> Option<String> {
        ThrottleKind::ALL.into_iter().find_map(|kind| {
            self.throttle_values(kind)
                .iter()
                .any(|v| {
                    v.rsplit_once(':')
                        .is_some_and(|(p, _)| Path::new(p) == path)
                })
                .then(|| flag_of(kind.key()))
        })
    }

    fn gives(&self, key: &str) -> bool {
        match key {
            "memory" => self.memory.is_some(),
            "memory_swap" => self.memory_swap.is_some(),
            "memory_reservation" => self.memory_reservation.is_some(),
            _ => false,
        }
    }

    fn throttle_values(&self, kind: ThrottleKind) -> &[String] {
        match kind {
            ThrottleKind::DeviceReadBps => &self.device_read_bps,
            ThrottleKind::DeviceWriteBps => &self.device_write_bps,
            ThrottleKind::DeviceReadIops => &self.device_read_iops,
            ThrottleKind::DeviceWriteIops => &self.device_write_iops,
        }
    }
}

/// `memory_swap` → `--memory-swap`.
fn flag_of(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// A flag's value through its parser, the flag named in the error.
fn parse<T>(
    flag: &str,
    text: &Option<String>,
    parser: impl Fn(&str) -> Result<T, values::ValueError>,
) -> Result<Option<T>, Failure> {
    text.as_deref()
        .map(parser)
        .transpose()
        .map_err(|e| flag_failure(flag, e))
}

/// `--memory 1m: memory limit 1 MiB is below …`, the hint on a line of its own.
fn flag_failure(flag: &str, e: values::ValueError) -> Failure {
    Failure::user(format!("{flag}: {}", e.message)).hint(e.hint)
}
