//! kiln's own config file, for what is tedious to repeat on every command: today the
//! registries reached over plain http (`--insecure-registry` on the command line).
//!
//! ```yaml
//! insecure_registries:
//!   - registry.lan:5000
//!   - 10.0.0.7
//! ```
//!
//! Unknown keys are errors (a misspelt key must not silently leave a registry on https),
//! and every error names the file, line and column.

use std::path::Path;

use serde::Deserialize;
use serde_saphyr::{MessageFormatter, Spanned};

use super::{InsecureHostError, RegistryError, Result};

/// The largest config file kiln reads; a real one is a few lines.
const MAX_CONFIG: u64 = 1 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    insecure_registries: Vec<Spanned<String>>,
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
}
