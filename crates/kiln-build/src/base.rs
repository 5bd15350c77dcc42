//! The image a build starts from: scratch, an image in the store, an OCI layout on disk,
//! or a root filesystem (directory or tarball).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use nix::sys::stat::FileStat;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

use super::host_file::{self, FileOrDir, Refused};
use super::{BaseProblem, BuildError, BuildOptions, LayoutFileError, Partial, Progress, Result};
use kiln_container::ensure_layer_dirs;
use kiln_image::incoming::{self, Described, Found, IncomingError, IndexPath, Role};
use kiln_image::{self as image, rfc3339, History, Image, ImageConfig};
use kiln_layer::source_path::fd_path;
use kiln_layer::{self as layer, ApplyLimits, Compression, TarOptions};
use kiln_registry as registry;
use kiln_spec::From;
use kiln_store::reference::DOCKER_HUB;
use kiln_store::{oci, Bounds, Digest, Reference, StepRecord, Store, StoreError, REF_NAME};

pub(super) fn resolve(
    store: &Store,
    from: &From,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Partial> {
    match from {
        From::Scratch => Ok(Partial {
            config: ImageConfig::scratch(),
            layers: Vec::new(),
        }),
        From::Image(name) => match store.find(name)? {
            Some(tagged) => from_image(
                store,
                &Digest::try_from(&tagged.manifest)?,
                &Bounds::CEILINGS,
            ),
            None => {
                tracing::debug!(
                    name,
                    pulls = opts.registry.is_some(),
                    "base image not in the store"
                );
                let settings = opts
                    .registry
                    .as_ref()
                    .ok_or_else(|| BuildError::BaseNotFound(name.clone()))?;
                progress.phase(&format!("pulling {name}"));
                from_image(store, &pull_base(store, settings, name)?, &Bounds::CEILINGS)
            }
        },
        From::OciLayout { path, tag } => {
            progress.phase(&format!("importing oci:{}", path.display()));
            let manifest = import_oci_layout(store, path, tag.as_deref(), &opts.bounds)?;
            from_image(store, &manifest, &opts.bounds)
        }
        From::Rootfs(path) => {
            progress.phase(&format!("importing rootfs:{}", path.display()));
            rootfs_image(store, path, opts.compression, opts.epoch, &opts.bounds)
        }
        From::Stage(name) => Err(BuildError::BaseNotFound(format!("stage {name}"))),
    }
}

/// A one-layer image of a root filesystem (see [`import_rootfs`]), not yet written.
pub fn rootfs_image(
    store: &Store,
    path: &Path,
    compression: Compression,
    epoch: u64,
    bounds: &Bounds,
) -> Result<Partial> {
    let (blob, diff_id) = import_rootfs(store, path, compression, epoch, bounds)?;
    let mut config = ImageConfig::scratch();
    config.created = Some(rfc3339(epoch));
    config.rootfs.diff_ids.push(diff_id);
    config.history.push(History {
        created: config.created.clone(),
        created_by: Some(format!("kiln import {}", file_name(path))),
        ..Default::default()
    });
    Ok(Partial {
        config,
        layers: vec![blob],
    })
}

/// Pulls a base image that is not in the store and tags it, as `kiln pull` would.
fn pull_base(store: &Store, settings: &registry::Settings, name: &str) -> Result<Digest> {
    let pull_error = |source| BuildError::Pull {
        name: name.to_owned(),
        source,
    };
    let reference = Reference::parse(name, DOCKER_HUB).map_err(StoreError::from)?;
    let pulled = registry::pull(
        store,
        settings,
        &reference,
        None,
        Arc::new(kiln_progress::Silent),
    )
    .map_err(pull_error)?;
    store.set_tag(&reference, &pulled.manifest)?;
    Ok(pulled.digest)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The image `manifest` of the store as a base, with its layer dirs made within `bounds`.
fn from_image(store: &Store, manifest: &Digest, bounds: &Bounds) -> Result<Partial> {
    let image = Image::load(store, manifest)?;
    tracing::debug!(%manifest, layers = image.manifest.layers().len(), "base image loaded");
    ensure_layer_dirs(store, &image, bounds)?;
    Ok(Partial {
        layers: image.manifest.layers().clone(),
        config: image.config,
    })
}

/// Turns a root filesystem (a directory, or a tar optionally gzip/zstd compressed) into one
/// reproducible layer: blob in `blobs/`, layer dir in `layers/`. Returns the blob's
/// descriptor and the diff_id. Anything else (a FIFO, a device) is refused before it is
/// read: it could block or never end. The archive, and a directory's tar, obey `bounds`
/// (a cached import passed them when it was made).
pub fn import_rootfs(
    store: &Store,
    path: &Path,
    compression: Compression,
    epoch: u64,
    bounds: &Bounds,
) -> Result<(Descriptor, Digest)> {
    let archive = match host_file::open_file_or_dir(path) {
        Ok(FileOrDir::Dir) => None,
        Ok(FileOrDir::File(file, st)) => Some((file, st)),
        Err(Refused::Kind(kind)) => {
            return Err(BuildError::RootfsKind {
                path: path.into(),
                kind,
            })
        }
        Err(Refused::Io(e)) => {
            return Err(BuildError::BadBase {
                path: path.into(),
                problem: BaseProblem::Unreadable(e),
            })
        }
    };
    let is_dir = archive.is_none();
    let key = archive
        .as_ref()
        .and_then(|(file, st)| tarball_key(file, st, compression, epoch));
    if let Some(hit) = key
        .as_ref()
        .map(|k| store.cached_step(k))
        .transpose()?
        .flatten()
    {
        if let (Some(layer), Some((_, diff_id))) = (hit.layer.clone(), hit.content()) {
            return Ok((layer, diff_id));
        }
    }
    let staging = store.temp_dir("import")?;
    let dir = staging.path().join("layer");
    std::fs::create_dir(&dir).map_err(StoreError::io("create", &dir))?;
    let limits = ApplyLimits::from(bounds);
    if let Some((mut file, _)) = archive {
        // An archive is unpacked first, so the blob is kiln's own reproducible tar of it.
        layer::apply_layer(&mut file, "", &dir, &[], &limits)?;
    }
    let source = if is_dir { path } else { dir.as_path() };
    let mut blob = store.new_blob()?;
    let written = layer::write_layer(source, &mut blob, compression, &TarOptions { epoch })?;
    let (digest, size) = blob.commit(Some(&written.digest))?;
    if !store.has_layer(&written.diff_id) {
        if is_dir {
            // The layer dir is made from the blob, so it holds exactly what the image holds.
            let mut blob = store.open_blob(&digest)?;
            layer::apply_layer(&mut blob, compression.media_type(), &dir, &[], &limits)?;
        }
        store.commit_layer(&dir, &written.diff_id)?;
    }
    let media_type = MediaType::from(compression.media_type());
    let layer = oci::descriptor(media_type, &digest, size);
    if let Some(key) = key {
        store.record_step(&StepRecord {
            key: key.clone(),
            layer: Some(layer.clone()),
            diff_id: Some(written.diff_id.clone()),
            created_by: format!("kiln import {}", path.display()),
        })?;
    }
    Ok((layer, written.diff_id))
}

/// The build-cache key of importing the open tarball `file` (`st` its `fstat`): its
/// canonical path and identity on disk (device, inode, size, modification and change times
/// — any write moves the change time) plus the layer format. `None` for a file changed in
/// the last two seconds, whose times may not yet tell a later write apart (the hash memo's
/// rule), or whose path cannot be told.
fn tarball_key(file: &File, st: &FileStat, compression: Compression, epoch: u64) -> Option<Digest> {
    let ctime_nsec = st.st_ctime_nsec.clamp(0, 999_999_999) as u32;
    let changed =
        std::time::UNIX_EPOCH + std::time::Duration::new(st.st_ctime.max(0) as u64, ctime_nsec);
    if changed.elapsed().ok()? < std::time::Duration::from_secs(2) {
        return None;
    }
    let path = fd_path(file.as_fd()).ok()?;
    let identity = format!(
        "kiln rootfs tarball v1\0{}\0{} {} {} {}.{} {}.{}\0{} {epoch}",
        String::from_utf8_lossy(&path),
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec,
        st.st_ctime,
        st.st_ctime_nsec,
        compression.media_type(),
    );
    Some(Digest::of_bytes(identity.as_bytes()))
}

/// Copies the image named `tag` (or the only image) of the OCI layout at `dir` into the
/// store, checking every document and blob as a pull does ([`image::incoming`]), and
/// returns its manifest digest.
fn import_oci_layout(
    store: &Store,
    dir: &Path,
    tag: Option<&str>,
    bounds: &Bounds,
) -> Result<Digest> {
    let layout = Layout { store, dir, bounds };
    let index_bytes = read_layout_file(&dir.join("index.json"), bounds.document_size)
        .map_err(|e| layout.bad(BaseProblem::Index(e)))?;
    incoming::check_document(Role::Index, "index.json", index_bytes.len() as u64, bounds)
        .map_err(|e| layout.refused(e))?;
    let index: ImageIndex =
        serde_json::from_slice(&index_bytes).map_err(|e| layout.bad(BaseProblem::NotAnIndex(e)))?;
    let mut desc = pick_manifest(&index, tag)
        .map_err(|p| layout.bad(p))?
        .clone();
    let mut followed = IndexPath::default();
    while is_index(&desc) {
        let digest = Digest::try_from(&desc)?;
        followed
            .enter(&digest, bounds)
            .map_err(|e| layout.refused(e))?;
        let bytes = layout.copy_document(Described::new(Role::Index, &digest, &desc))?;
        let nested: ImageIndex = serde_json::from_slice(&bytes).map_err(|source| {
            layout.bad(BaseProblem::BadIndex {
                digest: digest.clone(),
                source,
            })
        })?;
        desc = pick_platform(&nested).ok_or_else(|| {
            layout.bad(BaseProblem::NoPlatform {
                arch: image::go_arch(),
                digest: digest.clone(),
            })
        })?;
    }
    let manifest = Digest::try_from(&desc)?;
    let bytes = layout.copy_document(Described::new(Role::Manifest, &manifest, &desc))?;
    let parsed: ImageManifest = serde_json::from_slice(&bytes).map_err(|source| {
        layout.bad(BaseProblem::BadManifest {
            digest: manifest.clone(),
            source,
        })
    })?;
    incoming::check_manifest(&parsed, desc.size(), bounds).map_err(|e| layout.refused(e))?;
    let config = incoming::config_of(&parsed).map_err(|e| layout.refused(e))?;
    let config_digest = config.digest.clone();
    let config_bytes = layout.copy_document(config)?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|source| image::ImageError::BadDocument {
            what: "image config",
            digest: config_digest,
            source,
        })?;
    incoming::check_diff_ids(&parsed, config.rootfs.diff_ids.len())
        .map_err(|e| layout.refused(e))?;
    for layer in incoming::layers_of(&parsed).map_err(|e| layout.refused(e))? {
        layout.copy_blob(&layer)?;
    }
    Ok(manifest)
}

fn is_index(desc: &Descriptor) -> bool {
    matches!(
        desc.media_type().to_string().as_str(),
        oci::MEDIA_TYPE_INDEX | oci::MEDIA_TYPE_DOCKER_LIST
    )
}

/// An OCI layout being copied into the store.
struct Layout<'a> {
    store: &'a Store,
    dir: &'a Path,
    bounds: &'a Bounds,
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

    /// Copies a document (index, manifest, config) into the store and returns its bytes; its
    /// descriptor's size is checked against the bound before anything is read.
    fn copy_document(&self, blob: Described) -> Result<Vec<u8>> {
        let what = blob.digest.to_string();
        incoming::check_document(blob.role, &what, blob.size, self.bounds)
            .map_err(|e| self.refused(e))?;
        let digest = self.copy_blob(&blob)?;
        Ok(self.store.read_blob(&digest, self.bounds.document_size)?)
    }

    /// Copies one blob into the store unless it is there: the file must have the
    /// descriptor's size (checked before it is read) and digest (checked while it streams).
    fn copy_blob(&self, blob: &Described) -> Result<Digest> {
        let digest = blob.digest.clone();
        let mismatch = |source_name, found| {
            self.refused(IncomingError::SizeMismatch {
                blob: blob.clone(),
                source_name,
                found,
            })
        };
        if self.store.has_blob(&digest) {
            let stored = self.store.blob_size(&digest)?;
            if stored != blob.size {
                return Err(mismatch("the blob in kiln's store", Found::Exactly(stored)));
            }
            return Ok(digest);
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
            return Err(mismatch("the file", Found::Exactly(on_disk)));
        }
        let mut w = self.store.new_blob()?;
        let copied = io::copy(&mut file.take(blob.size + 1), &mut w)
            .map_err(StoreError::io("copy", &path))?;
        if copied != blob.size {
            // The file changed while it was read.
            return Err(mismatch("the file", Found::Exactly(copied)));
        }
        match w.commit(Some(&digest)) {
            Ok((digest, _)) => Ok(digest),
            Err(StoreError::DigestMismatch { actual, .. }) => {
                Err(self.refused(IncomingError::DigestMismatch {
                    blob: blob.clone(),
                    actual,
                }))
            }
            Err(e) => Err(e.into()),
        }
    }
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
