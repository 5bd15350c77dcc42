//! The one way a layer blob becomes a layer dir: unpack its stream into a fresh staging
//! dir under the store's `tmp/`, check the stream's diff_id against the one the image
//! config gives, and hand back the staged dir for the caller to publish.
//!
//! Pulls (which unpack while the blob downloads), images loaded from the store or an
//! `oci:` layout, and `kiln run` all need exactly this, and a copy per caller had drifted
//! (different errors for the same mismatch). When to publish is the caller's choice: a
//! build commits each dir at once, while a pull or an `oci:` layout renames everything it
//! staged only once every blob checked out, after one `syncfs` ([`publish_staged`]).
//! Where the stream comes from is the caller's too: a pull follows its growing download,
//! the others read a blob in the store or in staging.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::Result;
use super::{apply_layer, ApplyLimits, LayerError};
use kiln_store::{BlobWriter, Digest, Store, StoreError, TempDir};

/// A layer dir unpacked under the store's `tmp/` whose diff_id matched; removed when
/// dropped unless it was published first.
#[derive(Debug)]
pub struct StagedLayer {
    diff_id: Digest,
    dir: TempDir,
}

impl StagedLayer {
    /// The verified diff_id, which names the layer dir once it is published.
    pub fn diff_id(&self) -> &Digest {
        &self.diff_id
    }

    /// The layer dir itself, in overlay format.
    pub fn path(&self) -> PathBuf {
        layer_path(self.dir.path())
    }
}

/// The layer dirs below a layer whose lower layers are `below` (diff_ids, bottom first),
/// top-most first: the one in `staged` where there is one, else the store's.
pub fn lower_dirs<'a>(
    store: &Store,
    below: impl DoubleEndedIterator<Item = &'a Digest>,
    staged: &[StagedLayer],
) -> Vec<PathBuf> {
    below
        .rev()
        .map(|diff_id| {
            staged
                .iter()
                .find(|s| s.diff_id() == diff_id)
                .map(StagedLayer::path)
                .unwrap_or_else(|| store.layer_dir(diff_id))
        })
        .collect()
}

/// Makes what an image's import staged durable with one sync, then visible: the blobs,
/// the layer dirs, and `last` (the manifest, which names the rest) at the very end.
pub fn publish_staged(
    store: &Store,
    blobs: Vec<BlobWriter>,
    layers: &[StagedLayer],
    last: Option<BlobWriter>,
) -> std::result::Result<(), StoreError> {
    if blobs.is_empty() && layers.is_empty() && last.is_none() {
        return Ok(());
    }
    store.sync_filesystem()?;
    for blob in blobs {
        blob.publish()?;
    }
    for layer in layers {
        store.publish_layer(&layer.path(), layer.diff_id())?;
    }
    if let Some(last) = last {
        last.publish()?;
    }
    store.sync_published()
}

fn layer_path(staging: &Path) -> PathBuf {
    staging.join("layer")
}

/// Unpacks the layer stream `blob` (of `media_type`, on top of `lowers`, top-most first)
/// into a new staging dir of `store` and checks that the uncompressed stream's digest is
/// `diff_id`: [`LayerError::DiffId`] if not. On any error the staging dir is removed.
pub fn unpack_staged(
    store: &Store,
    blob: &mut dyn Read,
    (media_type, diff_id): (&str, &Digest),
    lowers: &[PathBuf],
    limits: &ApplyLimits,
) -> Result<StagedLayer> {
    let dir = store.temp_dir("unpack")?;
    let dest = layer_path(dir.path());
    std::fs::create_dir(&dest).map_err(LayerError::io(
        "create",
        dest.as_os_str().as_encoded_bytes(),
    ))?;
    let actual = apply_layer(blob, media_type, &dest, lowers, limits)?;
    check_diff_id(diff_id, actual)?;
    tracing::debug!(%diff_id, media_type, dir = %dest.display(), "layer applied");
    Ok(StagedLayer {
        diff_id: diff_id.clone(),
        dir,
    })
}

/// Checks that the layer stream `blob` (of `media_type`) is `diff_id`'s content, without
/// unpacking it: for a new blob of a layer whose dir the store already has, so that what
/// an image carries on (push, save) is the content its config names, not only what runs.
pub fn check_layer_blob(
    blob: &mut dyn Read,
    (media_type, diff_id): (&str, &Digest),
    limits: &ApplyLimits,
) -> Result<()> {
    let actual = crate::compress::LayerStream::open(blob, media_type, limits)?.finish()?;
    check_diff_id(diff_id, actual)
}

/// The one check of a layer's diff_id.
fn check_diff_id(expected: &Digest, actual: Digest) -> Result<()> {
    if actual == *expected {
        return Ok(());
    }
    Err(LayerError::DiffId {
        expected: expected.clone(),
        actual,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{write_tar, TarOptions, MEDIA_TYPE_TAR};

    /// A store and the uncompressed tar of a one-file layer.
    fn store_and_tar(tmp: &Path) -> (Store, Vec<u8>) {
        let src = tmp.join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("hello"), b"hi\n").unwrap();
        let mut tar = Vec::new();
        write_tar(&src, &mut tar, &TarOptions::default()).unwrap();
        (Store::open(&tmp.join("store")).unwrap(), tar)
    }

    fn staging_entries(store: &Store) -> usize {
        std::fs::read_dir(store.tmp_dir()).unwrap().count()
    }

    #[test]
    fn a_matching_diff_id_hands_back_the_staged_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, tar) = store_and_tar(tmp.path());
        let diff_id = Digest::of_bytes(&tar);
        let staged = unpack_staged(
            &store,
            &mut &tar[..],
            (MEDIA_TYPE_TAR, &diff_id),
            &[],
            &ApplyLimits::default(),
        )
        .unwrap();
        assert_eq!(staged.diff_id(), &diff_id);
        assert!(staged.path().starts_with(store.tmp_dir()));
        assert_eq!(std::fs::read(staged.path().join("hello")).unwrap(), b"hi\n");
    }

    #[test]
    fn a_different_diff_id_is_refused_with_both_digests_and_nothing_staged() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, tar) = store_and_tar(tmp.path());
        let before = staging_entries(&store);
        let wrong = Digest::of_bytes(b"something else");
        let err = unpack_staged(
            &store,
            &mut &tar[..],
            (MEDIA_TYPE_TAR, &wrong),
            &[],
            &ApplyLimits::default(),
        )
        .unwrap_err();
        let LayerError::DiffId { expected, actual } = &err else {
            panic!("{err}");
        };
        assert_eq!((expected, actual), (&wrong, &Digest::of_bytes(&tar)));
        assert!(err.to_string().contains(&wrong.to_string()), "{err}");
        assert_eq!(staging_entries(&store), before);
    }
}
