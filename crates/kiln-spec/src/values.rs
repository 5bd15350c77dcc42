//! The spec's value languages for command-line flags: `kiln run --memory 64m` and
//! `run: { memory: 64m }` are read by the same parser, so they always agree.

use std::fmt;

use super::limits;
pub use super::limits::{check_limits, LimitConflict};
use super::model::{CpuWeight, DeviceThrottle, Limits, MemorySwap, RestartPolicy, ThrottleKind};
use super::units::Invalid;

/// A rejected flag value: what is wrong and how to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    pub message: String,
    pub hint: Option<String>,
}

impl From<Invalid> for ValueError {
    fn from(i: Invalid) -> Self {
        ValueError {
            message: i.message,
            hint: i.hint,
        }
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hint {
            Some(h) => write!(f, "{} ({h})", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ValueError {}

/// A size such as `64m`, `64Mi` or `512` (bytes); units are powers of 1024.
pub fn size(text: &str) -> Result<u64, ValueError> {
    Ok(super::units::parse_size(text)?)
}

/// A duration such as `30s`, `1m30s` or `500ms` (Go's and docker's spelling), at least 1ms.
pub fn duration(text: &str) -> Result<std::time::Duration, ValueError> {
    Ok(std::time::Duration::from_nanos(
        super::units::parse_duration(text)?,
    ))
}

/// A restart policy as docker spells it: `no`, `on-failure[:N]` (`on-failure:0` means no
/// limit, as docker's), `always` or `unless-stopped`.
pub fn restart_policy(text: &str) -> Result<RestartPolicy, ValueError> {
    let bad = |message: String| ValueError {
        message,
        hint: Some("use no, on-failure[:N], always or unless-stopped, e.g. on-failure:3".into()),
    };
    let (name, count) = match text.split_once(':') {
        Some((name, count)) => (name, Some(count)),
        None => (text, None),
    };
    let policy = match name {
        "no" => RestartPolicy::No,
        "always" => RestartPolicy::Always,
        "unless-stopped" => RestartPolicy::UnlessStopped,
        "on-failure" => {
            let max = count
                .map(|c| {
                    c.parse::<u32>().map_err(|_| {
                        bad(format!(
                            "on-failure:{c}: the most restarts must be a number"
                        ))
                    })
                })
                .transpose()?;
            return Ok(RestartPolicy::OnFailure {
                max: max.filter(|&n| n > 0),
            });
        }
        _ => return Err(bad(format!("unknown restart policy {text:?}"))),
    };
    match count {
        Some(_) => Err(bad(format!(
            "{text:?}: only on-failure takes a most number of restarts"
        ))),
        None => Ok(policy),
    }
}

/// A `-p` value: `[IP:][HOSTPORT:]CONTAINERPORT[/PROTO]`, a range giving one mapping per
/// port.
pub fn publish(text: &str) -> Result<Vec<super::PortMapping>, ValueError> {
    Ok(super::ports::parse_publish(text)?)
}

/// `--network-rate-in/-out`: bits per second in `tc`'s units (`8mbit`, `1gbit`, `500kbit`,
/// a bare number of bits per second; `bps` is bytes per second, as in tc).
pub fn network_rate(text: &str) -> Result<u64, ValueError> {
    Ok(super::units::parse_rate(text)?)
}

/// An `/etc/hosts` entry as docker's `--add-host` takes it: `NAME:IP` or `NAME=IP`, an
/// IPv6 address with or without `[ ]`.
pub fn host_entry(text: &str) -> Result<(String, std::net::IpAddr), ValueError> {
    let hint = || Some("write NAME:IP, e.g. db:10.0.0.5 or db:[2001:db8::5]".to_owned());
    let (name, ip) = text.split_once(['=', ':']).ok_or_else(|| ValueError {
        message: format!("{text:?} is not NAME:IP"),
        hint: hint(),
    })?;
    super::names::check_hostname(name)?;
    let bare = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(ip);
    let ip = bare.parse().map_err(|_| ValueError {
        message: format!("{ip:?} is not an IP address"),
        hint: hint(),
    })?;
    Ok((name.to_owned(), ip))
}

/// A memory limit such as `64m`: a size of at least 6 MiB (Docker's minimum).
pub fn memory(text: &str) -> Result<u64, ValueError> {
    Ok(super::units::check_memory(super::units::parse_size(text)?)?)
}

/// A number of CPUs such as `0.5`: from 0.01 up to this machine's CPUs (Docker's rule).
pub fn cpus(text: &str) -> Result<f64, ValueError> {
    let value: f64 = text.trim().parse().map_err(|_| ValueError {
        message: format!("invalid cpus \"{text}\""),
        hint: Some(format!(
            "a number of CPUs from 0.01 up to this machine's {}, e.g. 0.5",
            super::units::host_cpus()
        )),
    })?;
    Ok(super::units::check_cpus(value)?)
}

/// `--memory-reservation`: a size of at least 6 MiB.
pub fn memory_reservation(text: &str) -> Result<u64, ValueError> {
    Ok(limits::check_reservation(super::units::parse_size(text)?)?)
}

/// `--memory-swap`: memory plus swap as a size, or `-1` for unlimited swap.
pub fn memory_swap(text: &str) -> Result<MemorySwap, ValueError> {
    Ok(limits::parse_memory_swap(text)?)
}

/// `--cpu-shares`: 2 to 262144 (cgroup v1's scale; 1024 is the default weight).
pub fn cpu_shares(text: &str) -> Result<CpuWeight, ValueError> {
    Ok(limits::check_cpu_shares(limits::parse_whole(
        "cpu shares",
        text,
    )?)?)
}

/// `--cpu-weight`: 1 to 10000 (cgroup v2's scale; 100 is the default weight).
pub fn cpu_weight(text: &str) -> Result<CpuWeight, ValueError> {
    Ok(limits::check_cpu_weight(limits::parse_whole(
        "cpu weight",
        text,
    )?)?)
}

/// `--cpuset-cpus`: a list like `0-1,3` of CPUs this machine has.
pub fn cpuset_cpus(text: &str) -> Result<String, ValueError> {
    Ok(limits::parse_cpuset(text, limits::CpusetOf::Cpus)?)
}

/// `--cpuset-mems`: a list like `0` of memory nodes this machine has.
pub fn cpuset_mems(text: &str) -> Result<String, ValueError> {
    Ok(limits::parse_cpuset(text, limits::CpusetOf::Mems)?)
}

/// `--blkio-weight`: 10 to 1000.
pub fn blkio_weight(text: &str) -> Result<u16, ValueError> {
    Ok(limits::check_blkio_weight(limits::parse_whole(
        "blkio weight",
        text,
    )?)?)
}

/// `--device-read-bps /dev/sda:1mb` and the like: `DEVICE:RATE`.
pub fn device_throttle(kind: ThrottleKind, text: &str) -> Result<DeviceThrottle, ValueError> {
    Ok(limits::parse_device_throttle(kind, text)?)
}

/// Limits from one source that contradict each other on their own (a swap limit without
/// a memory limit is left to [`check_limits`], since another source may give the memory).
pub fn check_partial_limits(limits: &Limits) -> Result<(), LimitConflict> {
    limits::check_partial_limits(limits)
}

/// A capability name (`net_admin`, `CAP_NET_ADMIN`) → `NET_ADMIN`; `all` → `ALL`.
pub fn capability(text: &str) -> Result<String, ValueError> {
    Ok(super::names::parse_capability(text)?)
}

/// Every Linux capability name kiln knows, in kernel order (bit number = index).
pub fn all_capabilities() -> &'static [&'static str] {
    &super::names::CAPABILITIES
}

/// `NAME`, `UID`, `NAME:GROUP` or `UID:GID`.
pub fn user(text: &str) -> Result<(), ValueError> {
    Ok(super::names::check_user(text)?)
}

/// `--ulimit NAME=SOFT[:HARD]`: one of docker's names, `-1`/`unlimited` for no limit,
/// SOFT at most HARD (which defaults to SOFT).
pub fn ulimit(text: &str) -> Result<super::Ulimit, ValueError> {
    Ok(super::knobs::parse_ulimit(text)?)
}

/// `--sysctl KEY=VALUE`: only a sysctl of the container's own namespaces (docker's rules);
/// whether it needs the container's own network is [`sysctl_needs_own_network`].
pub fn sysctl(text: &str) -> Result<(String, String), ValueError> {
    Ok(super::knobs::parse_sysctl(text)?)
}

/// Whether the sysctl `key` is the network namespace's (`net.*`).
pub fn sysctl_needs_own_network(key: &str) -> bool {
    super::knobs::needs_own_network(key)
}

/// `--device HOST[:CONTAINER[:PERMISSIONS]]`, docker's form; the container path must be
/// under `/dev`.
pub fn device(text: &str) -> Result<super::Device, ValueError> {
    Ok(super::knobs::parse_device(text)?)
}

/// `--shm-size`: a size of more than 0 bytes, e.g. `64m`.
pub fn shm_size(text: &str) -> Result<u64, ValueError> {
    size(text)
}

/// The largest env file kiln reads (`--env-file`, `env_file:`); a real one is a few
/// kilobytes.
pub const MAX_ENV_FILE: u64 = 1 << 20;

/// A line of an env file: the name, and the value unless the line is a bare name.
pub type EnvFileEntry = (String, Option<String>);

/// The lines of an env file in docker's format: `NAME=VALUE` or a bare `NAME` per line
/// (`None` as its value: the reader decides where a bare name's value comes from), the
/// value as written; blank lines and `#` comments skipped. An error names the 1-based
/// line.
pub fn env_file(text: &str) -> Result<Vec<EnvFileEntry>, (usize, ValueError)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (line, None),
        };
        let bad = |message: String| ValueError {
            message,
            hint: Some("write one NAME=VALUE (or a bare NAME) per line".into()),
        };
        if name.is_empty() {
            return Err((i + 1, bad("no variable name before the =".into())));
        }
        if name.chars().any(char::is_whitespace) {
            return Err((
                i + 1,
                bad(format!("the variable name {name:?} contains whitespace")),
            ));
        }
        out.push((name.to_owned(), value));
    }
    Ok(out)
}

/// A hostname: letters, digits, `-` and `.`, at most 64 characters.
pub fn hostname(text: &str) -> Result<(), ValueError> {
    Ok(super::names::check_hostname(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_entries_are_name_and_address() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(host_entry("db:10.0.0.5"), Ok(("db".into(), ip("10.0.0.5"))));
        assert_eq!(host_entry("db=10.0.0.5"), Ok(("db".into(), ip("10.0.0.5"))));
        assert_eq!(
            host_entry("v6:[2001:db8::5]"),
            Ok(("v6".into(), ip("2001:db8::5")))
        );
        assert_eq!(
            host_entry("v6:2001:db8::5"),
            Ok(("v6".into(), ip("2001:db8::5")))
        );
        for bad in [
            "db",
            "db:",
            "db:10.0.0.999",
            ":10.0.0.5",
            "bad_name!:10.0.0.5",
        ] {
            assert!(host_entry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_use_the_spec_languages() {
        assert_eq!(size("64m"), Ok(64 << 20));
        assert_eq!(cpus("0.5"), Ok(0.5));
        assert_eq!(capability("cap_net_admin"), Ok("NET_ADMIN".into()));
        assert!(size("64X")
            .unwrap_err()
            .to_string()
            .contains("unknown unit"));
        assert!(cpus("x").is_err());
        assert!(capability("CAP_NET_BIND")
            .unwrap_err()
            .to_string()
            .contains("NET_BIND_SERVICE"));
    }
}
