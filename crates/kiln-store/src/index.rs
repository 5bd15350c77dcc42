//! Tags: `index.json` entries named by the `org.opencontainers.image.ref.name` annotation.

use std::collections::HashMap;

use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, MediaType, SCHEMA_VERSION};

use super::{canonical_json, fsutil, Reference, Result, Store, StoreError, MAX_DOCUMENT, REF_NAME};

/// A tagged image: its normalised reference and the manifest descriptor.
#[derive(Debug, Clone)]
pub struct Tagged {
    pub reference: Reference,
    pub manifest: Descriptor,
}

pub(super) fn empty_index() -> ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::<Descriptor>::new())
        .build()
        .expect("an empty index is valid")
}

fn ref_name(desc: &Descriptor) -> Option<&str> {
    desc.annotations()
        .as_ref()?
        .get(REF_NAME)
        .map(String::as_str)
}

impl Store {
    pub(super) fn index_path(&self) -> std::path::PathBuf {
        self.root().join("index.json")
    }

    pub fn read_index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let bytes = std::fs::read(&path).map_err(StoreError::io("read", &path))?;
        if bytes.len() as u64 > MAX_DOCUMENT {
            return Err(StoreError::Corrupt {
                path,
                why: format!("larger than {} MiB", MAX_DOCUMENT >> 20),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path,
            why: e.to_string(),
        })
    }

    pub(super) fn write_index(&self, index: &ImageIndex) -> Result<()> {
        fsutil::write_atomic(self, &self.index_path(), &canonical_json(index))
    }

    /// Every tagged image, in index order.
    pub fn tags(&self) -> Result<Vec<Tagged>> {
        let index = self.read_index()?;
        Ok(index
            .manifests()
            .iter()
            .filter_map(|d| {
                let reference = Reference::local(ref_name(d)?).ok()?;
                Some(Tagged {
                    reference,
                    manifest: d.clone(),
                })
            })
            .collect())
    }

    /// Finds an image by what a user typed: a name (`hello`, `hello:1`,
    /// `docker.io/library/alpine`), or a manifest digest or its unique hex prefix
    /// (at least 4 digits).
    pub fn find(&self, input: &str) -> Result<Option<Tagged>> {
        let tags = self.tags()?;
        // Names first, as docker does: a tag that looks like hex is still a name.
        for candidate in Reference::candidates(input).unwrap_or_default() {
            if let Some(t) = tags.iter().find(|t| t.reference == candidate) {
                return Ok(Some(t.clone()));
            }
        }
        let hex = input.strip_prefix("sha256:").unwrap_or(input);
        if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut hits = tags
            .iter()
            .filter(|t| t.manifest.digest().digest().starts_with(hex));
        let first = hits.next();
        match first {
            Some(f) if hits.all(|t| t.manifest.digest() == f.manifest.digest()) => {
                Ok(Some(f.clone()))
            }
            _ => Ok(None),
        }
    }

    /// Points `reference` at `manifest`, replacing what it named before. Takes the lock.
    pub fn set_tag(&self, reference: &Reference, manifest: &Descriptor) -> Result<()> {
        let name = reference.to_string();
        let mut desc = manifest.clone();
        let mut annotations = desc.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME.to_owned(), name.clone());
        desc.set_annotations(Some(annotations));
        self.edit_index(|entries| {
            entries.retain(|d| ref_name(d) != Some(&name));
            entries.push(desc);
        })?;
        tracing::debug!(tag = %name, manifest = %manifest.digest(), "tag set");
        Ok(())
    }

    /// Removes a tag. Returns false when it did not exist. Takes the lock.
    pub fn remove_tag(&self, reference: &Reference) -> Result<bool> {
        let name = reference.to_string();
        let mut removed = false;
        self.edit_index(|entries| {
            let before = entries.len();
            entries.retain(|d| ref_name(d) != Some(&name));
            removed = entries.len() != before;
        })?;
        Ok(removed)
    }

    fn edit_index(&self, edit: impl FnOnce(&mut Vec<Descriptor>)) -> Result<()> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let mut entries = index.manifests().clone();
        edit(&mut entries);
        index.set_manifests(entries);
        if index.annotations().as_ref().is_some_and(HashMap::is_empty) {
            index.set_annotations(None);
        }
        self.write_index(&index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    fn manifest(store: &Store, content: &[u8]) -> Descriptor {
        let digest = store.put_blob(content).unwrap();
        crate::oci::descriptor(MediaType::ImageManifest, &digest, content.len() as u64)
    }

    #[test]
    fn find_prefers_names_then_unique_digest_prefixes() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let a = manifest(&store, b"a");
        let b = manifest(&store, b"b");
        store
            .set_tag(&Reference::local("beef").unwrap(), &a)
            .unwrap();
        store
            .set_tag(&Reference::local("other").unwrap(), &b)
            .unwrap();
        let found = |input: &str| store.find(input).unwrap().map(|t| t.reference.to_string());
        assert_eq!(found("beef").as_deref(), Some("localhost/beef:latest"));
        let b_hex = Digest::of_bytes(b"b").hex().to_owned();
        assert_eq!(
            found(&b_hex[..8]).as_deref(),
            Some("localhost/other:latest")
        );
        assert_eq!(
            found(&format!("sha256:{}", &b_hex[..8])).as_deref(),
            Some("localhost/other:latest")
        );
        assert_eq!(found("sha256:0000"), None);
        assert_eq!(found("nope"), None);
        assert_eq!(found("Not A Reference"), None);
    }
}
