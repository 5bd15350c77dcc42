//! Steps a registry build cache lends a build (`kiln build --cache-from REF`).
//!
//! Exists so that a step missing from the local cache can still come from a cache another
//! machine pushed (`--cache-to`), without pulling layers nobody needs. A lent step's layer
//! joins the image at once (its key is all the next step's key needs), but its blob is
//! fetched only when something must read the files: before a step runs on top of it, and
//! at the end of its stage (the image, or a stage another copies from or builds on, is
//! then complete in the store). Fetched together, the layers of a run of lent steps
//! download in parallel, as a pull's do. Once fetched, each record joins the local
//! cache, so the next build finds it there.

use std::sync::Arc;

use oci_spec::image::Descriptor;

use super::{BuildError, Partial, Result};
use kiln_registry::RemoteCache;
use kiln_store::{Digest, StepRecord, Store};

/// The `--cache-from` caches, in the order given: the first that has a key lends it.
pub(super) fn lookup<'a>(
    caches: &'a [RemoteCache],
    key: &Digest,
) -> Option<(usize, &'a StepRecord)> {
    caches
        .iter()
        .enumerate()
        .find_map(|(i, cache)| cache.get(key).map(|record| (i, record)))
}

/// A lent step whose layer is not fetched yet.
struct Pending {
    /// Which of the `--cache-from` caches lent it.
    cache: usize,
    /// Its layer's position in the stage's image; `None` for a step that made no layer.
    at: Option<usize>,
    record: StepRecord,
}

/// The lent steps of one stage that still wait for their layers.
#[derive(Default)]
pub(super) struct Lent {
    pending: Vec<Pending>,
}

impl Lent {
    /// Notes that `cache` lent `record` to the step whose layer (if any) is now the top
    /// of `image`.
    pub fn lend(&mut self, cache: usize, image: &Partial, record: StepRecord) {
        let at = record.layer.as_ref().map(|_| image.layers.len() - 1);
        self.pending.push(Pending { cache, at, record });
    }

    /// Fetches every pending layer into the store (from the cache that lent it, each with
    /// the image's layers below it as its lower layers) and records the steps in the local
    /// cache.
    pub fn fetch(&mut self, store: &Store, caches: &[RemoteCache], image: &Partial) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        // Runs lent by the same cache go in one pull; a run's stack ends at its top layer.
        let mut start = 0;
        while start < pending.len() {
            let cache = pending[start].cache;
            let end = pending[start..]
                .iter()
                .position(|p| p.cache != cache)
                .map_or(pending.len(), |n| start + n);
            let run = &pending[start..end];
            if let Some(top) = run.iter().filter_map(|p| p.at).max() {
                fetch_stack(store, &caches[cache], &stack(image, top))?;
            }
            let records: Vec<StepRecord> = run.iter().map(|p| p.record.clone()).collect();
            store.record_steps(&records)?;
            start = end;
        }
        Ok(())
    }
}

/// The image's layers from the bottom up to and including `top`, each with its diff_id.
fn stack(image: &Partial, top: usize) -> Vec<(Descriptor, Digest)> {
    image
        .layers
        .iter()
        .zip(&image.config.rootfs.diff_ids)
        .take(top + 1)
        .map(|(layer, diff_id)| (layer.clone(), diff_id.clone()))
        .collect()
}

fn fetch_stack(store: &Store, cache: &RemoteCache, stack: &[(Descriptor, Digest)]) -> Result<()> {
    let fetched = cache
        .pull_layers(store, stack, Arc::new(kiln_progress::Silent))
        .map_err(|source| BuildError::CacheFrom {
            reference: cache.reference.to_string(),
            source,
        })?;
    tracing::debug!(cache = %cache.reference, fetched, "layers fetched from the registry cache");
    Ok(())
}
