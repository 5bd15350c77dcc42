//! `kiln history IMAGE`: the steps that made an image, newest first, as docker shows them:
//! the image config's `history`, each entry that made a layer next to that layer's size.

use clap::Args;

use super::images::{find, LayerSizes};
use super::listing::{column, row, Listing};
use super::output::{created_ago, created_at, human_size};
use super::{CmdResult, Globals};
use kiln_image::Image;
use kiln_store::Digest;

#[derive(Args, Debug)]
#[command(
    about = "Show the steps that made an image, newest first",
    after_help = "--format fields (docker's): .ID .CreatedSince .CreatedAt .CreatedBy .Size .Comment\n\nExamples:\n  kiln history hello\n  kiln history --no-trunc hello   # whole step texts\n  kiln history --format '{{.Size}}\\t{{.CreatedBy}}' hello\n  kiln history --json hello | jq '.[0].created_by'"
)]
pub struct HistoryArgs {
    /// Image name or ID
    image: String,
    /// Print each step's text whole (newlines as spaces) instead of cut at 45 characters
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Print a JSON array (newest first) instead of a table
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Print each step through a Go-style template, e.g. '{{.Size}} {{.CreatedBy}}';
    /// `table …` adds a header and aligns the columns
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
}

/// One history entry with what it made.
struct Entry {
    created: Option<String>,
    created_by: String,
    comment: String,
    /// The layer the step made: its diff_id, unpacked size and blob size.
    layer: Option<(Digest, u64, u64)>,
}

/// How much of a step's text the table shows, as docker cuts CREATED BY.
const CREATED_BY_WIDTH: usize = 45;

pub fn history(globals: &Globals, args: HistoryArgs) -> CmdResult {
    let store = globals.store()?;
    let tagged = find(&store, &args.image)?;
    let image = Image::load(&store, &Digest::try_from(&tagged.manifest)?)?;
    let entries = entries(&store, &image)?;
    if args.json {
        let json: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "created": e.created,
                    "created_by": e.created_by,
                    "comment": e.comment,
                    "empty_layer": e.layer.is_none(),
                    "diff_id": e.layer.as_ref().map(|l| l.0.to_string()),
                    "size": e.layer.as_ref().map_or(0, |l| l.1),
                    "compressed_size": e.layer.as_ref().map_or(0, |l| l.2),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values serialise")
        );
        return Ok(0);
    }
    if globals.quiet && args.format.is_none() {
        // docker's `history -q`: the image's ID for its top entry, <missing> below.
        for i in 0..entries.len() {
            println!("{}", image_column(&image, i));
        }
        return Ok(0);
    }
    let rows: Vec<_> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            row([
                ("ID", image_column(&image, i)),
                ("CreatedSince", created_ago(e.created.as_deref())),
                ("CreatedAt", created_at(e.created.as_deref())),
                ("CreatedBy", step_text(&e.created_by, args.no_trunc)),
                ("Size", human_size(e.layer.as_ref().map_or(0, |l| l.1))),
                ("Comment", e.comment.clone()),
            ])
        })
        .collect();
    HISTORY.print(args.format.as_deref(), &rows)
}

/// docker's `history --format` fields, and its table.
const HISTORY: Listing = Listing {
    default_format: "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
    columns: &[
        column("ID", "IMAGE"),
        column("CreatedSince", "CREATED"),
        column("CreatedAt", "CREATED AT"),
        column("CreatedBy", "CREATED BY"),
        column("Size", "SIZE"),
        column("Comment", "COMMENT"),
    ],
};

/// The history entries, newest first, each that made a layer paired with it (in order:
/// the n-th entry that is not `empty_layer` made the n-th layer). An image whose config
/// has no history (some registries' images) gets one entry per layer.
fn entries(store: &kiln_store::Store, image: &Image) -> Result<Vec<Entry>, super::Failure> {
    let mut sizes = LayerSizes::default();
    let diff_ids = &image.config.rootfs.diff_ids;
    let blobs = image.manifest.layers();
    let mut layer = |index: usize| -> Result<Option<(Digest, u64, u64)>, super::Failure> {
        let Some(diff_id) = diff_ids.get(index) else {
            return Ok(None);
        };
        let blob = blobs.get(index).map_or(0, |b| b.size());
        Ok(Some((diff_id.clone(), sizes.of(store, diff_id)?, blob)))
    };
    let mut out = Vec::new();
    let mut next_layer = 0;
    for h in &image.config.history {
        let made = match h.empty_layer {
            true => None,
            false => {
                next_layer += 1;
                layer(next_layer - 1)?
            }
        };
        out.push(Entry {
            created: h.created.clone(),
            created_by: h.created_by.clone().unwrap_or_default(),
            comment: h.comment.clone().unwrap_or_default(),
            layer: made,
        });
    }
    // Layers no entry accounts for (a config with a short or no history).
    while next_layer < diff_ids.len() {
        out.push(Entry {
            created: image.config.created.clone(),
            created_by: String::new(),
            comment: String::new(),
            layer: layer(next_layer)?,
        });
        next_layer += 1;
    }
    out.reverse();
    Ok(out)
}

/// docker's IMAGE column: the image's ID on its newest entry, `<missing>` on the others
/// (they are no images of their own).
fn image_column(image: &Image, index: usize) -> String {
    match index {
        0 => image.digest.short().to_owned(),
        _ => "<missing>".into(),
    }
}

/// A step's text on one line, cut at [`CREATED_BY_WIDTH`] characters with `…` unless
/// `whole`.
fn step_text(text: &str, whole: bool) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if whole || line.chars().count() <= CREATED_BY_WIDTH {
        return line;
    }
    let mut cut: String = line.chars().take(CREATED_BY_WIDTH - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_one_line_cut_as_docker_cuts_it() {
        assert_eq!(step_text("run: a\n  b", false), "run: a b");
        let long = "run: ".to_owned() + &"x".repeat(60);
        let cut = step_text(&long, false);
        assert_eq!(cut.chars().count(), CREATED_BY_WIDTH);
        assert!(cut.ends_with('…'));
        assert_eq!(step_text(&long, true), long);
    }
}
