//! `kiln import`: a root filesystem as a one-layer image.

use std::path::PathBuf;

use clap::Args;

use super::{source_date_epoch, CmdResult, Failure, Globals};
use kiln_build as build;
use kiln_image as image;
use kiln_layer::Compression;
use kiln_store::Reference;

#[derive(Args, Debug)]
#[command(
    about = "Import a root filesystem (directory or tarball) as an image",
    after_help = "Examples:\n  kiln import ./rootfs -t base\n  kiln import debian.tar.zst -t debian:12"
)]
pub struct ImportArgs {
    /// A directory, or a tar archive (plain, gzip or zstd)
    rootfs: PathBuf,
    /// Name for the image (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]", required = true)]
    tags: Vec<String>,
    /// Layer compression
    #[arg(long, default_value = "zstd", value_parser = ["zstd", "gzip"])]
    compression: String,
}

pub fn run(globals: &Globals, args: ImportArgs) -> CmdResult {
    let store = globals.store()?;
    let tags: Vec<Reference> = args
        .tags
        .iter()
        .map(|t| Reference::local(t))
        .collect::<Result<_, _>>()
        .map_err(Failure::user)?;
    let compression: Compression = args.compression.parse().map_err(Failure::user)?;
    // The layer is no gc root until the tag is written.
    let _guard = store.content_guard()?;
    let rootfs = super::absolute(&args.rootfs)?;
    let bounds = super::pull::kiln_config()?.bounds;
    let epoch = source_date_epoch()?;
    let imported =
        build::rootfs_image(&store, &rootfs, compression, epoch, &bounds).map_err(|e| {
            let hint = e.hint();
            Failure::user(e).hint(hint)
        })?;
    let manifest = image::write_image(&store, &imported.config, &imported.layers)?;
    for t in &tags {
        store.set_tag(t, &manifest)?;
    }
    if !globals.quiet {
        eprintln!("imported {} as {}", args.rootfs.display(), tags[0]);
    }
    println!("{}", manifest.digest());
    Ok(0)
}
