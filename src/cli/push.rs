//! `kiln push`: an image of the store to a registry.

use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use super::output::{human_duration, human_size};
use super::pull::{BlobProgress, RegistryArgs};
use super::{CmdResult, Failure, Globals};
use kiln_registry as registry;
use kiln_store::reference::{DOCKER_HUB, LOCAL_DOMAIN};
use kiln_store::{Digest, Reference};

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
        None if tagged.reference.domain == LOCAL_DOMAIN => {
            return Err(no_destination(&args.image, &tagged.reference))
        }
        None => tagged.reference.clone(),
    };
    let digest = Digest::try_from(&tagged.manifest)?;
    let started = Instant::now();
    let progress = Arc::new(BlobProgress::new(globals.quiet, "pushing"));
    let pushed = registry::push(
        &store,
        &args.registry.settings(super::pull::kiln_config()?),
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

/// `kiln push hello`: a local name (`localhost/hello`) names no registry, and pushing to
/// port 80 of this machine is never what was meant, so kiln asks for a destination.
fn no_destination(image: &str, local: &Reference) -> Failure {
    let tag = match local.tag.as_deref() {
        Some("latest") | None => String::new(),
        Some(tag) => format!(":{tag}"),
    };
    Failure::user(format!(
        "{image} is a local image ({local}): name the registry to push it to"
    ))
    .hint(Some(format!(
        "kiln push {image} registry.example:5000/{}{tag}",
        local.path
    )))
}
