//! Parsers for the small value languages inside a spec: sizes, durations, file modes,
//! signals, ports, capabilities, users, hostnames and container paths.
//!
//! They work on plain strings and know nothing of YAML, so each returns an [`Invalid`] that
//! the caller places at the value's position. Spellings follow docker/podman where they have
//! one (`64m`, `30s`, `8080/tcp`, `SIGTERM`, `NET_ADMIN`), so that flags and spec values mean
//! the same thing.

use super::error::{did_you_mean, Issue};
use super::model::Location;

/// A rejected value: what is wrong and, if we know, how to write it instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub message: String,
    pub hint: Option<String>,
}

impl Invalid {
    fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Invalid {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    pub fn at(self, location: Location) -> Issue {
        Issue::at(location, self.message).maybe_hint(self.hint)
    }
}

type Parsed<T> = Result<T, Invalid>;

const SIZE_HINT: &str =
    "units are b, k, m, g, t (also written kb/Ki/KiB, mb/Mi/MiB, ...), all powers of 1024, e.g. 64m";

/// `64m`, `64Mi`, `64MiB`, `1.5g`, `512` (bytes). Every unit is a power of 1024, as in
/// `docker run --memory`; case does not matter.
pub(crate) fn parse_size(text: &str) -> Parsed<u64> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "ki" | "kib" => 10,
        "m" | "mb" | "mi" | "mib" => 20,
        "g" | "gb" | "gi" | "gib" => 30,
        "t" | "tb" | "ti" | "tib" => 40,
        _ if number.is_empty() => {
            return Err(Invalid::new(format!("invalid size \"{text}\""), SIZE_HINT))
        }
        _ => {
            return Err(Invalid::new(
                format!("invalid size \"{text}\": unknown unit \"{unit}\""),
                SIZE_HINT,
            ))
        }
    };
    let bytes = scale_decimal(number, 1u128 << shift)
        .ok_or_else(|| Invalid::new(format!("invalid size \"{text}\""), SIZE_HINT))?;
    match u64::try_from(bytes) {
        Ok(0) => Err(Invalid::new(
            format!("size \"{text}\" must be more than 0 bytes"),
            SIZE_HINT,
        )),
        Ok(bytes) => Ok(bytes),
        Err(_) => Err(Invalid::new(format!("size \"{text}\" is too large"), SIZE_HINT)),
    }
}

/// `number × unit` for a non-negative decimal like `1.5`, rounded down; `None` when the
/// number is malformed or the result overflows.
fn scale_decimal(number: &str, unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_ok = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits_ok(whole) || !digits_ok(fraction) {
        return None;
    }
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    // Digits past the 18th cannot change a result measured in bytes or nanoseconds.
    let fraction = &fraction[..fraction.len().min(18)];
    let scaled_fraction = if fraction.is_empty() {
        0
    } else {
        let denominator = 10u128.pow(u32::try_from(fraction.len()).ok()?);
        fraction.parse::<u128>().ok()?.checked_mul(unit)? / denominator
    };
    whole.checked_mul(unit)?.checked_add(scaled_fraction)
}

const DURATION_HINT: &str = "write a duration like 30s, 1m30s or 500ms (units: ns, us, ms, s, m, h)";

/// Go/docker style durations (`30s`, `1m30s`, `1.5s`, `500ms`) to nanoseconds, at least 1ms
/// like docker's healthcheck options.
pub(crate) fn parse_duration(text: &str) -> Parsed<u64> {
    let bad = || Invalid::new(format!("invalid duration \"{text}\""), DURATION_HINT);
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_end);
        let nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let part = scale_decimal(number, nanos).ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = tail;
    }
    if total < 1_000_000 {
        return Err(Invalid::new(
            format!("duration \"{text}\" is too short"),
            "the shortest is 1ms",
        ));
    }
    u64::try_from(total)
        .map_err(|_| Invalid::new(format!("duration \"{text}\" is too long"), DURATION_HINT))
}

const MODE_HINT: &str = "a mode is up to four octal digits, e.g. \"0755\"";

/// A quoted octal mode: `"0755"`, `"755"` or `"0o755"`, at most `0o7777`.
pub(crate) fn parse_mode(text: &str) -> Parsed<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(Invalid::new(format!("invalid mode \"{text}\""), MODE_HINT));
    }
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(Invalid::new(format!("mode \"{text}\" is out of range"), MODE_HINT)),
    }
}

/// A YAML integer mode is only accepted when the base is not in doubt: written `0o755`,
/// or a single digit (the same in every base). `mode: 755` could mean either.
pub(crate) fn mode_from_int(value: i128, raw: &str) -> Parsed<u32> {
    if let Some(octal) = raw.strip_prefix("0o") {
        return parse_mode(octal);
    }
    match u32::try_from(value) {
        Ok(mode) if mode < 8 => Ok(mode),
        _ => Err(Invalid::new(
            "write the mode as a quoted octal string, e.g. \"0755\"",
            format!("an unquoted {raw} is a decimal number in YAML"),
        )),
    }
}

/// Standard Linux signals by number (index + 1).
const SIGNALS: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];
const SIGRTMIN: u32 = 34;
const SIGRTMAX: u32 = 64;

/// `SIGTERM`, `TERM`, `15`, `SIGRTMIN+3` (any case) to the canonical `SIGTERM` /
/// `SIGRTMIN+3` name that image configs carry.
pub(crate) fn parse_signal(text: &str) -> Parsed<String> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = if !name.is_empty() && name.chars().all(|c| c.is_ascii_digit()) {
        name.parse::<u32>().ok()
    } else if let Some(offset) = name.strip_prefix("RTMIN+") {
        offset.parse::<u32>().ok().map(|n| SIGRTMIN.saturating_add(n))
    } else if let Some(offset) = name.strip_prefix("RTMAX-") {
        offset.parse::<u32>().ok().and_then(|n| SIGRTMAX.checked_sub(n))
    } else if name == "RTMIN" {
        Some(SIGRTMIN)
    } else if name == "RTMAX" {
        Some(SIGRTMAX)
    } else {
        SIGNALS.iter().position(|s| *s == name).map(|i| i as u32 + 1)
    };
    match number {
        Some(n @ 1..=31) => Ok(format!("SIG{}", SIGNALS[n as usize - 1])),
        Some(SIGRTMIN) => Ok("SIGRTMIN".to_string()),
        Some(n @ SIGRTMIN..=SIGRTMAX) => Ok(format!("SIGRTMIN+{}", n - SIGRTMIN)),
        _ => Err(Invalid {
            message: format!("unknown signal \"{text}\""),
            hint: Some(
                did_you_mean(name, SIGNALS)
                    .map(|hint| format!("{hint} (a name like SIGTERM, or a number)"))
                    .unwrap_or_else(|| "use a name like SIGTERM, or a number".to_string()),
            ),
        }),
    }
}

/// `8080`, `8080/tcp`, `53/udp`, `9/sctp` to `PORT/proto`.
pub(crate) fn parse_port(text: &str) -> Parsed<String> {
    let (port, proto) = text.split_once('/').unwrap_or((text, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(Invalid::new(
            format!("invalid protocol \"{proto}\" in port \"{text}\""),
            "use tcp, udp or sctp, e.g. 53/udp",
        ));
    }
    match port.parse::<u16>() {
        Ok(n) if n > 0 && port.chars().all(|c| c.is_ascii_digit()) => Ok(format!("{n}/{proto}")),
        _ => Err(Invalid::new(
            format!("invalid port \"{text}\""),
            "a port is a number from 1 to 65535, optionally with /tcp, /udp or /sctp",
        )),
    }
}

/// Every Linux capability, in kernel order (CAP_CHOWN = 0 … CAP_CHECKPOINT_RESTORE = 40).
pub(crate) const CAPABILITIES: [&str; 41] = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
];

/// `net_admin`, `CAP_NET_ADMIN` → `NET_ADMIN`; `all` → `ALL`.
pub(crate) fn parse_capability(text: &str) -> Parsed<String> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if name == "ALL" || CAPABILITIES.contains(&name) {
        return Ok(name.to_string());
    }
    Err(Invalid {
        message: format!("unknown capability \"{text}\""),
        hint: Some(did_you_mean(name, CAPABILITIES).unwrap_or_else(|| {
            "use a Linux capability name such as NET_BIND_SERVICE, or ALL".to_string()
        })),
    })
}

/// `--cpus`: a positive number of CPUs, at most 1024.
pub(crate) fn check_cpus(cpus: f64) -> Parsed<f64> {
    if cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0 {
        Ok(cpus)
    } else {
        Err(Invalid::new(
            format!("invalid cpus {cpus}"),
            "a number of CPUs greater than 0 and at most 1024, e.g. 0.5",
        ))
    }
}

/// `NAME`, `UID`, `NAME:GROUP` or `UID:GID`; names are resolved later, inside the image.
pub(crate) fn check_user(text: &str) -> Parsed<()> {
    let bad = || {
        Invalid::new(
            format!("invalid user \"{text}\""),
            "write NAME, UID, NAME:GROUP or UID:GID, e.g. \"65534:65534\"",
        )
    };
    let (user, group) = match text.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (text, None),
    };
    let part_ok = |part: &str| {
        if part.chars().all(|c| c.is_ascii_digit()) {
            !part.is_empty() && part.parse::<u32>().is_ok()
        } else {
            part.len() <= 32
                && !part.starts_with('-')
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        }
    };
    if part_ok(user) && group.is_none_or(part_ok) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A hostname as `sethostname(2)` and DNS accept: dot-separated labels of letters, digits
/// and inner `-`, at most 64 bytes in all.
pub(crate) fn check_hostname(text: &str) -> Parsed<()> {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if text.len() <= 64 && text.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(Invalid::new(
            format!("invalid hostname \"{text}\""),
            "letters, digits, '-' and '.', at most 64 characters",
        ))
    }
}

/// An absolute path inside the container. Paths that become mount points must also be free
/// of `..`, so that what the spec says is where the mount lands.
pub(crate) fn check_container_path(text: &str, mount_point: bool) -> Parsed<()> {
    if !text.starts_with('/') {
        return Err(Invalid::new(
            format!("\"{text}\" is not an absolute path"),
            "paths inside the image start with /",
        ));
    }
    if text.contains('\0') {
        return Err(Invalid::new(
            format!("path \"{}\" contains a NUL byte", text.escape_debug()),
            "remove it",
        ));
    }
    if mount_point && text.split('/').any(|part| part == "..") {
        return Err(Invalid::new(
            format!("path \"{text}\" contains \"..\""),
            "write the path without \"..\"",
        ));
    }
    Ok(())
}
