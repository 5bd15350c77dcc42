//! A runc bundle: a flat copy of the image's tree as `rootfs/` and the `config.json` of
//! exactly the container `kiln run` would start with the same settings.
//!
//! The bundle goes through the same [`container_spec`] as a started container, so the two
//! cannot drift; only the overlay is replaced by a copy, because runc is handed a plain
//! directory and must find it there after kiln has exited.

use std::path::Path;

use kiln_layer as layer;
use kiln_runtime::{self as runtime, Overlay};
use kiln_store::Store;

use super::config::ContainerConfig;
use super::container::container_spec;
use super::error::{ContainerError, Result};
use super::source::Source;

/// Writes the bundle of `config` into `bundle`, which must not exist or be empty. The path
/// must be absolute: the rootfs is written by a thread that mounts the image, whose working
/// directory is `/`.
pub fn write_bundle(
    store: &Store,
    source: &Source,
    config: ContainerConfig,
    bundle: &Path,
) -> Result<()> {
    prepare_bundle_dir(bundle)?;
    // The spec needs a container dir for its overlay; the bundle's rootfs is a flat copy.
    let (dir, _lock) = store.create_container()?;
    debug_assert!(bundle.is_absolute(), "write_bundle needs an absolute path");
    let written = (|| {
        let (mut spec, _) = container_spec(store, source, config, &dir, (false, false))?;
        // The /etc files runc binds must outlive kiln: they live in the bundle.
        spec.state_dir = bundle.to_owned();
        runtime::write_state_files(&spec)?;
        flatten_rootfs(&spec.overlay, &bundle.join("rootfs"))?;
        let config = runtime::oci_config(&spec)?;
        let json = serde_json::to_vec_pretty(&config).map_err(ContainerError::BundleConfig)?;
        std::fs::write(bundle.join("config.json"), json).map_err(ContainerError::BundleIo)
    })();
    let _ = store.remove_container(&dir);
    written
}

/// The runtime's spec of a container `kiln run` would make of `source` with `config`,
/// without making one (the user resolved in the image, the process as it would start):
/// what `kiln kube` describes.
pub fn spec_without_container(
    store: &Store,
    source: &Source,
    config: ContainerConfig,
) -> Result<runtime::ContainerSpec> {
    // The spec needs a container dir for its overlay (the user is read from the image).
    let (dir, _lock) = store.create_container()?;
    let spec = container_spec(store, source, config, &dir, (false, false)).map(|(spec, _)| spec);
    let _ = store.remove_container(&dir);
    spec
}

fn prepare_bundle_dir(dir: &Path) -> Result<()> {
    let empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if !empty {
        return Err(ContainerError::BundleNotEmpty(dir.to_owned()));
    }
    std::fs::create_dir_all(dir.join("rootfs")).map_err(|source| ContainerError::BundleDir {
        path: dir.to_owned(),
        source,
    })
}

/// Copies the image's merged tree into `dest`: the layer writer streams it as a tar and the
/// layer applier unpacks it, so the copy has exactly the image's metadata.
fn flatten_rootfs(overlay: &Overlay, dest: &Path) -> Result<()> {
    let (reader, writer) = std::io::pipe().map_err(ContainerError::BundleIo)?;
    runtime::with_overlay(overlay, |merged| {
        std::thread::scope(|s| {
            let producer = s.spawn(move || {
                // If the reader stops early, writes fail with EPIPE rather than killing kiln.
                let mut sigpipe = nix::sys::signal::SigSet::empty();
                sigpipe.add(nix::sys::signal::Signal::SIGPIPE);
                let _ = sigpipe.thread_block();
                let mut writer = writer;
                layer::write_tar(merged, &mut writer, &layer::TarOptions { epoch: u64::MAX })
            });
            let applied = {
                let mut reader = reader;
                layer::apply_layer(
                    &mut reader,
                    layer::MEDIA_TYPE_TAR,
                    dest,
                    &[],
                    &Default::default(),
                )
            };
            let written = producer.join().expect("tar writer thread");
            written?;
            applied?;
            Ok(())
        })
    })?
}
