//! kiln's own config file, for what is tedious to repeat on every command: the registries
//! reached over plain http (`--insecure-registry` on the command line), the token services
//! trusted with registry credentials besides the registry's own host and domain
//! (SECURITY.md §3 rule 16, [`super::realm`]), the time limits of registry requests in
//! seconds (`--timeout`, `--read-timeout`; see `deadline.rs` and `retry.rs`), and the
//! bounds on images from elsewhere ([`kiln_store::Bounds`]), which builds and imports obey
//! as well as pulls; the default bridge network's subnet; and whose ids containers run
//! with by default (`--userns`, root's hardening, Docker's daemon-wide `userns-remap`);
//! and the build cache's budget (BuildKit's gc policy: `kiln gc --keep-storage
//! --keep-duration`, applied after each build too).
//!
//! ```yaml
//! insecure_registries:
//!   - registry.lan:5000
//!   - 10.0.0.7
//! trusted_token_realms:
//!   - login.example.net
//! timeout: 120       # each request: 120 s plus its size at 10 KiB/s
//! read_timeout: 30   # no byte for 30 s is a stall
//! retry_time: 300    # retry a failing request for up to 5 minutes (0: never)
//! image_limits:      # sizes as 4m, 64g (powers of 1024) or a number of bytes
//!   document_size: 8m
//!   layers: 1000
//! default_subnet: 10.77.0.0/24   # kiln's default bridge network (10.89.0.0/24)
//! userns: auto       # containers run as root get host ids of their own (default: host)
//! build_cache:       # after a build, drop least recently used steps past these
//!   keep_storage: 20g
//!   keep_duration: 720h
//! ```
//!
//! Unknown keys are errors (a misspelt key must not silently leave a registry on https),
//! and every error names the file, line and column.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{MessageFormatter, Spanned};

use super::{InsecureHostError, RegistryError, Result, Timeouts, TrustedRealmError};
use kiln_store::{Bound, Bounds};

/// The largest config file kiln reads; a real one is a few lines.
const MAX_CONFIG: u64 = 1 << 20;

/// The longest time limit the config file may set: a day.
const MAX_SECONDS: f64 = 86400.0;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    insecure_registries: Vec<Spanned<String>>,
    #[serde(default)]
    trusted_token_realms: Vec<Spanned<String>>,
    /// Seconds: the base of every request's deadline ([`Timeouts::base`]).
    timeout: Option<Spanned<f64>>,
    /// Seconds a request may send nothing ([`Timeouts::read`]).
    read_timeout: Option<Spanned<f64>>,
    /// Seconds a failing request is retried ([`Timeouts::retry_time`]).
    retry_time: Option<Spanned<f64>>,
    #[serde(default)]
    image_limits: ImageLimits,
    /// The default bridge network's subnet (`10.89.0.0/24`), checked by the caller.
    default_subnet: Option<Spanned<String>>,
    /// `kiln run`'s default `--userns`, checked by the caller.
    userns: Option<Spanned<String>>,
    #[serde(default)]
    build_cache: BuildCache,
}

/// `build_cache:`, the budget's defaults, checked by the caller.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildCache {
    keep_storage: Option<Spanned<Amount>>,
    keep_duration: Option<Spanned<String>>,
}

/// `image_limits:`; each key is a [`Bound::key`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageLimits {
    document_size: Option<Spanned<Amount>>,
    index_depth: Option<Spanned<Amount>>,
    layers: Option<Spanned<Amount>>,
    layer_entries: Option<Spanned<Amount>>,
    path_length: Option<Spanned<Amount>>,
    layer_size: Option<Spanned<Amount>>,
    compression_ratio: Option<Spanned<Amount>>,
    ratio_after: Option<Spanned<Amount>>,
    image_size: Option<Spanned<Amount>>,
}

impl ImageLimits {
    /// The values given, each with its bound.
    fn given(self) -> impl Iterator<Item = (Bound, Spanned<Amount>)> {
        [
            (Bound::DocumentSize, self.document_size),
            (Bound::IndexDepth, self.index_depth),
            (Bound::Layers, self.layers),
            (Bound::LayerEntries, self.layer_entries),
            (Bound::PathLength, self.path_length),
            (Bound::LayerSize, self.layer_size),
            (Bound::CompressionRatio, self.compression_ratio),
            (Bound::RatioAfter, self.ratio_after),
            (Bound::ImageSize, self.image_size),
        ]
        .into_iter()
        .filter_map(|(bound, value)| Some((bound, value?)))
    }
}

/// A value under `image_limits:`: a number, or for sizes also `4m`, `64GiB`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Amount {
    Number(u64),
    Text(String),
}

/// What kiln's config file says about registries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    /// `HOST` or `HOST:PORT` each.
    pub insecure_registries: Vec<String>,
    /// `HOST` each: token services trusted with credentials, on any port.
    pub trusted_token_realms: Vec<String>,
    /// The time limits over the defaults.
    pub timeouts: Timeouts,
    /// The bounds on images from elsewhere, the defaults where the file names none.
    pub bounds: Bounds,
    /// `default_subnet:`, the default bridge network's subnet as written, with where; the
    /// network code parses it (this crate knows nothing of networks).
    pub default_subnet: Option<Located>,
    /// `userns:`, `kiln run`'s default `--userns` as written, with where; the caller
    /// parses it.
    pub userns: Option<Located>,
    /// `build_cache: keep_storage:` (a size) and `keep_duration:` (a duration) as
    /// written, with where; the caller parses them.
    pub keep_storage: Option<Located>,
    pub keep_duration: Option<Located>,
}

/// A value of the config file with its place, for an error the caller finds in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub value: String,
    pub path: std::path::PathBuf,
    pub line: u64,
    pub column: u64,
}

impl Located {
    /// `FILE:LINE:COLUMN: KEY: WHY`, as every error of the config file reads.
    pub fn error(&self, key: &str, why: impl std::fmt::Display) -> String {
        format!(
            "{}:{}:{}: {key}: {why}",
            self.path.display(),
            self.line,
            self.column
        )
    }
}

/// Reads the config file at `path`; an empty one (or one of comments only) is the defaults.
pub fn read(path: &Path) -> Result<FileConfig> {
    let Some(config) = parse(path)? else {
        return Ok(FileConfig::default());
    };
    let bad = |at: serde_saphyr::Location, why: String| RegistryError::Config {
        path: path.to_owned(),
        line: at.line(),
        column: at.column(),
        why,
    };
    let mut out = FileConfig::default();
    for host in config.insecure_registries {
        check_host(&host.value).map_err(|why| bad(host.referenced, why.to_string()))?;
        out.insecure_registries.push(host.value);
    }
    for host in config.trusted_token_realms {
        check_realm_host(&host.value).map_err(|why| bad(host.referenced, why.to_string()))?;
        out.trusted_token_realms.push(host.value);
    }
    let seconds = |key: &str, value: Option<Spanned<f64>>, zero_ok: bool| {
        let Some(value) = value else {
            return Ok(None);
        };
        let s = value.value;
        if s.is_finite() && (s > 0.0 || (zero_ok && s == 0.0)) && s <= MAX_SECONDS {
            return Ok(Some(Duration::from_secs_f64(s)));
        }
        let least = if zero_ok { "0" } else { "more than 0" };
        Err(bad(
            value.referenced,
            format!("{key}: {s} is not a number of seconds from {least} to {MAX_SECONDS}"),
        ))
    };
    if let Some(d) = seconds("timeout", config.timeout, false)? {
        out.timeouts.base = d;
    }
    if let Some(d) = seconds("read_timeout", config.read_timeout, false)? {
        out.timeouts.read = d;
    }
    if let Some(d) = seconds("retry_time", config.retry_time, true)? {
        out.timeouts.retry_time = d;
    }
    let located = |given: Spanned<String>| Located {
        value: given.value,
        path: path.to_owned(),
        line: given.referenced.line(),
        column: given.referenced.column(),
    };
    out.default_subnet = config.default_subnet.map(located);
    out.userns = config.userns.map(located);
    out.keep_storage = config.build_cache.keep_storage.map(|given| {
        let value = match given.value {
            Amount::Number(n) => n.to_string(),
            Amount::Text(text) => text,
        };
        located(Spanned {
            value,
            referenced: given.referenced,
            defined: given.defined,
        })
    });
    out.keep_duration = config.build_cache.keep_duration.map(located);
    for (bound, value) in config.image_limits.given() {
        let amount = amount(bound, &value.value).map_err(|why| bad(value.referenced, why))?;
        out.bounds
            .set(bound, amount)
            .map_err(|why| bad(value.referenced, format!("image_limits: {why}")))?;
    }
    Ok(out)
}

/// A bound's value: a count, or for sizes also a size with a unit.
fn amount(bound: Bound, value: &Amount) -> std::result::Result<u64, String> {
    match value {
        Amount::Number(n) => Ok(*n),
        Amount::Text(text) if bound.is_size() => {
            kiln_spec::values::size(text).map_err(|e| format!("image_limits: {}: {e}", bound.key()))
        }
        Amount::Text(text) => Err(format!(
            "image_limits: {}: {text:?} is not a whole number",
            bound.key()
        )),
    }
}

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

/// A `trusted_token_realms:` entry: a host name or address, without a port.
fn check_realm_host(host: &str) -> std::result::Result<(), TrustedRealmError> {
    if host.is_empty() {
        return Err(TrustedRealmError::Empty);
    }
    if host.contains("://") || host.contains('/') {
        return Err(TrustedRealmError::SchemeOrPath(host.into()));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if host.contains(':') {
        return Err(TrustedRealmError::Port(host.into()));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-');
    if !host.chars().all(ok_char) || host.starts_with('.') {
        return Err(TrustedRealmError::NotAHost(host.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_config(text: &str) -> Result<FileConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).unwrap();
        super::read(&path)
    }

    fn read(text: &str) -> Result<Vec<String>> {
        read_config(text).map(|c| c.insecure_registries)
    }

    #[test]
    fn reads_trusted_token_realms() {
        let config = read_config(
            "insecure_registries: [reg.lan]\ntrusted_token_realms:\n  - login.example.net\n  - 10.0.0.9\n  - \"[::1]\"\n",
        )
        .unwrap();
        assert_eq!(config.insecure_registries, ["reg.lan"]);
        assert_eq!(
            config.trusted_token_realms,
            ["login.example.net", "10.0.0.9", "[::1]"]
        );
        for (entry, why) in [
            ("https://login.example.net", "without a scheme"),
            ("login.example.net:443", "without a port"),
            ("login example", "not a HOST"),
            ("\"\"", "empty"),
        ] {
            let err = read_config(&format!("trusted_token_realms:\n  - {entry}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("config.yaml:2:5") && err.contains(why),
                "{err}"
            );
        }
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
            super::read(&path).map(|c| c.timeouts)
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

    #[test]
    fn reads_image_limits() {
        let bounds = |text: &str| read_config(text).map(|c| c.bounds);
        assert_eq!(bounds("# none\n").unwrap(), Bounds::default());
        let b = bounds("image_limits:\n  document_size: 8m\n  layers: 7\n  image_size: 1000\n")
            .unwrap();
        assert_eq!(b.document_size, 8 << 20);
        assert_eq!(b.layers, 7);
        assert_eq!(b.image_size, 1000);
        assert_eq!(b.index_depth, Bounds::default().index_depth);
        // Every bound has its key.
        for bound in Bound::ALL {
            let value = if bound.is_size() { "3k" } else { "3" };
            let b = bounds(&format!("image_limits:\n  {}: {value}\n", bound.key())).unwrap();
            let want = if bound.is_size() { 3072 } else { 3 };
            assert_eq!(b.get(bound), want, "{}", bound.key());
        }
        for (text, at, why) in [
            ("image_limits:\n  layer: 3\n", "config.yaml:2:3", "layer"),
            (
                "image_limits:\n  layers: many\n",
                "config.yaml:2:11",
                "not a whole number",
            ),
            (
                "image_limits:\n  layers: 0\n",
                "config.yaml:2:11",
                "outside 1 to 4096",
            ),
            (
                "image_limits:\n  path_length: 5000\n",
                "config.yaml:2:16",
                "outside 1 to 4096",
            ),
            (
                "image_limits:\n  document_size: 4q\n",
                "config.yaml:2:18",
                "valid units",
            ),
        ] {
            let err = bounds(text).unwrap_err().to_string();
            assert!(err.contains(at) && err.contains(why), "{text}: {err}");
        }
    }
}
