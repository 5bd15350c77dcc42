//! The layer limit, checked before the first step runs: a build step and a container run
//! on at most [`MAX_IMAGE_LAYERS`] layers (overlayfs stacks 500 lower dirs, one is kiln's
//! init layer), so a spec whose stage would pass it fails at once, in `--plan` as in the
//! build, instead of after running hundreds of steps.
//!
//! Each `run`/`copy` step is counted as a layer: one that changes no file makes none, but
//! only running it tells, and a spec that relies on that to stay under the limit is one
//! step away from failing anyway. A base not known yet (an image still to be pulled, an
//! OCI layout) counts as none, so only what is certain to fail is refused.

use std::collections::BTreeMap;

use super::{BuildError, BuildOptions, Result, StepError};
use kiln_image::Image;
use kiln_runtime::MAX_IMAGE_LAYERS;
use kiln_spec::{From, Spec, StepKind};
use kiln_store::{Digest, Store};

/// Refuses the spec when a stage the build needs would hold more layers than a step or a
/// container can run on; the error names the step that would add the first layer too many.
pub(super) fn check(
    store: &Store,
    spec: &Spec,
    opts: &BuildOptions,
    needed: &[usize],
) -> Result<()> {
    let mut layers: BTreeMap<&str, usize> = BTreeMap::new();
    // Stages come in spec order, so a `from:` stage is counted before the stages on it.
    for &index in needed {
        let stage = &spec.stages[index];
        let mut count = base_layers(store, &stage.from, &layers);
        for (number, step) in stage.steps.iter().enumerate() {
            if !matches!(step.kind, StepKind::Run(_) | StepKind::Copy(_)) {
                continue;
            }
            count += 1;
            if count > MAX_IMAGE_LAYERS {
                return Err(BuildError::Step {
                    location: format!(
                        "{}:{}:{}",
                        opts.spec_shown.display(),
                        step.location.line,
                        step.location.column
                    ),
                    number: number + 1,
                    title: super::steps::title(&step.kind, opts),
                    source: Box::new(StepError::TooManyLayers {
                        layer: count,
                        max: MAX_IMAGE_LAYERS,
                    }),
                });
            }
        }
        layers.insert(&stage.name, count);
    }
    Ok(())
}

/// The layers a stage starts on, as far as known before the build.
fn base_layers(store: &Store, from: &From, stages: &BTreeMap<&str, usize>) -> usize {
    match from {
        From::Scratch | From::OciLayout { .. } => 0,
        From::Rootfs(_) => 1,
        From::Stage(name) => stages.get(name.as_str()).copied().unwrap_or(0),
        From::Image(name) => stored_layers(store, name).unwrap_or(0),
    }
}

/// The layers of the image `name` in the store, if it is there.
fn stored_layers(store: &Store, name: &str) -> Option<usize> {
    let tagged = store.find(name).ok()??;
    let image = Image::load(store, &Digest::try_from(&tagged.manifest).ok()?).ok()?;
    Some(image.manifest.layers().len())
}
