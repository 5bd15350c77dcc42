//! Terminal output: errors with hints, human sizes and durations.

use std::io::Write;
use std::time::Duration;

use super::Failure;

pub fn print_failure(f: &Failure) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "error: {}", f.message);
    if let Some(h) = &f.hint {
        let _ = writeln!(err, "hint: {h}");
    }
    for more in &f.more {
        let _ = writeln!(err, "error: {more}");
    }
    if let Some(footer) = &f.footer {
        let _ = writeln!(err, "{footer}");
    }
}

/// `1.5 MB`, like docker prints sizes (SI units).
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// `3 hours ago` for an RFC 3339 time (an image's `created`), as docker shows CREATED;
/// `N/A` when there is none or it does not parse.
pub fn created_ago(rfc3339: Option<&str>) -> String {
    let Some(when) = rfc3339.and_then(|t| humantime::parse_rfc3339_weak(t).ok()) else {
        return "N/A".into();
    };
    let age = std::time::SystemTime::now()
        .duration_since(when)
        .unwrap_or_default()
        .as_secs();
    format!("{} ago", super::containers::human_duration(age))
}

/// `64 MiB`, for limits given in powers of 1024.
pub fn human_binary_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", units[i])
    } else {
        format!("{v:.1} {}", units[i])
    }
}

pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.0}ms", s * 1000.0)
    } else {
        format!("{s:.1}s")
    }
}
