//! The image a build starts from: scratch, an image in the store, an OCI layout on disk
//! ([`super::oci_layout`]), or a root filesystem (directory or tarball).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use nix::sys::stat::FileStat;
use oci_spec::image::{Descriptor, MediaType};

use super::host_file::{self, FileOrDir, Refused};
use super::{BaseProblem, BuildError, BuildOptions, Partial, Progress, Result};
use kiln_container::ensure_layer_dirs;
use kiln_image::{rfc3339, History, Image, ImageConfig};
use kiln_layer::source_path::fd_path;
use kiln_layer::{self as layer, ApplyLimits, Compression, TarOptions};
use kiln_registry as registry;
use kiln_spec::From;
use kiln_store::reference::DOCKER_HUB;
use kiln_store::{oci, Bounds, Digest, Reference, StepRecord, Store, StoreError};

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
            let manifest = super::oci_layout::import(
                store,
                path,
                tag.as_deref(),
                &opts.bounds,
                &mut std::collections::HashMap::new(),
            )?;
            from_image(store, &manifest, &Bounds::CEILINGS)
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
    let mut blob = store.new_blob()?.write_back_as_written();
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
