//! `kiln build`.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use super::build_progress::{
    reason_text, step_prefix, stream_marker, BuildProgress, UnfinishedStep,
};
use super::output::{human_duration, human_size};
use super::{source_date_epoch, CmdResult, Failure, Globals};
use kiln_build::{self as build, BuildError, BuildOptions, CacheRequest};
use kiln_layer::Compression;
use kiln_progress::{Outcome, Progress, StagePlan, StepRef, StepReport, Stream};
use kiln_store::reference::DOCKER_HUB;
use kiln_store::Reference;

#[derive(Args, Debug)]
#[command(
    about = "Build an image from a kiln.yaml spec",
    after_help = "Examples:\n  kiln build                         # ./kiln.yaml, tagged as its image: key\n  kiln build examples/hello -t hello:dev\n  kiln build -f ci.yaml --arg VERSION=1.2 --compression gzip .\n  kiln build --plan                  # which steps are cached, and why the others would run\n  kiln build --target builder        # build a stage of a multi-stage spec\n  kiln build --no-cache-from 4       # rerun step 4 and everything after it\n  kiln build --memory 2g --pids-limit 512   # limits of every run step without resources:\n  kiln build --cache-from reg.example/app:cache --cache-to reg.example/app:cache   # share the cache"
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
    #[arg(long = "arg", visible_alias = "build-arg", value_name = "K=V", value_parser = parse_kv)]
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
    /// Run every step; ignore the build cache
    #[arg(long = "no-cache", conflicts_with = "no_cache_from")]
    no_cache: bool,
    /// Run this step and the ones after it even when cached: N (1-based) or STAGE:N
    #[arg(long = "no-cache-from", value_name = "STEP")]
    no_cache_from: Option<String>,
    /// Let a registry build cache lend steps the local cache lacks (repeatable):
    /// REF, or docker's type=registry,ref=REF
    #[arg(long = "cache-from", value_name = "REF", value_parser = parse_cache_ref)]
    cache_from: Vec<CacheRef>,
    /// Push the build's step records and their layers to REF as a build cache:
    /// REF, or docker's type=registry,ref=REF[,mode=max|min]
    #[arg(long = "cache-to", value_name = "REF", value_parser = parse_cache_ref)]
    cache_to: Option<CacheRef>,
    /// Build this stage of a multi-stage spec instead of the last one
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Show which steps are cached and why the others would run; run nothing
    #[arg(long)]
    plan: bool,
    /// Limits of every run step that sets none in its resources:
    #[command(flatten)]
    limits: super::limits::LimitArgs,
    #[command(flatten)]
    registry: super::pull::RegistryArgs,
}

/// A `--cache-from`/`--cache-to` value.
#[derive(Debug, Clone)]
struct CacheRef {
    reference: Reference,
    /// `mode=min`: only the records of the image's own layers (docker's default); kiln's
    /// default is `max`, every stage's steps, so a multi-stage build is fully cached.
    min: bool,
    /// `ignore-error=true`: a failed export is a warning, as in BuildKit.
    ignore_error: bool,
}

/// `REF` or docker's `type=registry,ref=REF[,mode=max|min][,ignore-error=BOOL]`; the
/// options that name what kiln always does (`image-manifest=true`, `oci-mediatypes=true`)
/// are taken too, so a BuildKit command line works unchanged.
fn parse_cache_ref(value: &str) -> Result<CacheRef, String> {
    let parse = |r: &str| Reference::parse(r, DOCKER_HUB).map_err(|e| e.to_string());
    if !value.contains('=') {
        return Ok(CacheRef {
            reference: parse(value)?,
            min: false,
            ignore_error: false,
        });
    }
    let (mut reference, mut min, mut ignore_error) = (None, false, false);
    for part in value.split(',') {
        match part.split_once('=') {
            Some(("type", "registry")) => {}
            Some(("type", other)) => {
                return Err(format!(
                    "type={other}: kiln keeps its build cache in a registry (type=registry) or in its store"
                ))
            }
            Some(("ref", r)) => reference = Some(parse(r)?),
            Some(("mode", mode)) => min = cache_option(part, mode, "min", "max")?,
            Some(("ignore-error", on)) => ignore_error = cache_option(part, on, "true", "false")?,
            Some(("image-manifest" | "oci-mediatypes", "true")) => {}
            Some(("image-manifest" | "oci-mediatypes", _)) => {
                return Err(format!(
                    "{part}: kiln's cache is always an OCI image manifest (only =true)"
                ))
            }
            Some(("compression" | "compression-level" | "force-compression", _)) => {
                return Err(format!(
                    "{part}: the cache shares the image's own layers; kiln build --compression chooses theirs"
                ))
            }
            _ => {
                return Err(format!(
                    "{part:?}: expected type=registry, ref=REF, mode=max|min or ignore-error=true|false"
                ))
            }
        }
    }
    Ok(CacheRef {
        reference: reference.ok_or("no ref=REF")?,
        min,
        ignore_error,
    })
}

/// `KEY=VALUE` where VALUE is one of two words: whether it is `yes`.
fn cache_option(part: &str, value: &str, yes: &str, no: &str) -> Result<bool, String> {
    match value {
        v if v == yes => Ok(true),
        v if v == no => Ok(false),
        _ => Err(format!("{part}: expected {yes} or {no}")),
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

pub fn run(globals: &Globals, args: BuildArgs) -> CmdResult {
    let progress = BuildProgress::new(globals.quiet || args.json);
    let json = args.json;
    let result = build(globals, args, &progress);
    if let Err(failure) = &result {
        match json {
            true => println!("{}", json_failure(failure, &progress.unfinished())),
            false if globals.quiet => print_unfinished(&progress.unfinished()),
            false => {}
        }
    }
    result
}

/// `--json` on failure: `{"error": {...}}` on stdout, with the last lines of the steps that
/// were running (the failed one) since nothing else showed them.
fn json_failure(f: &Failure, unfinished: &[UnfinishedStep]) -> serde_json::Value {
    let steps: Vec<_> = unfinished
        .iter()
        .map(|step| {
            let output: Vec<_> = step
                .tail
                .iter()
                .map(|(stream, line)| {
                    let stream = match stream {
                        Stream::Stdout => "stdout",
                        Stream::Stderr => "stderr",
                    };
                    serde_json::json!({ "stream": stream, "line": line })
                })
                .collect();
            serde_json::json!({
                "stage": step.stage,
                "step": step.number,
                "title": step.title,
                "lines": step.lines,
                "output": output,
            })
        })
        .collect();
    serde_json::json!({
        "error": {
            "message": f.message,
            "hint": f.hint,
            "exit_code": f.code,
            "more": f.more,
            "steps": steps,
        }
    })
}

/// `-q` on failure: the failed step's last lines on stderr, above the error, as a build
/// without `-q` would have shown them.
fn print_unfinished(unfinished: &[UnfinishedStep]) {
    for step in unfinished {
        let prefix = step_prefix(step.stage.as_deref(), step.number, step.total);
        if step.lines > step.tail.len() {
            eprintln!(
                "{prefix} {}: {} earlier lines not shown",
                step.title,
                step.lines - step.tail.len(),
            );
        }
        for (stream, line) in &step.tail {
            eprintln!("{prefix} {} {line}", stream_marker(*stream));
        }
    }
}

fn build(globals: &Globals, args: BuildArgs, progress: &BuildProgress) -> CmdResult {
    let store = globals.store()?;
    // CONTEXT and -f are relative to the working directory; paths in the spec are made
    // absolute (against the spec's folder) when it is read.
    // `kiln build` in the project's folder names its spec `kiln.yaml`, not `./kiln.yaml`.
    let spec_shown = args
        .file
        .clone()
        .unwrap_or_else(|| match args.context.as_os_str() {
            dot if dot == "." => PathBuf::from("kiln.yaml"),
            _ => args.context.join("kiln.yaml"),
        });
    let compression: Compression = args.compression.parse().map_err(Failure::user)?;
    let config = super::pull::kiln_config()?;
    let settings = args.registry.settings(config.clone());
    let cache_from = remote_caches(&settings, &args.cache_from, progress);
    let opts = BuildOptions {
        bounds: config.bounds.clone(),
        context: super::absolute(&args.context)?,
        spec_file: super::absolute(&spec_shown)?,
        spec_shown,
        tags: args.tags.clone(),
        args: args.args.clone(),
        compression,
        epoch: source_date_epoch()?,
        registry: (!args.no_pull).then(|| settings.clone()),
        cache: match (&args.no_cache, &args.no_cache_from) {
            (true, _) => CacheRequest::Ignore,
            (false, Some(step)) => CacheRequest::IgnoreFrom(step.clone()),
            (false, None) => CacheRequest::Use,
        },
        cache_from,
        target: args.target.clone(),
        limits: args.limits.limits()?,
        environment: std::env::vars_os().collect(),
        network_idle: Some(super::network_later::remove_idle_default_network_later),
    };
    // Layers and cache records are no gc roots until the tag is written.
    let guard = store.content_guard()?;
    if args.plan {
        return plan(&store, &opts, args.json);
    }
    let started = Instant::now();
    let result = build::build(&store, &opts, progress).map_err(failure)?;
    let (cached, ran) = progress.counts();
    if let Some(cache_to) = &args.cache_to {
        export_cache(
            &store,
            &settings,
            cache_to,
            &result,
            globals.quiet || args.json,
        )?;
    }
    // The image is tagged: its layers are gc roots now.
    drop(guard);
    let trimmed = match ran > 0 || !args.cache_from.is_empty() {
        true => super::housekeeping::trim_build_cache(&store, &config)?,
        false => None,
    };
    if let Some(report) = trimmed.filter(|_| !globals.quiet && !args.json) {
        eprintln!(
            "build cache over its budget (build_cache: in kiln's config file): dropped {} least recently used step{}, freed {}",
            report.cache_records,
            if report.cache_records == 1 { "" } else { "s" },
            human_size(report.bytes())
        );
    }
    if args.json {
        let tags: Vec<String> = result.tags.iter().map(ToString::to_string).collect();
        let json = serde_json::json!({
            "digest": result.digest.to_string(),
            "tags": tags,
            "layers": result.layers,
            "size": result.size,
            "steps_cached": cached,
            "steps_run": ran,
        });
        println!("{json}");
    } else if globals.quiet {
        println!("{}", result.digest);
    } else {
        let names: Vec<String> = result.tags.iter().map(ToString::to_string).collect();
        eprintln!(
            "built {} in {}: {}, {}; {} run, {cached} cached",
            names.join(", "),
            human_duration(started.elapsed()),
            counted(result.layers, "layer"),
            human_size(result.size),
            counted(ran, "step"),
        );
        println!("{}", result.digest);
    }
    Ok(0)
}

/// `1 layer`, `3 layers`.
fn counted(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// Reads each `--cache-from` cache. One that cannot be read is passed over with a
/// warning, as BuildKit does: the first build of a branch has no cache yet, and a cache is
/// never a reason for a build to fail.
fn remote_caches(
    settings: &kiln_registry::Settings,
    refs: &[CacheRef],
    progress: &BuildProgress,
) -> Vec<kiln_registry::RemoteCache> {
    refs.iter()
        .filter_map(
            |r| match kiln_registry::fetch_cache(settings, &r.reference) {
                Ok(cache) => {
                    progress.phase(&format!(
                        "registry cache {}: {} step records",
                        r.reference,
                        cache.len()
                    ));
                    Some(cache)
                }
                Err(kiln_registry::RegistryError::NotFound { .. }) => {
                    eprintln!(
                        "warning: registry cache {} not found: building without it",
                        r.reference
                    );
                    None
                }
                Err(e) => {
                    eprintln!("warning: ignoring registry cache {}: {e}", r.reference);
                    None
                }
            },
        )
        .collect()
}

/// `--cache-to`: pushes the build's step records (with `mode=min`, only those of the
/// image's own layers) and their layers. The image is built and tagged already; a failed
/// export still fails the command, as a CI job relying on the cache would want to know.
fn export_cache(
    store: &kiln_store::Store,
    settings: &kiln_registry::Settings,
    cache_to: &CacheRef,
    result: &build::BuildResult,
    quiet: bool,
) -> Result<(), Failure> {
    let records: Vec<_> = match cache_to.min {
        false => result.records.clone(),
        true => {
            let image = kiln_image::Image::load(store, &result.digest).map_err(Failure::user)?;
            let own = |r: &&kiln_store::StepRecord| match &r.layer {
                Some(layer) => image.manifest.layers().contains(layer),
                None => true,
            };
            result.records.iter().filter(own).cloned().collect()
        }
    };
    let pushed = kiln_registry::push_cache(
        store,
        settings,
        &cache_to.reference,
        &records,
        std::sync::Arc::new(kiln_progress::Silent),
    )
    .map_err(|e| {
        let mut f = Failure::user(format!(
            "the image was built, but exporting its build cache to {} failed: {e}",
            cache_to.reference
        ));
        f.hint = e.hint();
        f
    });
    let pushed = match pushed {
        Ok(pushed) => pushed,
        Err(f) if cache_to.ignore_error => {
            eprintln!("warning: {} (ignore-error=true)", f.message);
            return Ok(());
        }
        Err(f) => return Err(f),
    };
    if !quiet {
        eprintln!(
            "exported build cache to {}: {} step records, {} layers uploaded ({}), {} already there",
            cache_to.reference,
            records.len(),
            pushed.uploaded,
            human_size(pushed.bytes),
            pushed.existed + pushed.mounted,
        );
    }
    Ok(())
}

/// `--plan`: one line per step (or JSON lines with --json), nothing run.
fn plan(store: &kiln_store::Store, opts: &BuildOptions, json: bool) -> CmdResult {
    if json {
        let progress = PlanJson::default();
        build::plan(store, opts, &progress).map_err(failure)?;
        let steps = progress.steps.into_inner().expect("plan lock");
        let stages = progress.stages.into_inner().expect("plan lock");
        println!(
            "{}",
            serde_json::json!({ "steps": steps, "stages": stages })
        );
        return Ok(0);
    }
    let progress = BuildProgress::new(false);
    build::plan(store, opts, &progress).map_err(failure)?;
    Ok(0)
}

/// Collects `--plan` decisions for `--json`.
#[derive(Default)]
struct PlanJson {
    steps: std::sync::Mutex<Vec<serde_json::Value>>,
    /// Multi-stage specs: each stage's decision and the stages that use it.
    stages: std::sync::Mutex<Vec<serde_json::Value>>,
}

impl Progress for PlanJson {
    fn step_finished(&self, step: &StepRef, report: &StepReport) {
        let (decision, reason) = match &report.outcome {
            Outcome::Cached => ("cached", None),
            Outcome::CachedFrom(cache) => ("cached", Some(format!("registry cache {cache}"))),
            Outcome::WouldRun(reason) | Outcome::Ran(reason) => {
                ("run", Some(reason_text(reason).into_owned()))
            }
            Outcome::Config => ("config", None),
        };
        self.steps
            .lock()
            .expect("plan lock")
            .push(serde_json::json!({
                "stage": step.stage,
                "step": step.index + 1,
                "title": step.title,
                "decision": decision,
                "reason": reason,
            }));
    }

    fn stage_planned(&self, plan: &StagePlan) {
        self.stages
            .lock()
            .expect("plan lock")
            .push(serde_json::json!({
                "stage": plan.stage,
                "decision": if plan.would_run { "run" } else { "cached" },
                "used_by": plan.used_by,
            }));
    }
}

fn failure(e: BuildError) -> Failure {
    // The library's hints speak of the spec; here the flags and commands are known.
    let hint = match &e {
        BuildError::BaseNotFound(_) => Some(
            "kiln pull it, build or import it first (kiln import ROOTFS -t NAME), or use from: rootfs:PATH or oci:PATH; builds pull a missing base unless --no-pull"
                .into(),
        ),
        BuildError::StepFailed {
            out_of_memory: true,
            ..
        } => Some(
            "raise the step's limit (resources: { memory: 2g }) or kiln build --memory".into(),
        ),
        BuildError::Pull { source, .. } => super::pull::registry_hint(source),
        _ => e.hint(),
    };
    // A step to run from is only ever given with --no-cache-from.
    let message = match &e {
        BuildError::RunFrom { step, problem } => format!("--no-cache-from {step:?}: {problem}"),
        BuildError::NoSuchStage(e) => format!(
            "{}: --target: no stage named \"{}\" ({})",
            e.file.display(),
            e.name,
            e.hint
        ),
        _ => e.to_string(),
    };
    // A step is a container: 125 when it could not be started (126/127 when its command
    // cannot run), its own code when it failed; anything else kiln could not do is 1.
    let code = match &e {
        BuildError::StepSetup { .. } => e.step_exit_code().unwrap_or(super::EXIT_NOT_STARTED),
        _ => e.step_exit_code().unwrap_or(super::EXIT_USER_ERROR),
    };
    // A spec's problems are all reported, each with its location, then how many.
    let (more, footer) = match &e {
        BuildError::Spec(spec) | BuildError::Secret(spec) if !spec.more.is_empty() => (
            spec.more.iter().map(ToString::to_string).collect(),
            Some(problem_count(spec)),
        ),
        _ => (Vec::new(), None),
    };
    Failure {
        message,
        hint,
        code,
        more,
        footer,
    }
}

/// `kiln.yaml: 3 problems`, and that there may be more when checking stopped early.
fn problem_count(e: &kiln_spec::SpecError) -> String {
    let count = e.all().count();
    let stopped = match count >= kiln_spec::MAX_PROBLEMS {
        true => " (checking stopped there; fix these and build again)",
        false => "",
    };
    format!("{}: {count} problems{stopped}", e.file.display())
}
