//! `kiln images`, `kiln inspect`, `kiln rmi`, `kiln tag`: local images.

use clap::Args;

use super::output::human_size;
use super::{CmdResult, Failure, Globals};
use kiln_image::Image;
use kiln_store::{Digest, Reference, Store, Tagged};

#[derive(Args, Debug)]
#[command(
    about = "List images in the store",
    after_help = "Examples:\n  kiln images\n  kiln images -q           # only the image IDs, one per line\n  kiln images --json"
)]
pub struct ImagesArgs {
    /// Print a JSON array instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(
    about = "Show a container's state and settings, or an image's manifest and config, as JSON",
    after_help = "A name that is both a container's and an image's shows the container, unless --type image.\n\nExamples:\n  kiln inspect hello\n  kiln inspect hello:latest | jq .config.config.Entrypoint\n  kiln inspect web | jq .State.Health.Status"
)]
pub struct InspectArgs {
    /// Container name or ID, or image name or ID
    image: String,
    /// Only look for a container or only for an image
    #[arg(long = "type", value_parser = ["container", "image"])]
    kind: Option<String>,
    /// Accepted for docker compatibility; inspect always prints JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
#[command(
    about = "Remove image tags",
    after_help = "Examples:\n  kiln rmi hello\n  kiln rmi hello:1 hello:2"
)]
pub struct RmiArgs {
    /// Image names
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args, Debug)]
#[command(
    about = "Give an image another name",
    after_help = "Examples:\n  kiln tag hello hello:1.0\n  kiln tag hello registry.example:5000/me/hello:1.0"
)]
pub struct TagArgs {
    /// Existing image name or ID
    source: String,
    /// New name
    target: String,
}

fn find(store: &Store, name: &str) -> Result<Tagged, Failure> {
    store.find(name)?.ok_or_else(|| {
        Failure::user(format!("no such image: {name}"))
            .hint(Some("`kiln images` lists the images in the store".into()))
    })
}

pub fn images(globals: &Globals, args: ImagesArgs) -> CmdResult {
    let store = globals.store()?;
    let mut rows = Vec::new();
    for t in store.tags()? {
        let digest = Digest::try_from(&t.manifest)?;
        let size = Image::load(&store, &digest).map(|i| i.size()).unwrap_or(0);
        rows.push((t.reference, digest, size));
    }
    if globals.quiet && !args.json {
        // docker's `images -q`: each image's ID once, whatever its number of tags.
        let mut seen = std::collections::HashSet::new();
        for (_, digest, _) in &rows {
            if seen.insert(digest.short()) {
                println!("{}", digest.short());
            }
        }
        return Ok(0);
    }
    if args.json {
        let json: Vec<_> = rows
            .iter()
            .map(|(r, d, s)| serde_json::json!({ "name": r.to_string(), "digest": d.to_string(), "size": s }))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values serialise")
        );
        return Ok(0);
    }
    println!(
        "{:<40} {:<16} {:<14} {:>10}",
        "REPOSITORY", "TAG", "IMAGE ID", "SIZE"
    );
    for (r, d, s) in rows {
        let repo = format!("{}/{}", r.domain, r.path);
        println!(
            "{:<40} {:<16} {:<14} {:>10}",
            repo,
            r.tag.as_deref().unwrap_or("<none>"),
            d.short(),
            human_size(s)
        );
    }
    Ok(0)
}

pub fn inspect(globals: &Globals, args: InspectArgs) -> CmdResult {
    let store = globals.store()?;
    if args.kind.as_deref() != Some("image") {
        let container = match args.kind.as_deref() {
            Some("container") => Some(super::containers::find(&store, &args.image)?),
            _ => store.find_container(&args.image)?,
        };
        if let Some((dir, state)) = container {
            let json = super::container_inspect::container_json(&dir, &state);
            println!(
                "{}",
                serde_json::to_string_pretty(&json).expect("JSON values serialise")
            );
            return Ok(0);
        }
    }
    let tagged = find(&store, &args.image)?;
    super::run::stored_run_defaults(&store, &tagged)?;
    let digest = Digest::try_from(&tagged.manifest)?;
    let img = Image::load(&store, &digest)?;
    let names: Vec<String> = store
        .tags()?
        .into_iter()
        .filter(|t| t.manifest.digest() == tagged.manifest.digest())
        .map(|t| t.reference.to_string())
        .collect();
    let json = serde_json::json!({
        "digest": digest.to_string(),
        "names": names,
        "manifest": img.manifest,
        "config_digest": img.config_digest.to_string(),
        "config": img.config,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&json).expect("JSON values serialise")
    );
    Ok(0)
}

pub fn rmi(globals: &Globals, args: RmiArgs) -> CmdResult {
    let store = globals.store()?;
    let mut code = 0;
    for name in &args.images {
        match store.find(name)? {
            Some(t) => {
                store.remove_tag(&t.reference)?;
                println!("untagged: {}", t.reference);
            }
            None => {
                super::output::print_failure(&Failure::user(format!("no such image: {name}")));
                code = super::EXIT_USER_ERROR;
            }
        }
    }
    Ok(code)
}

pub fn tag(globals: &Globals, args: TagArgs) -> CmdResult {
    let store = globals.store()?;
    let source = find(&store, &args.source)?;
    let target = Reference::local(&args.target).map_err(Failure::user)?;
    store.set_tag(&target, &source.manifest)?;
    Ok(0)
}
