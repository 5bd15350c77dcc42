//! Where blobs, manifests and tags live: in memory (one registry per test, gone on drop) or
//! in a directory (so the binary can keep images across restarts, and a test can look).
//!
//! Both share one key layout, so the registry logic is written once over a tiny key-value
//! backend:
//! `blobs/<alg>/<hex>` (content, shared by all repositories),
//! `repositories/<name>/_layers/<alg>/<hex>` (empty: the blob belongs to that repository),
//! `repositories/<name>/_manifests/<alg>/<hex>` (manifest bytes),
//! `repositories/<name>/_types/<alg>/<hex>` (its media type),
//! `repositories/<name>/_tags/<tag>` (the digest the tag points to).
//! Names, tags and digests are validated before they get here, so keys never escape the root.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Reference};

enum Backend {
    Memory(BTreeMap<String, Vec<u8>>),
    Directory(PathBuf),
}

impl Backend {
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match self {
            Backend::Memory(map) => Ok(map.get(key).cloned()),
            Backend::Directory(root) => match std::fs::read(root.join(key)) {
                Ok(data) => Ok(Some(data)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    fn put(&mut self, key: &str, data: &[u8]) -> io::Result<()> {
        match self {
            Backend::Memory(map) => {
                map.insert(key.to_string(), data.to_vec());
                Ok(())
            }
            Backend::Directory(root) => write_atomically(&root.join(key), data),
        }
    }

    fn delete(&mut self, key: &str) -> io::Result<bool> {
        match self {
            Backend::Memory(map) => Ok(map.remove(key).is_some()),
            Backend::Directory(root) => match std::fs::remove_file(root.join(key)) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            },
        }
    }

    /// Names of the entries directly under `dir` (a key prefix without trailing slash).
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        match self {
            Backend::Memory(map) => {
                let prefix = format!("{dir}/");
                Ok(map
                    .range(prefix.clone()..)
                    .map(|(k, _)| k)
                    .take_while(|k| k.starts_with(&prefix))
                    .filter_map(|k| k[prefix.len()..].split('/').next())
                    .map(str::to_string)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect())
            }
            Backend::Directory(root) => match std::fs::read_dir(root.join(dir)) {
                Ok(entries) => entries
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .filter(|name| !name.as_ref().is_ok_and(|n| n.starts_with('.')))
                    .collect(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(e),
            },
        }
    }
}

/// Writes through a temporary file and a rename, so a reader never sees half a blob.
fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = parent.join(format!(".{name}.{}.tmp", crate::random_hex(8)));
    std::fs::write(&temporary, data)?;
    std::fs::rename(&temporary, path)
}

/// A manifest as stored: its bytes are served exactly as they were pushed.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

pub struct Store {
    backend: Backend,
}

impl Store {
    pub fn in_memory() -> Store {
        Store {
            backend: Backend::Memory(BTreeMap::new()),
        }
    }

    pub fn in_directory(root: &Path) -> io::Result<Store> {
        std::fs::create_dir_all(root)?;
        Ok(Store {
            backend: Backend::Directory(root.to_path_buf()),
        })
    }

    fn repo_key(repo: &str, kind: &str, rest: &str) -> String {
        format!("repositories/{repo}/{kind}/{rest}")
    }

    pub fn put_blob(&mut self, repo: &str, digest: &Digest, data: &[u8]) -> io::Result<()> {
        self.backend
            .put(&format!("blobs/{}", digest.storage_key()), data)?;
        self.link_blob(repo, digest)
    }

    /// Makes an existing blob part of `repo` (a cross-repository mount).
    pub fn link_blob(&mut self, repo: &str, digest: &Digest) -> io::Result<()> {
        let key = Store::repo_key(repo, "_layers", &digest.storage_key());
        self.backend.put(&key, b"")
    }

    pub fn has_blob(&self, repo: &str, digest: &Digest) -> io::Result<bool> {
        let key = Store::repo_key(repo, "_layers", &digest.storage_key());
        Ok(self.backend.get(&key)?.is_some())
    }

    /// The blob's bytes, if it belongs to `repo`.
    pub fn blob(&self, repo: &str, digest: &Digest) -> io::Result<Option<Vec<u8>>> {
        if !self.has_blob(repo, digest)? {
            return Ok(None);
        }
        self.backend.get(&format!("blobs/{}", digest.storage_key()))
    }

    pub fn unlink_blob(&mut self, repo: &str, digest: &Digest) -> io::Result<bool> {
        let key = Store::repo_key(repo, "_layers", &digest.storage_key());
        self.backend.delete(&key)
    }

    pub fn put_manifest(
        &mut self,
        repo: &str,
        manifest: &StoredManifest,
        tag: Option<&str>,
    ) -> io::Result<()> {
        let key = manifest.digest.storage_key();
        self.backend
            .put(&Store::repo_key(repo, "_manifests", &key), &manifest.bytes)?;
        self.backend.put(
            &Store::repo_key(repo, "_types", &key),
            manifest.media_type.as_bytes(),
        )?;
        if let Some(tag) = tag {
            let digest = manifest.digest.to_string();
            self.backend
                .put(&Store::repo_key(repo, "_tags", tag), digest.as_bytes())?;
        }
        Ok(())
    }

    pub fn manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> io::Result<Option<StoredManifest>> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => match self.tag(repo, tag)? {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        let key = digest.storage_key();
        let Some(bytes) = self
            .backend
            .get(&Store::repo_key(repo, "_manifests", &key))?
        else {
            return Ok(None);
        };
        let media_type = self
            .backend
            .get(&Store::repo_key(repo, "_types", &key))?
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .unwrap_or_default();
        Ok(Some(StoredManifest {
            digest,
            media_type,
            bytes,
        }))
    }

    pub fn tag(&self, repo: &str, tag: &str) -> io::Result<Option<Digest>> {
        let stored = self.backend.get(&Store::repo_key(repo, "_tags", tag))?;
        Ok(stored.and_then(|d| String::from_utf8_lossy(&d).parse().ok()))
    }

    pub fn tags(&self, repo: &str) -> io::Result<Vec<String>> {
        let mut tags = self.backend.list(&format!("repositories/{repo}/_tags"))?;
        tags.sort();
        Ok(tags)
    }

    pub fn delete_tag(&mut self, repo: &str, tag: &str) -> io::Result<bool> {
        self.backend.delete(&Store::repo_key(repo, "_tags", tag))
    }

    /// Deletes a manifest and every tag pointing to it.
    pub fn delete_manifest(&mut self, repo: &str, digest: &Digest) -> io::Result<bool> {
        let key = digest.storage_key();
        if !self
            .backend
            .delete(&Store::repo_key(repo, "_manifests", &key))?
        {
            return Ok(false);
        }
        self.backend
            .delete(&Store::repo_key(repo, "_types", &key))?;
        for tag in self.tags(repo)? {
            if self.tag(repo, &tag)?.as_ref() == Some(digest) {
                self.delete_tag(repo, &tag)?;
            }
        }
        Ok(true)
    }

    /// Every manifest of `repo`, for the referrers API.
    pub fn manifests(&self, repo: &str) -> io::Result<Vec<StoredManifest>> {
        let mut found = Vec::new();
        for algorithm in self
            .backend
            .list(&format!("repositories/{repo}/_manifests"))?
        {
            let dir = format!("repositories/{repo}/_manifests/{algorithm}");
            for hex in self.backend.list(&dir)? {
                let reference = format!("{algorithm}:{hex}").parse().map(Reference::Digest);
                if let Ok(reference) = reference {
                    found.extend(self.manifest(repo, &reference)?);
                }
            }
        }
        Ok(found)
    }

    /// A repository exists once anything was pushed to it.
    pub fn repository_exists(&self, repo: &str) -> io::Result<bool> {
        // Nested repositories are directories too; only `_*` entries are this one's own.
        let entries = self.backend.list(&format!("repositories/{repo}"))?;
        Ok(entries.iter().any(|e| e.starts_with('_')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(mut store: Store) {
        let blob = Digest::sha256(b"layer");
        store.put_blob("a/b", &blob, b"layer").unwrap();
        assert_eq!(store.blob("a/b", &blob).unwrap().unwrap(), b"layer");
        assert!(store.blob("other", &blob).unwrap().is_none());
        store.link_blob("other", &blob).unwrap();
        assert!(store.has_blob("other", &blob).unwrap());

        let manifest = StoredManifest {
            digest: Digest::sha256(b"{}"),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes: b"{}".to_vec(),
        };
        store.put_manifest("a/b", &manifest, Some("v1")).unwrap();
        store.put_manifest("a/b", &manifest, Some("v2")).unwrap();
        assert_eq!(store.tags("a/b").unwrap(), ["v1", "v2"]);
        assert!(store.tags("a").unwrap().is_empty(), "no tags leak upwards");
        let got = store
            .manifest("a/b", &Reference::Tag("v2".into()))
            .unwrap()
            .unwrap();
        assert_eq!(got.media_type, manifest.media_type);
        assert_eq!(store.manifests("a/b").unwrap().len(), 1);
        assert!(store.delete_manifest("a/b", &manifest.digest).unwrap());
        assert!(store.tags("a/b").unwrap().is_empty());
        assert!(store.repository_exists("a/b").unwrap());
        assert!(!store.repository_exists("nothing").unwrap());
        assert!(
            !store.repository_exists("a").unwrap(),
            "a/b does not make a exist"
        );
    }

    #[test]
    fn memory_store_behaves() {
        exercise(Store::in_memory());
    }

    #[test]
    fn directory_store_behaves() {
        let dir = tempfile::tempdir().unwrap();
        exercise(Store::in_directory(dir.path()).unwrap());
        assert!(dir.path().join("blobs/sha256").is_dir());
    }
}
