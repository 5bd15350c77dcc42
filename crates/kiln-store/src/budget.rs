//! The build cache's budget (BuildKit's gc policy, `kiln gc --keep-storage SIZE
//! --keep-duration AGE` and the `build_cache:` defaults of kiln's config file): which step
//! records to drop so that what only the build cache holds fits.
//!
//! A record keeps its layer blob and layer dir alive. What it *costs* is what nothing else
//! keeps: content an image or a container needs is free for the cache, and content two
//! records share is counted once. A record's last use is its file's mtime (a cache hit
//! touches it). Records unused for longer than `keep_duration` go first; then, while the
//! cache holds more than `keep_storage`, the least recently used ones, until it fits.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{Digest, Result, StepRecord, Store};

/// How much build cache to keep; `None` in a field: no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheBudget {
    /// Bytes of content only the build cache holds.
    pub keep_storage: Option<u64>,
    /// How long an unused record is kept.
    pub keep_duration: Option<Duration>,
}

impl CacheBudget {
    pub fn is_set(&self) -> bool {
        self.keep_storage.is_some() || self.keep_duration.is_some()
    }
}

/// A step record with where it is and when a build last used it.
#[derive(Debug, Clone)]
pub struct UsedRecord {
    pub record: StepRecord,
    pub path: PathBuf,
    pub last_used: SystemTime,
}

/// What the build cache holds beyond what images and containers need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUsage {
    pub records: usize,
    /// Records whose layer an image or a container uses too.
    pub active: usize,
    /// Bytes of blobs and layer dirs only the cache keeps alive.
    pub bytes: u64,
}

/// The content a record keeps alive, and what of it nothing else needs, in bytes.
struct Costs {
    bytes: HashMap<(Digest, Digest), u64>,
}

impl Costs {
    /// Sizes what the records hold that is not in `needed` (blobs and layer dirs the
    /// images and containers keep), each piece of content once.
    fn new(store: &Store, records: &[UsedRecord], needed: &Needed) -> Costs {
        let mut bytes = HashMap::new();
        for (blob, diff_id) in records.iter().filter_map(|r| r.record.content()) {
            bytes
                .entry((blob, diff_id))
                .or_insert_with_key(|(blob, diff_id)| {
                    let blob_bytes = match needed.blobs.contains(blob) {
                        true => 0,
                        false => store.blob_size(blob).unwrap_or(0),
                    };
                    let dir_bytes = match needed.layer_dirs.contains(diff_id) {
                        true => 0,
                        false => store.layer_size(diff_id).unwrap_or(0),
                    };
                    blob_bytes + dir_bytes
                });
        }
        Costs { bytes }
    }

    fn of(&self, record: &StepRecord) -> Option<((Digest, Digest), u64)> {
        let content = record.content()?;
        let bytes = self.bytes.get(&content).copied().unwrap_or(0);
        Some((content, bytes))
    }

    /// What the `records` hold together, each piece of content once.
    fn total<'a>(&self, records: impl Iterator<Item = &'a UsedRecord>) -> u64 {
        let held: HashSet<(Digest, Digest)> = records.filter_map(|r| r.record.content()).collect();
        held.iter()
            .map(|c| self.bytes.get(c).copied().unwrap_or(0))
            .sum()
    }
}

/// The blobs and layer dirs images and containers need (the gc roots but the cache).
#[derive(Debug, Default, Clone)]
pub struct Needed {
    pub blobs: HashSet<Digest>,
    pub layer_dirs: HashSet<Digest>,
}

/// What `records` cost beyond `needed`.
pub fn usage(store: &Store, records: &[UsedRecord], needed: &Needed) -> CacheUsage {
    let costs = Costs::new(store, records, needed);
    let active = records
        .iter()
        .filter_map(|r| r.record.content())
        .filter(|(blob, dir)| needed.blobs.contains(blob) || needed.layer_dirs.contains(dir))
        .count();
    CacheUsage {
        records: records.len(),
        active,
        bytes: costs.total(records.iter()),
    }
}

/// The indexes of the records to drop so that the rest fits `budget` at `now`.
pub fn evictions(
    store: &Store,
    records: &[UsedRecord],
    needed: &Needed,
    budget: CacheBudget,
    now: SystemTime,
) -> Vec<usize> {
    let stale = |r: &UsedRecord| {
        budget
            .keep_duration
            .is_some_and(|keep| now.duration_since(r.last_used).unwrap_or_default() > keep)
    };
    let mut evicted: Vec<usize> = (0..records.len()).filter(|&i| stale(&records[i])).collect();
    let Some(keep_storage) = budget.keep_storage else {
        return evicted;
    };
    let costs = Costs::new(store, records, needed);
    let mut kept: Vec<usize> = (0..records.len())
        .filter(|i| !evicted.contains(i))
        .collect();
    kept.sort_by_key(|&i| records[i].last_used);
    let mut holders: HashMap<(Digest, Digest), usize> = HashMap::new();
    for &i in &kept {
        if let Some(content) = records[i].record.content() {
            *holders.entry(content).or_default() += 1;
        }
    }
    let mut total = costs.total(kept.iter().map(|&i| &records[i]));
    // Oldest first; a record that costs nothing (no layer, or one an image needs) stays.
    for &i in &kept {
        if total <= keep_storage {
            break;
        }
        let Some((content, bytes)) = costs.of(&records[i].record).filter(|(_, b)| *b > 0) else {
            continue;
        };
        evicted.push(i);
        let left = holders.get_mut(&content).expect("counted above");
        *left -= 1;
        if *left == 0 {
            total -= bytes;
        }
    }
    evicted
}

impl Store {
    /// Every readable step record with its last use, for the budget.
    pub fn step_records_by_use(&self) -> Result<Vec<UsedRecord>> {
        let dir = self.cache_dir().join("steps");
        let mut out = Vec::new();
        for (_, path, meta) in super::gc::list_dir(&dir)? {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(record) = serde_json::from_slice::<StepRecord>(&bytes) else {
                continue;
            };
            let last_used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(UsedRecord {
                record,
                path,
                last_used,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::MediaType;

    /// A record whose blob has `blob_bytes` bytes and whose layer dir one file of
    /// `dir_bytes`, last used `age` ago.
    fn record(
        store: &Store,
        name: &str,
        blob_bytes: usize,
        dir_bytes: usize,
        age: u64,
    ) -> UsedRecord {
        let blob = store
            .put_blob(&vec![name.as_bytes()[0]; blob_bytes])
            .unwrap();
        let diff_id = Digest::of_bytes(format!("dir {name}").as_bytes());
        let dir = store.layer_dir(&diff_id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), vec![0u8; dir_bytes]).unwrap();
        let layer = crate::oci::descriptor(MediaType::ImageLayerZstd, &blob, blob_bytes as u64);
        UsedRecord {
            record: StepRecord {
                key: Digest::of_bytes(name.as_bytes()),
                layer: Some(layer),
                diff_id: Some(diff_id),
                created_by: name.into(),
            },
            path: PathBuf::from(name),
            last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age),
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    #[test]
    fn the_least_recently_used_go_until_the_rest_fits() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let records = vec![
            record(&store, "a", 100, 900, 30), // 1000 bytes, oldest
            record(&store, "b", 100, 900, 20),
            record(&store, "c", 100, 900, 10), // newest
        ];
        let needed = Needed::default();
        assert_eq!(usage(&store, &records, &needed).bytes, 3000);
        let budget = |bytes| CacheBudget {
            keep_storage: Some(bytes),
            keep_duration: None,
        };
        assert_eq!(
            evictions(&store, &records, &needed, budget(3000), now()),
            Vec::<usize>::new()
        );
        assert_eq!(
            evictions(&store, &records, &needed, budget(2500), now()),
            vec![0]
        );
        assert_eq!(
            evictions(&store, &records, &needed, budget(0), now()),
            vec![0, 1, 2]
        );
        // Unused for longer than keep_duration: gone whatever the size.
        let old = CacheBudget {
            keep_storage: None,
            keep_duration: Some(Duration::from_secs(15)),
        };
        assert_eq!(evictions(&store, &records, &needed, old, now()), vec![0, 1]);
    }

    #[test]
    fn what_an_image_needs_costs_the_cache_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let records = vec![
            record(&store, "a", 100, 900, 30),
            record(&store, "b", 100, 900, 20),
        ];
        let (blob, diff_id) = records[0].record.content().unwrap();
        let needed = Needed {
            blobs: [blob].into(),
            layer_dirs: [diff_id].into(),
        };
        assert_eq!(usage(&store, &records, &needed).bytes, 1000);
        let budget = CacheBudget {
            keep_storage: Some(1000),
            keep_duration: None,
        };
        // "a" is older but frees nothing: only "b" would, and 1000 fits.
        assert_eq!(
            evictions(&store, &records, &needed, budget, now()),
            Vec::<usize>::new()
        );
        let nothing = CacheBudget {
            keep_storage: Some(0),
            keep_duration: None,
        };
        assert_eq!(
            evictions(&store, &records, &needed, nothing, now()),
            vec![1]
        );
    }
}
