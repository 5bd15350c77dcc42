//! Builds an image from a spec: resolve the base, run each step in a sandbox, capture each
//! step's changes as a layer, write config and manifest, tag.
//!
//! Exists to tie the lower modules together in the one order that keeps the store
//! consistent: layers and blobs are committed as they are made (content-addressed, so a
//! failed build leaves only unreferenced content that `gc` reclaims), and the tag is written
//! last, so nothing half-built is ever tagged.

#[cfg(test)]
#[macro_use]
extern crate kiln_testing;

mod base;
mod cache_and_secrets;
pub mod context;
mod copy_step;
mod env_files;
mod host_file;
mod key;
mod layer_room;
mod lent;
mod oci_layout;
mod output;
mod record;
mod run_step;
mod sources;
mod spec_checks;
mod stage_copy;
mod stages;
mod steps;

use std::path::PathBuf;

use oci_spec::image::Descriptor;

pub use base::import_rootfs;

/// Copies the image `tag` names (by its `org.opencontainers.image.ref.name`; `None`: the
/// only image) of the OCI layout at `dir` into the store, checked as a pull is, and returns
/// its manifest digest: `from: oci:` and `kiln load` alike. Blobs in `prestaged` (a loaded
/// archive's, staged while it was read) are taken instead of copied.
pub fn import_oci_layout(
    store: &Store,
    dir: &std::path::Path,
    tag: Option<&str>,
    bounds: &kiln_store::Bounds,
    prestaged: &mut dyn StagedBlobs,
) -> Result<Digest> {
    oci_layout::import(store, dir, tag, bounds, prestaged)
}
pub use base::rootfs_image;
pub use oci_layout::StagedBlobs;
pub use steps::CachePolicy;

use kiln_image::{self as image, ImageConfig, ImageError};
use kiln_layer::{Compression, LayerError};
use kiln_progress::{Outcome, Progress, StagePlan, StepRef, StepReport, Stream};
use kiln_runtime::RuntimeError;
use kiln_spec::{self as spec, SpecError};
use kiln_store::{Digest, Reference, Store, StoreError};

pub use kiln_runtime::DEFAULT_PATH;

/// What `kiln build` was asked to do.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The build context, absolute: the directory `copy:` steps read by default.
    pub context: PathBuf,
    /// The spec file, absolute.
    pub spec_file: PathBuf,
    /// The spec file as the user named it, for messages (`kiln.yaml:12:5: …`).
    pub spec_shown: PathBuf,
    /// `-t` names; when empty, the spec's `image:` is used.
    pub tags: Vec<String>,
    /// `--arg K=V` overrides.
    pub args: Vec<(String, String)>,
    pub compression: Compression,
    /// SOURCE_DATE_EPOCH: file mtimes are clamped to it and `created` fields set to it.
    pub epoch: u64,
    /// Where a `from:` image that is not in the store is pulled from; `None` never pulls.
    pub registry: Option<kiln_registry::Settings>,
    /// What a `from: oci:` or `from: rootfs:` base may hold (a pulled base obeys the
    /// registry settings' bounds, which come from the same config file).
    pub bounds: kiln_store::Bounds,
    /// `--no-cache` / `--no-cache-from STEP`.
    pub cache: CacheRequest,
    /// `--cache-from REF`: registry build caches that may lend a step the local cache
    /// lacks, the first that has its key.
    pub cache_from: Vec<kiln_registry::RemoteCache>,
    /// `--target STAGE`: build this stage instead of the last one.
    pub target: Option<String>,
    /// `--memory`, `--cpus`, `--pids-limit`: the cgroup limits of every run step without
    /// its own `resources:`.
    pub limits: kiln_spec::Limits,
    /// The environment `secrets: env:` read from: the caller's (kiln build's), passed in
    /// because the library never reads the process environment itself.
    pub environment: std::collections::HashMap<std::ffi::OsString, std::ffi::OsString>,
    /// Called when a step was the last user of kiln's bridge network, which stays up for
    /// the next step: the caller has it removed a little later, off the build's path
    /// (the CLI starts a process of its own that does nothing if a step or container
    /// uses the network by then).
    pub network_idle: Option<fn()>,
}

/// How the build cache is used, as asked on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CacheRequest {
    #[default]
    Use,
    /// `--no-cache`.
    Ignore,
    /// `--no-cache-from STEP`: `N` (1-based, in the target stage) or `STAGE:N`.
    IgnoreFrom(String),
}

/// A finished build.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub manifest: Descriptor,
    pub digest: Digest,
    pub tags: Vec<Reference>,
    pub layers: usize,
    /// Compressed size of all layers.
    pub size: u64,
    /// The step record of every `run`/`copy` step of the build (cached, lent or run), of
    /// every stage built: what `--cache-to` shares.
    pub records: Vec<kiln_store::StepRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// A base image's layers could not become layer dirs, or a step's user is not in the
    /// image.
    #[error(transparent)]
    Container(#[from] kiln_container::ContainerError),
    #[error("{location}: step {number} ({title}) failed: {}", failure(status, *out_of_memory))]
    StepFailed {
        location: String,
        number: usize,
        title: String,
        status: kiln_runtime::ExitStatus,
        /// The OOM killer killed the step's command (its memory limit was hit).
        out_of_memory: bool,
    },
    #[error("{location}: step {number} ({title}) could not start: {source}")]
    StepSetup {
        location: String,
        number: usize,
        title: String,
        source: RuntimeError,
    },
    #[error("{location}: step {number} ({title}): {source}")]
    Step {
        location: String,
        number: usize,
        title: String,
        source: Box<StepError>,
    },
    /// A layer a `--cache-from` cache lent could not be fetched.
    #[error("fetching a cached layer from {reference}: {source}")]
    CacheFrom {
        reference: String,
        source: kiln_registry::RegistryError,
    },
    #[error("base image {0:?} is not in the store")]
    BaseNotFound(String),
    #[error("pulling base image {name:?}: {source}")]
    Pull {
        name: String,
        source: kiln_registry::RegistryError,
    },
    #[error("{}: {problem}", path.display())]
    BadBase { path: PathBuf, problem: BaseProblem },
    /// A `rootfs:` or `kiln import` path that is neither a directory nor a regular file.
    #[error("{} is {kind}, not a directory or a tar archive", path.display())]
    RootfsKind { path: PathBuf, kind: &'static str },
    #[error("cannot open {} {}: {}", context_name(name), path.display(), io_reason(source))]
    ContextOpen {
        /// `None`: the build context; else a name under `contexts:`.
        name: Option<String>,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A build context's ignore file that cannot be used.
    #[error(transparent)]
    Context(#[from] context::ContextError),
    #[error("no image name: pass -t NAME[:TAG] or set image: in the spec")]
    NoTag,
    /// The stage to build (`BuildOptions::target`) is not in the spec.
    #[error(transparent)]
    NoSuchStage(spec::NoSuchStage),
    #[error("no build context named {0:?} in contexts:")]
    UnknownContext(String),
    /// The step the build was asked to run from (`CacheRequest::IgnoreFrom`) is not in the
    /// spec. The caller knows how it was asked, and may name that instead.
    #[error("cannot run from step {step:?}: {problem}")]
    RunFrom {
        step: String,
        problem: RunFromProblem,
    },
    /// Secrets whose file or variable is missing when the build starts, located in the spec.
    #[error(transparent)]
    Secret(SpecError),
    /// A `run: env_file:` that cannot be read, or a line of it that is not `NAME=VALUE`.
    #[error("{}{}: {message}", if line.is_none() { "env_file " } else { "" }, match line { Some(n) => format!("{}:{n}", path.display()), None => path.display().to_string() })]
    EnvFile {
        path: PathBuf,
        line: Option<usize>,
        message: String,
        hint: Option<String>,
    },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A descriptor's digest that is not kiln's is the image's fault, as when an image is
/// loaded.
impl From<kiln_store::digest::BadDigest> for BuildError {
    fn from(e: kiln_store::digest::BadDigest) -> Self {
        BuildError::Image(ImageError::BadDigest(e))
    }
}

/// What stopped a step around its command: its inputs, mounts, user or confinement (the
/// command's own failure is [`BuildError::StepFailed`], its start's [`BuildError::StepSetup`]).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("stage {0:?} has not been built")]
    StageNotBuilt(String),
    #[error("{0:?} is not an open build context")]
    ContextNotOpen(kiln_spec::CopyFrom),
    #[error("cannot open the stage's files: {0}")]
    StageFiles(#[source] std::io::Error),
    #[error("create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The store dir of a `cache:` mount.
    #[error("cache {target}: {source}")]
    CacheMount { target: String, source: StoreError },
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The step's `user:` (or a `copy` owner) that the image does not resolve.
    #[error(transparent)]
    User(#[from] kiln_container::passwd::UserError),
    /// The step's `capabilities:`/`privileged:`/`resources:` request.
    #[error(transparent)]
    Confinement(#[from] kiln_container::ConfineError),
    #[error(transparent)]
    Context(#[from] context::ContextError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Connecting the step to kiln's bridge network.
    #[error("connect the step to the bridge network: {0}")]
    Network(String),
    /// The step would be the image's `layer`th layer, past what a step or a container can
    /// run on.
    #[error("it would make the image's layer {layer}: kiln runs steps and containers on at most {max} layers (overlayfs stacks 500, one is kiln's own)")]
    TooManyLayers { layer: usize, max: usize },
}

/// What is wrong with a base on the host: an `oci:PATH` layout or a `rootfs:PATH`.
#[derive(Debug, thiserror::Error)]
pub enum BaseProblem {
    #[error("{0}")]
    Unreadable(#[source] std::io::Error),
    #[error("index.json: {0}")]
    Index(#[source] LayoutFileError),
    #[error("index.json is not an OCI index: {0}")]
    NotAnIndex(#[source] serde_json::Error),
    #[error("no image tagged {tag:?} (tags: {tags})")]
    NoSuchTag { tag: String, tags: String },
    #[error("holds {count} images: name one with oci:PATH:TAG (tags: {tags})")]
    SeveralImages { count: usize, tags: String },
    #[error("index {digest}: {source}")]
    BadIndex {
        digest: Digest,
        source: serde_json::Error,
    },
    #[error("no linux/{arch} image in index {digest}")]
    NoPlatform { arch: &'static str, digest: Digest },
    #[error("manifest {digest}: {source}")]
    BadManifest {
        digest: Digest,
        source: serde_json::Error,
    },
    /// A blob file of the layout that is missing, unreadable or not a regular file.
    #[error("{0}")]
    Blob(#[source] host_file::Refused),
    /// A document or blob that is not what its descriptor says, or past a bound.
    #[error(transparent)]
    Incoming(Box<kiln_image::incoming::IncomingError>),
    /// A layer that cannot become a layer dir.
    #[error("{layer}: {source}")]
    Layer {
        layer: Box<kiln_image::incoming::Described>,
        source: LayerError,
    },
}

/// Why a document of an OCI layout (its `index.json`) is not read.
#[derive(Debug, thiserror::Error)]
pub enum LayoutFileError {
    #[error("{0}")]
    Refused(#[source] host_file::Refused),
    #[error("{0}")]
    Read(#[source] std::io::Error),
}

/// Why a step to run from (`N` or `STAGE:N`) names no step of the spec.
#[derive(Debug, thiserror::Error)]
pub enum RunFromProblem {
    #[error("no stage named {0:?}")]
    NoStage(String),
    #[error("expected a step number (1 is the first step), or STAGE:N")]
    NotAStep,
    /// `stage` is `None` in a spec of one stage.
    #[error("{} has {steps} steps", match stage { None => "the spec".to_string(), Some(s) => format!("stage {s:?}") })]
    TooFew { stage: Option<String>, steps: usize },
}

/// A `secrets:` source that cannot be read. Names the secret's id and where its value was
/// expected, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {id:?}: environment variable {var} is not set (export it before kiln build)")]
    EnvUnset { id: String, var: String },
    #[error("secret {id:?}: {} is {kind}, not a regular file", path.display())]
    NotRegular {
        id: String,
        path: PathBuf,
        kind: &'static str,
    },
    #[error("secret {id:?}: {} does not exist", path.display())]
    Missing { id: String, path: PathBuf },
    #[error("secret {id:?}: cannot read {}: {}", path.display(), io_reason(source))]
    Unreadable {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn failure(status: &kiln_runtime::ExitStatus, out_of_memory: bool) -> String {
    match out_of_memory {
        true => "killed: out of memory".into(),
        false => status.to_string(),
    }
}

impl BuildError {
    /// A hint for the user, printed under the error. It speaks of the spec, never of a
    /// command line: a caller that knows how a value was given adds that.
    pub fn hint(&self) -> Option<String> {
        match self {
            BuildError::BaseNotFound(_) => Some(
                "pull, build or import it first, or use from: rootfs:PATH or oci:PATH".into(),
            ),
            BuildError::Pull { source, .. } => source.hint(),
            BuildError::CacheFrom { source, .. } => source.hint().or_else(|| {
                Some("build without that --cache-from to run the steps instead".into())
            }),
            BuildError::BadBase {
                problem: BaseProblem::Incoming(e),
                ..
            } => Some(e.hint()),
            BuildError::BadBase {
                problem: BaseProblem::Layer { source, .. },
                ..
            }
            | BuildError::Layer(source) => source.hint(),
            BuildError::EnvFile { hint: Some(h), .. } => Some(h.clone()),
            BuildError::EnvFile { line: None, .. } => Some(
                "a relative env_file: is taken from the spec's folder; it is read when the image is built".into(),
            ),
            BuildError::Secret(_) => Some(
                "a relative source: is taken from the spec's folder, an env: variable from kiln build's environment; secrets are read when the build starts and never enter a layer, the cache or the log"
                    .into(),
            ),
            BuildError::StepFailed {
                out_of_memory: true,
                ..
            } => Some("raise the step's limit (resources: { memory: 2g })".into()),
            BuildError::RootfsKind { .. } => Some(
                "a root filesystem is a directory or a tar archive (plain, gzip or zstd); kiln never reads a FIFO, socket or device as one"
                    .into(),
            ),
            BuildError::ContextOpen { name: None, .. } => Some(
                "the build context is kiln build's CONTEXT argument (default: the working directory), a directory"
                    .into(),
            ),
            BuildError::ContextOpen { name: Some(_), .. } => Some(
                "a relative path under contexts: is taken from the spec's folder; a build context is a directory"
                    .into(),
            ),
            BuildError::Step { source, .. }
                if matches!(**source, StepError::TooManyLayers { .. }) =>
            {
                Some("merge steps: one run: with several commands (&&), one copy: of a directory; or build on a base with fewer layers".into())
            }
            BuildError::StepSetup { source, .. } if source.is_command_not_found() => {
                Some("the command must exist in the image; check the step's PATH or use an absolute path".into())
            }
            _ => None,
        }
    }

    /// The exit code of a failed step, which `kiln build` passes on.
    pub fn step_exit_code(&self) -> Option<i32> {
        match self {
            BuildError::StepFailed { status, .. } => Some(status.code()),
            BuildError::StepSetup { source, .. } => source.command_exit_code(),
            _ => None,
        }
    }
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

/// How messages name a build context.
fn context_name(name: &Option<String>) -> String {
    match name {
        None => "the build context".into(),
        Some(name) => format!("build context {name:?} at"),
    }
}

/// An I/O error without the OS's code number ("No such file or directory").
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

/// Builds the spec and tags the result.
pub fn build(store: &Store, opts: &BuildOptions, progress: &dyn Progress) -> Result<BuildResult> {
    let spec = load_spec(opts)?;
    let tags = resolve_tags(&spec, &opts.tags)?;
    spec_checks::secrets(&spec, &opts.spec_shown, &opts.environment).map_err(BuildError::Secret)?;
    // Read before any step runs, so a missing env file stops the build at once.
    let run = env_files::stored_run_defaults(&spec.run, &opts.environment)?;
    let records = std::sync::Mutex::default();
    let built = build_stages(store, &spec, opts, progress, false, &records)?;
    let steps::StageOutput::Built(mut built) = built else {
        unreachable!("a build that is not a plan knows every stage");
    };
    built.config.config.apply_spec(&spec.config);
    image::label_run_settings(&mut built.config, &spec.run);
    let manifest = image::write_image(store, &built.config, &built.layers)?;
    let manifest = image::with_run_defaults(manifest, &run);
    for tag in &tags {
        store.set_tag(tag, &manifest)?;
    }
    let size = built.layers.iter().map(Descriptor::size).sum();
    Ok(BuildResult {
        digest: Digest::try_from(&manifest)?,
        manifest,
        tags,
        layers: built.layers.len(),
        size,
        records: records.into_inner().unwrap_or_else(|e| e.into_inner()),
    })
}

/// `kiln build --plan`: reports through `progress` whether each step is cached or would run
/// (and why), running nothing. Steps after one that would run are reported as running too:
/// their parent is not known until it has run.
pub fn plan(store: &Store, opts: &BuildOptions, progress: &dyn Progress) -> Result<()> {
    let spec = load_spec(opts)?;
    build_stages(store, &spec, opts, progress, true, &Default::default()).map(drop)
}

/// Builds (or plans) the last stage of `spec` and what it needs.
fn build_stages(
    store: &Store,
    spec: &spec::Spec,
    opts: &BuildOptions,
    progress: &dyn Progress,
    plan: bool,
    records: &std::sync::Mutex<Vec<kiln_store::StepRecord>>,
) -> Result<steps::StageOutput> {
    let cache = cache_policy(spec, &opts.cache)?;
    let needed: Vec<usize> = stages::needed_stages(spec).into_iter().collect();
    layer_room::check(store, spec, opts, &needed)?;
    let stages = needed.iter().copied();
    let sources = sources::Sources::open(store, spec, opts, stages.map(|i| &spec.stages[i]))?;
    announce_ignore_files(&sources, progress);
    let request = stages::Request {
        store,
        spec,
        opts,
        progress,
        cache: &cache,
        plan,
        sources: &sources,
        records,
    };
    let output = stages::build(&request);
    sources.save();
    output
}

/// Says, before anything else, which ignore file each context uses and how it is read:
/// with three possible files and two syntaxes, which one applies is not obvious.
fn announce_ignore_files(sources: &sources::Sources, progress: &dyn Progress) {
    for (context, file, syntax) in sources.ignore_files() {
        let syntax = match syntax {
            context::IgnoreSyntax::Gitignore => "gitignore syntax",
            context::IgnoreSyntax::Docker => "Docker's .dockerignore syntax",
        };
        let context = match context {
            None => "the build context".to_string(),
            Some(name) => format!("build context {name:?}"),
        };
        progress.phase(&format!("using {file} ({syntax}) for {context}"));
    }
}

/// Loads the spec, cut after the `--target` stage when there is one (so that stage is the
/// last, and becomes the image). Its problems name the file as the user did.
fn load_spec(opts: &BuildOptions) -> Result<spec::Spec> {
    let shown = |e: SpecError| e.shown_as(&opts.spec_shown);
    let mut spec = spec::load(&opts.spec_file, &opts.args).map_err(shown)?;
    if let Some(target) = &opts.target {
        spec.truncate_to(target).map_err(|e| {
            BuildError::NoSuchStage(spec::NoSuchStage {
                file: opts.spec_shown.clone(),
                ..e
            })
        })?;
    }
    spec_checks::references(&spec, &opts.spec_shown)?;
    Ok(spec)
}

/// Resolves `--no-cache-from N` or `STAGE:N` against the spec.
fn cache_policy(spec: &spec::Spec, request: &CacheRequest) -> Result<CachePolicy> {
    let from = match request {
        CacheRequest::Use => return Ok(CachePolicy::Use),
        CacheRequest::Ignore => return Ok(CachePolicy::Ignore),
        CacheRequest::IgnoreFrom(from) => from,
    };
    let bad = |problem| BuildError::RunFrom {
        step: from.clone(),
        problem,
    };
    let (stage, number) = match from.rsplit_once(':') {
        Some((name, n)) => {
            let stage = spec
                .stage_index(name)
                .ok_or_else(|| bad(RunFromProblem::NoStage(name.into())))?;
            (stage, n)
        }
        None => (spec.stages.len() - 1, from.as_str()),
    };
    let step: usize = (number.parse().ok())
        .filter(|&n| n >= 1)
        .ok_or_else(|| bad(RunFromProblem::NotAStep))?;
    let steps = spec.stages[stage].steps.len();
    if step > steps {
        return Err(bad(RunFromProblem::TooFew {
            stage: (spec.stages.len() > 1).then(|| spec.stages[stage].name.clone()),
            steps,
        }));
    }
    Ok(CachePolicy::IgnoreFrom {
        stage,
        step: step - 1,
    })
}

fn resolve_tags(spec: &spec::Spec, cli_tags: &[String]) -> Result<Vec<Reference>> {
    let names: Vec<&str> = if cli_tags.is_empty() {
        spec.image.iter().map(String::as_str).collect()
    } else {
        cli_tags.iter().map(String::as_str).collect()
    };
    if names.is_empty() {
        return Err(BuildError::NoTag);
    }
    Ok(names
        .into_iter()
        .map(Reference::local)
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)?)
}

/// An image under construction: config plus layer descriptors, bottom first.
#[derive(Debug, Clone)]
pub struct Partial {
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
}
