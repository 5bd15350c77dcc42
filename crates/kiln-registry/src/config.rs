//! kiln's own config file, for what is tedious to repeat on every command: the
//! registries reached over plain http (`--insecure-registry` on the command line) and the
//! time limits of registry requests in seconds (`--timeout`, `--read-timeout`; see
//! `deadline.rs` and `retry.rs`).
//!
//! ```yaml
//! insecure_registries:
//!   - registry.lan:5000
//!   - 10.0.0.7
//! timeout: 120
//! read_timeout: 30
//! retry_time: 300
//! ```
//!
//! Unknown keys are errors (a misspelt key must not silently leave a registry on https),
//! and every error names the file, line and column.

use std::path::Path;

use serde::Deserialize;
use serde_saphyr::{MessageFormatter, Spanned};

use std::time::Duration;

use super::{InsecureHostError, RegistryError, Result, Timeouts};

/// The largest config file kiln reads; a real one is a few lines.
const MAX_CONFIG: u64 = 1 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    insecure_registries: Vec<Spanned<String>>,
    /// Seconds: the base of every request's deadline ([`Timeouts::base`]).
    timeout: Option<Spanned<f64>>,
    /// Seconds a request may send nothing ([`Timeouts::read`]).
    read_timeout: Option<Spanned<f64>>,
    /// Seconds a failing request is retried ([`Timeouts::retry_time`]).
    retry_time: Option<Spanned<f64>>,
}

/// The `insecure_registries` of the config file at `path` (`HOST` or `HOST:PORT` each).
pub fn insecure_registries(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path)?;
    let bad = |line: u64, column: u64, why: String| RegistryError::Config {
        path: path.to_owned(),
        line,
        column,
        why,
    };
    // An empty file (or one of comments only) is an empty config.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(Vec::new());
    }
    let config: ConfigFile = serde_saphyr::from_str(&text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|at| (at.line(), at.column()))
            .unwrap_or((1, 1));
        let why = serde_saphyr::UserMessageFormatter.format_message(e.without_snippet());
        bad(line, column, why.to_string())
    })?;
    let mut hosts = Vec::new();
    for host in config.insecure_registries {
        if let Err(why) = check_host(&host.value) {
            let at = host.referenced;
            return Err(bad(at.line(), at.column(), why.to_string()));
        }
        hosts.push(host.value);
    }
    Ok(hosts)
}

/// The time limits of registry requests: `timeout`, `read_timeout` and `retry_time`
/// (seconds) over the defaults.
///
/// ```yaml
/// timeout: 120       # each request: 120 s plus its size at 10 KiB/s
/// read_timeout: 30   # no byte for 30 s is a stall
/// retry_time: 300    # retry a failing request for up to 5 minutes
/// ```
pub fn timeouts(path: &Path) -> Result<Timeouts> {
    let mut timeouts = Timeouts::default();
    let Some(config) = parse(path)? else {
        return Ok(timeouts);
    };
    let seconds = |key: &str, value: Option<Spanned<f64>>, zero_ok: bool| {
        let Some(value) = value else {
            return Ok(None);
        };
        let s = value.value;
        if s.is_finite() && (s > 0.0 || (zero_ok && s == 0.0)) && s <= MAX_SECONDS {
            return Ok(Some(Duration::from_secs_f64(s)));
        }
        let at = value.referenced;
        let least = if zero_ok { "0" } else { "more than 0" };
        Err(RegistryError::Config {
            path: path.to_owned(),
            line: at.line(),
            column: at.column(),
            why: format!("{key}: {s} is not a number of seconds from {least} to {MAX_SECONDS}"),
        })
    };
    if let Some(d) = seconds("timeout", config.timeout, false)? {
        timeouts.base = d;
    }
    if let Some(d) = seconds("read_timeout", config.read_timeout, false)? {
        timeouts.read = d;
    }
    if let Some(d) = seconds("retry_time", config.retry_time, true)? {
        timeouts.retry_time = d;
    }
    Ok(timeouts)
}

/// The longest time limit the config file may set: a day.
const MAX_SECONDS: f64 = 86400.0;

/// The config file, or `None` when it is empty or only comments.
fn parse(path: &Path) -> Result<Option<ConfigFile>> {
    let text = read_text(path)?;
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(None);
    }
    serde_saphyr::from_str(&text).map(Some).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|at| (at.line(), at.column()))
            .unwrap_or((1, 1));
        let why = serde_saphyr::UserMessageFormatter.format_message(e.without_snippet());
        RegistryError::Config {
            path: path.to_owned(),
            line,
            column,
            why: why.to_string(),
        }
    })
}

fn read_text(path: &Path) -> Result<String> {
    use std::io::Read;
    let io_error = |e: std::io::Error| RegistryError::Config {
        path: path.to_owned(),
        line: 0,
        column: 0,
        why: e.to_string(),
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG + 1).read_to_string(&mut text))
        .map_err(io_error)?;
    if text.len() as u64 > MAX_CONFIG {
        return Err(io_error(std::io::Error::other(format!(
            "larger than {MAX_CONFIG} bytes"
        ))));
    }
    Ok(text)
}

/// `HOST[:PORT]` as `--insecure-registry` takes it: no scheme, no path.
fn check_host(host: &str) -> std::result::Result<(), InsecureHostError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    if host.is_empty() {
        return Err(InsecureHostError::Empty);
    }
    if host.contains("://") || host.contains('/') {
        return Err(InsecureHostError::SchemeOrPath(host.into()));
    }
    if !host.chars().all(ok_char) {
        return Err(InsecureHostError::NotAHost(host.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        insecure_registries(&path)
    }

    #[test]
    fn reads_insecure_registries() {
        let hosts = read("# mine\ninsecure_registries:\n  - reg.lan:5000\n  - 10.0.0.7\n").unwrap();
        assert_eq!(hosts, ["reg.lan:5000", "10.0.0.7"]);
        assert!(read("").unwrap().is_empty());
        assert!(read("# nothing yet\n").unwrap().is_empty());
        assert!(read("insecure_registries: []\n").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let err = read("insecure_registries:\n  - reg.lan\ninsecure_registry: [x]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.yaml:3:1"), "{err}");
        assert!(err.contains("insecure_registry"), "{err}");
        let err = read("insecure_registries:\n  - ok.lan\n  - http://reg.lan:5000\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.yaml:3:5"), "{err}");
        assert!(err.contains("without a scheme"), "{err}");
        let err = read("insecure_registries: reg.lan\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.yaml:1:"), "{err}");
    }

    #[test]
    fn reads_time_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let read = |text: &str| {
            std::fs::write(&path, text).unwrap();
            timeouts(&path)
        };
        assert_eq!(read("# none\n").unwrap(), Timeouts::default());
        let t = read("timeout: 2.5\nread_timeout: 1\nretry_time: 0\n").unwrap();
        assert_eq!(t.base, Duration::from_millis(2500));
        assert_eq!(t.read, Duration::from_secs(1));
        assert_eq!(t.retry_time, Duration::ZERO);
        let t = read("insecure_registries: [reg.lan]\nread_timeout: 5\n").unwrap();
        assert_eq!(t.base, Timeouts::default().base);
        assert_eq!(t.read, Duration::from_secs(5));
        let err = read("timeout: 0\n").unwrap_err().to_string();
        assert!(
            err.contains("config.yaml:1:") && err.contains("timeout"),
            "{err}"
        );
        assert!(read("read_timeout: -3\n").is_err());
        assert!(read("retry_time: soon\n").is_err());
    }
}
