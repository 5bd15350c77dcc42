//! Builds an image from a spec: resolve the base, run each step in a sandbox, capture each
//! step's changes as a layer, write config and manifest, tag.
//!
//! Exists to tie the lower modules together in the one order that keeps the store
//! consistent: layers and blobs are committed as they are made (content-addressed, so a
//! failed build leaves only unreferenced content that `gc` reclaims), and the tag is written
//! last, so nothing half-built is ever tagged.

mod base;
pub mod passwd;
mod progress;
mod steps;

use std::path::PathBuf;

use oci_spec::image::Descriptor;

pub(crate) use base::rootfs_image;
pub use base::{ensure_layer_dirs, import_rootfs};
pub use progress::{Progress, Silent, StepReport, Stream};

use crate::image::{self, ImageConfig, ImageError};
use crate::layer::{Compression, LayerError};
use crate::runtime::RuntimeError;
use crate::spec::{self, SpecError};
use crate::store::{Digest, Reference, Store, StoreError};

pub use crate::runtime::DEFAULT_PATH;

/// What `kiln build` was asked to do.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The build context (the spec's own folder unless given).
    pub context: PathBuf,
    /// The spec file.
    pub spec_file: PathBuf,
    /// `-t` names; when empty, the spec's `image:` is used.
    pub tags: Vec<String>,
    /// `--arg K=V` overrides.
    pub args: Vec<(String, String)>,
    pub compression: Compression,
    /// SOURCE_DATE_EPOCH: file mtimes are clamped to it and `created` fields set to it.
    pub epoch: u64,
    /// Where a `from:` image that is not in the store is pulled from; `None` never pulls.
    pub registry: Option<crate::registry::Settings>,
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
    #[error("{location}: step {number} ({title}) failed: {status}")]
    StepFailed {
        location: String,
        number: usize,
        title: String,
        status: crate::runtime::ExitStatus,
    },
    #[error("{location}: step {number} ({title}) could not start: {source}")]
    StepSetup {
        location: String,
        number: usize,
        title: String,
        source: RuntimeError,
    },
    #[error("{location}: step {number} ({title}): {message}")]
    Step {
        location: String,
        number: usize,
        title: String,
        message: String,
    },
    #[error("base image {0:?} is not in the store")]
    BaseNotFound(String),
    #[error("pulling base image {name:?}: {source}")]
    Pull {
        name: String,
        source: crate::registry::RegistryError,
    },
    #[error("{path}: {why}")]
    BadBase { path: PathBuf, why: String },
    #[error("no image name: pass -t NAME[:TAG] or set image: in the spec")]
    NoTag,
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl BuildError {
    /// A hint for the user, printed under the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            BuildError::BaseNotFound(_) => Some(
                "kiln pull it, build or import it first (kiln import ROOTFS -t NAME), or use from: rootfs:PATH or oci:PATH; builds pull a missing base unless --no-pull"
                    .into(),
            ),
            BuildError::Pull { source, .. } => source.hint(),
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

/// Builds the spec and tags the result.
pub fn build(store: &Store, opts: &BuildOptions, progress: &dyn Progress) -> Result<BuildResult> {
    let spec = spec::load(&opts.spec_file, &opts.args)?;
    let tags = resolve_tags(&spec, &opts.tags)?;
    let base = base::resolve(store, &spec.from, opts, progress)?;
    let built = steps::run_all(store, &spec, opts, base, progress)?;
    let manifest = image::write_image(store, &built.config, &built.layers)?;
    let manifest = image::with_run_defaults(manifest, &spec.run);
    for tag in &tags {
        store.set_tag(tag, &manifest)?;
    }
    let size = built.layers.iter().map(Descriptor::size).sum();
    Ok(BuildResult {
        digest: image::oci_digest(&manifest)?,
        manifest,
        tags,
        layers: built.layers.len(),
        size,
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
pub(crate) struct Partial {
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
}
