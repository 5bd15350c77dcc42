//! The cgroup controls: `memory`, `cpus`, `pids` and Docker's finer ones (`cpu_shares`,
//! `cpuset_cpus`, `memory_swap`, `blkio_weight`, `device_read_bps`, …), as `run:` and a run
//! step's `resources:` spell them, and the value parsers the flags share with them.
//!
//! Why one module: the same control is written in three places (a spec's `run:`, a step's
//! `resources:`, `kiln run`/`kiln build` flags), and Docker's ranges and cross rules
//! (swap at least the memory, a reservation at most the memory) must read the same in
//! all of them. Ranges are checked here; a device path is only checked for its shape,
//! since the device is looked up on the machine a container starts on.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use super::error::{Issue, Issues, Result};
use super::model::{CpuWeight, DeviceThrottle, Limits, MemorySwap, ThrottleKind};
use super::node::{Node, Value};
use super::read::{list, located, number, unsigned, Expander, Fields};
use super::units::{binary_size, check_cpus, check_memory, parse_size, Invalid, MIN_MEMORY};

type Parsed<T> = std::result::Result<T, Invalid>;

/// The keys of a run step's `resources:`, which are also `run:`'s limit keys.
#[rustfmt::skip]
pub(crate) const LIMIT_KEYS: [&str; 14] = [
    "memory", "cpus", "pids", "memory_reservation", "memory_swap", "cpu_shares", "cpu_weight",
    "cpuset_cpus", "cpuset_mems", "blkio_weight", "device_read_bps", "device_write_bps",
    "device_read_iops", "device_write_iops",
];

/// The keys of a device throttle written as a mapping (`{ path: /dev/sda, rate: 1mb }`).
pub(crate) const THROTTLE_KEYS: [&str; 2] = ["path", "rate"];

/// Docker's range of `--cpu-shares` (the kernel's v1 `cpu.shares`).
pub(crate) const CPU_SHARES: (u64, u64) = (2, 262_144);
/// cgroup v2's range of `cpu.weight`.
pub(crate) const CPU_WEIGHT: (u64, u64) = (1, 10_000);
/// Docker's range of `--blkio-weight`.
pub(crate) const BLKIO_WEIGHT: (u64, u64) = (10, 1_000);
/// The highest CPU or memory node number a list may name (the kernel's `NR_CPUS` limit).
const MAX_CPUSET_ID: u32 = 8191;

/// A whole number in `range` (inclusive), e.g. `cpu_shares`.
pub(crate) fn check_range(what: &str, value: u64, range: (u64, u64), example: u64) -> Parsed<u64> {
    if (range.0..=range.1).contains(&value) {
        return Ok(value);
    }
    Err(Invalid::new(
        format!("{what} {value} is out of range"),
        format!("from {} to {}, e.g. {example}", range.0, range.1),
    ))
}

/// `--cpu-shares` / `cpu_shares`: 2 to 262144 (the default weight is 1024).
pub(crate) fn check_cpu_shares(value: u64) -> Parsed<CpuWeight> {
    check_range("cpu shares", value, CPU_SHARES, 512).map(CpuWeight::Shares)
}

/// `--cpu-weight` / `cpu_weight`: 1 to 10000 (the default weight is 100).
pub(crate) fn check_cpu_weight(value: u64) -> Parsed<CpuWeight> {
    check_range("cpu weight", value, CPU_WEIGHT, 50).map(CpuWeight::Weight)
}

/// `--blkio-weight` / `blkio_weight`: 10 to 1000.
pub(crate) fn check_blkio_weight(value: u64) -> Parsed<u16> {
    let value = check_range("blkio weight", value, BLKIO_WEIGHT, 500)?;
    Ok(value as u16)
}

/// A whole number written as text (a flag's value).
pub(crate) fn parse_whole(what: &str, text: &str) -> Parsed<u64> {
    text.trim().parse().map_err(|_| {
        Invalid::new(
            format!("invalid {what} \"{text}\""),
            "a whole number, e.g. 512",
        )
    })
}

/// `--memory-reservation` / `memory_reservation`: a size of at least 6 MiB (Docker's).
pub(crate) fn check_reservation(bytes: u64) -> Parsed<u64> {
    if bytes >= MIN_MEMORY {
        return Ok(bytes);
    }
    Err(Invalid::new(
        format!(
            "memory reservation {} is below the minimum of 6 MiB",
            binary_size(bytes)
        ),
        "Docker's minimum too; e.g. 32m",
    ))
}

/// `--memory-swap` / `memory_swap`: a size (memory plus swap), or `-1` for unlimited swap.
pub(crate) fn parse_memory_swap(text: &str) -> Parsed<MemorySwap> {
    if text.trim() == "-1" {
        return Ok(MemorySwap::Unlimited);
    }
    parse_size(text)
        .map(MemorySwap::Limit)
        .map_err(|e| Invalid {
            hint: Some("memory plus swap as a size, e.g. 128m, or -1 for unlimited swap".into()),
            ..e
        })
}

/// Whether a list names CPUs or memory nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CpusetOf {
    Cpus,
    Mems,
}

impl CpusetOf {
    fn noun(self, many: bool) -> &'static str {
        match (self, many) {
            (CpusetOf::Cpus, false) => "CPU",
            (CpusetOf::Cpus, true) => "CPUs",
            (CpusetOf::Mems, false) => "memory node",
            (CpusetOf::Mems, true) => "memory nodes",
        }
    }

    /// The kernel's list of what this machine has online.
    fn online_file(self) -> &'static str {
        match self {
            CpusetOf::Cpus => "/sys/devices/system/cpu/online",
            CpusetOf::Mems => "/sys/devices/system/node/online",
        }
    }
}

/// `--cpuset-cpus` / `cpuset_cpus` (and `mems`): a list like `0-1,3`, every number of which
/// this machine has online (Docker's rule: a CPU that is not there is a typo or a spec
/// for another machine, and the kernel would refuse the container at start).
pub(crate) fn parse_cpuset(text: &str, of: CpusetOf) -> Parsed<String> {
    let list = text.trim();
    let hint = || format!("a list of {} like 0-1,3", of.noun(true));
    let wanted = parse_id_list(list).ok_or_else(|| {
        Invalid::new(
            format!("invalid {} list \"{text}\"", of.noun(false)),
            hint(),
        )
    })?;
    let online = online_ids(of);
    let missing: Vec<u32> = wanted.difference(&online).copied().collect();
    if missing.is_empty() {
        return Ok(list.to_owned());
    }
    let names = missing
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    Err(Invalid::new(
        format!(
            "{} {names} {} not on this machine",
            of.noun(missing.len() > 1),
            if missing.len() > 1 { "are" } else { "is" }
        ),
        format!("this machine has {} {}", of.noun(true), show_ids(&online)),
    ))
}

/// `0-1,3` → {0, 1, 3}; `None` for anything else (spaces, empty items, `3-1`).
fn parse_id_list(text: &str) -> Option<BTreeSet<u32>> {
    let number = |s: &str| -> Option<u32> {
        let n: u32 = s
            .parse()
            .ok()
            .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))?;
        (n <= MAX_CPUSET_ID).then_some(n)
    };
    let mut ids = BTreeSet::new();
    for item in text.split(',') {
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(item)?, number(item)?),
        };
        if first > last {
            return None;
        }
        ids.extend(first..=last);
    }
    Some(ids)
}

/// What this machine has online; a machine without NUMA nodes in sysfs has node 0.
fn online_ids(of: CpusetOf) -> BTreeSet<u32> {
    std::fs::read_to_string(of.online_file())
        .ok()
        .and_then(|t| parse_id_list(t.trim()))
        .unwrap_or_else(|| BTreeSet::from([0]))
}

/// {0, 1, 3} → `0-1,3`.
fn show_ids(ids: &BTreeSet<u32>) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &id in ids {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == id => *last = id,
            _ => runs.push((id, id)),
        }
    }
    runs.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A throttled device's path: absolute and under `/dev/` (Docker's rule).
pub(crate) fn check_device_path(path: &str) -> Parsed<PathBuf> {
    if path.starts_with("/dev/") && path.len() > "/dev/".len() {
        return Ok(PathBuf::from(path));
    }
    Err(Invalid::new(
        format!("invalid device path \"{path}\""),
        "a host block device under /dev/, e.g. /dev/sda",
    ))
}

/// A throttle's rate: a size per second (`1mb`, units powers of 1024, as Docker reads
/// them) for `*_bps`, a whole number of operations per second for `*_iops`.
pub(crate) fn parse_rate(kind: ThrottleKind, text: &str) -> Parsed<u64> {
    if kind.is_bytes() {
        return parse_size(text).map_err(|e| Invalid {
            hint: Some("bytes per second as a size, e.g. 1mb or 512kb".into()),
            ..e
        });
    }
    match text.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Invalid::new(
            format!("invalid rate \"{text}\""),
            "operations per second, a whole number of at least 1, e.g. 1000",
        )),
    }
}

/// `--device-write-bps /dev/sda:1mb`: `PATH:RATE`.
pub(crate) fn parse_device_throttle(kind: ThrottleKind, text: &str) -> Parsed<DeviceThrottle> {
    let example = if kind.is_bytes() { "1mb" } else { "1000" };
    let (path, rate) = text.rsplit_once(':').ok_or_else(|| {
        Invalid::new(
            format!("\"{text}\" is not DEVICE:RATE"),
            format!("e.g. /dev/sda:{example}"),
        )
    })?;
    Ok(DeviceThrottle {
        kind,
        path: check_device_path(path)?,
        rate: parse_rate(kind, rate)?,
    })
}

/// Limits that contradict each other (Docker's rules). Found in one spec section, in the
/// flags of one command, or once a container's flags are merged over its image's `run:`;
/// the settings are named by whoever reports it (a spec key, a flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitConflict {
    /// A memory+swap limit, but no memory limit it could be "plus swap" of.
    SwapWithoutMemory,
    SwapBelowMemory {
        swap: u64,
        memory: u64,
    },
    ReservationAboveMemory {
        reservation: u64,
        memory: u64,
    },
}

impl LimitConflict {
    /// The settings involved, as spec keys: the one to change first.
    pub fn keys(&self) -> [&'static str; 2] {
        match self {
            LimitConflict::SwapWithoutMemory | LimitConflict::SwapBelowMemory { .. } => {
                ["memory_swap", "memory"]
            }
            LimitConflict::ReservationAboveMemory { .. } => ["memory_reservation", "memory"],
        }
    }

    /// The problem and a hint, each setting named by `name(spec key)`.
    pub fn describe(&self, name: impl Fn(&str) -> String) -> (String, String) {
        let [first, memory] = self.keys().map(&name);
        match *self {
            LimitConflict::SwapWithoutMemory => (
                format!("{first} is set, but {memory} is not"),
                format!("{first} is the limit of memory plus swap, so it needs {memory} too (Docker's rule)"),
            ),
            LimitConflict::SwapBelowMemory { swap, memory: m } => (
                format!(
                    "{first} {} is less than {memory} {}",
                    binary_size(swap),
                    binary_size(m)
                ),
                format!("{first} is memory plus swap: at least {memory} (equal means no swap), or -1 for unlimited swap"),
            ),
            LimitConflict::ReservationAboveMemory { reservation, memory: m } => (
                format!(
                    "{first} {} is more than {memory} {}",
                    binary_size(reservation),
                    binary_size(m)
                ),
                format!("{first} is a soft limit, kept below the hard limit {memory}"),
            ),
        }
    }
}

impl fmt::Display for LimitConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (message, hint) = self.describe(str::to_owned);
        write!(f, "{message} ({hint})")
    }
}

impl std::error::Error for LimitConflict {}

/// The cross rules of a complete set of limits (what a container or step gets).
pub fn check_limits(limits: &Limits) -> std::result::Result<(), LimitConflict> {
    match (limits.memory_swap, limits.memory) {
        (Some(MemorySwap::Limit(_)), None) => return Err(LimitConflict::SwapWithoutMemory),
        (Some(MemorySwap::Limit(swap)), Some(memory)) if swap < memory => {
            return Err(LimitConflict::SwapBelowMemory { swap, memory })
        }
        _ => {}
    }
    match (limits.memory_reservation, limits.memory) {
        (Some(reservation), Some(memory)) if reservation > memory => {
            Err(LimitConflict::ReservationAboveMemory {
                reservation,
                memory,
            })
        }
        _ => Ok(()),
    }
}

/// The cross rules that one part (a spec section, one command's flags) can break on its
/// own: a memory+swap limit without memory may get its memory from another part.
pub(crate) fn check_partial_limits(limits: &Limits) -> std::result::Result<(), LimitConflict> {
    match check_limits(limits) {
        Err(LimitConflict::SwapWithoutMemory) => Ok(()),
        other => other,
    }
}

/// The limit keys of `run:` or a run step's `resources:`, each key's problem recorded in
/// `issues`; then the cross rules, located at the first key involved.
pub(crate) fn read_limits(f: &Fields, ex: &Expander, issues: &mut Issues) -> Limits {
    let cpus = |n: &Node| located(n, check_cpus(number(n, "cpus")?));
    let pids = |n: &Node| match unsigned(n, "pids")? {
        0 => Err(Issue::at(n.location, "pids must be at least 1")),
        pids => Ok(pids),
    };
    let swap = |n: &Node| located(n, parse_memory_swap(&ex.text(n, "memory_swap")?));
    let reservation = |n: &Node| located(n, check_reservation(size(ex, n, "memory_reservation")?));
    let cpuset = |of: CpusetOf, what: &'static str| {
        move |n: &Node| located(n, parse_cpuset(&ex.text(n, what)?, of))
    };
    let blkio = |n: &Node| located(n, check_blkio_weight(unsigned(n, "blkio_weight")?));
    let mut limits = Limits {
        memory: keep(issues, f.read("memory", |n| memory(ex, n))),
        cpus: keep(issues, f.read("cpus", cpus)),
        pids: keep(issues, f.read("pids", pids)),
        memory_reservation: keep(issues, f.read("memory_reservation", reservation)),
        memory_swap: keep(issues, f.read("memory_swap", swap)),
        cpu_weight: keep(issues, cpu_weight(f)),
        cpuset_cpus: keep(
            issues,
            f.read("cpuset_cpus", cpuset(CpusetOf::Cpus, "cpuset_cpus")),
        ),
        cpuset_mems: keep(
            issues,
            f.read("cpuset_mems", cpuset(CpusetOf::Mems, "cpuset_mems")),
        ),
        blkio_weight: keep(issues, f.read("blkio_weight", blkio)),
        device_throttles: Vec::new(),
    };
    for kind in ThrottleKind::ALL {
        let read = f.read_or_default(kind.key(), |n| device_throttles(ex, n, kind));
        limits
            .device_throttles
            .extend(issues.check(read).unwrap_or_default());
    }
    if let Err(conflict) = check_partial_limits(&limits) {
        let at = f
            .get(conflict.keys()[0])
            .map(|n| n.location)
            .unwrap_or_default();
        let (message, hint) = conflict.describe(str::to_owned);
        issues.add(Issue::at(at, message).hint(hint));
    }
    limits
}

/// A key's value, or none after recording its problem (the spec is invalid then).
fn keep<T>(issues: &mut Issues, value: Result<Option<T>>) -> Option<T> {
    issues.check(value).flatten()
}

/// The limits of a run step's `resources:`: the first problem.
pub(crate) fn parse_limits(f: &Fields, ex: &Expander) -> Result<Limits> {
    let mut issues = Issues::default();
    let limits = read_limits(f, ex, &mut issues);
    issues.finish().map_err(|mut found| found.remove(0))?;
    Ok(limits)
}

/// `cpu_shares` or `cpu_weight`: one control in two scales, so not both.
fn cpu_weight(f: &Fields) -> Result<Option<CpuWeight>> {
    let shares = |n: &Node| located(n, check_cpu_shares(unsigned(n, "cpu_shares")?));
    let weight = |n: &Node| located(n, check_cpu_weight(unsigned(n, "cpu_weight")?));
    match (f.read("cpu_shares", shares)?, f.read("cpu_weight", weight)?) {
        (Some(_), Some(_)) => {
            let at = f.key("cpu_weight").map(|n| n.location).unwrap_or_default();
            Err(Issue::at(at, "cpu_shares and cpu_weight are both set")
                .hint("they are one control in two scales (v1 shares 2-262144, v2 weight 1-10000): keep one"))
        }
        (shares, weight) => Ok(shares.or(weight)),
    }
}

/// A list of `{ path, rate }` mappings or `PATH:RATE` strings (the flag's form).
fn device_throttles(ex: &Expander, node: &Node, kind: ThrottleKind) -> Result<Vec<DeviceThrottle>> {
    let mut out = Vec::new();
    for item in list(node, kind.key())? {
        if let Value::Map(_) = item.value {
            let f = Fields::new(item, kind.key(), &THROTTLE_KEYS)?;
            let require = |name: &str| {
                f.get(name).ok_or_else(|| {
                    Issue::at(
                        item.location,
                        format!("a {} entry needs \"{name}\"", kind.key()),
                    )
                    .hint("e.g. { path: /dev/sda, rate: 1mb }")
                })
            };
            let path = require("path")?;
            let rate = require("rate")?;
            out.push(DeviceThrottle {
                kind,
                path: located(path, check_device_path(&ex.text(path, "path")?))?,
                rate: located(rate, parse_rate(kind, &ex.text(rate, "rate")?))?,
            });
        } else {
            let text = ex.text(item, kind.key())?;
            out.push(located(item, parse_device_throttle(kind, &text))?);
        }
    }
    Ok(out)
}

/// Bytes as a YAML integer, or a string with a unit (`64m`, `64Mi`).
pub(crate) fn size(ex: &Expander, node: &Node, what: &str) -> Result<u64> {
    match node.value {
        Value::Int { value, .. } => u64::try_from(value)
            .ok()
            .filter(|bytes| *bytes > 0)
            .ok_or_else(|| {
                Issue::at(node.location, format!("invalid size \"{value}\""))
                    .hint("a size is more than 0 bytes, e.g. 64m")
            }),
        Value::Str(_) => located(node, parse_size(&ex.text(node, what)?)),
        _ => Err(Issue::at(
            node.location,
            format!("{what} must be a size like 64m, found {}", node.kind_name()),
        )),
    }
}

/// `memory`: a size of at least 6 MiB.
fn memory(ex: &Expander, node: &Node) -> Result<u64> {
    located(node, check_memory(size(ex, node, "memory")?))
}
