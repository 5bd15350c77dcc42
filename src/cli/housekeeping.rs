//! `kiln gc` and `kiln fsck`: reclaiming and checking the store.
//!
//! The work is in `store::gc` and `store::fsck`; this file supplies the image module's
//! loader to them, adds what the store cannot see (kiln cgroups whose kiln is gone), prints
//! their reports, and gives every kind of problem a remedy.

use std::path::Path;

use clap::Args;

use super::output::human_size;
use super::{CmdResult, Failure, Globals, EXIT_USER_ERROR};
use kiln_image::Image;
use kiln_store::{
    CacheBudget, Digest, FsckReport, GcError, GcOptions, GcReport, ImageContent, ImageReadError,
    Problem, ProblemKind, Removal, Store,
};

#[derive(Args, Debug)]
#[command(
    about = "Check the store: blob contents, images, layer dirs, leftovers",
    long_about = "Check the store: every blob's content against its digest, every image and \
        container's manifest, config, blobs and layer dirs, the build cache's records, and \
        leftovers of interrupted kiln processes. Changes nothing. Exits 1 when it finds a \
        problem.",
    after_help = "Examples:\n  kiln fsck\n  kiln fsck --json | jq '.problems[].message'"
)]
pub struct FsckArgs {
    /// Print a JSON report instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(
    about = "Remove blobs and layers that no image, container or build-cache entry needs",
    long_about = "Remove blobs and layer dirs that no image (tagged or not), container or \
        build-cache record needs, and staging left by interrupted kiln processes. Waits \
        for running builds, pulls and runs to finish writing first.",
    after_help = "Examples:\n  kiln rmi hello && kiln gc\n  kiln gc --dry-run       # list what would go\n  kiln gc --cache         # also drop the build cache and cache mounts\n  kiln gc --keep-storage 10g --keep-duration 168h   # trim the build cache, least recently used first\n\nbuild_cache: keep_storage/keep_duration in kiln's config file are the defaults, which kiln build also applies after each build."
)]
pub struct GcArgs {
    /// List what would be removed and remove nothing
    #[arg(long)]
    dry_run: bool,
    /// Drop the build cache (step records and `cache:` mounts) first, so its layers go too
    #[arg(long, conflicts_with_all = ["keep_storage", "keep_duration"])]
    cache: bool,
    /// Keep at most SIZE of build cache (what only it holds), dropping the least recently
    /// used steps first (BuildKit's --keep-storage)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    keep_storage: Option<u64>,
    /// Drop build-cache steps unused for longer than AGE, e.g. 168h
    #[arg(long, value_name = "AGE", value_parser = parse_duration)]
    keep_duration: Option<std::time::Duration>,
    /// Print a JSON report instead of text
    #[arg(long)]
    json: bool,
}

/// The store as it is: fsck and gc must not create one, nor clean it before they look.
fn existing_store(globals: &Globals) -> Result<Store, Failure> {
    Store::open_existing(&globals.root).map_err(|e| {
        Failure::user(e).hint(Some(
            "--root DIR (or KILN_ROOT) selects the store; the default is /var/lib/kiln".into(),
        ))
    })
}

/// What an image keeps alive, read with the image module's loader (which also checks the
/// manifest and config against their digests).
pub(super) fn image_content(
    store: &Store,
    manifest: &Digest,
) -> Result<ImageContent, ImageReadError> {
    let image = Image::load(store, manifest)?;
    let layers = image.layers()?;
    let mut blobs = vec![image.config_digest.clone()];
    blobs.extend(layers.iter().map(|l| l.digest.clone()));
    Ok(ImageContent {
        blobs,
        layer_dirs: layers.into_iter().map(|l| l.diff_id).collect(),
    })
}

pub fn fsck(globals: &Globals, args: FsckArgs) -> CmdResult {
    let store = existing_store(globals)?;
    let mut report = store.fsck(&image_content)?;
    // Cgroups are the machine's, not the store's: fsck names those of this store's
    // containers (gc removes every stale kiln cgroup).
    let ours: std::collections::BTreeSet<String> = store
        .containers()?
        .into_iter()
        .map(|(dir, _)| dir.id)
        .collect();
    let stale = stale_cgroups()?
        .into_iter()
        .filter(|(id, _)| ours.contains(id));
    report.problems.extend(stale.map(|(_, dir)| Problem {
        kind: ProblemKind::StaleCgroup,
        message: format!(
            "cgroup {} was left behind by a kiln process that is gone",
            dir.display()
        ),
        path: dir,
    }));
    report
        .problems
        .sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("an fsck report serialises")
        );
    } else {
        print_fsck_report(globals, &store, &report);
    }
    Ok(if report.is_clean() {
        0
    } else {
        EXIT_USER_ERROR
    })
}

fn print_fsck_report(globals: &Globals, store: &Store, report: &FsckReport) {
    let checked = [
        plural(report.blobs, "blob", "blobs"),
        plural(report.images, "image", "images"),
        plural(report.layer_dirs, "layer dir", "layer dirs"),
    ]
    .join(", ");
    if report.is_clean() {
        if !globals.quiet {
            println!("{}: no problems ({checked})", store.root().display());
        }
        return;
    }
    for p in &report.problems {
        println!("{}", p.message);
    }
    let problems = plural(report.problems.len(), "problem", "problems");
    println!("{}: {problems} ({checked})", store.root().display());
    // Problems are sorted by kind, so equal remedies are adjacent.
    let mut remedies: Vec<&str> = report.problems.iter().map(|p| remedy(p.kind)).collect();
    remedies.dedup();
    for r in remedies {
        eprintln!("hint: {r}");
    }
}

/// What to do about each kind of problem, for someone who knows docker or podman.
fn remedy(kind: ProblemKind) -> &'static str {
    match kind {
        ProblemKind::BadLayout => {
            "the store's oci-layout or index.json is damaged: restore it from a backup, or \
             move the store away and pull or build the images again"
        }
        ProblemKind::CorruptBlob => {
            "a corrupt blob is never fetched again while its file exists: `kiln rmi` the \
             images that use it, `kiln gc`, then pull or build them again"
        }
        ProblemKind::MissingBlob | ProblemKind::BadImage => {
            "`kiln rmi` the image (`kiln rm` the container) and pull or build it again"
        }
        ProblemKind::MissingLayerDir => {
            "`kiln rmi` the image (`kiln rm` the container) and pull or build it again; \
             a layer dir is only unpacked when its image arrives"
        }
        ProblemKind::StaleCacheRecord => {
            "harmless (such records are cache misses); `kiln gc --cache` drops the build cache"
        }
        ProblemKind::StaleStaging | ProblemKind::AbandonedContainer | ProblemKind::StaleCgroup => {
            "`kiln gc` removes leftovers of interrupted kiln processes"
        }
        ProblemKind::UnfinishedStore => {
            "a kiln was killed while it created the store: the next kiln command that uses \
             it (`kiln images`, say) finishes it"
        }
        ProblemKind::UnknownFile => {
            "kiln did not write these and leaves them alone: remove them by hand once no \
             other tool is writing to the store"
        }
    }
}

/// The hidden command that removes an idle bridge network (started by the runner of the
/// last container on it).
pub const NETWORK_RECLAIM_COMMAND: &str = "network-reclaim";

/// How long an idle bridge network is kept before it is removed: a container started
/// meanwhile (a script running one `kiln run --rm -p …` after another) finds it ready
/// instead of waiting for its removal and making it again (~70 ms each way).
const NETWORK_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub struct NetworkReclaimArgs {
    /// A named network instead of the default one
    network: Option<String>,
    /// First rewrite the network's port rules, under its lock, which fd 3 holds
    #[arg(long)]
    ports: bool,
    /// Do not remove the network after the linger
    #[arg(long)]
    no_reclaim: bool,
}

/// `kiln network-reclaim [NAME] [--ports] [--no-reclaim]`: with `--ports`, rewrites the
/// network's port rules under the lock the runner handed over as fd 3; then, after
/// [`NETWORK_LINGER`], removes the network (bridge, table, forwarding) if no container
/// left it meanwhile.
pub fn network_reclaim(globals: &Globals, args: NetworkReclaimArgs) -> CmdResult {
    let network = match &args.network {
        None => kiln_container::network::default_network().map_err(Failure::user)?,
        Some(name) => {
            let store = existing_store(globals)?;
            let failed = |e: kiln_container::ContainerError| Failure::user(&e).hint(e.hint());
            kiln_container::container_networks::network_named(&store, name).map_err(failed)?
        }
    };
    let label = args.network.as_deref().unwrap_or("bridge");
    let failed = |e: kiln_network::NetworkError| {
        Failure::user(format!("network {label}: {e}")).hint(e.hint())
    };
    if args.ports {
        use std::os::fd::FromRawFd;
        // SAFETY: the runner gave this process the network's lock as fd 3, for it alone.
        let lock =
            unsafe { std::os::fd::OwnedFd::from_raw_fd(super::network_later::PORTS_LOCK_FD) };
        network.sync_ports(lock).map_err(failed)?;
    }
    if args.no_reclaim {
        return Ok(0);
    }
    std::thread::sleep(NETWORK_LINGER);
    network.reclaim_idle(NETWORK_LINGER).map_err(failed)?;
    Ok(0)
}

/// Frees what killed kiln processes left on the bridge network (leases, port rules, and
/// the bridge and table when no container is left), if a bridge network was ever used.
fn reclaim_network() -> Result<(), Failure> {
    if !std::path::Path::new(kiln_container::network::DEFAULT_NETWORK_STATE).exists() {
        return Ok(());
    }
    let network = kiln_container::network::default_network().map_err(Failure::user)?;
    network
        .reclaim()
        .map_err(|e| Failure::user(format!("reclaim the bridge network: {e}")).hint(e.hint()))
}

/// [`reclaim_network`] for each of the store's named networks.
fn reclaim_named_networks(store: &kiln_store::Store) -> Result<(), Failure> {
    let failed =
        |e: kiln_container::named_network::NamedNetworkError| Failure::user(&e).hint(e.hint());
    for definition in kiln_container::named_network::list(store).map_err(failed)? {
        let network = definition.network(store).map_err(failed)?;
        network.reclaim().map_err(|e| {
            Failure::user(format!("reclaim network {}: {e}", definition.name)).hint(e.hint())
        })?;
    }
    Ok(())
}

fn parse_size(text: &str) -> Result<u64, String> {
    kiln_spec::values::size(text).map_err(|e| e.message)
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    kiln_spec::values::duration(text).map_err(|e| e.message)
}

/// The build cache's budget of kiln's config file (`build_cache:`), none when it sets none.
fn configured_budget(config: &kiln_registry::FileConfig) -> Result<CacheBudget, Failure> {
    let bad = |at: &kiln_registry::Located, key: &str, e: kiln_spec::values::ValueError| {
        Failure::user(at.error(key, e.message)).hint(e.hint)
    };
    let keep_storage = config
        .keep_storage
        .as_ref()
        .map(|at| {
            kiln_spec::values::size(&at.value).map_err(|e| bad(at, "build_cache.keep_storage", e))
        })
        .transpose()?;
    let keep_duration = config
        .keep_duration
        .as_ref()
        .map(|at| {
            kiln_spec::values::duration(&at.value)
                .map_err(|e| bad(at, "build_cache.keep_duration", e))
        })
        .transpose()?;
    Ok(CacheBudget {
        keep_storage,
        keep_duration,
    })
}

/// After a build that added to the build cache: the config file's budget, applied unless
/// another kiln process is writing to the store (the next build tries again). Returns what
/// it dropped, if anything.
pub(super) fn trim_build_cache(
    store: &Store,
    config: &kiln_registry::FileConfig,
) -> Result<Option<GcReport>, Failure> {
    let budget = configured_budget(config)?;
    if !budget.is_set() {
        return Ok(None);
    }
    let options = GcOptions {
        budget,
        no_wait: true,
        ..GcOptions::default()
    };
    match store.gc(&image_content, options, &mut || {}) {
        Ok(report) => Ok(Some(report).filter(|r| r.cache_records > 0)),
        Err(GcError::Busy) => Ok(None),
        Err(e) => Err(gc_failure(e)),
    }
}

/// After `kiln rmi`: removes what nothing needs any more (unless another kiln process is
/// writing to the store), says how much that freed, and how much of the removed images'
/// layers the build cache still holds, with the command that frees it.
pub(super) fn free_removed_images(
    store: &Store,
    removed: &[Digest],
    quiet: bool,
) -> Result<(), Failure> {
    let content: Vec<ImageContent> = removed
        .iter()
        .filter_map(|m| image_content(store, m).ok())
        .collect();
    let options = GcOptions {
        no_wait: true,
        ..GcOptions::default()
    };
    let report = match store.gc(&image_content, options, &mut || {}) {
        Ok(report) => report,
        Err(GcError::Busy) => {
            if !quiet {
                eprintln!("not freed yet: another kiln process is writing to the store (kiln gc frees it later)");
            }
            return Ok(());
        }
        Err(e) => return Err(gc_failure(e)),
    };
    if quiet {
        return Ok(());
    }
    println!("freed {}", gc_summary(&report));
    let held = held_by_cache(store, &content)?;
    if held > 0 {
        eprintln!(
            "hint: the build cache still holds {} of their layers: kiln gc --cache frees it (or kiln gc --keep-storage SIZE keeps the cache within SIZE)",
            human_size(held)
        );
    }
    Ok(())
}

/// Bytes of the images' blobs and layer dirs that are still in the store and that a
/// build-cache step record keeps.
fn held_by_cache(store: &Store, images: &[ImageContent]) -> Result<u64, Failure> {
    let mut cached_blobs = std::collections::HashSet::new();
    let mut cached_dirs = std::collections::HashSet::new();
    for (blob, diff_id) in store.step_records()?.iter().filter_map(|r| r.content()) {
        cached_blobs.insert(blob);
        cached_dirs.insert(diff_id);
    }
    let mut counted = std::collections::HashSet::new();
    let mut bytes = 0;
    for image in images {
        for blob in image.blobs.iter().filter(|b| cached_blobs.contains(*b)) {
            if counted.insert(blob.clone()) && store.has_blob(blob) {
                bytes += store.blob_size(blob)?;
            }
        }
        for dir in image.layer_dirs.iter().filter(|d| cached_dirs.contains(*d)) {
            if counted.insert(dir.clone()) && store.has_layer(dir) {
                bytes += store.layer_size(dir)?;
            }
        }
    }
    Ok(bytes)
}

pub fn gc(globals: &Globals, args: GcArgs) -> CmdResult {
    let store = existing_store(globals)?;
    let configured = configured_budget(&super::pull::kiln_config()?)?;
    let budget = CacheBudget {
        keep_storage: args.keep_storage.or(configured.keep_storage),
        keep_duration: args.keep_duration.or(configured.keep_duration),
    };
    let options = GcOptions {
        dry_run: args.dry_run,
        drop_build_cache: args.cache,
        budget,
        no_wait: false,
    };
    let quiet = globals.quiet;
    let mut say_waiting = || {
        if !quiet {
            eprintln!("waiting for other kiln processes to finish writing to the store…");
        }
    };
    let mut report = store
        .gc(&image_content, options, &mut say_waiting)
        .map_err(gc_failure)?;
    // An ordinary user's kiln makes no cgroup and no bridge: nothing of them is its.
    let rootless = kiln_runtime::userns::rootless();
    report.cgroups = match (args.dry_run, rootless) {
        (_, true) => Vec::new(),
        (true, false) => stale_cgroups()?.into_iter().map(|(id, _)| id).collect(),
        (false, false) => kiln_cgroups::clean_stale(Path::new(kiln_cgroups::DEFAULT_CGROUP_ROOT))
            .map_err(|e| Failure::user(format!("remove stale cgroups: {e}")))?,
    };
    if !args.dry_run && !rootless {
        reclaim_network()?;
        reclaim_named_networks(&store)?;
    }
    if args.json {
        println!("{}", gc_json(&report));
    } else {
        print_gc_report(globals, &report);
    }
    Ok(0)
}

/// kiln cgroups whose kiln is gone (a killed `kiln run` or build step).
fn stale_cgroups() -> Result<Vec<(String, std::path::PathBuf)>, Failure> {
    kiln_cgroups::stale(Path::new(kiln_cgroups::DEFAULT_CGROUP_ROOT))
        .map_err(|e| Failure::user(format!("list kiln cgroups: {e}")))
}

fn gc_failure(e: GcError) -> Failure {
    match e {
        GcError::UnreadableRoot { .. } => Failure::user(e).hint(Some(
            "`kiln fsck` lists what is broken; `kiln rmi` the image or `kiln rm` the \
             container, then run gc again"
                .into(),
        )),
        GcError::NoStore(_) | GcError::Busy => Failure::user(e),
        GcError::Store(e) => e.into(),
    }
}

fn gc_json(report: &GcReport) -> String {
    let list = |removals: &[Removal], key: &str| -> Vec<serde_json::Value> {
        removals
            .iter()
            .map(|r| serde_json::json!({ key: r.name, "path": r.path, "bytes": r.bytes }))
            .collect()
    };
    let json = serde_json::json!({
        "dry_run": report.dry_run,
        "blobs": list(&report.blobs, "digest"),
        "layer_dirs": list(&report.layer_dirs, "diff_id"),
        "staging": list(&report.staging, "name"),
        "cache_records": report.cache_records,
        "cache_mounts": list(&report.cache_mounts, "name"),
        "containers": list(&report.containers, "id"),
        "cgroups": report.cgroups,
        "bytes": report.bytes(),
    });
    serde_json::to_string_pretty(&json).expect("JSON values serialise")
}

fn print_gc_report(globals: &Globals, report: &GcReport) {
    if report.dry_run {
        let groups = [
            ("blob", &report.blobs),
            ("layer dir", &report.layer_dirs),
            ("staging", &report.staging),
            ("abandoned container", &report.containers),
            ("cache mount", &report.cache_mounts),
        ];
        for (what, removals) in groups {
            for r in removals {
                println!("would remove {what} {} ({})", r.name, human_size(r.bytes));
            }
        }
    }
    if !globals.quiet || report.dry_run {
        let verb = if report.dry_run {
            "would remove"
        } else {
            "removed"
        };
        println!("{verb} {}", gc_summary(report));
    }
}

/// `1 blob`, `2 blobs`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "12 blobs, 8 layer dirs, 340.0 MB", with the rarer parts only when there are some.
fn gc_summary(report: &GcReport) -> String {
    let mut parts = vec![
        plural(report.blobs.len(), "blob", "blobs"),
        plural(report.layer_dirs.len(), "layer dir", "layer dirs"),
    ];
    if !report.staging.is_empty() {
        parts.push(plural(
            report.staging.len(),
            "staging leftover",
            "staging leftovers",
        ));
    }
    if !report.containers.is_empty() {
        parts.push(plural(
            report.containers.len(),
            "abandoned container",
            "abandoned containers",
        ));
    }
    if !report.cgroups.is_empty() {
        parts.push(plural(
            report.cgroups.len(),
            "stale cgroup",
            "stale cgroups",
        ));
    }
    if report.cache_records > 0 || !report.cache_mounts.is_empty() {
        parts.push(plural(
            report.cache_records,
            "build-cache record",
            "build-cache records",
        ));
        parts.push(plural(
            report.cache_mounts.len(),
            "cache mount",
            "cache mounts",
        ));
    }
    parts.push(human_size(report.bytes()));
    parts.join(", ")
}
