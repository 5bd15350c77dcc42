//! The image a container is made from: its tag, its config with the layer dirs in place,
//! and the `run:` settings the build kept with the tag.
//!
//! Settings that do not read stop everything here: a container must not start without the
//! limits and dropped capabilities they may hold.

use kiln_image::{self as image, Image, ImageError, RunDefaultsOrigin};
use kiln_spec::RunDefaults;
use kiln_store::{Digest, Store, Tagged};

use super::error::{ContainerError, Result};
use super::layer_dirs::ensure_layer_dirs;

/// The image to run, with its layer dirs in place.
#[derive(Debug)]
pub struct Source {
    pub tagged: Tagged,
    pub image: Image,
    /// The spec's `run:` defaults kept with the tag, as stored (before any are refused).
    pub defaults: RunDefaults,
    /// Who stored them: only `kiln build` in this store may grant privileges.
    pub origin: RunDefaultsOrigin,
}

impl Source {
    /// The image `name` (a reference or an ID) of `store`.
    pub fn load(store: &Store, name: &str) -> Result<Source> {
        let tagged = store
            .find(name)?
            .ok_or_else(|| ContainerError::NoSuchImage(name.to_owned()))?;
        let image = Image::load(
            store,
            &Digest::try_from(&tagged.manifest).map_err(ImageError::from)?,
        )?;
        let (defaults, origin) = stored_run_defaults(store, &tagged, &image.config)?;
        ensure_layer_dirs(store, &image, &kiln_store::Bounds::CEILINGS)?;
        Ok(Source {
            tagged,
            image,
            defaults,
            origin,
        })
    }
}

/// The `run:` defaults kept with a tag, else those the image (`config`) carries. When they
/// do not read, the error names another tag of the same image whose copy is intact, if
/// there is one, to retag from.
pub fn stored_run_defaults(
    store: &Store,
    tagged: &Tagged,
    config: &image::ImageConfig,
) -> Result<(RunDefaults, RunDefaultsOrigin)> {
    image::run_defaults(&tagged.manifest, config).map_err(|source| {
        let name = &tagged.reference;
        let intact = store.tags().unwrap_or_default().into_iter().find(|t| {
            t.manifest.digest() == tagged.manifest.digest()
                && t.reference != *name
                && image::run_defaults(&t.manifest, config).is_ok()
        });
        ContainerError::RunDefaults {
            reference: name.to_string(),
            source,
            intact: intact.map(|t| t.reference.to_string()),
        }
    })
}
