//! The build cache: what each build step produced, found again by the step's key.
//!
//! Exists so a rebuild can reuse a step's layer without running the step. The key is
//! computed by `build` (a hash of everything the step's result depends on); the store only
//! keeps the answer. On disk, one small JSON document per step:
//!
//! ```text
//! $ROOT/cache/steps/<key hex>.json   {"key": "sha256:…", "layer": DESCRIPTOR | null,
//!                                     "diff_id": "sha256:…" | null, "created_by": "…"}
//! $ROOT/cache/mounts/<id hex>/       persistent `cache:` mount directories of run steps
//! $ROOT/cache/<kind>/<id hex>        other build-cache documents (e.g. `builds/`: the last
//!                                     build of each stage, to explain cache misses)
//! $ROOT/cache/users/<id hex>          user lookups in images' layers, remembered for
//!                                     `kiln run` (see kiln-container's `passwd`)
//! ```
//!
//! A record refers to a blob (`layer.digest`) and a layer dir (`layers/<diff_id hex>`), and
//! is a gc root for both. A record is written only after its layer is committed, and a hit
//! is trusted only when both the blob and the layer dir are still there, so a record never
//! hands out missing content. The file's mtime is the time of its last use (touched on
//! every hit), which `kiln gc` may use to expire old entries. Records are replaced
//! atomically, so concurrent builds of the same spec can share the cache.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};

use super::fsutil::{remove_tree, write_atomic, write_atomic_unsynced};
use super::{Digest, Result, Store, StoreError};

/// What one build step produced. A record whose digests break the grammar does not
/// deserialise, so it is unreadable: a miss, and no gc root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's cache key.
    pub key: Digest,
    /// The step's layer; `None` for a step that changed nothing.
    pub layer: Option<Descriptor>,
    /// The layer's diff_id, naming its layer dir.
    pub diff_id: Option<Digest>,
    /// The history entry's `created_by`, for `kiln build --plan` and debugging.
    pub created_by: String,
}

impl StepRecord {
    /// The digests this record keeps alive: its blob and its layer dir's diff_id.
    pub fn content(&self) -> Option<(Digest, Digest)> {
        let layer = self.layer.as_ref()?;
        let blob = Digest::try_from(layer).ok()?;
        Some((blob, self.diff_id.clone()?))
    }
}

/// The `kind` of [`Store::read_cache_file`] under which kiln remembers user lookups in
/// layers. They name layer dirs, so gc forgets them all when it removes one.
pub const USER_LOOKUPS: &str = "users";

impl Store {
    pub fn cache_dir(&self) -> PathBuf {
        self.root().join("cache")
    }

    fn step_records_dir(&self) -> PathBuf {
        self.cache_dir().join("steps")
    }

    fn step_record_path(&self, key: &Digest) -> PathBuf {
        self.step_records_dir().join(format!("{}.json", key.hex()))
    }

    /// The persistent directory of a `cache:` mount, created on first use: root-owned and
    /// 1777 like `/tmp`, so steps running as any user can keep their cache there (the store
    /// root is 0700: nobody outside kiln reaches it).
    pub fn cache_mount_dir(&self, id: &Digest) -> Result<PathBuf> {
        let dir = self.cache_dir().join("mounts").join(id.hex());
        if !dir.is_dir() {
            let parent = self.cache_dir().join("mounts");
            fs::create_dir_all(&parent).map_err(StoreError::io("create", &parent))?;
            let staged = self.temp_dir("cache-mount")?;
            let fresh = staged.path().join("dir");
            fs::create_dir(&fresh).map_err(StoreError::io("create", &fresh))?;
            fs::set_permissions(&fresh, fs::Permissions::from_mode(0o1777))
                .map_err(StoreError::io("chmod", &fresh))?;
            // Renamed into place, so a concurrent build never sees it half set up; if another
            // build got there first, its dir is as good.
            match fs::rename(&fresh, &dir) {
                Ok(()) => {}
                Err(_) if dir.is_dir() => {}
                Err(e) => return Err(StoreError::io("create", &dir)(e)),
            }
        }
        Ok(dir)
    }

    /// The record for `key`, if there is one whose content is still in the store. A hit
    /// touches the record, marking it used.
    pub fn cached_step(&self, key: &Digest) -> Result<Option<StepRecord>> {
        let path = self.step_record_path(key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(%key, "cache miss: no record");
                return Ok(None);
            }
            Err(e) => return Err(StoreError::io("read", &path)(e)),
        };
        // A record that does not parse (a crash cannot make one, a user can) is a miss:
        // the step runs and the record is rewritten.
        let Ok(record) = serde_json::from_slice::<StepRecord>(&bytes) else {
            tracing::debug!(%key, path = %path.display(), "cache miss: record does not parse");
            return Ok(None);
        };
        if record.key != *key {
            tracing::debug!(%key, path = %path.display(), "cache miss: record is for another key");
            return Ok(None);
        }
        if record.layer.is_some() {
            match record.content() {
                Some((blob, diff_id)) if self.has_blob(&blob) && self.has_layer(&diff_id) => {}
                _ => {
                    tracing::debug!(%key, "cache miss: the record's layer is gone");
                    return Ok(None);
                }
            }
        }
        tracing::debug!(%key, layer = ?record.content().map(|(blob, _)| blob.to_string()), "cache hit");
        touch(&path);
        Ok(Some(record))
    }

    /// Remembers what a step produced. Its layer must already be committed.
    pub fn record_step(&self, record: &StepRecord) -> Result<()> {
        let dir = self.step_records_dir();
        fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        let bytes = serde_json::to_vec(record).expect("a step record serialises");
        write_atomic(self, &self.step_record_path(&record.key), &bytes)?;
        tracing::debug!(key = %record.key, "cache record written");
        Ok(())
    }

    /// [`Store::record_step`] for several steps, with one wait for the disk instead of one
    /// per record (the records of a run of steps a registry cache lent a build).
    pub fn record_steps(&self, records: &[StepRecord]) -> Result<()> {
        let dir = self.step_records_dir();
        fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        for record in records {
            let bytes = serde_json::to_vec(record).expect("a step record serialises");
            write_atomic_unsynced(self, &self.step_record_path(&record.key), &bytes)?;
        }
        self.sync_filesystem()?;
        tracing::debug!(count = records.len(), "cache records written");
        Ok(())
    }

    /// Every readable step record (for gc and fsck); unreadable ones are skipped.
    pub fn step_records(&self) -> Result<Vec<StepRecord>> {
        let dir = self.step_records_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io("list", &dir)(e)),
        };
        let mut records = Vec::new();
        for entry in entries.flatten() {
            if let Ok(bytes) = fs::read(entry.path()) {
                if let Ok(record) = serde_json::from_slice::<StepRecord>(&bytes) {
                    records.push(record);
                }
            }
        }
        Ok(records)
    }

    /// A small document of the build cache other than a step record (`kind` is a folder
    /// under `cache/`, e.g. `builds`), by id; `None` when there is none.
    pub fn read_cache_file(&self, kind: &str, id: &Digest) -> Result<Option<Vec<u8>>> {
        let path = self.cache_dir().join(kind).join(id.hex());
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("read", &path)(e)),
        }
    }

    /// Replaces a build cache document atomically; concurrent writers: the last one wins.
    pub fn write_cache_file(&self, kind: &str, id: &Digest, bytes: &[u8]) -> Result<()> {
        let dir = self.cache_dir().join(kind);
        fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        write_atomic(self, &dir.join(id.hex()), bytes)
    }

    /// Drops the whole build cache: step records, cache mounts, and the advisory documents
    /// (last builds, context hash memos, listings of stage copies). Returns how many step records there were.
    pub fn clear_build_cache(&self) -> Result<usize> {
        let count = self.step_records()?.len();
        for kind in [
            "steps",
            "mounts",
            "builds",
            "context",
            "stage-copies",
            USER_LOOKUPS,
        ] {
            remove_tree(&self.cache_dir().join(kind))?;
        }
        Ok(count)
    }
}

/// Marks a record as used now. Best effort: a read-only store still gets its hits.
fn touch(path: &std::path::Path) {
    if let Ok(file) = fs::File::options().append(true).open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::MediaType;

    fn record() -> StepRecord {
        let blob = Digest::of_bytes(b"blob");
        StepRecord {
            key: Digest::of_bytes(b"key"),
            layer: Some(crate::oci::descriptor(MediaType::ImageLayerZstd, &blob, 4)),
            diff_id: Some(Digest::of_bytes(b"tar")),
            created_by: "run: true".into(),
        }
    }

    #[test]
    fn records_keep_their_json_form() {
        let r = record();
        let json = serde_json::to_string(&r).unwrap();
        let layer = serde_json::to_string(r.layer.as_ref().unwrap()).unwrap();
        let expected = format!(
            r#"{{"key":"{}","layer":{layer},"diff_id":"{}","created_by":"run: true"}}"#,
            r.key,
            r.diff_id.as_ref().unwrap(),
        );
        assert_eq!(json, expected);
        assert_eq!(serde_json::from_str::<StepRecord>(&json).unwrap(), r);
    }

    #[test]
    fn a_record_with_a_bad_digest_is_unreadable() {
        let json = serde_json::to_string(&record()).unwrap();
        let bad_key = json.replacen(&record().key.to_string(), "sha256:short", 1);
        assert!(serde_json::from_str::<StepRecord>(&bad_key).is_err());
        let diff_id = record().diff_id.unwrap().to_string();
        let bad_diff_id = json.replacen(&diff_id, &diff_id.to_uppercase(), 1);
        assert!(serde_json::from_str::<StepRecord>(&bad_diff_id).is_err());
    }
}
