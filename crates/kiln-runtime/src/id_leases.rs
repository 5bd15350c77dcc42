//! Host id ranges for containers with a user namespace of their own (`--userns=auto`):
//! which ranges exist, and a lease on one for as long as the container runs.
//!
//! Exists so that two containers never share host ids, across every kiln on the machine,
//! without a daemon: the ranges are slots of [`SLOT_IDS`] ids in a pool, and a slot is
//! taken by holding an exclusive `flock` on its file in [`LEASE_DIR`]. The kernel drops
//! the lock when the process holding it ends, however it ends, so a killed runner leaves
//! no range taken, and there is nothing to clean up. A range is needed only while the
//! container runs: its files are kept under their in-container ids (idmapped mounts, see
//! `container_userns`), so the next start may get another slot.
//!
//! The pool: the subordinate ranges `/etc/subuid` and `/etc/subgid` give the user
//! [`POOL_USER`] (podman's `containers` user, under kiln's name), else [`DEFAULT_POOL`];
//! slots that overlap any other user's subordinate range are skipped either way.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::RuntimeError;
use crate::idmap::{self, IdRange};

/// Where the lock files of the slots are (tmpfs: leases do not outlive a boot).
pub const LEASE_DIR: &str = "/run/kiln/userns";

/// The ids of one slot: the 16-bit range images assume (0…65535).
pub const SLOT_IDS: u32 = 65_536;

/// The user whose subordinate ranges, when listed, are the pool.
pub const POOL_USER: &str = "kiln";

/// The pool when [`POOL_USER`] has no ranges: 2^30 … 2^31-1, far above the ids `useradd`
/// and shadow's tools hand out (from 1000 and 100000), and below 2^31, which some tools
/// read as a negative number. 16384 slots.
pub const DEFAULT_POOL: IdRange = IdRange {
    start: 1 << 30,
    count: 1 << 30,
};

/// A taken slot: its host uids and gids, held until dropped.
#[derive(Debug)]
pub struct IdLease {
    /// The first host uid and gid of the slot.
    pub uid: u32,
    pub gid: u32,
    /// Holds the slot's lock.
    _file: File,
}

/// Takes the first free slot of the pool for container `id`.
pub fn take(id: &str) -> Result<IdLease, RuntimeError> {
    take_in(Path::new(LEASE_DIR), &Pool::from_system(), id)
}

/// The slots, as (first uid, first gid) pairs, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pool {
    slots: Vec<(u32, u32)>,
}

impl Pool {
    /// From the machine's `/etc/subuid` and `/etc/subgid`.
    pub(crate) fn from_system() -> Pool {
        let read = |path| fs::read_to_string(path).unwrap_or_default();
        Pool::from_files(&read("/etc/subuid"), &read("/etc/subgid"))
    }

    pub(crate) fn from_files(subuid: &str, subgid: &str) -> Pool {
        let uids = pool_slots(subuid);
        let gids = pool_slots(subgid);
        Pool {
            slots: uids.into_iter().zip(gids).collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

/// The slot starts of one file's pool: [`POOL_USER`]'s ranges, else the default pool,
/// without the slots another user's range overlaps.
fn pool_slots(file_text: &str) -> Vec<u32> {
    // A user named like the pool user has no uid of its own here: match names only.
    let mut ranges = idmap::subordinate_ranges(file_text, POOL_USER, u32::MAX);
    if ranges.is_empty() {
        ranges.push(DEFAULT_POOL);
    }
    let others = idmap::ranges_of_others(file_text, POOL_USER);
    ranges
        .iter()
        .flat_map(|r| {
            let slots = r.count / SLOT_IDS;
            (0..slots).map(move |i| r.start + i * SLOT_IDS)
        })
        .filter(|&start| {
            let end = u64::from(start) + u64::from(SLOT_IDS);
            !others.iter().any(|o| {
                u64::from(o.start) < end
                    && u64::from(start) < u64::from(o.start) + u64::from(o.count)
            })
        })
        .collect()
}

/// [`take`] with the lock files in `dir` and the slots of `pool`.
pub(crate) fn take_in(dir: &Path, pool: &Pool, id: &str) -> Result<IdLease, RuntimeError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(RuntimeError::io("create", dir))?;
    for (index, &(uid, gid)) in pool.slots.iter().enumerate() {
        let path = slot_file(dir, index);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(RuntimeError::io("open", &path))?;
        if !try_lock(&file).map_err(RuntimeError::io("lock", &path))? {
            continue;
        }
        // For people looking: which container has the slot. The lock is what counts.
        let _ = file.set_len(0).and_then(|()| writeln!(file, "{id}"));
        tracing::debug!(id, uid, gid, slot = index, "user namespace ids leased");
        return Ok(IdLease {
            uid,
            gid,
            _file: file,
        });
    }
    Err(RuntimeError::NoFreeIds {
        slots: pool.len(),
        dir: dir.to_owned(),
    })
}

fn slot_file(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("slot-{index}"))
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    // SAFETY: a plain system call on a valid fd.
    match unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } {
        0 => Ok(true),
        _ => match std::io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
            e => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_kiln_user_the_default_pool_is_used_minus_other_users_ranges() {
        let subuid = format!(
            "alice:100000:65536\nbob:{}:70000\n",
            DEFAULT_POOL.start + SLOT_IDS
        );
        let pool = Pool::from_files(&subuid, &subuid);
        assert_eq!(pool.slots[0], (DEFAULT_POOL.start, DEFAULT_POOL.start));
        // bob's range covers slot 1 and part of slot 2.
        assert_eq!(pool.slots[1].0, DEFAULT_POOL.start + 3 * SLOT_IDS);
        assert_eq!(pool.len(), (DEFAULT_POOL.count / SLOT_IDS) as usize - 2);
    }

    #[test]
    fn the_kiln_users_ranges_are_the_pool_in_whole_slots() {
        let subuid = "kiln:200000:200000\n";
        let subgid = "kiln:300000:140000\n";
        let pool = Pool::from_files(subuid, subgid);
        assert_eq!(pool.slots, vec![(200_000, 300_000), (265_536, 365_536)]);
    }

    #[test]
    fn a_slot_is_taken_until_its_lease_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::from_files("kiln:500000:196608\n", "kiln:500000:196608\n");
        let first = take_in(dir.path(), &pool, "a").unwrap();
        let second = take_in(dir.path(), &pool, "b").unwrap();
        assert_eq!((first.uid, second.uid), (500_000, 565_536));
        assert_eq!(
            fs::read_to_string(dir.path().join("slot-1")).unwrap(),
            "b\n"
        );
        drop(first);
        let third = take_in(dir.path(), &pool, "c").unwrap();
        assert_eq!(third.uid, 500_000, "the dropped lease's slot is free again");
        let fourth = take_in(dir.path(), &pool, "d").unwrap();
        assert_eq!(fourth.gid, 631_072);
        let err = take_in(dir.path(), &pool, "e").unwrap_err();
        assert!(
            matches!(err, RuntimeError::NoFreeIds { slots: 3, .. }),
            "{err}"
        );
    }
}
