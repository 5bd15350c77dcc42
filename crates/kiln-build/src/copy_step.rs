//! Running a `copy` step: its files, from a build context or from another stage, copied into
//! the step's overlay with their owner, mode and mtime.
//!
//! Exists apart from `steps.rs` because a copy reads from outside the image (an open
//! context, or a read-only view of a stage mounted beside the step's root) and never runs
//! anything: `steps.rs` decides whether the step runs and captures its layer; this file
//! only fills the step's upper dir.

use super::sources::Context;
use super::steps::{StageOutput, StepCx, StepDirs};
use super::{stage_copy, BuildError, Partial, Result, StepError};
use kiln_container::passwd;
use kiln_layer::{self as layer, CopyOptions};
use kiln_runtime as runtime;
use kiln_spec::{CopyFrom, CopyStep};

/// Copies a `copy` step's files onto `image`'s layers, writing into `dirs`' upper dir.
pub(super) fn copy_into_image(
    cx: &StepCx,
    copy: &CopyStep,
    image: &Partial,
    dirs: &StepDirs,
) -> Result<()> {
    let overlay = dirs.overlay(cx.job.store, image);
    let workdir = image
        .config
        .config
        .working_dir
        .clone()
        .unwrap_or_else(|| "/".into());
    // A context was opened when the build started: files are resolved beneath its fd.
    // A stage's files are read from a read-only view of that stage, mounted next to the
    // step's own root; its paths are absolute inside the stage.
    let source = match &copy.from {
        CopyFrom::Stage(name) => match cx.job.inputs.get(name) {
            Some(StageOutput::Built(stage)) => CopySource::Stage(stage),
            _ => return Err(cx.error(StepError::StageNotBuilt(name.clone()))),
        },
        from => match cx.job.sources.context(from) {
            Some(context) => CopySource::Context(context),
            None => return Err(cx.error(StepError::ContextNotOpen(from.clone()))),
        },
    };
    let outcome = runtime::with_overlay(&overlay, |root| -> std::result::Result<(), StepError> {
        let owner = match &copy.owner {
            None => passwd::User::ROOT,
            Some(o) => passwd::resolve(root, o)?,
        };
        let opts = CopyOptions {
            mode: copy.mode,
            uid: owner.uid,
            gid: owner.gid,
            mtime: cx.job.opts.epoch as i64,
        };
        match source {
            CopySource::Context(context) => layer::copy_in_filtered(
                &context.dir,
                &copy.sources,
                root,
                &copy.to,
                &workdir,
                &opts,
                &context.ignore.as_exclusions(),
            )
            .map(drop)
            .map_err(StepError::from),
            CopySource::Stage(stage) => {
                let view = StepDirs::new(cx.job.store)?;
                let relative = stage_copy::relative_sources(&copy.sources);
                runtime::with_overlay(&view.overlay(cx.job.store, stage), |stage_root| {
                    let stage_dir =
                        layer::ContextDir::open(stage_root).map_err(StepError::StageFiles)?;
                    layer::copy_in(&stage_dir, &relative, root, &copy.to, &workdir, &opts)
                        .map(drop)
                        .map_err(StepError::from)
                })?
            }
        }
    });
    outcome.map_err(BuildError::from)?.map_err(|e| cx.error(e))
}

/// Where a `copy` step's files come from.
enum CopySource<'a> {
    Context(&'a Context),
    Stage(&'a Partial),
}
