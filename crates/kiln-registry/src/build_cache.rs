//! The build cache shared through a registry: `kiln build --cache-to REF` and
//! `--cache-from REF`, BuildKit's registry cache in kiln's form.
//!
//! Exists so that a second machine (a CI runner with an empty store) can rebuild an
//! unchanged spec by pulling layers instead of running steps. A cache is one OCI manifest:
//! its config blob is a small JSON document of step records (cache key → layer descriptor
//! and diff_id, the same [`StepRecord`]s the local cache keeps) and its layers are every
//! layer a record names, so the registry keeps them (and its garbage collection sees them
//! referenced) and a pull of a record's layer is a plain blob fetch from that repository.
//!
//! What a cache says is checked as a pull checks an image: the manifest and the document
//! are bounded, the document must hash to its descriptor, a record may only name a layer
//! the manifest lists, and a layer must hash to its digest and unpack to its diff_id. A
//! cache chooses which layer a step gets, as a base image chooses its files: `--cache-from`
//! names a source the user trusts that far.

use std::collections::HashMap;
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageManifest, ImageManifestBuilder, MediaType};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::manifest::{self, Kind};
use super::push::{push_manifest, Outgoing};
use super::transport::{read_body, Client};
use super::unpack::LayerJob;
use super::{block_on, RegistryError, Result, Settings};
use kiln_image::incoming::{self, Described, IncomingError, Role};
use kiln_progress::Progress;
use kiln_store::oci::{descriptor, MEDIA_TYPE_MANIFEST};
use kiln_store::{Digest, Reference, StepRecord, Store};

pub use super::push::Pushed;

/// The media type of a cache's config blob, and the manifest's `artifactType`.
pub const CACHE_MEDIA_TYPE: &str = "application/vnd.dev.kiln.build-cache.v1+json";

/// The document format this kiln writes and reads.
const CACHE_VERSION: u32 = 1;

/// A cache's config blob.
#[derive(Debug, Serialize, Deserialize)]
struct CacheDocument {
    version: u32,
    records: Vec<StepRecord>,
}

/// The step records of one `--cache-from` reference, checked against its manifest.
#[derive(Debug, Clone)]
pub struct RemoteCache {
    /// Where the cache is, as the user named it; its layers are fetched from there.
    pub reference: Reference,
    /// How to reach it.
    pub settings: Settings,
    records: HashMap<Digest, StepRecord>,
}

impl RemoteCache {
    /// The record of the step with cache key `key`, if the cache has one.
    pub fn get(&self, key: &Digest) -> Option<&StepRecord> {
        self.records.get(key)
    }

    /// How many step records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Fetches and unpacks, from the cache's repository, the layers of `stack` (bottom
    /// first: a stage's image up to and including layers this cache lent it) that the
    /// store lacks. Returns how many blobs were fetched.
    pub fn pull_layers(
        &self,
        store: &Store,
        stack: &[(Descriptor, Digest)],
        progress: Arc<dyn Progress>,
    ) -> Result<usize> {
        let of = stack.len();
        let jobs = stack
            .iter()
            .enumerate()
            .map(|(i, (desc, diff_id))| {
                let role = Role::Layer { n: i + 1, of };
                Ok(LayerJob {
                    blob: Described::new(role, &Digest::try_from(desc)?, desc),
                    diff_id: diff_id.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        super::pull::pull_layer_stack(store, &self.settings, &self.reference, &jobs, progress)
    }
}

/// Reads the cache `reference` names. A reference that names no manifest is
/// [`RegistryError::NotFound`], which a build treats as an empty cache.
pub fn fetch_cache(settings: &Settings, reference: &Reference) -> Result<RemoteCache> {
    let bounds = &settings.config.bounds;
    let name = reference.to_string();
    let refused = |source| RegistryError::incoming(name.clone(), source);
    let not_a_cache = |why: String| RegistryError::BadManifest {
        reference: name.clone(),
        why: format!("{why}: not a kiln build cache (kiln build --cache-to {name} makes one)"),
    };
    let (manifest, document) = block_on(async {
        let client = Client::new(settings, reference, false)?;
        let tag_or_digest = match (&reference.digest, &reference.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        };
        let doc =
            manifest::fetch(&client, &tag_or_digest, reference.digest.as_ref(), bounds).await?;
        if doc.kind != Kind::Manifest {
            return Err(not_a_cache(format!("it is an index ({})", doc.media_type)));
        }
        let manifest: ImageManifest = serde_json::from_slice(&doc.bytes)
            .map_err(|e| not_a_cache(format!("its manifest does not parse: {e}")))?;
        let config_type = manifest.config().media_type().to_string();
        if config_type != CACHE_MEDIA_TYPE {
            return Err(not_a_cache(format!("its config is a {config_type}")));
        }
        incoming::check_manifest(&manifest, doc.bytes.len() as u64, bounds).map_err(refused)?;
        let config = incoming::config_of(&manifest).map_err(refused)?;
        incoming::check_document(
            Role::Config,
            &config.digest.to_string(),
            config.size,
            bounds,
        )
        .map_err(refused)?;
        let bytes = fetch_document(&client, &config).await?;
        Ok((manifest, bytes))
    })?;
    let document: CacheDocument = serde_json::from_slice(&document)
        .map_err(|e| not_a_cache(format!("its records do not parse: {e}")))?;
    if document.version != CACHE_VERSION {
        return Err(not_a_cache(format!(
            "its format is version {}, this kiln reads version {CACHE_VERSION} (a newer kiln wrote it?)",
            document.version
        )));
    }
    let records = usable_records(&manifest, document.records);
    Ok(RemoteCache {
        reference: reference.clone(),
        settings: settings.clone(),
        records,
    })
}

/// The records whose layer the manifest lists (exactly: digest, size and media type) with
/// a diff_id, and those of steps that made no layer; the others are passed over, so a
/// cache can never make kiln fetch a blob the manifest does not name.
fn usable_records(
    manifest: &ImageManifest,
    records: Vec<StepRecord>,
) -> HashMap<Digest, StepRecord> {
    let listed = |layer: &Descriptor| {
        manifest.layers().iter().any(|l| {
            l.digest() == layer.digest()
                && l.size() == layer.size()
                && l.media_type() == layer.media_type()
        })
    };
    records
        .into_iter()
        .filter(|r| match (&r.layer, &r.diff_id) {
            (None, _) => true,
            (Some(layer), Some(_)) => listed(layer),
            (Some(_), None) => false,
        })
        .map(|r| (r.key.clone(), r))
        .collect()
}

/// A small blob (the cache's config) read whole, within its checked size, and verified.
async fn fetch_document(client: &Client, blob: &Described) -> Result<Vec<u8>> {
    let url = client.url(&format!("blobs/{}", blob.digest));
    let what = format!("blob {}", blob.digest);
    let response = client
        .idempotent(Method::GET, &what, false, |http| http.get(url.clone()))
        .await?;
    let limit = usize::try_from(blob.size).unwrap_or(usize::MAX);
    let bytes = read_body(response, limit, &client.deadline(blob.size)).await?;
    let actual = Digest::of_bytes(&bytes);
    if actual != blob.digest || bytes.len() as u64 != blob.size {
        return Err(RegistryError::incoming(
            format!("{}/{}", client.registry(), client.repository()),
            IncomingError::DigestMismatch {
                blob: blob.clone(),
                actual,
            },
        ));
    }
    Ok(bytes)
}

/// Pushes `records` (the step records of a build) to `target` as a build cache: the
/// layers the registry lacks, the records document, then the manifest. The document and
/// manifest are written to the store first (as blobs nothing names, which `kiln gc`
/// removes), so that a push reads every blob from a file.
pub fn push_cache(
    store: &Store,
    settings: &Settings,
    target: &Reference,
    records: &[StepRecord],
    progress: Arc<dyn Progress>,
) -> Result<Pushed> {
    let mut records = records.to_vec();
    records.sort_by_key(|r| r.key.to_string());
    records.dedup_by(|a, b| a.key == b.key);
    let mut layers: Vec<Descriptor> = Vec::new();
    for layer in records.iter().filter_map(|r| r.layer.as_ref()) {
        if !layers.iter().any(|l| l.digest() == layer.digest()) {
            layers.push(layer.clone());
        }
    }
    let document = serde_json::to_vec(&CacheDocument {
        version: CACHE_VERSION,
        records,
    })
    .expect("step records serialise");
    let config_digest = store.put_blob(&document)?;
    let config = descriptor(
        MediaType::Other(CACHE_MEDIA_TYPE.into()),
        &config_digest,
        document.len() as u64,
    );
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(CACHE_MEDIA_TYPE.into()))
        .config(config.clone())
        .layers(layers.clone())
        .build()
        .expect("all required manifest fields are set");
    let bytes = serde_json::to_vec(&manifest).expect("a manifest serialises");
    let digest = store.put_blob(&bytes)?;
    let mut blobs = vec![config];
    blobs.extend(layers);
    let outgoing = Outgoing {
        digest,
        bytes,
        media_type: MEDIA_TYPE_MANIFEST.to_owned(),
        blobs,
    };
    push_manifest(store, settings, target, outgoing, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(content: &[u8]) -> Descriptor {
        descriptor(
            MediaType::ImageLayerZstd,
            &Digest::of_bytes(content),
            content.len() as u64,
        )
    }

    fn record(key: &[u8], layer: Option<Descriptor>, diff_id: Option<&[u8]>) -> StepRecord {
        StepRecord {
            key: Digest::of_bytes(key),
            layer,
            diff_id: diff_id.map(Digest::of_bytes),
            created_by: "run: true".into(),
        }
    }

    fn manifest_of(layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifestBuilder::default()
            .schema_version(2u32)
            .config(descriptor(
                MediaType::Other(CACHE_MEDIA_TYPE.into()),
                &Digest::of_bytes(b"{}"),
                2,
            ))
            .layers(layers)
            .build()
            .unwrap()
    }

    #[test]
    fn a_record_may_only_name_a_layer_the_manifest_lists_exactly() {
        let listed = layer(b"listed");
        let manifest = manifest_of(vec![listed.clone()]);
        let mut other_size = listed.clone();
        other_size.set_size(listed.size() + 1);
        let mut other_type = listed.clone();
        other_type.set_media_type(MediaType::ImageLayerGzip);
        let records = vec![
            record(b"ok", Some(listed.clone()), Some(b"diff")),
            record(b"no layer", None, None),
            record(b"unlisted", Some(layer(b"elsewhere")), Some(b"diff")),
            record(b"other size", Some(other_size), Some(b"diff")),
            record(b"other type", Some(other_type), Some(b"diff")),
            record(b"no diff_id", Some(listed), None),
        ];
        let usable = usable_records(&manifest, records);
        let mut keys: Vec<_> = usable.keys().cloned().collect();
        keys.sort_by_key(|k| k.to_string());
        let mut expected = vec![Digest::of_bytes(b"ok"), Digest::of_bytes(b"no layer")];
        expected.sort_by_key(|k| k.to_string());
        assert_eq!(keys, expected);
    }
}
