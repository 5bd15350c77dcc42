//! `kiln system df`: docker's disk-usage table — images, containers and the build cache,
//! how much each takes and how much a removal would give back.
//!
//! Each piece of content is counted once, where it is charged: an image's blobs and layer
//! dirs under Images (shared ones once), a container's upper dir under Containers, and
//! under Build Cache only what no image or container needs (the step records' layers of
//! untagged images: what `kiln gc --cache` or a budget frees).

use std::collections::{HashMap, HashSet};

use clap::{Args, Subcommand};

use super::housekeeping::image_content;
use super::output::human_size;
use super::{CmdResult, Failure, Globals};
use kiln_store::containers::Status;
use kiln_store::{Digest, ImageContent, Store};

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Show how much disk images, containers and the build cache use
    #[command(
        after_help = "Examples:\n  kiln system df\n  kiln system df --json | jq .build_cache.reclaimable"
    )]
    Df(DfArgs),
}

#[derive(Args, Debug)]
pub struct DfArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub fn run(globals: &Globals, command: SystemCommand) -> CmdResult {
    match command {
        SystemCommand::Df(args) => df(globals, args),
    }
}

/// A container of the store, with its state.
type Kept = (kiln_store::ContainerDir, kiln_store::ContainerState);

/// One row of the table.
#[derive(Debug, Default, PartialEq, Eq)]
struct Usage {
    total: usize,
    active: usize,
    size: u64,
    reclaimable: u64,
}

fn df(globals: &Globals, args: DfArgs) -> CmdResult {
    let store = globals.store()?;
    let _guard = store.content_guard()?;
    let kept = store.containers()?;
    let images = image_usage(&store, &kept)?;
    let containers = container_usage(&kept)?;
    let cache = store.cache_usage(&image_content).map_err(Failure::user)?;
    let cache = Usage {
        total: cache.records,
        active: cache.active,
        size: cache.bytes,
        reclaimable: cache.bytes,
    };
    let rows = [
        ("Images", &images),
        ("Containers", &containers),
        ("Build Cache", &cache),
    ];
    if args.json {
        let json: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(name, u)| {
                let key = name.to_lowercase().replace(' ', "_");
                let value = serde_json::json!({
                    "total": u.total,
                    "active": u.active,
                    "size": u.size,
                    "reclaimable": u.reclaimable,
                });
                (key, value)
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values serialise")
        );
        return Ok(0);
    }
    println!(
        "{:<14} {:>7} {:>7} {:>10} {:>18}",
        "TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"
    );
    for (name, u) in rows {
        println!(
            "{:<14} {:>7} {:>7} {:>10} {:>18}",
            name,
            u.total,
            u.active,
            human_size(u.size),
            reclaimable(u)
        );
    }
    Ok(0)
}

/// `120 MB (40%)`, docker's column.
fn reclaimable(u: &Usage) -> String {
    match u.size {
        0 => human_size(0),
        size => format!(
            "{} ({}%)",
            human_size(u.reclaimable),
            u.reclaimable * 100 / size
        ),
    }
}

/// Tagged images: their content counted once; active ones are those a container uses;
/// reclaimable is what only the unused ones need.
fn image_usage(store: &Store, containers: &[Kept]) -> Result<Usage, Failure> {
    let mut manifests: Vec<Digest> = Vec::new();
    for tagged in store.tags()? {
        let digest = Digest::try_from(&tagged.manifest)?;
        if !manifests.contains(&digest) {
            manifests.push(digest);
        }
    }
    let used: HashSet<Digest> = containers
        .iter()
        .map(|(_, state)| state.image_digest.clone())
        .collect();
    let mut sizes = Sizes::default();
    let mut contents: HashMap<Digest, ImageContent> = HashMap::new();
    for m in &manifests {
        let content =
            image_content(store, m).map_err(|e| Failure::user(format!("image {m}: {e}")))?;
        contents.insert(m.clone(), content);
    }
    let everything = pieces(contents.values());
    let needed_by_used = pieces(
        contents
            .iter()
            .filter(|(m, _)| used.contains(*m))
            .map(|(_, c)| c),
    );
    let size = sizes.total(store, &everything)?;
    let kept = sizes.total(store, &needed_by_used)?;
    let usage = Usage {
        total: manifests.len(),
        active: manifests.iter().filter(|m| used.contains(*m)).count(),
        size,
        reclaimable: size - kept.min(size),
    };
    Ok(usage)
}

/// A blob or a layer dir, each counted once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Piece {
    Blob(Digest),
    LayerDir(Digest),
}

fn pieces<'a>(images: impl Iterator<Item = &'a ImageContent>) -> HashSet<Piece> {
    images
        .flat_map(|c| {
            c.blobs
                .iter()
                .cloned()
                .map(Piece::Blob)
                .chain(c.layer_dirs.iter().cloned().map(Piece::LayerDir))
        })
        .collect()
}

/// Sizes of pieces, each measured once per command.
#[derive(Default)]
struct Sizes(HashMap<Piece, u64>);

impl Sizes {
    fn total(&mut self, store: &Store, pieces: &HashSet<Piece>) -> Result<u64, Failure> {
        let mut total = 0;
        for piece in pieces {
            if let Some(size) = self.0.get(piece) {
                total += size;
                continue;
            }
            let size = match piece {
                Piece::Blob(d) if store.has_blob(d) => store.blob_size(d)?,
                Piece::LayerDir(d) if store.has_layer(d) => store.layer_size(d)?,
                _ => 0,
            };
            self.0.insert(piece.clone(), size);
            total += size;
        }
        Ok(total)
    }
}

/// Containers: what their upper dirs hold; running ones are active, the others'
/// reclaimable (`kiln rm`).
fn container_usage(containers: &[Kept]) -> Result<Usage, Failure> {
    let mut usage = Usage::default();
    for (dir, state) in containers {
        let size = dir.upper_size()?;
        usage.total += 1;
        usage.size += size;
        match dir.status(state) {
            Status::Running { .. } | Status::Restarting { .. } => usage.active += 1,
            _ => usage.reclaimable += size,
        }
    }
    Ok(usage)
}
