//! `kiln build`.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::output::{human_duration, human_size, BuildProgress};
use super::{source_date_epoch, CmdResult, Failure, Globals};
use crate::build::{self, BuildError, BuildOptions};
use crate::layer::Compression;

#[derive(Args, Debug)]
#[command(
    about = "Build an image from a kiln.yaml spec",
    after_help = "Examples:\n  kiln build                         # ./kiln.yaml, tagged as its image: key\n  kiln build examples/hello -t hello:dev\n  kiln build -f ci.yaml --arg VERSION=1.2 --compression gzip ."
)]
pub struct BuildArgs {
    /// Build context: the folder copy: steps read from
    #[arg(default_value = ".")]
    context: PathBuf,
    /// Spec file [default: CONTEXT/kiln.yaml]
    #[arg(short = 'f', long = "file", value_name = "SPEC")]
    file: Option<PathBuf>,
    /// Name the image (repeatable); overrides the spec's image:
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// Set a build arg declared under args:
    #[arg(long = "arg", value_name = "K=V", value_parser = parse_kv)]
    args: Vec<(String, String)>,
    /// Layer compression: zstd (default) or gzip for old clients
    #[arg(long, default_value = "zstd", value_parser = ["zstd", "gzip"])]
    compression: String,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    /// Fail instead of pulling a from: image that is not in the store
    #[arg(long = "no-pull")]
    no_pull: bool,
    #[command(flatten)]
    registry: super::pull::RegistryArgs,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

pub fn run(globals: &Globals, args: BuildArgs) -> CmdResult {
    let store = globals.store()?;
    let spec_file = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("kiln.yaml"));
    let compression: Compression = args.compression.parse().map_err(Failure::user)?;
    let opts = BuildOptions {
        context: args.context.clone(),
        spec_file,
        tags: args.tags.clone(),
        args: args.args.clone(),
        compression,
        epoch: source_date_epoch()?,
        registry: (!args.no_pull).then(|| args.registry.settings()),
    };
    let started = Instant::now();
    let progress = BuildProgress::new(globals.quiet || args.json);
    let result = build::build(&store, &opts, &progress).map_err(failure)?;
    if args.json {
        let tags: Vec<String> = result.tags.iter().map(ToString::to_string).collect();
        let json = serde_json::json!({
            "digest": result.digest.to_string(),
            "tags": tags,
            "layers": result.layers,
            "size": result.size,
        });
        println!("{json}");
    } else if globals.quiet {
        println!("{}", result.digest);
    } else {
        let names: Vec<String> = result.tags.iter().map(ToString::to_string).collect();
        eprintln!(
            "built {} in {}: {} layers, {}",
            names.join(", "),
            human_duration(started.elapsed()),
            result.layers,
            human_size(result.size)
        );
        println!("{}", result.digest);
    }
    Ok(0)
}

fn failure(e: BuildError) -> Failure {
    let hint = e.hint();
    let code = match &e {
        BuildError::Store(_) | BuildError::Runtime(_) => super::EXIT_KILN_FAILED,
        _ => e.step_exit_code().unwrap_or(super::EXIT_USER_ERROR),
    };
    Failure {
        message: e.to_string(),
        hint,
        code,
    }
}
