//! Garbage collection: removing blobs and layer dirs that nothing needs any more, safely
//! while other kiln processes build, pull and run: gc holds the gc lock exclusively (see
//! `gc_lock` for the content-guard invariant every writer follows) from before it computes
//! what is reachable until it has removed the rest.
//!
//! # Roots
//!
//! - every manifest in `index.json`, tagged or not: the manifest, its config, its layer
//!   blobs, and the layer dirs named by its config's diff_ids;
//! - every container in `containers/`: the same for its image's manifest;
//! - every build-cache step record: its layer blob and layer dir (`kiln gc --cache` drops
//!   the records and the cache mounts first; a [`CacheBudget`] drops the records past it,
//!   see `budget`).
//!
//! The store cannot read image documents (`image` sits above it), so callers pass an
//! [`ImageReader`], which the image module's loader implements. A root that cannot be read
//! stops gc before it removes anything: what that root needs is unknown.
//!
//! A layer dir is removed by renaming it into a staging dir under `tmp/` first, so
//! `layers/` never shows a half-removed dir that a later pull or cache hit would trust as
//! complete; if gc is killed, the next kiln reclaims the staging dir.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::budget::{self, CacheBudget, CacheUsage, Needed};
use super::digest::BadDigest;
use super::{fsutil, Digest, Result, Store, StoreError, REF_NAME};

/// What one image manifest keeps alive besides itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageContent {
    /// The config blob and the layer blobs.
    pub blobs: Vec<Digest>,
    /// The diff_ids that name the image's layer dirs.
    pub layer_dirs: Vec<Digest>,
}

/// Reads what an image manifest references; `Err` says why it cannot be read. Implemented
/// above the store with the image module's loader, whose error type the store cannot name.
pub type ImageReader<'a> =
    dyn Fn(&Store, &Digest) -> std::result::Result<ImageContent, ImageReadError> + 'a;

/// Why an [`ImageReader`] could not read an image: the reader's own error.
pub type ImageReadError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("there is no kiln store at {0}")]
    NoStore(PathBuf),
    #[error(
        "{root} cannot be read, so gc cannot tell what it needs (nothing was removed): {source}"
    )]
    UnreadableRoot {
        root: String,
        source: ImageReadError,
    },
    /// [`GcOptions::no_wait`]: another kiln process is writing to the store.
    #[error("another kiln process is writing to the store")]
    Busy,
}

/// What `kiln gc` is asked to do.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Only report what would be removed.
    pub dry_run: bool,
    /// Drop the build cache (step records and cache mounts) first.
    pub drop_build_cache: bool,
    /// Otherwise drop the step records past this budget first.
    pub budget: CacheBudget,
    /// Give up ([`GcError::Busy`]) rather than wait for other kiln processes.
    pub no_wait: bool,
}

/// One thing gc removed (or would remove).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// A digest for blobs and layer dirs, else the entry's file name.
    pub name: String,
    pub path: PathBuf,
    /// Bytes of file content it held.
    pub bytes: u64,
}

/// What a gc run removed, or with `dry_run` would remove.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub dry_run: bool,
    pub blobs: Vec<Removal>,
    pub layer_dirs: Vec<Removal>,
    /// Leftovers in `tmp/` of kiln processes that are gone.
    pub staging: Vec<Removal>,
    /// `--rm` containers whose kiln was killed (named by container ID).
    pub containers: Vec<Removal>,
    /// Cgroups of kiln processes that are gone, by id. The store knows no cgroupfs: the
    /// caller that cleans them (the CLI) fills this in.
    pub cgroups: Vec<String>,
    /// Build-cache step records dropped (`drop_build_cache`, or past the budget).
    pub cache_records: usize,
    /// Cache-mount directories dropped (`drop_build_cache`).
    pub cache_mounts: Vec<Removal>,
}

impl GcReport {
    /// Total bytes reclaimed.
    pub fn bytes(&self) -> u64 {
        [
            &self.blobs,
            &self.layer_dirs,
            &self.staging,
            &self.containers,
            &self.cache_mounts,
        ]
        .into_iter()
        .flatten()
        .map(|r| r.bytes)
        .sum()
    }
}

/// An image that something needs, named for messages.
pub(super) struct ImageRoot {
    /// `image localhost/hello:latest`, `untagged manifest sha256:…`, `container web`.
    pub label: String,
    pub manifest: std::result::Result<Digest, BadDigest>,
}

impl Store {
    /// A handle on an existing store that creates, cleans and locks nothing, so fsck and gc
    /// see the store exactly as it is.
    pub fn open_existing(root: &Path) -> std::result::Result<Store, GcError> {
        if !root.is_dir() {
            return Err(GcError::NoStore(root.to_owned()));
        }
        Ok(Store {
            root: root.to_owned(),
        })
    }

    /// Removes everything no root needs. `on_wait` is called once if gc has to wait for
    /// other kiln processes to release their [`ContentGuard`](super::ContentGuard)s first.
    pub fn gc(
        &self,
        reader: &ImageReader<'_>,
        options: GcOptions,
        on_wait: &mut dyn FnMut(),
    ) -> std::result::Result<GcReport, GcError> {
        let _lock = match options.no_wait {
            true => self.exclusive_gc_lock_now()?.ok_or(GcError::Busy)?,
            false => self.exclusive_gc_lock(on_wait)?,
        };
        let containers = self
            .abandoned_containers()?
            .into_iter()
            .map(|(dir, _)| Removal {
                bytes: disk_usage(&dir.path),
                name: dir.id,
                path: dir.path,
            })
            .collect();
        if !options.dry_run {
            self.remove_abandoned_containers()?;
        }
        let mut keep = needed_by_images(self, reader)?;
        let mut report = GcReport {
            dry_run: options.dry_run,
            staging: stale_staging(self)?,
            containers,
            ..GcReport::default()
        };
        if options.drop_build_cache {
            report.cache_records = self.step_records()?.len();
            report.cache_mounts = cache_mounts(self)?;
            if !options.dry_run {
                self.clear_build_cache()?;
            }
        } else {
            let records = self.step_records_by_use()?;
            let evicted = match options.budget.is_set() {
                true => budget::evictions(
                    self,
                    &records,
                    &keep,
                    options.budget,
                    std::time::SystemTime::now(),
                ),
                false => Vec::new(),
            };
            report.cache_records = evicted.len();
            for (i, used) in records.iter().enumerate() {
                if evicted.contains(&i) {
                    if !options.dry_run {
                        remove_entry(&used.path)?;
                    }
                } else if let Some((blob, diff_id)) = used.record.content() {
                    keep.blobs.insert(blob);
                    keep.layer_dirs.insert(diff_id);
                }
            }
        }
        report.blobs = unreachable_blobs(self, &keep)?;
        report.layer_dirs = unreachable_layer_dirs(self, &keep)?;
        if !options.dry_run {
            self.remove_garbage(&report)?;
        }
        Ok(report)
    }

    fn remove_garbage(&self, report: &GcReport) -> Result<()> {
        for entry in &report.staging {
            remove_entry(&entry.path)?;
        }
        for blob in &report.blobs {
            remove_entry(&blob.path)?;
        }
        if report.layer_dirs.is_empty() {
            return Ok(());
        }
        fsutil::remove_tree(&self.cache_dir().join(super::cache::USER_LOOKUPS))?;
        let trash = self.temp_dir("gc")?;
        for dir in &report.layer_dirs {
            let target = trash.path().join(&dir.name);
            fs::rename(&dir.path, &target).map_err(StoreError::io("move", &dir.path))?;
        }
        fsutil::remove_tree(trash.path())
    }
}

/// The images in `index.json`, tagged or not, in index order.
pub(super) fn index_roots(store: &Store) -> Result<Vec<ImageRoot>> {
    Ok(store
        .read_index()?
        .manifests()
        .iter()
        .map(|desc| {
            let manifest = Digest::try_from(desc);
            let tag = desc.annotations().as_ref().and_then(|a| a.get(REF_NAME));
            let label = match (tag, &manifest) {
                (Some(tag), _) => format!("image {tag}"),
                (None, Ok(digest)) => format!("untagged manifest {digest}"),
                (None, Err(bad)) => format!("untagged manifest {:?}", bad.0),
            };
            ImageRoot { label, manifest }
        })
        .collect())
}

/// The images of the containers in `containers/`, running or not.
pub(super) fn container_roots(store: &Store) -> Result<Vec<ImageRoot>> {
    Ok(store
        .containers()?
        .into_iter()
        .map(|(_, state)| ImageRoot {
            label: format!("container {}", state.name),
            manifest: Ok(state.image_digest),
        })
        .collect())
}

impl Store {
    /// What the build cache holds beyond what images and containers need (`kiln system
    /// df`, and whether a budget is exceeded).
    pub fn cache_usage(
        &self,
        reader: &ImageReader<'_>,
    ) -> std::result::Result<CacheUsage, GcError> {
        let needed = needed_by_images(self, reader)?;
        Ok(budget::usage(self, &self.step_records_by_use()?, &needed))
    }
}

/// Everything the images (tagged or not) and containers need.
fn needed_by_images(
    store: &Store,
    reader: &ImageReader<'_>,
) -> std::result::Result<Needed, GcError> {
    let mut keep = Needed::default();
    let mut roots = index_roots(store)?;
    roots.extend(container_roots(store)?);
    for root in roots {
        let unreadable = |source: ImageReadError| GcError::UnreadableRoot {
            root: root.label.clone(),
            source,
        };
        let manifest = root.manifest.map_err(|e| unreadable(Box::new(e)))?;
        if keep.blobs.contains(&manifest) {
            continue;
        }
        let content = reader(store, &manifest).map_err(unreadable)?;
        keep.blobs.insert(manifest);
        keep.blobs.extend(content.blobs);
        keep.layer_dirs.extend(content.layer_dirs);
    }
    Ok(keep)
}

/// The entries of `dir` as (name, path, metadata); a missing dir has none.
pub(super) fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf, fs::Metadata)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::io("list", dir))?;
        let path = entry.path();
        // An entry can vanish between listing and stat (a kiln removing its staging).
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        out.push((entry.file_name().to_string_lossy().into_owned(), path, meta));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Blobs no root needs. Files whose names are not digests are left alone: kiln did not
/// write them (fsck reports them).
fn unreachable_blobs(store: &Store, keep: &Needed) -> Result<Vec<Removal>> {
    Ok(list_dir(&store.blobs_dir())?
        .into_iter()
        .filter(|(_, _, meta)| meta.is_file())
        .filter_map(|(name, path, meta)| {
            let digest = Digest::from_hex(&name).ok()?;
            (!keep.blobs.contains(&digest)).then(|| Removal {
                name: digest.to_string(),
                path,
                bytes: meta.len(),
            })
        })
        .collect())
}

fn unreachable_layer_dirs(store: &Store, keep: &Needed) -> Result<Vec<Removal>> {
    Ok(list_dir(&store.layers_dir())?
        .into_iter()
        .filter(|(_, _, meta)| meta.is_dir())
        .filter_map(|(name, path, _)| {
            let diff_id = Digest::from_hex(&name).ok()?;
            (!keep.layer_dirs.contains(&diff_id)).then(|| Removal {
                name: diff_id.to_string(),
                bytes: disk_usage(&path),
                path,
            })
        })
        .collect())
}

fn cache_mounts(store: &Store) -> Result<Vec<Removal>> {
    Ok(list_dir(&store.cache_dir().join("mounts"))?
        .into_iter()
        .map(|(name, path, _)| Removal {
            bytes: disk_usage(&path),
            name,
            path,
        })
        .collect())
}

/// Entries of `tmp/` that no running kiln owns. Staging names carry their creator's pid
/// (`PURPOSE-PID-…`, see `fsutil`); a name without one was not made by a running kiln
/// either.
pub(super) fn stale_staging(store: &Store) -> Result<Vec<Removal>> {
    Ok(list_dir(&store.tmp_dir())?
        .into_iter()
        .filter(|(name, _, _)| !owner_is_running(name))
        .map(|(name, path, _)| Removal {
            bytes: disk_usage(&path),
            name,
            path,
        })
        .collect())
}

fn owner_is_running(staging_name: &str) -> bool {
    let Some(pid) = staging_name
        .split('-')
        .nth(1)
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|&pid| pid > 0)
    else {
        return false;
    };
    // EPERM means the process exists but is not ours: still running.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) != Err(Errno::ESRCH)
}

fn remove_entry(path: &Path) -> Result<()> {
    let is_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    if is_dir {
        return fsutil::remove_tree(path);
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StoreError::io("remove", path)(e))
        }
        _ => Ok(()),
    }
}

/// Bytes of file content under `path`, each hardlinked file counted once. Best effort:
/// unreadable parts count as empty.
pub(super) fn disk_usage(path: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut pending = vec![path.to_owned()];
    while let Some(p) = pending.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&p) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.is_file() && (meta.nlink() == 1 || seen.insert((meta.dev(), meta.ino()))) {
            total += meta.len();
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::mpsc;
    use std::time::Duration;

    use oci_spec::image::MediaType;

    use super::*;
    use crate::{Reference, StepRecord};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn descriptor(digest: &Digest, size: u64) -> oci_spec::image::Descriptor {
        crate::oci::descriptor(MediaType::ImageManifest, digest, size)
    }

    fn layer_dir(store: &Store, content: &[u8]) -> Digest {
        let diff_id = Digest::of_bytes(content);
        let staged = store.temp_dir("test").unwrap();
        fs::write(staged.path().join("file"), content).unwrap();
        store.commit_layer(staged.path(), &diff_id).unwrap();
        diff_id
    }

    /// A fake image: a "manifest" blob whose content the test reader maps to its parts.
    struct Fixture {
        store: Store,
        images: HashMap<Digest, ImageContent>,
    }

    impl Fixture {
        fn image(&mut self, name: &str, parts: &[&[u8]]) -> Digest {
            let mut content = ImageContent::default();
            for part in parts {
                content.blobs.push(self.store.put_blob(part).unwrap());
                content.layer_dirs.push(layer_dir(&self.store, part));
            }
            let manifest = self.store.put_blob(name.as_bytes()).unwrap();
            self.store
                .set_tag(
                    &Reference::local(name).unwrap(),
                    &descriptor(&manifest, name.len() as u64),
                )
                .unwrap();
            self.images.insert(manifest.clone(), content);
            manifest
        }

        fn gc(&self, options: GcOptions) -> std::result::Result<GcReport, GcError> {
            let reader = |_: &Store, d: &Digest| {
                self.images
                    .get(d)
                    .cloned()
                    .ok_or_else(|| "unknown manifest".into())
            };
            self.store.gc(&reader, options, &mut || {})
        }
    }

    fn names(removals: &[Removal]) -> HashSet<String> {
        removals.iter().map(|r| r.name.clone()).collect()
    }

    #[test]
    fn gc_removes_what_no_root_needs_and_keeps_shared_content() {
        let (_dir, store) = store();
        let mut fx = Fixture {
            store: store.clone(),
            images: HashMap::new(),
        };
        let a = fx.image("a", &[b"base", b"only-a"]);
        fx.image("b", &[b"base", b"only-b"]);
        let orphan = store.put_blob(b"orphan").unwrap();
        store.remove_tag(&Reference::local("a").unwrap()).unwrap();

        let dry = fx
            .gc(GcOptions {
                dry_run: true,
                ..GcOptions::default()
            })
            .unwrap();
        let expected_blobs: HashSet<String> = [
            a.to_string(),
            Digest::of_bytes(b"only-a").to_string(),
            orphan.to_string(),
        ]
        .into();
        assert_eq!(names(&dry.blobs), expected_blobs);
        assert!(dry.blobs.iter().all(|r| r.path.exists()), "dry run removed");

        let report = fx.gc(GcOptions::default()).unwrap();
        assert_eq!(names(&report.blobs), expected_blobs);
        assert_eq!(
            names(&report.layer_dirs),
            [Digest::of_bytes(b"only-a").to_string()].into()
        );
        assert_eq!(report.bytes(), 1 + 6 + 6 + 6);
        assert!(!store.has_blob(&a) && !store.has_blob(&orphan));
        assert!(!store.has_layer(&Digest::of_bytes(b"only-a")));
        for kept in [b"base".as_slice(), b"only-b"] {
            assert!(store.has_blob(&Digest::of_bytes(kept)));
            assert!(store.has_layer(&Digest::of_bytes(kept)));
        }
        assert!(fx.gc(GcOptions::default()).unwrap().blobs.is_empty());
    }

    #[test]
    fn build_cache_records_are_roots_until_the_cache_is_dropped() {
        let (_dir, store) = store();
        let fx = Fixture {
            store: store.clone(),
            images: HashMap::new(),
        };
        let blob = store.put_blob(b"cached").unwrap();
        let diff_id = layer_dir(&store, b"cached");
        let key = Digest::of_bytes(b"key");
        store
            .record_step(&StepRecord {
                key: key.clone(),
                layer: Some(descriptor(&blob, 6)),
                diff_id: Some(diff_id.clone()),
                created_by: "run true".into(),
            })
            .unwrap();
        fs::create_dir_all(store.cache_mount_dir(&key).unwrap().join("pkg")).unwrap();

        assert!(fx.gc(GcOptions::default()).unwrap().blobs.is_empty());
        assert!(store.has_blob(&blob) && store.has_layer(&diff_id));

        let report = fx
            .gc(GcOptions {
                drop_build_cache: true,
                ..GcOptions::default()
            })
            .unwrap();
        assert_eq!(report.cache_records, 1);
        assert_eq!(report.cache_mounts.len(), 1);
        assert!(!store.has_blob(&blob) && !store.has_layer(&diff_id));
        assert!(store.step_records().unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_root_stops_gc_before_anything_is_removed() {
        let (_dir, store) = store();
        let fx = Fixture {
            store: store.clone(),
            images: HashMap::new(),
        };
        let orphan = store.put_blob(b"orphan").unwrap();
        let unknown = store.put_blob(b"not a manifest the reader knows").unwrap();
        store
            .set_tag(
                &Reference::local("broken").unwrap(),
                &descriptor(&unknown, 31),
            )
            .unwrap();
        let err = fx.gc(GcOptions::default()).unwrap_err();
        assert!(err.to_string().contains("localhost/broken:latest"), "{err}");
        assert!(store.has_blob(&orphan));
    }

    #[test]
    fn staging_of_dead_processes_is_stale_and_live_staging_is_not() {
        let (_dir, store) = store();
        let dead = store.tmp_dir().join(format!("step-{}-0-0", i32::MAX - 1));
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("f"), b"12345").unwrap();
        let nameless = store.tmp_dir().join("leftover");
        fs::write(&nameless, b"x").unwrap();
        let live = store.temp_dir("step").unwrap();
        let stale = stale_staging(&store).unwrap();
        let paths: HashSet<PathBuf> = stale.iter().map(|r| r.path.clone()).collect();
        assert_eq!(paths, [dead.clone(), nameless].into());
        assert_eq!(stale.iter().map(|r| r.bytes).sum::<u64>(), 6);

        let fx = Fixture {
            store: store.clone(),
            images: HashMap::new(),
        };
        assert_eq!(fx.gc(GcOptions::default()).unwrap().staging.len(), 2);
        assert!(!dead.exists() && live.path().is_dir());
    }

    #[test]
    fn a_held_content_guard_makes_gc_wait() {
        let (_dir, store) = store();
        let guard = store.content_guard().unwrap();
        // A second guard does not wait: guards are shared.
        let second = store.content_guard().unwrap();
        drop(second);

        let (waiting_tx, waiting_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let gc_store = store.clone();
        let gc = std::thread::spawn(move || {
            let reader = |_: &Store, _: &Digest| Ok(ImageContent::default());
            let result = gc_store.gc(&reader, GcOptions::default(), &mut || {
                let _ = waiting_tx.send(());
            });
            let _ = done_tx.send(result.is_ok());
        });
        waiting_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("gc reports that it waits");
        assert!(
            done_rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "gc ran while a content guard was held"
        );
        drop(guard);
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        gc.join().unwrap();
    }

    #[test]
    fn disk_usage_counts_hardlinked_files_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/a"), b"1234").unwrap();
        fs::hard_link(dir.path().join("sub/a"), dir.path().join("b")).unwrap();
        std::os::unix::fs::symlink("sub/a", dir.path().join("link")).unwrap();
        assert_eq!(disk_usage(dir.path()), 4);
    }

    #[test]
    fn open_existing_refuses_a_missing_store() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Store::open_existing(&dir.path().join("none")),
            Err(GcError::NoStore(_))
        ));
        assert!(!dir.path().join("none").exists());
    }
}
