//! `kiln fsck`: checks that the store keeps the promises the rest of kiln relies on, and
//! names every place where it does not.
//!
//! Everything in the store is trusted once committed: a blob is not hashed again when it
//! is used, a layer dir is mounted as a lowerdir as it is, a pull skips the blobs it
//! already has. A disk error, a hand edit or a bug breaks that trust silently; fsck finds
//! it. It only reads, and holds a [`super::ContentGuard`] so that no gc removes content
//! while it looks (builds and pulls go on).
//!
//! Checks: `oci-layout` and `index.json` parse; every blob hashes to its name (streamed,
//! in parallel); every image in `index.json` and every container's image loads (through
//! the caller's [`ImageReader`]) and has its blobs and layer dirs; every build-cache
//! record's content exists; every name in `blobs/sha256/` and `layers/` is a digest; no
//! staging in `tmp/` was left by a kiln that is gone. Content that nothing references is
//! not a problem: `kiln gc` reclaims it.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::gc::{container_roots, index_roots, list_dir, stale_staging, ImageReader, ImageRoot};
use super::{read_document, Digest, Result, Store};

/// The kinds of problem fsck reports; each has its own remedy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// `oci-layout` or `index.json` is missing or does not parse.
    BadLayout,
    /// A blob's content does not hash to its name, or cannot be read.
    CorruptBlob,
    /// A manifest, config or layer blob that an image or container needs is missing.
    MissingBlob,
    /// An image's manifest or config does not load.
    BadImage,
    /// A layer dir that an image or container needs is missing.
    MissingLayerDir,
    /// A build-cache record refers to a blob or layer dir that is missing.
    StaleCacheRecord,
    /// Staging in `tmp/` left by a kiln process that is gone.
    StaleStaging,
    /// A `kiln run --rm` container whose kiln was killed before it could remove it.
    AbandonedContainer,
    /// A kiln cgroup whose kiln is gone (reported by the CLI, which knows cgroupfs).
    StaleCgroup,
    /// A file in `blobs/sha256/` or `layers/` whose name is not a digest.
    UnknownFile,
    /// `oci-layout` or `index.json` is missing in a store that holds no blob, layer dir or
    /// container: a kiln was killed while it created the store, and the next kiln command
    /// that opens it for writing (any but fsck and gc) writes them.
    UnfinishedStore,
}

/// One problem: what kind, where, and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub path: PathBuf,
    pub message: String,
}

/// What fsck looked at and what it found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FsckReport {
    /// Blobs whose content was hashed.
    pub blobs: usize,
    /// Distinct image manifests loaded (tagged, untagged, containers' images).
    pub images: usize,
    /// Layer dirs present.
    pub layer_dirs: usize,
    /// Sorted by kind, then path.
    pub problems: Vec<Problem>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

fn problem(kind: ProblemKind, path: &Path, message: String) -> Problem {
    Problem {
        kind,
        path: path.to_owned(),
        message,
    }
}

impl Store {
    /// Checks the whole store; see the module doc. `Err` only when fsck itself cannot
    /// proceed (the store cannot be locked or listed); everything else is a [`Problem`].
    pub fn fsck(&self, reader: &ImageReader<'_>) -> Result<FsckReport> {
        let _guard = self.content_guard()?;
        let mut report = FsckReport::default();
        let mut problems: Vec<Problem> = check_layout_file(self).into_iter().collect();
        if unfinished(self) {
            problems = vec![problem(
                ProblemKind::UnfinishedStore,
                self.root(),
                "the store's creation was interrupted (its oci-layout or index.json is \
                 missing and it holds nothing yet)"
                    .into(),
            )];
        }

        let mut roots = match index_roots(self) {
            Ok(roots) => roots,
            Err(_) if unfinished(self) => Vec::new(),
            Err(e) => {
                problems.push(problem(
                    ProblemKind::BadLayout,
                    &self.index_path(),
                    e.to_string(),
                ));
                Vec::new()
            }
        };
        roots.extend(container_roots(self)?);
        report.images = check_images(self, reader, roots, &mut problems);
        problems.extend(check_cache_records(self)?);
        report.blobs = check_blobs(self, &mut problems)?;
        report.layer_dirs = check_layer_dir_names(self, &mut problems)?;
        problems.extend(
            self.abandoned_containers()?
                .into_iter()
                .map(|(dir, state)| {
                    let message = match state {
                        Some(state) => format!(
                            "container {} ({}) was started with --rm by a kiln process that is gone",
                            state.name, state.image
                        ),
                        None => format!(
                            "container {} was being created by a kiln process that is gone",
                            dir.id
                        ),
                    };
                    problem(ProblemKind::AbandonedContainer, &dir.path, message)
                }),
        );
        problems.extend(stale_staging(self)?.into_iter().map(|entry| {
            problem(
                ProblemKind::StaleStaging,
                &entry.path,
                format!(
                    "tmp/{} was left behind by a kiln process that is gone",
                    entry.name
                ),
            )
        }));

        problems.sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));
        report.problems = problems;
        Ok(report)
    }
}

fn check_layout_file(store: &Store) -> Option<Problem> {
    let path = store.root().join("oci-layout");
    let why = match read_document(&path) {
        Err(e) => e.to_string(),
        Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Err(e) => e.to_string(),
            Ok(doc) if doc.get("imageLayoutVersion").is_some_and(|v| v.is_string()) => return None,
            Ok(_) => "it has no imageLayoutVersion".into(),
        },
    };
    Some(problem(
        ProblemKind::BadLayout,
        &path,
        format!("{} is not a valid OCI layout file: {why}", path.display()),
    ))
}

/// A store whose creation was interrupted: a layout file missing, and nothing in it.
fn unfinished(store: &Store) -> bool {
    let missing = !store.root().join("oci-layout").exists() || !store.index_path().exists();
    let empty = |dir: PathBuf| {
        std::fs::read_dir(dir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    };
    missing
        && empty(store.blobs_dir())
        && empty(store.layers_dir())
        && empty(store.containers_dir())
}

/// Loads each distinct image once and checks that its blobs and layer dirs exist. Returns
/// how many images were loaded.
fn check_images(
    store: &Store,
    reader: &ImageReader<'_>,
    roots: Vec<ImageRoot>,
    problems: &mut Vec<Problem>,
) -> usize {
    let mut seen = HashSet::new();
    for root in roots {
        let label = root.label;
        let manifest = match root.manifest {
            Ok(digest) => digest,
            Err(bad) => {
                problems.push(problem(
                    ProblemKind::BadImage,
                    &store.index_path(),
                    format!("{label}: invalid manifest digest {:?}", bad.0),
                ));
                continue;
            }
        };
        if !seen.insert(manifest.clone()) {
            continue;
        }
        if !store.has_blob(&manifest) {
            problems.push(problem(
                ProblemKind::MissingBlob,
                &store.blob_path(&manifest),
                format!("{label}: its manifest {manifest} is missing"),
            ));
            continue;
        }
        match reader(store, &manifest) {
            Err(why) => problems.push(problem(
                ProblemKind::BadImage,
                &store.blob_path(&manifest),
                format!("{label}: {why}"),
            )),
            Ok(content) => {
                for blob in content.blobs.iter().filter(|b| !store.has_blob(b)) {
                    problems.push(problem(
                        ProblemKind::MissingBlob,
                        &store.blob_path(blob),
                        format!("{label} needs blob {blob}, which is missing"),
                    ));
                }
                for diff_id in content.layer_dirs.iter().filter(|d| !store.has_layer(d)) {
                    problems.push(problem(
                        ProblemKind::MissingLayerDir,
                        &store.layer_dir(diff_id),
                        format!(
                            "{label} needs layer dir layers/{} (diff_id {diff_id}), which is missing",
                            Store::layer_name(diff_id)
                        ),
                    ));
                }
            }
        }
    }
    seen.len()
}

fn check_cache_records(store: &Store) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    for record in store.step_records()? {
        let Some((blob, diff_id)) = record.content() else {
            continue;
        };
        let missing = [
            (!store.has_blob(&blob)).then(|| (store.blob_path(&blob), format!("blob {blob}"))),
            (!store.has_layer(&diff_id))
                .then(|| (store.layer_dir(&diff_id), format!("layer dir of {diff_id}"))),
        ];
        for (path, what) in missing.into_iter().flatten() {
            problems.push(problem(
                ProblemKind::StaleCacheRecord,
                &path,
                format!(
                    "build-cache record {} refers to {what}, which is missing",
                    record.key
                ),
            ));
        }
    }
    Ok(problems)
}

/// Hashes every blob in parallel; reports mismatches and names that are not digests.
/// Returns how many blobs were hashed.
fn check_blobs(store: &Store, problems: &mut Vec<Problem>) -> Result<usize> {
    let mut to_hash = Vec::new();
    for (name, path, meta) in list_dir(&store.blobs_dir())? {
        match Digest::from_hex(&name) {
            Ok(digest) if meta.is_file() => to_hash.push((digest, path)),
            _ => problems.push(problem(
                ProblemKind::UnknownFile,
                &path,
                format!("blobs/sha256/{name} is not a blob kiln wrote (its name is not a digest)"),
            )),
        }
    }
    problems.par_extend(
        to_hash
            .par_iter()
            .filter_map(|(digest, path)| check_blob_content(digest, path)),
    );
    Ok(to_hash.len())
}

fn check_blob_content(expected: &Digest, path: &Path) -> Option<Problem> {
    let message = match hash_file(path) {
        Ok(actual) if &actual == expected => return None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Ok(actual) => format!("blob {expected} is corrupt: its content hashes to {actual}"),
        Err(e) => format!("blob {expected} cannot be read: {e}"),
    };
    Some(problem(ProblemKind::CorruptBlob, path, message))
}

fn hash_file(path: &Path) -> io::Result<Digest> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(Digest::from_hasher(hasher)),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reports entries of `layers/` that are not digest-named dirs; returns how many are.
fn check_layer_dir_names(store: &Store, problems: &mut Vec<Problem>) -> Result<usize> {
    let mut count = 0;
    for (name, path, meta) in list_dir(&store.layers_dir())? {
        if meta.is_dir() && Digest::from_hex(&name).is_ok() {
            count += 1;
        } else {
            problems.push(problem(
                ProblemKind::UnknownFile,
                &path,
                format!("layers/{name} is not a layer dir kiln wrote (its name is not a digest)"),
            ));
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::{ImageContent, Reference};

    fn reader(_: &Store, _: &Digest) -> std::result::Result<ImageContent, crate::ImageReadError> {
        Ok(ImageContent::default())
    }

    fn kinds(report: &FsckReport) -> Vec<ProblemKind> {
        report.problems.iter().map(|p| p.kind).collect()
    }

    #[test]
    fn a_fresh_store_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        store.put_blob(b"content").unwrap();
        let report = store.fsck(&reader).unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!(report.blobs, 1);
    }

    #[test]
    fn an_interrupted_creation_is_an_unfinished_store_until_it_holds_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        // A kiln killed between creating the dirs and writing the layout files.
        fs::remove_file(store.index_path()).unwrap();
        fs::remove_file(store.root().join("oci-layout")).unwrap();
        let report = store.fsck(&reader).unwrap();
        assert_eq!(kinds(&report), [ProblemKind::UnfinishedStore]);
        // The next kiln command finishes it.
        let store = Store::open(store.root()).unwrap();
        assert!(store.fsck(&reader).unwrap().is_clean());
        // With content, a lost index.json is damage.
        store.put_blob(b"content").unwrap();
        fs::remove_file(store.index_path()).unwrap();
        let report = store.fsck(&reader).unwrap();
        assert_eq!(kinds(&report), [ProblemKind::BadLayout]);
    }

    #[test]
    fn corrupt_blobs_bad_names_and_broken_layout_files_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        let good = store.put_blob(b"good").unwrap();
        let bad = store.put_blob(b"bad").unwrap();
        fs::write(store.blob_path(&bad), b"bAd").unwrap();
        fs::write(store.blobs_dir().join("notes.txt"), b"hi").unwrap();
        fs::create_dir(store.layers_dir().join("oops")).unwrap();
        fs::write(store.root().join("oci-layout"), b"{}").unwrap();

        let report = store.fsck(&reader).unwrap();
        assert_eq!(
            kinds(&report),
            [
                ProblemKind::BadLayout,
                ProblemKind::CorruptBlob,
                ProblemKind::UnknownFile,
                ProblemKind::UnknownFile
            ]
        );
        assert_eq!(report.problems[1].path, store.blob_path(&bad));
        assert!(report.problems[1]
            .message
            .contains(&Digest::of_bytes(b"bAd").to_string()));
        assert!(store.has_blob(&good), "fsck must not remove anything");
    }

    #[test]
    fn missing_manifests_layer_dirs_and_cache_content_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s")).unwrap();
        let manifest = store.put_blob(b"manifest").unwrap();
        let gone = Digest::of_bytes(b"gone");
        let desc = crate::oci::descriptor(oci_spec::image::MediaType::ImageManifest, &gone, 4);
        store
            .set_tag(&Reference::local("lost").unwrap(), &desc)
            .unwrap();
        let mut with_manifest = desc.clone();
        with_manifest.set_digest((&manifest).into());
        store
            .set_tag(&Reference::local("layerless").unwrap(), &with_manifest)
            .unwrap();
        let layer = Digest::of_bytes(b"layer");
        let reader = |_: &Store, _: &Digest| {
            Ok(ImageContent {
                blobs: vec![],
                layer_dirs: vec![Digest::of_bytes(b"layer")],
            })
        };
        let mut record_layer = desc.clone();
        record_layer.set_digest((&layer).into());
        store
            .record_step(&crate::StepRecord {
                key: Digest::of_bytes(b"k"),
                layer: Some(record_layer),
                diff_id: Some(layer.clone()),
                created_by: "run".into(),
            })
            .unwrap();

        let report = store.fsck(&reader).unwrap();
        assert_eq!(
            kinds(&report),
            [
                ProblemKind::MissingBlob,
                ProblemKind::MissingLayerDir,
                ProblemKind::StaleCacheRecord,
                ProblemKind::StaleCacheRecord
            ],
            "{:#?}",
            report.problems
        );
        assert!(report.problems[0].message.contains("localhost/lost:latest"));
        assert!(report.problems[1]
            .message
            .contains("localhost/layerless:latest"));
    }
}
