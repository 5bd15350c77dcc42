//! `kiln pull`, and what pull and push share on the command line: registry settings
//! (`--insecure-registry`, credential files) and per-blob progress lines.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;

use super::output::{human_duration, human_size};
use super::{CmdResult, Failure, Globals};
use crate::build;
use crate::image::Image;
use crate::registry::{self, BlobOutcome, Platform, RegistryError, Settings};
use crate::store::reference::DOCKER_HUB;
use crate::store::{Digest, Reference};

/// Options every registry command takes.
#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// A registry (HOST[:PORT]) reached over plain http; loopback registries always are
    #[arg(
        long = "insecure-registry",
        value_name = "HOST[:PORT]",
        env = "KILN_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure: Vec<String>,
}

impl RegistryArgs {
    /// Settings with credential files in docker's and podman's lookup order.
    pub fn settings(&self) -> Settings {
        Settings {
            insecure: self.insecure.clone(),
            auth_files: auth_files(),
        }
    }
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
        let hint = e.hint();
        match e {
            RegistryError::Store(_) | RegistryError::Runtime(_) => Failure::internal(e),
            e => Failure::user(e).hint(hint),
        }
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
    let progress = Arc::new(BlobLines::new(globals.quiet, "pulling"));
    let pulled = registry::pull(
        &store,
        &args.registry.settings(),
        &reference,
        platform.as_ref(),
        progress,
    )?;
    let image = Image::load(&store, &pulled.digest)?;
    build::ensure_layer_dirs(&store, &image).map_err(|e| {
        let hint = e.hint();
        Failure::user(e).hint(hint)
    })?;
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

/// One line per blob on stderr as it finishes (`abc123def456: pushed 12.3 MB`), and a
/// spinner with the bytes moved so far on a terminal.
pub struct BlobLines {
    quiet: bool,
    verb: &'static str,
    bar: Option<indicatif::ProgressBar>,
    moved: Mutex<std::collections::HashMap<Digest, u64>>,
}

impl BlobLines {
    pub fn new(quiet: bool, verb: &'static str) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        });
        BlobLines {
            quiet,
            verb,
            bar,
            moved: Mutex::new(Default::default()),
        }
    }

    fn line(&self, text: String) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}

impl Drop for BlobLines {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl registry::Progress for BlobLines {
    fn blob_progress(&self, digest: &Digest, done: u64) {
        let Some(bar) = &self.bar else { return };
        let Ok(mut moved) = self.moved.lock() else {
            return;
        };
        moved.insert(digest.clone(), done);
        let total: u64 = moved.values().sum();
        bar.set_message(format!(
            "{} {} blobs: {}",
            self.verb,
            moved.len(),
            human_size(total)
        ));
    }

    fn blob_finished(&self, digest: &Digest, size: u64, outcome: BlobOutcome) {
        if let Ok(mut moved) = self.moved.lock() {
            moved.remove(digest);
        }
        if !self.quiet {
            self.line(format!(
                "{}: {} {}",
                digest.short(),
                outcome.as_str(),
                human_size(size)
            ));
        }
    }
}
