//! Where kiln last saw each blob on each registry, so a push can ask the registry to
//! mount a blob from another repository instead of uploading it again (a base image
//! pulled from `reg/base` and pushed to `reg/app` shares its layers with `reg/base`).
//!
//! The record is a hint, nothing depends on it being right: a registry that lacks the
//! blob, or declines the mount, answers with an upload session and kiln uploads as usual.
//! It lives in `$ROOT/cache/registry-blobs.json`; it is rewritten whole through a
//! temp file and a rename, so concurrent kilns may lose each other's additions but never
//! leave a torn file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_store::{Digest, Store};

/// Repositories remembered per blob; the most recent first.
const MAX_SOURCES: usize = 8;

/// registry → blob digest → repositories holding it. A digest that breaks the grammar
/// damages the file, and a damaged hint file is an empty one.
type Record = BTreeMap<String, BTreeMap<Digest, Vec<String>>>;

fn record_path(store: &Store) -> PathBuf {
    store.root().join("cache").join("registry-blobs.json")
}

fn load(path: &Path) -> Record {
    // A missing or damaged hint file is an empty one.
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// Repositories of `registry` other than `except` known to hold `digest`.
pub(super) fn sources(store: &Store, registry: &str, digest: &Digest, except: &str) -> Vec<String> {
    load(&record_path(store))
        .get(registry)
        .and_then(|blobs| blobs.get(digest))
        .map(|repos| repos.iter().filter(|r| *r != except).cloned().collect())
        .unwrap_or_default()
}

/// Notes that `repository` on `registry` holds `digests`.
pub(super) fn remember(
    store: &Store,
    registry: &str,
    repository: &str,
    digests: &[Digest],
) -> std::io::Result<()> {
    let path = record_path(store);
    let mut record = load(&path);
    let blobs = record.entry(registry.to_owned()).or_default();
    for digest in digests {
        let repos = blobs.entry(digest.clone()).or_default();
        repos.retain(|r| r != repository);
        repos.insert(0, repository.to_owned());
        repos.truncate(MAX_SOURCES);
    }
    save(&path, &record)
}

fn save(path: &Path, record: &Record) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Written beside the target so the rename stays on one filesystem; the pid keeps two
    // kilns from writing the same temp file.
    let temp = dir.join(format!(".registry-blobs.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&temp)
        .and_then(|mut f| f.write_all(&serde_json::to_vec(record).map_err(std::io::Error::other)?));
    match written.and_then(|()| std::fs::rename(&temp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        Digest::from_hex(&c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn remembers_other_repositories_most_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (digest('a'), digest('b'));
        assert!(sources(&store, "reg:5000", &a, "app").is_empty());
        remember(&store, "reg:5000", "base", &[a.clone(), b.clone()]).unwrap();
        remember(&store, "reg:5000", "other", std::slice::from_ref(&a)).unwrap();
        remember(&store, "reg:5000", "app", std::slice::from_ref(&a)).unwrap();
        assert_eq!(sources(&store, "reg:5000", &a, "app"), ["other", "base"]);
        assert_eq!(sources(&store, "reg:5000", &b, "app"), ["base"]);
        assert!(sources(&store, "elsewhere", &a, "app").is_empty());
        for i in 0..20 {
            remember(
                &store,
                "reg:5000",
                &format!("r{i}"),
                std::slice::from_ref(&b),
            )
            .unwrap();
        }
        assert_eq!(sources(&store, "reg:5000", &b, "x").len(), MAX_SOURCES);
    }

    #[test]
    fn a_damaged_record_counts_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        std::fs::write(record_path(&store), b"{not json").unwrap();
        assert!(sources(&store, "reg", &digest('a'), "app").is_empty());
        remember(&store, "reg", "base", &[digest('a')]).unwrap();
        assert_eq!(sources(&store, "reg", &digest('a'), "app"), ["base"]);
        // Digests are keyed by their text, as before they were typed.
        let text = std::fs::read_to_string(record_path(&store)).unwrap();
        assert_eq!(text, format!(r#"{{"reg":{{"{}":["base"]}}}}"#, digest('a')));
    }
}
