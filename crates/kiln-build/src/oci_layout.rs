//! `from: oci:PATH[:TAG]`: an image of an OCI layout on disk, copied into the store.
//!
//! A layout is as untrusted as a registry, so it gets a pull's checks, in
//! [`kiln_image::incoming`]'s words, and a pull's atomicity: documents, blobs and layer
//! dirs are staged and verified first, and only when all of them checked out are they
//! synced once and renamed into the store. A refused layout leaves the store as it was.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::host_file;
use super::{BaseProblem, BuildError, LayoutFileError, Result};
use kiln_image::incoming::{self, Described, Found, IncomingError, IndexPath, Role};
use kiln_image::{self as image, ImageConfig};
use kiln_layer::{self as layer, ApplyLimits, StagedLayer};
use kiln_store::{oci, BlobWriter, Bounds, Digest, Store, StoreError, REF_NAME};

/// Where an import finds blobs of the layout already in the store's staging, verified
/// against their names: what `kiln load` writes while it reads an archive, so that they
/// are not copied a second time. The import takes those its image uses.
pub trait StagedBlobs {
    /// The staged blob `digest` — waiting for it when it may still arrive — or `None`:
    /// read it from the layout's directory.
    fn take(&mut self, digest: &Digest) -> Option<BlobWriter>;

    /// Called once the image checked out, before anything of it is published; an error
    /// publishes nothing. `kiln load` waits here for the end of its archive: one refused
    /// after the image's last blob (a second entry of a name, a bad entry at its end) must
    /// leave the store as it was too.
    fn before_publish(&mut self) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// Blobs staged before the import began (none, for `from: oci:`).
impl StagedBlobs for std::collections::HashMap<Digest, BlobWriter> {
    fn take(&mut self, digest: &Digest) -> Option<BlobWriter> {
        self.remove(digest)
    }
}

/// Copies the image named `tag` (or the only image) of the OCI layout at `dir` into the
/// store with its layer dirs, and returns its manifest digest. A blob found in
/// `prestaged` is taken from there instead of `dir`.
pub(super) fn import(
    store: &Store,
    dir: &Path,
    tag: Option<&str>,
    bounds: &Bounds,
    prestaged: &mut dyn StagedBlobs,
) -> Result<Digest> {
    let mut layout = Layout {
        store,
        dir,
        bounds,
        staged: Vec::new(),
        prestaged,
    };
    let (manifest_desc, manifest) = layout.find_manifest(tag)?;
    let bytes = layout.copy_document(Described::new(Role::Manifest, &manifest, &manifest_desc))?;
    let parsed: ImageManifest = serde_json::from_slice(&bytes).map_err(|source| {
        layout.bad(BaseProblem::BadManifest {
            digest: manifest.clone(),
            source,
        })
    })?;
    incoming::check_manifest(&parsed, manifest_desc.size(), bounds)
        .map_err(|e| layout.refused(e))?;
    let config = layout.copy_config(&parsed)?;
    let layers = incoming::layers_of(&parsed).map_err(|e| layout.refused(e))?;
    let unpacked = layout.copy_and_unpack(&layers, &config.rootfs.diff_ids)?;
    // The manifest, staged first, is published last: it names everything else.
    let manifest_blob = layout
        .staged
        .iter()
        .position(|(d, _)| *d == manifest)
        .map(|i| layout.staged.remove(i).1);
    layout
        .prestaged
        .before_publish()
        .map_err(|why| layout.bad(BaseProblem::Unreadable(io::Error::other(why))))?;
    let blobs = layout.staged.into_iter().map(|(_, w)| w).collect();
    layer::publish_staged(store, blobs, &unpacked, manifest_blob)?;
    Ok(manifest)
}

/// An OCI layout being copied into the store: what it staged so far.
struct Layout<'a> {
    store: &'a Store,
    dir: &'a Path,
    bounds: &'a Bounds,
    /// Verified blobs, not yet published.
    staged: Vec<(Digest, BlobWriter)>,
    /// Blobs staged before the import began; those used move to `staged`.
    prestaged: &'a mut dyn StagedBlobs,
}

impl Layout<'_> {
    fn bad(&self, problem: BaseProblem) -> BuildError {
        BuildError::BadBase {
            path: self.dir.into(),
            problem,
        }
    }

    fn refused(&self, e: IncomingError) -> BuildError {
        self.bad(BaseProblem::Incoming(Box::new(e)))
    }

    /// The image manifest `tag` names in `index.json`, through nested indexes (each to this
    /// machine's platform) at most `index_depth` deep.
    fn find_manifest(&mut self, tag: Option<&str>) -> Result<(Descriptor, Digest)> {
        let bounds = self.bounds;
        let index_bytes = read_layout_file(&self.dir.join("index.json"), bounds.document_size)
            .map_err(|e| self.bad(BaseProblem::Index(e)))?;
        incoming::check_document(Role::Index, "index.json", index_bytes.len() as u64, bounds)
            .map_err(|e| self.refused(e))?;
        let index: ImageIndex = serde_json::from_slice(&index_bytes)
            .map_err(|e| self.bad(BaseProblem::NotAnIndex(e)))?;
        let mut desc = pick_manifest(&index, tag).map_err(|p| self.bad(p))?.clone();
        let mut followed = IndexPath::default();
        while is_index(&desc) {
            let digest = Digest::try_from(&desc)?;
            followed
                .enter(&digest, bounds)
                .map_err(|e| self.refused(e))?;
            let bytes = self.copy_document(Described::new(Role::Index, &digest, &desc))?;
            let nested: ImageIndex = serde_json::from_slice(&bytes).map_err(|source| {
                self.bad(BaseProblem::BadIndex {
                    digest: digest.clone(),
                    source,
                })
            })?;
            desc = pick_platform(&nested).ok_or_else(|| {
                self.bad(BaseProblem::NoPlatform {
                    arch: image::go_arch(),
                    digest: digest.clone(),
                })
            })?;
        }
        let digest = Digest::try_from(&desc)?;
        Ok((desc, digest))
    }

    /// The image config, staged, parsed, and agreeing with the manifest on the layers.
    fn copy_config(&mut self, manifest: &ImageManifest) -> Result<ImageConfig> {
        let blob = incoming::config_of(manifest).map_err(|e| self.refused(e))?;
        let digest = blob.digest.clone();
        let bytes = self.copy_document(blob)?;
        let config: ImageConfig =
            serde_json::from_slice(&bytes).map_err(|source| image::ImageError::BadDocument {
                what: "image config",
                digest,
                source,
            })?;
        incoming::check_diff_ids(manifest, config.rootfs.diff_ids.len())
            .map_err(|e| self.refused(e))?;
        Ok(config)
    }

    /// Stages a document (index, manifest, config) and returns its bytes; its descriptor's
    /// size is checked against the bound before anything is read.
    fn copy_document(&mut self, blob: Described) -> Result<Vec<u8>> {
        let what = blob.digest.to_string();
        incoming::check_document(blob.role, &what, blob.size, self.bounds)
            .map_err(|e| self.refused(e))?;
        let path = self.copy_blob(&blob)?;
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|f| f.take(self.bounds.document_size).read_to_end(&mut bytes))
            .map_err(StoreError::io("read", &path))?;
        Ok(bytes)
    }

    /// Stages one blob unless the store or staging has it, and returns where its content
    /// is. The file must have the descriptor's size (checked before it is read) and digest
    /// (checked while it streams).
    fn copy_blob(&mut self, blob: &Described) -> Result<PathBuf> {
        let digest = &blob.digest;
        let mismatch = |layout: &Self, source_name, found| {
            layout.refused(IncomingError::SizeMismatch {
                blob: blob.clone(),
                source_name,
                found,
            })
        };
        if let Some(taken) = self.prestaged.take(digest) {
            self.staged.push((digest.clone(), taken));
        }
        if let Some((_, staged)) = self.staged.iter().find(|(d, _)| d == digest) {
            if staged.size() != blob.size {
                return Err(mismatch(self, "the file", Found::Exactly(staged.size())));
            }
            return Ok(staged.temp_path().to_owned());
        }
        if self.store.has_blob(digest) {
            let stored = self.store.blob_size(digest)?;
            if stored != blob.size {
                return Err(mismatch(
                    self,
                    "the blob in kiln's store",
                    Found::Exactly(stored),
                ));
            }
            return Ok(self.store.blob_path(digest));
        }
        let path = self.dir.join("blobs/sha256").join(digest.hex());
        let file = host_file::open_regular(&path).map_err(|e| BuildError::BadBase {
            path: path.clone(),
            problem: BaseProblem::Blob(e),
        })?;
        let on_disk = file
            .metadata()
            .map_err(StoreError::io("stat", &path))?
            .len();
        if on_disk != blob.size {
            return Err(mismatch(self, "the file", Found::Exactly(on_disk)));
        }
        let mut staged = self.store.new_blob()?;
        let copied = io::copy(&mut file.take(blob.size + 1), &mut staged)
            .map_err(StoreError::io("copy", &path))?;
        if copied != blob.size {
            // The file changed while it was read.
            return Err(mismatch(self, "the file", Found::Exactly(copied)));
        }
        match staged.verify(digest) {
            Ok(()) => {}
            Err(StoreError::DigestMismatch { actual, .. }) => {
                return Err(self.refused(IncomingError::DigestMismatch {
                    blob: blob.clone(),
                    actual,
                }))
            }
            Err(e) => return Err(e.into()),
        }
        let temp = staged.temp_path().to_owned();
        self.staged.push((digest.clone(), staged));
        Ok(temp)
    }

    /// Stages each layer blob and unpacks every layer the store has no dir for, bottom
    /// first: one layer after the other, so a layer unpacks while `kiln load` still reads
    /// the archive's next ones.
    fn copy_and_unpack(
        &mut self,
        layers: &[Described],
        diff_ids: &[Digest],
    ) -> Result<Vec<StagedLayer>> {
        let limits = ApplyLimits::from(self.bounds);
        let mut unpacked: Vec<StagedLayer> = Vec::new();
        for (i, (blob, diff_id)) in layers.iter().zip(diff_ids).enumerate() {
            let new_blob = !self.store.has_blob(&blob.digest);
            let path = self.copy_blob(blob)?;
            let open = || File::open(&path).map_err(StoreError::io("open", &path));
            let layer_type = (blob.media_type.as_str(), diff_id);
            let bad_layer = |layout: &Self, source| {
                layout.bad(BaseProblem::Layer {
                    layer: Box::new(blob.clone()),
                    source,
                })
            };
            if self.store.has_layer(diff_id) || unpacked.iter().any(|s| s.diff_id() == diff_id) {
                // The dir is there; a blob the store did not have must still be what the
                // config says it is, or the image would carry other content on.
                if new_blob {
                    layer::check_layer_blob(&mut open()?, layer_type, &limits)
                        .map_err(|source| bad_layer(self, source))?;
                }
                continue;
            }
            let lowers = layer::lower_dirs(self.store, diff_ids[..i].iter(), &unpacked);
            let mut file = open()?;
            let staged = layer::unpack_staged(self.store, &mut file, layer_type, &lowers, &limits)
                .map_err(|source| bad_layer(self, source))?;
            unpacked.push(staged);
        }
        Ok(unpacked)
    }
}

fn is_index(desc: &Descriptor) -> bool {
    matches!(
        desc.media_type().to_string().as_str(),
        oci::MEDIA_TYPE_INDEX | oci::MEDIA_TYPE_DOCKER_LIST
    )
}

fn pick_manifest<'a>(
    index: &'a ImageIndex,
    tag: Option<&str>,
) -> std::result::Result<&'a Descriptor, BaseProblem> {
    let name = |d: &Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned()
    };
    let all = index.manifests();
    match tag {
        Some(t) => all
            .iter()
            .find(|d| name(d).as_deref() == Some(t))
            .ok_or_else(|| BaseProblem::NoSuchTag {
                tag: t.into(),
                tags: tag_list(all, name),
            }),
        None if all.len() == 1 => Ok(&all[0]),
        None => Err(BaseProblem::SeveralImages {
            count: all.len(),
            tags: tag_list(all, name),
        }),
    }
}

fn tag_list(all: &[Descriptor], name: impl Fn(&Descriptor) -> Option<String>) -> String {
    let tags: Vec<String> = all.iter().filter_map(name).collect();
    if tags.is_empty() {
        "none".into()
    } else {
        tags.join(", ")
    }
}

fn pick_platform(index: &ImageIndex) -> Option<Descriptor> {
    let arch = image::go_arch();
    index
        .manifests()
        .iter()
        .find(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == "linux" && p.architecture().to_string() == arch
            })
        })
        .cloned()
}

/// A file of an OCI layout, at most `limit` bytes and one more (so the caller can tell it
/// is too large); only a regular file is read.
fn read_layout_file(path: &Path, limit: u64) -> std::result::Result<Vec<u8>, LayoutFileError> {
    let file = host_file::open_regular(path).map_err(LayoutFileError::Refused)?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(LayoutFileError::Read)?;
    Ok(bytes)
}
