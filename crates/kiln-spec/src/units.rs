//! Parsers for the numeric value languages inside a spec: sizes, durations, file modes,
//! ports and CPU counts. Names (signals, capabilities, users, …) are in `names`.
//!
//! They work on plain strings and know nothing of YAML, so each returns an [`Invalid`] that
//! the caller places at the value's position. Spellings follow docker/podman where they have
//! one (`64m`, `30s`, `8080/tcp`, `SIGTERM`, `NET_ADMIN`), so that flags and spec values mean
//! the same thing.

use super::error::Issue;
use super::model::Location;

/// A rejected value: what is wrong and, if we know, how to write it instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub message: String,
    pub hint: Option<String>,
}

impl Invalid {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
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
    "valid units are b, k, m, g and t, each a power of 1024: 64m = 64Mi = 64MiB = 64mb";

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
        Err(_) => Err(Invalid::new(
            format!("size \"{text}\" is too large"),
            SIZE_HINT,
        )),
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
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
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

const DURATION_HINT: &str =
    "write a duration like 30s, 1m30s or 500ms (units: ns, us, ms, s, m, h)";

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
        _ => Err(Invalid::new(
            format!("mode \"{text}\" is out of range"),
            MODE_HINT,
        )),
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

const RATE_HINT: &str = "tc's units: bit (or none), kbit, mbit, gbit, tbit (powers of 1000) \
                         and kibit, mibit, gibit, tibit (of 1024) in bits per second; bps, \
                         kbps, mbps, gbps, kibps, … in bytes per second; e.g. 8mbit";

/// The least bandwidth a rate limit may give: below it a TBF's bucket and queue make no
/// sense (a single full-size frame takes more than a second).
pub(crate) const MIN_RATE: u64 = 8_000;

/// A network rate in bits per second, in `tc`'s units, so that `--network-rate-out 8mbit`
/// means what `tc qdisc … rate 8mbit` does: `bit`, `kbit`, `mbit`, … are bits per second
/// (SI, powers of 1000; `kibit`, `mibit`, … powers of 1024), `bps`, `kbps`, `mbps`, …
/// *bytes* per second (tc's spelling, not "bits"), a bare number bits per second; case
/// does not matter.
pub(crate) fn parse_rate(text: &str) -> Parsed<u64> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let unit = unit.to_ascii_lowercase();
    let (prefix, bits) = match unit.strip_suffix("bit") {
        Some(prefix) => (prefix, 1),
        None => match unit.strip_suffix("bps") {
            Some(prefix) => (prefix, 8),
            None if unit.is_empty() => ("", 1),
            None => return Err(Invalid::new(rate_problem(text, &unit), RATE_HINT)),
        },
    };
    let scale: u128 = match prefix {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "t" => 1_000_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        _ => return Err(Invalid::new(rate_problem(text, &unit), RATE_HINT)),
    };
    let rate = scale_decimal(number, scale * bits)
        .ok_or_else(|| Invalid::new(format!("invalid rate \"{text}\""), RATE_HINT))?;
    match u64::try_from(rate) {
        Ok(r) if r >= MIN_RATE => Ok(r),
        Ok(_) => Err(Invalid::new(
            format!("rate \"{text}\" is below the least one, 8kbit"),
            RATE_HINT,
        )),
        Err(_) => Err(Invalid::new(
            format!("rate \"{text}\" is too large"),
            RATE_HINT,
        )),
    }
}

fn rate_problem(text: &str, unit: &str) -> String {
    format!("invalid rate \"{text}\": unknown unit \"{unit}\"")
}

/// The smallest memory limit a container can start with, Docker's minimum (6 MiB): below
/// it the runtime and the command's first pages do not fit, and the container is killed
/// before it does anything, which looks like a bug rather than a limit.
pub(crate) const MIN_MEMORY: u64 = 6 << 20;
/// The fewest CPUs a limit may give, Docker's minimum: the kernel's CPU bandwidth control
/// cannot enforce less usefully.
const MIN_CPUS: f64 = 0.01;
/// The most CPUs a limit may name whatever the machine (the cgroup period arithmetic).
const MAX_CPUS: usize = 1024;

/// A memory limit (`run: { memory }`, a step's `resources:`, `--memory`): at least
/// [`MIN_MEMORY`].
pub(crate) fn check_memory(bytes: u64) -> Parsed<u64> {
    if bytes >= MIN_MEMORY {
        return Ok(bytes);
    }
    Err(Invalid::new(
        format!(
            "memory limit {} is below the minimum of 6 MiB",
            binary_size(bytes)
        ),
        "a container needs more than that to start at all (Docker's minimum too); e.g. 64m",
    ))
}

/// `1 GiB`, `512 KiB`, `100 bytes`: a size as a limit message shows it.
pub(crate) fn binary_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// A CPU limit (`run: { cpus }`, a step's `resources:`, `--cpus`): from 0.01 up to the
/// CPUs this machine has, Docker's rule; more CPUs than exist is a typo or a spec written
/// for a bigger machine, and would silently mean "no limit".
pub(crate) fn check_cpus(cpus: f64) -> Parsed<f64> {
    let host = host_cpus();
    let range = format!("a number of CPUs from {MIN_CPUS} up to this machine's {host}, e.g. 0.5");
    if !cpus.is_finite() || cpus < MIN_CPUS {
        return Err(Invalid::new(format!("invalid cpus {cpus}"), range));
    }
    if cpus > host as f64 {
        let some = if host == 1 { "CPU" } else { "CPUs" };
        return Err(Invalid::new(
            format!("cpus {cpus} is more than the {host} {some} this machine has"),
            range,
        ));
    }
    Ok(cpus)
}

/// The CPUs kiln may run on (its affinity mask, as Docker counts them), at most
/// [`MAX_CPUS`]; read once.
pub(crate) fn host_cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| {
        // SAFETY: a zeroed cpu_set_t is a valid empty set, and sched_getaffinity writes at
        // most size_of::<cpu_set_t>() bytes into it.
        let affinity = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            match libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) {
                0 => usize::try_from(libc::CPU_COUNT(&set)).ok(),
                _ => None,
            }
        };
        affinity
            .filter(|n| *n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1)
            .min(MAX_CPUS)
    })
}

#[cfg(test)]
mod rate_tests {
    use super::*;

    #[test]
    fn rates_read_as_tc_reads_them() {
        for (text, bits) in [
            ("8mbit", 8_000_000),
            ("8Mbit", 8_000_000),
            ("1gbit", 1_000_000_000),
            ("500kbit", 500_000),
            ("1.5mbit", 1_500_000),
            ("1mibit", 1 << 20),
            ("1000000", 1_000_000),
            ("10000bit", 10_000),
            // tc's bps is bytes per second.
            ("1mbps", 8_000_000),
            ("2kibps", 16_384),
        ] {
            assert_eq!(parse_rate(text), Ok(bits), "{text}");
        }
        for (text, says) in [
            ("8mb", "unknown unit \"mb\""),
            ("fast", "unknown unit"),
            ("mbit", "invalid rate"),
            ("1.2.3mbit", "invalid rate"),
            ("7999", "below the least"),
            ("0", "below the least"),
            ("99999999999tbit", "too large"),
        ] {
            let e = parse_rate(text).unwrap_err();
            assert!(e.message.contains(says), "{text}: {}", e.message);
            assert!(e.hint.unwrap().contains("mbit"));
        }
    }
}
