//! An image's layers as the unpacked layer dirs an overlay stacks.
//!
//! A pulled or imported image may have blobs without layer dirs (gc may have removed them,
//! or another kiln stopped half-way); before it is run, or built on, every missing one is
//! unpacked. Here, below the build engine, because `kiln run` needs it as much as a build's
//! base image does.

use std::path::PathBuf;

use kiln_image::incoming::{Described, Role};
use kiln_image::{Image, Layer};
use kiln_layer::{self as layer, ApplyLimits};
use kiln_store::{Bounds, Store};

use super::error::{ContainerError, Result};

/// Unpacks every layer of `image` that has no layer dir yet, bottom first, each through
/// [`layer::unpack_staged`] (diff_id checked) and committed at once. `bounds` are those
/// of the image's source when it just came in (`from: oci:`), else [`Bounds::CEILINGS`]:
/// a stored image passed its bounds on the way in.
pub fn ensure_layer_dirs(store: &Store, image: &Image, bounds: &Bounds) -> Result<()> {
    let layers = image.layers()?;
    let limits = ApplyLimits::from(bounds);
    for (i, l) in layers.iter().enumerate() {
        if !store.has_layer(&l.diff_id) {
            let role = Role::Layer {
                n: i + 1,
                of: layers.len(),
            };
            let described = Described::new(role, &l.digest, &l.blob);
            unpack_stored(
                store,
                l,
                &described,
                &lower_dirs(store, &layers[..i]),
                &limits,
            )?;
        }
    }
    Ok(())
}

/// The layer dirs of `below`, top-most first.
fn lower_dirs(store: &Store, below: &[Layer]) -> Vec<PathBuf> {
    below
        .iter()
        .rev()
        .map(|b| store.layer_dir(&b.diff_id))
        .collect()
}

/// Unpacks one stored layer blob and commits its layer dir.
fn unpack_stored(
    store: &Store,
    l: &Layer,
    described: &Described,
    lowers: &[PathBuf],
    limits: &ApplyLimits,
) -> Result<()> {
    let mut blob = store.open_blob(&l.digest)?;
    let media_type = l.blob.media_type().to_string();
    let layer_type = (media_type.as_str(), &l.diff_id);
    let staged =
        layer::unpack_staged(store, &mut blob, layer_type, lowers, limits).map_err(|source| {
            ContainerError::Unpack {
                layer: Box::new(described.clone()),
                source,
            }
        })?;
    store.commit_layer(&staged.path(), staged.diff_id())?;
    Ok(())
}
