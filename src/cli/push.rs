//! `kiln push`: an image of the store to a registry.

use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use super::output::{human_duration, human_size};
use super::pull::{BlobProgress, RegistryArgs};
use super::{CmdResult, Failure, Globals};
use crate::image;
use crate::registry;
use crate::store::reference::DOCKER_HUB;
use crate::store::Reference;

#[derive(Args, Debug)]
#[command(
    about = "Push an image to a registry",
    after_help = "Examples:\n  kiln push 127.0.0.1:5000/app:1.0\n  kiln push hello ghcr.io/me/hello:latest"
)]
pub struct PushArgs {
    /// The image in the store (name or digest)
    image: String,
    /// Where to push it [default: the image's own name]
    reference: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(globals: &Globals, args: PushArgs) -> CmdResult {
    let store = globals.store()?;
    let tagged = store.find(&args.image)?.ok_or_else(|| {
        Failure::user(format!("no such image: {}", args.image))
            .hint(Some("see `kiln images` for the images in the store".into()))
    })?;
    let target = match &args.reference {
        Some(r) => Reference::parse(r, DOCKER_HUB).map_err(Failure::user)?,
        None => tagged.reference.clone(),
    };
    let digest = image::oci_digest(&tagged.manifest)?;
    let started = Instant::now();
    let progress = Arc::new(BlobProgress::new(globals.quiet, "pushing"));
    let pushed = registry::push(
        &store,
        &args.registry.settings(),
        &digest,
        &target,
        progress.clone(),
    );
    progress.clear();
    let pushed = pushed?;
    if !globals.quiet {
        eprintln!(
            "pushed {target}: {} blobs uploaded ({}), {} mounted, {} already there, in {}",
            pushed.uploaded,
            human_size(pushed.bytes),
            pushed.mounted,
            pushed.existed,
            human_duration(started.elapsed())
        );
    }
    println!("{}", pushed.digest);
    Ok(0)
}
