//! OCI image documents: the image config, manifests, and images in the store.
//!
//! Exists so the rest of kiln talks about "an image" (manifest + config + layers) rather
//! than JSON files. Manifests, indexes and descriptors are the `oci-spec` crate's types.
//! The image *config* is kiln's own [`ImageConfig`], a superset of the OCI config: oci-spec's
//! type has no `Healthcheck` (a Docker extension that docker and podman honour) and drops
//! fields it does not know, and kiln promises that nothing in a spec or a base image is
//! silently dropped. Unknown fields are kept in `extra` and written back unchanged.
//!
//! Every document is written as canonical JSON (sorted keys), so the same inputs always give
//! the same digests.

mod config;
pub mod incoming;

use oci_spec::image::{Descriptor, ImageManifest, ImageManifestBuilder, MediaType, SCHEMA_VERSION};

pub use config::{
    go_arch, rfc3339, Empty, Healthcheck, History, ImageConfig, RootFs, RuntimeConfig, MAX_EPOCH,
};

use kiln_store::oci::{
    descriptor, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_MANIFEST, ORIGIN_ANNOTATION, ORIGIN_BUILD,
    RUN_DEFAULTS_ANNOTATION,
};
use kiln_store::{canonical_json, Digest, Store, StoreError, MAX_DOCUMENT};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what} {digest} is not valid JSON for its type: {source}")]
    BadDocument {
        what: &'static str,
        digest: Digest,
        source: serde_json::Error,
    },
    #[error("manifest {digest} has media type {found:?}, expected {expected:?}")]
    MediaType {
        digest: Digest,
        found: String,
        expected: String,
    },
    #[error("manifest {0} lists {1} layers but its config lists {2} diff_ids")]
    LayerCount(Digest, usize, usize),
    #[error(transparent)]
    BadDigest(#[from] kiln_store::digest::BadDigest),
    /// The `run:` defaults kept with a tag do not parse: running without them would drop
    /// the limits and dropped capabilities they hold.
    #[error(
        "the stored run settings ({RUN_DEFAULTS_ANNOTATION} in index.json) are unreadable: {0}"
    )]
    RunDefaults(#[source] serde_json::Error),
    /// The run settings an image carries (its config's [`RUN_SETTINGS_LABEL`]) do not
    /// parse: as above, and the image must be fixed where it was made.
    #[error("the image's run settings (its label {RUN_SETTINGS_LABEL}) are unreadable: {0}")]
    RunSettingsLabel(#[source] serde_json::Error),
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// A layer of an image: the blob's descriptor and the digest of its uncompressed tar.
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Descriptor,
    pub digest: Digest,
    pub diff_id: Digest,
}

/// An image read from the store.
#[derive(Debug, Clone)]
pub struct Image {
    pub digest: Digest,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config: ImageConfig,
}

impl Image {
    /// Reads and checks the image whose manifest is `manifest_digest`.
    pub fn load(store: &Store, manifest_digest: &Digest) -> Result<Image> {
        let bytes = store.read_blob(manifest_digest, MAX_DOCUMENT)?;
        Self::from_documents(manifest_digest, &bytes, |config_digest| {
            Ok(store.read_blob(config_digest, MAX_DOCUMENT)?)
        })
    }

    /// [`Image::load`] on the manifest's bytes, with `read_config` giving the config's
    /// bytes for its digest. Not an API: the entry point of the fuzz target `fuzz/`.
    #[doc(hidden)]
    pub fn from_documents(
        manifest_digest: &Digest,
        bytes: &[u8],
        read_config: impl FnOnce(&Digest) -> Result<Vec<u8>>,
    ) -> Result<Image> {
        let manifest: ImageManifest = parse_document("manifest", manifest_digest, bytes)?;
        check_manifest_media_type(manifest_digest, &manifest, bytes)?;
        let config_digest = Digest::try_from(manifest.config())?;
        let bytes = read_config(&config_digest)?;
        let config: ImageConfig = parse_document("image config", &config_digest, &bytes)?;
        let image = Image {
            digest: manifest_digest.clone(),
            manifest,
            config_digest,
            config,
        };
        let (layers, diff_ids) = (
            image.manifest.layers().len(),
            image.config.rootfs.diff_ids.len(),
        );
        if layers != diff_ids {
            return Err(ImageError::LayerCount(
                manifest_digest.clone(),
                layers,
                diff_ids,
            ));
        }
        Ok(image)
    }

    /// The image's layers, bottom first.
    pub fn layers(&self) -> Result<Vec<Layer>> {
        self.manifest
            .layers()
            .iter()
            .zip(&self.config.rootfs.diff_ids)
            .map(|(blob, diff_id)| {
                Ok(Layer {
                    blob: blob.clone(),
                    digest: Digest::try_from(blob)?,
                    diff_id: diff_id.clone(),
                })
            })
            .collect()
    }

    /// Total compressed size of the layers, config and manifest, as `kiln images` shows.
    pub fn size(&self) -> u64 {
        let layers: u64 = self.manifest.layers().iter().map(Descriptor::size).sum();
        layers + self.manifest.config().size()
    }
}

/// Writes config and manifest for `layers` and returns the manifest's descriptor.
pub fn write_image(
    store: &Store,
    config: &ImageConfig,
    layers: &[Descriptor],
) -> Result<Descriptor> {
    let config_bytes = canonical_json(config);
    let config_digest = store.put_blob(&config_bytes)?;
    let config_desc = descriptor(
        MediaType::ImageConfig,
        &config_digest,
        config_bytes.len() as u64,
    );
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(layers.to_vec())
        .build()
        .expect("all required manifest fields are set");
    let manifest_bytes = canonical_json(&manifest);
    let digest = store.put_blob(&manifest_bytes)?;
    Ok(descriptor(
        MediaType::ImageManifest,
        &digest,
        manifest_bytes.len() as u64,
    ))
}

/// Where an image's run defaults came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunDefaultsOrigin {
    /// `kiln build` in this store, from the user's own spec.
    Build,
    /// Anything else (pull, load, import, a hand-edited index).
    Elsewhere,
}

/// The config label under which an image carries its spec's `run:` settings wherever it
/// goes (a registry, another store, `docker load`): a label rather than a manifest
/// annotation because Docker's manifests and archives have no annotations, and a label is
/// part of the config, so the image's ID says which settings it was tested with.
pub const RUN_SETTINGS_LABEL: &str = "dev.kiln.run";

/// Puts `run` on `config` as [`RUN_SETTINGS_LABEL`], or takes the label off when `run` is
/// empty (a base image's must not pass for this image's). `env_file:` is left out: its
/// variables are the build machine's files, read into the tag's copy only.
pub fn label_run_settings(config: &mut ImageConfig, run: &kiln_spec::RunDefaults) {
    let portable = kiln_spec::RunDefaults {
        env_file: Vec::new(),
        ..run.clone()
    };
    let labels = &mut config.config.labels;
    match portable == kiln_spec::RunDefaults::default() {
        true => {
            labels.remove(RUN_SETTINGS_LABEL);
        }
        false => {
            let json = serde_json::to_string(&portable).expect("run defaults serialise to JSON");
            labels.insert(RUN_SETTINGS_LABEL.to_owned(), json);
        }
    }
}

/// `manifest` with the spec's `run:` defaults attached (nothing when they are empty),
/// marked as made by `kiln build`.
pub fn with_run_defaults(mut manifest: Descriptor, run: &kiln_spec::RunDefaults) -> Descriptor {
    if *run == kiln_spec::RunDefaults::default() {
        return manifest;
    }
    let json = serde_json::to_string(run).expect("run defaults serialise to JSON");
    let mut annotations = manifest.annotations().clone().unwrap_or_default();
    annotations.insert(RUN_DEFAULTS_ANNOTATION.to_owned(), json);
    annotations.insert(ORIGIN_ANNOTATION.to_owned(), ORIGIN_BUILD.to_owned());
    manifest.set_annotations(Some(annotations));
    manifest
}

/// The `run:` defaults of a tag (empty when there are none) and where they came from: the
/// copy `kiln build` kept with the tag, else the settings the image carries in `config`
/// (from elsewhere, then). Defaults that are there but do not parse are an error, never
/// "no defaults": they may hold limits and dropped capabilities that a container must not
/// silently lose.
pub fn run_defaults(
    manifest: &Descriptor,
    config: &ImageConfig,
) -> Result<(kiln_spec::RunDefaults, RunDefaultsOrigin)> {
    let annotations = manifest.annotations().as_ref();
    let origin = match annotations.and_then(|a| a.get(ORIGIN_ANNOTATION)) {
        Some(value) if value == ORIGIN_BUILD => RunDefaultsOrigin::Build,
        _ => RunDefaultsOrigin::Elsewhere,
    };
    if let Some(json) = annotations.and_then(|a| a.get(RUN_DEFAULTS_ANNOTATION)) {
        let defaults = serde_json::from_str(json).map_err(ImageError::RunDefaults)?;
        return Ok((defaults, origin));
    }
    let defaults = match config.config.labels.get(RUN_SETTINGS_LABEL) {
        None => Default::default(),
        Some(json) => serde_json::from_str(json).map_err(ImageError::RunSettingsLabel)?,
    };
    Ok((defaults, origin))
}

pub(crate) fn parse_document<T: serde::de::DeserializeOwned>(
    what: &'static str,
    digest: &Digest,
    bytes: &[u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::BadDocument {
        what,
        digest: digest.clone(),
        source,
    })
}

/// A manifest must say it is a manifest, and must not also look like an index
/// (CVE-2021-41190: one digest must never mean two different images).
fn check_manifest_media_type(
    digest: &Digest,
    manifest: &ImageManifest,
    bytes: &[u8],
) -> Result<()> {
    let found = manifest
        .media_type()
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    let accepted = [MEDIA_TYPE_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST];
    let raw: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let ambiguous = raw.get("manifests").is_some();
    if (!found.is_empty() && !accepted.contains(&found.as_str())) || ambiguous {
        return Err(ImageError::MediaType {
            digest: digest.clone(),
            found,
            expected: accepted[0].to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    #[test]
    fn written_images_load_back() {
        let (_dir, store) = store();
        let config = ImageConfig::scratch();
        let desc = write_image(&store, &config, &[]).unwrap();
        let image = Image::load(&store, &Digest::try_from(&desc).unwrap()).unwrap();
        assert_eq!(image.config, config);
        assert!(image.layers().unwrap().is_empty());
    }

    #[test]
    fn a_manifest_that_is_also_an_index_is_rejected() {
        // CVE-2021-41190: one digest must not mean two different images.
        let (_dir, store) = store();
        let config = store
            .put_blob(&canonical_json(&ImageConfig::scratch()))
            .unwrap();
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},
            "layers":[],"manifests":[]}}"#
        );
        let digest = store.put_blob(doc.as_bytes()).unwrap();
        assert!(matches!(
            Image::load(&store, &digest),
            Err(ImageError::MediaType { .. })
        ));
    }

    #[test]
    fn run_defaults_travel_with_the_descriptor() {
        let desc = descriptor(MediaType::ImageManifest, &Digest::of_bytes(b"m"), 1);
        let config = ImageConfig::scratch();
        assert_eq!(
            run_defaults(&desc, &config).unwrap().0,
            kiln_spec::RunDefaults::default()
        );
        assert!(with_run_defaults(desc.clone(), &Default::default())
            .annotations()
            .is_none());
        let run = kiln_spec::RunDefaults {
            limits: kiln_spec::Limits {
                memory: Some(64 << 20),
                device_throttles: vec![kiln_spec::DeviceThrottle {
                    kind: kiln_spec::ThrottleKind::DeviceWriteBps,
                    path: "/dev/sda".into(),
                    rate: 1 << 20,
                }],
                ..Default::default()
            },
            cap_drop: vec!["ALL".into()],
            network: Some(kiln_spec::Network::None),
            ..Default::default()
        };
        let stored = with_run_defaults(desc, &run);
        assert_eq!(
            run_defaults(&stored, &config).unwrap(),
            (run, RunDefaultsOrigin::Build)
        );
        // Settings that do not parse are an error, not "no limits".
        let mut broken = stored.clone();
        let mut annotations = broken.annotations().clone().unwrap();
        annotations.insert(
            RUN_DEFAULTS_ANNOTATION.into(),
            "{\"memory\": \"lots\"".into(),
        );
        broken.set_annotations(Some(annotations));
        assert!(matches!(
            run_defaults(&broken, &config),
            Err(ImageError::RunDefaults(_))
        ));
    }

    #[test]
    fn an_image_carries_its_run_settings_in_a_label_without_env_files() {
        let desc = descriptor(MediaType::ImageManifest, &Digest::of_bytes(b"m"), 1);
        let run = kiln_spec::RunDefaults {
            read_only: true,
            env: vec![("A".into(), "1".into())],
            env_file: vec!["/home/me/secret.env".into()],
            ..Default::default()
        };
        let mut config = ImageConfig::scratch();
        label_run_settings(&mut config, &run);
        let label = &config.config.labels[RUN_SETTINGS_LABEL];
        assert!(!label.contains("secret.env"), "{label}");
        // Without the tag's copy (a pulled image), the label is read, as from elsewhere.
        let (read, origin) = run_defaults(&desc, &config).unwrap();
        assert_eq!(origin, RunDefaultsOrigin::Elsewhere);
        assert!(read.read_only && read.env == run.env && read.env_file.is_empty());
        // The tag's copy wins where there is one (a build in this store).
        let built = with_run_defaults(desc.clone(), &run);
        assert_eq!(
            run_defaults(&built, &config).unwrap(),
            (run, RunDefaultsOrigin::Build)
        );
        // A spec without run: takes a base image's label off.
        label_run_settings(&mut config, &Default::default());
        assert!(!config.config.labels.contains_key(RUN_SETTINGS_LABEL));
        // A label that does not parse is an error, not "no settings".
        config
            .config
            .labels
            .insert(RUN_SETTINGS_LABEL.into(), "{".into());
        assert!(matches!(
            run_defaults(&desc, &config),
            Err(ImageError::RunSettingsLabel(_))
        ));
    }

    #[test]
    fn layer_and_diff_id_counts_must_agree() {
        let (_dir, store) = store();
        let mut config = ImageConfig::scratch();
        config.rootfs.diff_ids.push(Digest::of_bytes(b"x"));
        let desc = write_image(&store, &config, &[]).unwrap();
        let loaded = Image::load(&store, &Digest::try_from(&desc).unwrap());
        assert!(matches!(loaded, Err(ImageError::LayerCount(_, 0, 1))));
    }
}
