//! A Docker archive (`docker save`, skopeo's and podman's `docker-archive:`) turned into
//! an OCI layout once it is all staged, so that one import checks both kinds alike.
//!
//! A Docker archive names its files in `manifest.json` (configs, layer tars under any
//! name) and its tags in `RepoTags`; a layout names blobs by digest and tags in
//! `index.json`. Nothing here trusts the files: the import then checks diff_ids, sizes and
//! bounds as for any layout.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use super::super::archive::{blob_name, failed};
use super::super::Failure;
use super::{staged_path, Staged};
use kiln_store::oci::{OCI_LAYOUT, REF_NAME};
use kiln_store::{Digest, Reference};

/// One image of a Docker archive's `manifest.json`.
#[derive(serde::Deserialize)]
struct DockerImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Turns the staged Docker archive in `dir` into an OCI layout beside it: every file its
/// `manifest.json` names becomes a blob under its digest, each image an OCI manifest, each
/// tag an `index.json` entry. What the files are is then checked by the import as for any
/// layout (diff_ids against the unpacked layers, sizes, bounds).
pub(super) fn to_oci(dir: &Path, aliases: &HashMap<String, String>) -> Result<(), Failure> {
    let bad = |why: String| Failure::user(format!("not a Docker archive: {why}"));
    let path = dir.join("manifest.json");
    let bytes =
        kiln_store::read_document(&path).map_err(failed(format!("read {}", path.display())))?;
    let images: Vec<DockerImage> =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("manifest.json: {e}")))?;
    fs::create_dir_all(dir.join("blobs/sha256"))
        .map_err(failed(format!("create {}", dir.display())))?;
    let mut blobs = HashMap::new();
    let mut entries = Vec::new();
    for image in &images {
        let real = |name: &String| aliases.get(name).unwrap_or(name).clone();
        let config = as_blob(dir, &real(&image.config), &mut blobs)?;
        let mut layers = Vec::new();
        for layer in &image.layers {
            let (digest, size, media_type) = as_blob(dir, &real(layer), &mut blobs)?;
            layers.push(serde_json::json!({ "mediaType": media_type, "digest": digest.to_string(), "size": size }));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config.0.to_string(),
                "size": config.1,
            },
            "layers": layers,
        });
        let manifest = serde_json::to_vec(&manifest).expect("JSON values serialise");
        let digest = Digest::of_bytes(&manifest);
        let to = dir.join(blob_name(&digest));
        fs::write(&to, &manifest).map_err(failed(format!("write {}", to.display())))?;
        let descriptor = |name: Option<&String>| {
            let mut entry = serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest.to_string(),
                "size": manifest.len(),
            });
            if let Some(name) = name {
                entry["annotations"] = serde_json::json!({ REF_NAME: name });
            }
            entry
        };
        match image.repo_tags.as_deref().unwrap_or_default() {
            [] => entries.push(descriptor(None)),
            tags => entries.extend(tags.iter().map(|t| descriptor(Some(&docker_name(t))))),
        }
    }
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": entries });
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("JSON values serialise"),
    )
    .map_err(failed(format!("write {}", dir.display())))?;
    fs::write(dir.join("oci-layout"), OCI_LAYOUT)
        .map_err(failed(format!("write {}", dir.display())))
}

/// A Docker archive's `RepoTags` entry as the full name docker and podman read it as: one
/// without a registry is Docker Hub's (`ubuntu:22.04` is `docker.io/library/ubuntu:22.04`),
/// where a name of kiln's own would be `localhost`'s. An invalid one is kept as it is, for
/// `image_names` to refuse by the name the archive gave.
fn docker_name(tag: &str) -> String {
    Reference::parse(tag, kiln_store::reference::DOCKER_HUB)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| tag.to_owned())
}

/// The file `name` of a staged Docker archive moved to `blobs/sha256/` under its digest:
/// (digest, size, layer media type from its first bytes). A name given twice (a layer two
/// images share) is moved once.
fn as_blob(
    dir: &Path,
    name: &str,
    moved: &mut HashMap<String, (Digest, u64, &'static str)>,
) -> Result<(Digest, u64, &'static str), Failure> {
    if let Some(found) = moved.get(name) {
        return Ok(found.clone());
    }
    if !matches!(staged_path(name), Some(Staged::File(_))) || name == "manifest.json" {
        return Err(Failure::user(format!(
            "not a Docker archive: manifest.json names {name:?}"
        )));
    }
    let path = dir.join(name);
    let mut file = File::open(&path).map_err(|_| {
        Failure::user(format!(
            "not a Docker archive: manifest.json names {name:?}, which it does not hold"
        ))
    })?;
    let size = file
        .metadata()
        .map_err(failed(format!("read {}", path.display())))?
        .len();
    let mut first = [0u8; 4];
    let n = file
        .read(&mut first)
        .map_err(failed(format!("read {}", path.display())))?;
    let media_type = match kiln_layer::detect_compression(&first[..n]) {
        Some(kiln_layer::Compression::Gzip) => kiln_store::oci::MEDIA_TYPE_TAR_GZIP,
        Some(kiln_layer::Compression::Zstd) => kiln_store::oci::MEDIA_TYPE_TAR_ZSTD,
        None => kiln_store::oci::MEDIA_TYPE_TAR,
    };
    let mut file = File::open(&path).map_err(failed(format!("read {}", path.display())))?;
    let digest =
        Digest::of_reader(&mut file).map_err(failed(format!("read {}", path.display())))?;
    let to = dir.join(blob_name(&digest));
    fs::rename(&path, &to).map_err(failed(format!("move {}", path.display())))?;
    let found = (digest, size, media_type);
    moved.insert(name.to_owned(), found.clone());
    Ok(found)
}
