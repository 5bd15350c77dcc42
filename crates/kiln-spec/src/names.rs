//! Parsers for the names inside a spec: signals, capabilities, users, hostnames and paths
//! inside the container.
//!
//! Spellings follow docker/podman (`SIGTERM` or `TERM` or `15`, `NET_ADMIN` or
//! `CAP_NET_ADMIN`), and values are normalised to the one form the image config and the
//! runtime expect.

use super::error::{did_you_mean, nearest};
use super::units::Invalid;

type Parsed<T> = Result<T, Invalid>;

/// Standard Linux signals by number (index + 1).
#[rustfmt::skip]
pub(crate) const SIGNALS: [&str; 31] = [
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
        offset
            .parse::<u32>()
            .ok()
            .map(|n| SIGRTMIN.saturating_add(n))
    } else if let Some(offset) = name.strip_prefix("RTMAX-") {
        offset
            .parse::<u32>()
            .ok()
            .and_then(|n| SIGRTMAX.checked_sub(n))
    } else if name == "RTMIN" {
        Some(SIGRTMIN)
    } else if name == "RTMAX" {
        Some(SIGRTMAX)
    } else {
        SIGNALS
            .iter()
            .position(|s| *s == name)
            .map(|i| i as u32 + 1)
    };
    match number {
        Some(n @ 1..=31) => Ok(format!("SIG{}", SIGNALS[n as usize - 1])),
        Some(SIGRTMIN) => Ok("SIGRTMIN".to_string()),
        Some(n @ SIGRTMIN..=SIGRTMAX) => Ok(format!("SIGRTMIN+{}", n - SIGRTMIN)),
        _ => Err(Invalid {
            message: format!("unknown signal \"{text}\""),
            hint: Some(match nearest(name, SIGNALS) {
                Some(signal) => format!("did you mean \"SIG{signal}\"?"),
                None => "use a name like SIGTERM, or a number".to_string(),
            }),
        }),
    }
}

/// Every Linux capability, in kernel order (CAP_CHOWN = 0 … CAP_CHECKPOINT_RESTORE = 40).
#[rustfmt::skip]
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

/// An environment variable name: anything without `=`, whitespace or NUL, as the kernel's
/// `envp` and docker allow.
pub(crate) fn check_env_name(name: &str) -> Parsed<()> {
    if name.is_empty() || name.contains(|c: char| c == '=' || c == '\0' || c.is_whitespace()) {
        return Err(Invalid::new(
            format!(
                "invalid environment variable name \"{}\"",
                name.escape_debug()
            ),
            "names cannot be empty or contain '=', spaces or NUL",
        ));
    }
    Ok(())
}
