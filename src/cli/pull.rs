//! `kiln pull`, and what pull and push share on the command line: registry settings
//! (`--insecure-registry`, kiln's config file, credential files) and per-blob progress.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::output::{human_duration, human_size};
use super::{CmdResult, Failure, Globals};
use kiln_progress::{BlobOutcome, Progress};
use kiln_registry::{self as registry, FileConfig, Platform, RegistryError, Settings};
use kiln_store::reference::DOCKER_HUB;
use kiln_store::{Digest, Reference};

/// Options every registry command takes.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// A registry (HOST[:PORT]) reached over plain http; loopback registries always are.
    /// Also read from `insecure_registries` in kiln's config file
    #[arg(
        long = "insecure-registry",
        value_name = "HOST[:PORT]",
        env = "KILN_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure: Vec<String>,
    /// Seconds each registry request may take, plus its size at 10 KiB/s [default: 60, or
    /// `timeout` in kiln's config file]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    timeout: Option<Duration>,
    /// Seconds a registry may send nothing before a request counts as stalled [default: 60,
    /// or `read_timeout` in kiln's config file]
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    read_timeout: Option<Duration>,
}

/// A positive number of seconds, fractions allowed, up to a day.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!(
            "{text:?} is not a number of seconds (more than 0, at most 86400)"
        )),
    }
}

impl RegistryArgs {
    /// Settings with credential files in docker's and podman's lookup order, over what
    /// kiln's config file says (read by [`kiln_config`]).
    pub fn settings(&self, config: FileConfig) -> Settings {
        Settings {
            insecure: self.insecure.clone(),
            auth_files: auth_files(),
            config,
            timeout: self.timeout,
            read_timeout: self.read_timeout,
        }
    }
}

/// What kiln's config file says, or the defaults when there is none; read once per command
/// (`kiln run` and `kiln build` ask for it twice: the network, then their own settings).
pub fn kiln_config() -> Result<FileConfig, Failure> {
    static READ: std::sync::OnceLock<FileConfig> = std::sync::OnceLock::new();
    if let Some(config) = READ.get() {
        return Ok(config.clone());
    }
    let config = match config_file() {
        Some(path) => registry::read_config(&path)?,
        None => FileConfig::default(),
    };
    Ok(READ.get_or_init(|| config).clone())
}

/// kiln's config file: `$KILN_CONFIG` (which must exist), else the first that exists of
/// `$XDG_CONFIG_HOME/kiln/config.yaml` (`~/.config/kiln/config.yaml`) and
/// `/etc/kiln/config.yaml`.
fn config_file() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("KILN_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(explicit));
    }
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|dir| dir.join("kiln/config.yaml"));
    user.into_iter()
        .chain([PathBuf::from("/etc/kiln/config.yaml")])
        .find(|p| p.is_file())
}

/// `$REGISTRY_AUTH_FILE`, podman's `$XDG_RUNTIME_DIR/containers/auth.json`, then docker's
/// `config.json`.
fn auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(d).join("containers/auth.json"));
    }
    files.push(docker_config());
    files
}

/// Docker's `config.json`: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
pub fn docker_config() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => PathBuf::from(d).join("config.json"),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"))
            .join(".docker/config.json"),
    }
}

impl From<RegistryError> for Failure {
    fn from(e: RegistryError) -> Self {
        let hint = registry_hint(&e);
        Failure::user(e).hint(hint)
    }
}

/// The library's hint, with the flag where one helps.
pub fn registry_hint(e: &RegistryError) -> Option<String> {
    match e {
        _ if e.is_tls() => {
            Some("a registry without TLS needs --insecure-registry HOST[:PORT]".into())
        }
        RegistryError::Stalled { .. } => Some(
            "a slow registry may be given longer with --read-timeout SECONDS (or read_timeout: in kiln's config file)"
                .into(),
        ),
        RegistryError::TooSlow { .. } => Some(
            "a slow registry may be given longer with --timeout SECONDS (or timeout: in kiln's config file)"
                .into(),
        ),
        _ => e.hint(),
    }
}

#[derive(Args, Debug)]
#[command(
    about = "Pull an image from a registry",
    after_help = "Examples:\n  kiln pull alpine\n  kiln pull 127.0.0.1:5000/team/app:1.0\n  kiln pull --platform linux/arm64 ghcr.io/o/r@sha256:…"
)]
pub struct PullArgs {
    /// Image reference: [REGISTRY/]NAME[:TAG][@DIGEST] (bare names are Docker Hub's)
    reference: String,
    /// Platform to pick from a multi-platform image [default: this machine]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(globals: &Globals, args: PullArgs) -> CmdResult {
    let store = globals.store()?;
    let reference = Reference::parse(&args.reference, DOCKER_HUB).map_err(Failure::user)?;
    let platform = args
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .map_err(Failure::user)?;
    let started = Instant::now();
    // No gc may take what the pull writes before the tag names it.
    let _guard = store.content_guard()?;
    let progress = std::sync::Arc::new(BlobProgress::new(globals.quiet, "pulling"));
    let pulled = registry::pull(
        &store,
        &args.registry.settings(kiln_config()?),
        &reference,
        platform.as_ref(),
        progress.clone(),
    );
    progress.clear();
    let pulled = pulled?;
    store.set_tag(&reference, &pulled.manifest)?;
    if !globals.quiet {
        eprintln!(
            "pulled {reference}: {} blobs fetched ({}), {} already present, in {}",
            pulled.fetched,
            human_size(pulled.bytes),
            pulled.existed,
            human_duration(started.elapsed())
        );
    }
    println!("{}", pulled.digest);
    Ok(0)
}

/// Per-blob progress on stderr. On a terminal: a bar for each blob that is moving (bytes,
/// speed, ETA), replaced by a line with its outcome when it is done. Elsewhere (logs, CI):
/// only those lines. With `--quiet`: nothing.
pub struct BlobProgress {
    verb: &'static str,
    output: Output,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

enum Output {
    Quiet,
    Lines,
    Bars(MultiProgress),
}

impl BlobProgress {
    pub fn new(quiet: bool, verb: &'static str) -> Self {
        let output = if quiet {
            Output::Quiet
        } else if super::debug_log::stderr_is_terminal() {
            Output::Bars(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            Output::Lines
        };
        BlobProgress {
            verb,
            output,
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// Removes any bar still drawn (after a failure), before the summary or the error.
    pub fn clear(&self) {
        let bars = std::mem::take(&mut *self.bars.lock().unwrap_or_else(|e| e.into_inner()));
        if let Output::Bars(multi) = &self.output {
            for bar in bars.values() {
                multi.remove(bar);
            }
            let _ = multi.clear();
        }
    }

    fn bar_style() -> ProgressStyle {
        ProgressStyle::with_template(
            "{prefix} {msg} [{wide_bar}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
    }

    fn line(&self, text: String) {
        match &self.output {
            Output::Quiet => {}
            Output::Lines => eprintln!("{text}"),
            Output::Bars(multi) => {
                if multi.println(&text).is_err() {
                    eprintln!("{text}");
                }
            }
        }
    }
}

impl Progress for BlobProgress {
    fn blob_started(&self, digest: &Digest, size: u64) {
        let Output::Bars(multi) = &self.output else {
            return;
        };
        let bar = multi.add(
            ProgressBar::new(size)
                .with_style(Self::bar_style())
                .with_prefix(digest.short().to_string())
                .with_message(self.verb),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(digest.clone(), bar);
    }

    fn blob_progress(&self, digest: &Digest, done: u64) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
        {
            bar.set_position(done);
        }
    }

    fn blob_finished(&self, digest: &Digest, size: u64, outcome: BlobOutcome) {
        let bar = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(digest);
        if let (Some(bar), Output::Bars(multi)) = (bar, &self.output) {
            bar.finish_and_clear();
            multi.remove(&bar);
        }
        self.line(format!(
            "{}: {} {}",
            digest.short(),
            outcome.as_str(),
            human_size(size)
        ));
    }
}
