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

/// docker's CREATED AT: `2024-05-01 12:00:00 +0000 UTC` for an RFC 3339 time; `N/A` when
/// there is none or it does not parse.
pub fn created_at(rfc3339: Option<&str>) -> String {
    match rfc3339.and_then(|t| humantime::parse_rfc3339_weak(t).ok()) {
        Some(when) => created_at_time(when),
        None => "N/A".into(),
    }
}

/// docker's CREATED AT for a point in time.
pub fn created_at_time(when: std::time::SystemTime) -> String {
    let text = humantime::format_rfc3339_seconds(when).to_string();
    format!(
        "{} +0000 UTC",
        text.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

/// A table as docker's tabwriter lays it out: each column as wide as its widest cell plus
/// three spaces (the last column unpadded), the header first.
pub fn print_table<S: AsRef<str>>(header: &[S], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.as_ref().chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(cell.chars().count()),
                None => widths.push(cell.chars().count()),
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i] + 3 - cell.chars().count();
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(header.iter().map(AsRef::as_ref).collect());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
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
