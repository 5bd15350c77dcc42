//! What a `copy … from: STAGE` step copies, as the build cache sees it: the digest of the
//! files it would copy out of the stage's filesystem, listed and hashed exactly as a copy
//! from a build context is (`context::copy_sources_digest`: content, execute bit, symlink
//! targets, the set of paths; never times or other mode bits, which the copy does not take).
//!
//! Exists so that a stage that is rebuilt but produces the same files for the copy (a
//! changed comment, a log or a timestamp elsewhere in the stage) leaves the copy and the
//! steps after it cached, and so that a miss names the file that changed. Keying on the
//! stage's layers instead would rerun the copy on every change of the stage.
//!
//! Reading the files needs the stage mounted; its layers are content-addressed and never
//! change, so the listing is remembered by (layers, sources) in `cache/stage-copies/` and a
//! cached build mounts and reads nothing.

use serde::{Deserialize, Serialize};

use super::context::{self, ContextDir, HashMemo, Ignore, SourceEntry};
use super::{Partial, StepError};
use kiln_runtime::{self as runtime, Overlay};
use kiln_store::{canonical_json, Digest, Store};

/// The build cache documents of this module, under `cache/`.
pub(crate) const KIND: &str = "stage-copies";

/// Bumped when what a listing holds changes, so older documents stop matching.
const VERSION: u32 = 1;

/// The content a stage copy would copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StageSources {
    /// Equal exactly when `files` is (with the raw bytes of every name).
    pub digest: Digest,
    /// What would be copied, as absolute paths in the stage (`/out/app`), sorted.
    pub files: Vec<SourceEntry>,
}

/// The copy's sources as paths relative to the stage's root: `/out/app` is `out/app`, and
/// `/` is `.`.
pub(super) fn relative_sources(sources: &[String]) -> Vec<String> {
    sources
        .iter()
        .map(|s| s.trim_start_matches('/'))
        .map(|s| {
            if s.is_empty() {
                ".".into()
            } else {
                s.to_owned()
            }
        })
        .collect()
}

/// What copying `sources` out of `stage` would copy: remembered, or read from the stage
/// mounted in a private view.
pub(super) fn digest(
    store: &Store,
    stage: &Partial,
    sources: &[String],
) -> Result<StageSources, StepError> {
    let relative = relative_sources(sources);
    let id = memo_id(stage, &relative);
    if let Some(known) = remembered(store, &id) {
        return Ok(known);
    }
    // The overlay needs an upper and a work dir; nothing is written to them.
    let view = store.temp_dir("stage-view")?;
    for dir in ["upper", "work"] {
        let path = view.path().join(dir);
        std::fs::create_dir(&path).map_err(|source| StepError::CreateDir {
            path: path.clone(),
            source,
        })?;
    }
    let overlay = Overlay {
        layers_dir: store.layers_dir(),
        lowers: stage.config.lower_layer_names(),
        upper: view.path().join("upper"),
        work: view.path().join("work"),
    };
    let listed = runtime::with_overlay(&overlay, |root| {
        let dir = ContextDir::open(root).map_err(StepError::StageFiles)?;
        // Layers never change: a memo by inode would only fill up.
        let mut memo = HashMemo::in_memory();
        context::copy_sources_digest(&dir, &relative, &Ignore::none(), &mut memo)
            .map_err(StepError::from)
    })??;
    let mut files = listed.files;
    for entry in &mut files {
        entry.path.insert(0, '/');
    }
    let found = StageSources {
        digest: listed.digest,
        files,
    };
    // Remembering only saves the next build a mount; failing to is no error.
    if let Ok(bytes) = serde_json::to_vec(&found) {
        let _ = store.write_cache_file(KIND, &id, &bytes);
    }
    Ok(found)
}

/// Names the listing of `relative` in the stage's layers.
fn memo_id(stage: &Partial, relative: &[String]) -> Digest {
    Digest::of_bytes(&canonical_json(&serde_json::json!({
        "version": VERSION,
        "layers": stage.config.rootfs.diff_ids,
        "sources": relative,
    })))
}

fn remembered(store: &Store, id: &Digest) -> Option<StageSources> {
    let bytes = store.read_cache_file(KIND, id).ok()??;
    serde_json::from_slice(&bytes).ok()
}
