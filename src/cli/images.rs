//! `kiln images`, `kiln inspect`, `kiln rmi`, `kiln tag`: local images.

use clap::Args;

use super::listing::{column, row, Listing};
use super::output::{created_ago, created_at, human_size};
use super::{CmdResult, Failure, Globals};
use kiln_image::Image;
use kiln_store::{Digest, Reference, Store, Tagged};

#[derive(Args, Debug)]
#[command(
    about = "List images in the store",
    after_help = "--format fields (docker's): .ID .Repository .Tag .Digest .CreatedSince .CreatedAt .Size\n\nExamples:\n  kiln images\n  kiln images hello              # only hello's tags\n  kiln images -q           # only the image IDs, one per line\n  kiln images --format '{{.Repository}}:{{.Tag}}'\n  kiln images --format 'table {{.Repository}}\\t{{.Size}}'\n  kiln images --json"
)]
pub struct ImagesArgs {
    /// Only this repository's images (`NAME`, or `NAME:TAG` for one tag)
    #[arg(value_name = "REPOSITORY[:TAG]")]
    repository: Option<String>,
    /// Print a JSON array instead of a table
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Print each image through a Go-style template, e.g. '{{.Repository}}:{{.Tag}}';
    /// `table …` adds a header and aligns the columns
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
}

#[derive(Args, Debug)]
#[command(
    about = "Show a container's state and settings, or an image's manifest and config, as JSON",
    after_help = "A name that is both a container's and an image's shows the container, unless --type image.\n\nExamples:\n  kiln inspect hello\n  kiln inspect hello:latest | jq .config.config.Entrypoint\n  kiln inspect -f '{{.State.Health.Status}}' web\n  kiln inspect -f '{{json .config.config.Env}}' hello"
)]
pub struct InspectArgs {
    /// Container name or ID, or image name or ID
    image: String,
    /// Only look for a container or only for an image
    #[arg(long = "type", value_parser = ["container", "image"])]
    kind: Option<String>,
    /// Accepted for docker compatibility; inspect prints JSON unless --format is given
    #[arg(long)]
    json: bool,
    /// Print only what a Go-style template picks out, e.g. '{{.State.Pid}}' or
    /// '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' (fields, range, if, with,
    /// and Go's and docker's functions: json, index, join, len, eq, printf, ...)
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,
}

#[derive(Args, Debug)]
#[command(
    about = "Remove images (their tags), and the blobs and layers nothing else needs",
    long_about = "Remove image tags, then the blobs and layer dirs no other image, container or \
        build-cache step needs (a gc that does not wait: while another kiln process writes to \
        the store, kiln gc frees them later). Says how much it freed, and how much of the \
        images the build cache still holds.",
    after_help = "Examples:\n  kiln rmi hello\n  kiln rmi hello:1 hello:2\n  kiln rmi hello && kiln gc --cache   # the build cache's copy of its layers too"
)]
pub struct RmiArgs {
    /// Image names
    #[arg(required = true)]
    images: Vec<String>,
    /// Only remove the tags; leave their blobs and layers for a later kiln gc (docker's flag)
    #[arg(long)]
    no_prune: bool,
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

pub(super) fn find(store: &Store, name: &str) -> Result<Tagged, Failure> {
    store.find(name)?.ok_or_else(|| {
        Failure::user(format!("no such image: {name}"))
            .hint(Some("`kiln images` lists the images in the store".into()))
    })
}

/// One row of `kiln images`.
struct ImageRow {
    reference: Reference,
    digest: Digest,
    /// docker's SIZE: the bytes of the image's files, unpacked.
    size: u64,
    /// What it takes in blobs (and on a registry): layers compressed, and the config.
    compressed: u64,
    created: Option<String>,
}

impl ImageRow {
    /// Its `--format` fields, as docker names and prints them.
    fn fields(&self) -> serde_json::Value {
        let r = &self.reference;
        row([
            ("ID", self.digest.short().to_owned()),
            ("Repository", format!("{}/{}", r.domain, r.path)),
            ("Tag", r.tag.clone().unwrap_or_else(|| "<none>".into())),
            ("Digest", self.digest.to_string()),
            ("CreatedSince", created_ago(self.created.as_deref())),
            ("CreatedAt", created_at(self.created.as_deref())),
            ("Size", human_size(self.size)),
        ])
    }

    fn new(store: &Store, tagged: Tagged, sizes: &mut LayerSizes) -> Result<ImageRow, Failure> {
        let digest = Digest::try_from(&tagged.manifest)?;
        let image = Image::load(store, &digest).ok();
        let mut size = 0;
        for diff_id in image.iter().flat_map(|i| &i.config.rootfs.diff_ids) {
            size += sizes.of(store, diff_id)?;
        }
        Ok(ImageRow {
            reference: tagged.reference,
            compressed: image.as_ref().map_or(0, Image::size),
            created: image.and_then(|i| i.config.created),
            digest,
            size,
        })
    }
}

/// Unpacked layer sizes, each layer walked once however many images share it.
#[derive(Default)]
pub(super) struct LayerSizes(std::collections::HashMap<Digest, u64>);

impl LayerSizes {
    pub(super) fn of(&mut self, store: &Store, diff_id: &Digest) -> Result<u64, Failure> {
        if let Some(size) = self.0.get(diff_id) {
            return Ok(*size);
        }
        // A layer dir a gc removed meanwhile holds nothing.
        let size = match store.has_layer(diff_id) {
            true => store.layer_size(diff_id)?,
            false => 0,
        };
        self.0.insert(diff_id.clone(), size);
        Ok(size)
    }
}

pub fn images(globals: &Globals, args: ImagesArgs) -> CmdResult {
    let store = globals.store()?;
    let wanted = RepositoryFilter::new(args.repository.as_deref());
    let tags: Vec<Tagged> = store
        .tags()?
        .into_iter()
        .filter(|t| wanted.as_ref().is_none_or(|w| w.keeps(&t.reference)))
        .collect();
    if globals.quiet && !args.json && args.format.is_none() {
        // docker's `images -q`: each image's ID once, whatever its number of tags.
        let mut seen = std::collections::HashSet::new();
        for t in &tags {
            let short = Digest::try_from(&t.manifest)?.short().to_owned();
            if seen.insert(short.clone()) {
                println!("{short}");
            }
        }
        return Ok(0);
    }
    let mut sizes = LayerSizes::default();
    let rows = tags
        .into_iter()
        .map(|t| ImageRow::new(&store, t, &mut sizes))
        .collect::<Result<Vec<_>, _>>()?;
    if args.json {
        let json: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.reference.to_string(),
                    "digest": r.digest.to_string(),
                    "created": r.created,
                    "size": r.size,
                    "compressed_size": r.compressed,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values serialise")
        );
        return Ok(0);
    }
    let fields: Vec<_> = rows.iter().map(ImageRow::fields).collect();
    IMAGES.print(args.format.as_deref(), &fields)
}

/// docker's `images --format` fields, and its table.
const IMAGES: Listing = Listing {
    default_format: "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}",
    columns: &[
        column("ID", "IMAGE ID"),
        column("Repository", "REPOSITORY"),
        column("Tag", "TAG"),
        column("Digest", "DIGEST"),
        column("CreatedSince", "CREATED"),
        column("CreatedAt", "CREATED AT"),
        column("Size", "SIZE"),
    ],
};

/// `kiln images NAME[:TAG]`: the tags of one repository, named as `kiln run` names images.
struct RepositoryFilter {
    /// The repositories the name may mean (`hello` is `localhost/hello` or
    /// `docker.io/library/hello`), each with the tag if one was given.
    candidates: Vec<Reference>,
    tagged: bool,
}

impl RepositoryFilter {
    fn new(name: Option<&str>) -> Option<RepositoryFilter> {
        let name = name?;
        let last = name.rsplit('/').next().unwrap_or(name);
        Some(RepositoryFilter {
            candidates: Reference::candidates(name).unwrap_or_default(),
            tagged: last.contains(':') || last.contains('@'),
        })
    }

    fn keeps(&self, reference: &Reference) -> bool {
        self.candidates.iter().any(|c| match self.tagged {
            true => c == reference,
            false => c.domain == reference.domain && c.path == reference.path,
        })
    }
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
            return print_document(&json, args.format.as_deref());
        }
    }
    let tagged = find(&store, &args.image)?;
    let digest = Digest::try_from(&tagged.manifest)?;
    let img = Image::load(&store, &digest)?;
    let (run, origin) = super::run::stored_run_defaults(&store, &tagged, &img.config)?;
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
        // What `kiln run` starts from, and whether settings that grant privileges apply
        // (only to images built in this store).
        "run_settings": run,
        "run_settings_from": match origin {
            kiln_image::RunDefaultsOrigin::Build => "build",
            kiln_image::RunDefaultsOrigin::Elsewhere => "elsewhere",
        },
    });
    print_document(&json, args.format.as_deref())
}

/// An inspect document: pretty JSON, or what `format` picks out of it.
fn print_document(document: &serde_json::Value, format: Option<&str>) -> CmdResult {
    match format {
        None => println!(
            "{}",
            serde_json::to_string_pretty(document).expect("JSON values serialise")
        ),
        Some(template) => {
            let text = super::template::render(template, document).map_err(|e| {
                Failure::user(format!("--format: {e}")).hint(Some(
                    "fields as {{.State.Pid}}, {{range …}}{{end}}, {{if …}}{{end}}, and functions (json, index, join, len, eq, printf, …) as in docker's templates"
                        .into(),
                ))
            })?;
            println!("{text}");
        }
    }
    Ok(0)
}

pub fn rmi(globals: &Globals, args: RmiArgs) -> CmdResult {
    let store = globals.store()?;
    let mut code = 0;
    let mut removed = Vec::new();
    for name in &args.images {
        match store.find(name)? {
            Some(t) => {
                store.remove_tag(&t.reference)?;
                println!("untagged: {}", t.reference);
                removed.push(Digest::try_from(&t.manifest)?);
            }
            None => {
                super::output::print_failure(&Failure::user(format!("no such image: {name}")));
                code = super::EXIT_USER_ERROR;
            }
        }
    }
    if !removed.is_empty() && !args.no_prune {
        super::housekeeping::free_removed_images(&store, &removed, globals.quiet)?;
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
