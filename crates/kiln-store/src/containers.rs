//! Container state: `$ROOT/containers/<id>/` holds a container's overlay upper and work
//! dirs, the files kiln writes for it (/etc/hosts …), its log and `state.json`, which
//! `kiln ps`, `kiln rm` and the other container commands read.
//!
//! Whether a container runs is not a PID in its state (PIDs are reused) but its *lock*: the
//! process that runs it — a foreground `kiln run` or a detached container's monitor —
//! holds an exclusive `flock` on `<id>/lock` from the moment the dir is created until the
//! container has ended and its exit is recorded. The kernel drops the lock when that
//! process dies, however it dies, so a free lock on a container whose state has no exit
//! code means its runner was killed (and the container with it, through
//! `PR_SET_PDEATHSIG`): [`Store::record_lost_containers`] records it as exited.
//!
//! Every kiln command that starts a container first looks for such lost containers, so
//! that look must not read every kept container's state: `containers/.live/` holds an
//! empty file per container that may still run (made with its dir, removed when its state
//! records its end or it is removed), and only those are checked. A store from before the
//! index gets it from one full scan (`.live/.complete` says it was made); a marker left for
//! a container that ended meanwhile is removed when next seen.

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{fsutil, Digest, Result, Store, StoreError};

/// What `state.json` records about a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub name: String,
    pub image: String,
    /// The manifest of the image it runs (a gc root). A state whose digest breaks the
    /// grammar does not deserialise, and such a container is not listed.
    pub image_digest: Digest,
    pub command: Vec<String>,
    /// Seconds since the epoch.
    pub created: u64,
    /// The kiln process that runs it, while it runs.
    pub pid: Option<i32>,
    /// Set when it has exited.
    pub exit_code: Option<i32>,
    /// `kiln run --rm`: remove the container when it ends, even if its kiln was killed.
    #[serde(default)]
    pub auto_remove: bool,
    /// When its command started (seconds since the epoch); `None` until it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    /// When it ended (seconds since the epoch), with `exit_code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<u64>,
    /// The signal `kiln stop` sends first (the image's `StopSignal`, e.g. `SIGQUIT`);
    /// SIGTERM when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Run by a monitor process (`kiln run -d`) rather than a foreground `kiln run`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detached: bool,
    /// The host PID of the container's first process (its init), while it runs: what
    /// `kiln exec` joins. Only meaningful while the container's lock is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_pid: Option<i32>,
    /// How often its restart policy has started it again (docker's `RestartCount`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_count: u32,
    /// Its command ended (`exit_code`, `finished`) and its runner waits to start it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restarting: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What `kiln ps` shows as a container's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Made, but its command has not started (or its runner died before it did).
    Created,
    /// Its runner holds its lock and the command has started (`since`, epoch seconds).
    Running { since: u64 },
    /// Its runner holds its lock and will start it again: it ended with `code` at `at`.
    Restarting { code: i32, at: u64 },
    /// It ended with `code` at `at` (epoch seconds; 0 when unknown).
    Exited { code: i32, at: u64 },
}

impl Status {
    /// Docker's word for it: `created`, `running`, `exited`.
    pub fn word(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running { .. } => "running",
            Status::Restarting { .. } => "restarting",
            Status::Exited { .. } => "exited",
        }
    }
}

/// The exit code recorded for a container whose runner was killed: the container got
/// SIGKILL with it (`PR_SET_PDEATHSIG`).
pub const LOST_EXIT_CODE: i32 = 128 + libc::SIGKILL;

/// The exclusive lock of a running container, held by whoever runs it (see the module
/// doc); released when dropped or when the holder dies.
#[derive(Debug)]
pub struct ContainerLock {
    _file: fs::File,
}

/// A container's directory.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub id: String,
    pub path: PathBuf,
    /// Whether writes to it wait for the disk. Not for a container removed when it ends
    /// (`--rm`): a crash of the machine ends it too, and kiln then removes what is left
    /// (a dir whose state is missing or torn, which nobody holds locked, is abandoned).
    /// Three fewer pairs of fsyncs are ~3 ms of a `kiln run --rm` start.
    durable: bool,
}

impl ContainerDir {
    fn new(id: String, path: PathBuf) -> ContainerDir {
        ContainerDir {
            id,
            path,
            durable: true,
        }
    }

    /// This dir, for a container removed when it ends: its writes do not wait for the
    /// disk (see the `durable` field).
    pub fn removed_at_end(self) -> ContainerDir {
        ContainerDir {
            durable: false,
            ..self
        }
    }

    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }

    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }

    /// Bytes of the files the container wrote (its upper dir), each hard link once.
    pub fn upper_size(&self) -> Result<u64> {
        match self.upper().is_dir() {
            true => fsutil::apparent_size(&self.upper()),
            false => Ok(0),
        }
    }

    /// Writes the state, and keeps the container in the index of those that may still
    /// run exactly while the state says it has not ended.
    pub fn write_state(&self, store: &Store, state: &ContainerState) -> Result<()> {
        let json = serde_json::to_vec_pretty(state).expect("container state serialises");
        self.write_file(store, "state.json", &json)?;
        match has_ended(state) {
            true => store.unmark_live(&self.id),
            false => store.mark_live(&self.id),
        }
    }

    /// Writes `bytes` as the file `name` in the container's dir, atomically (and durably
    /// unless the container is [removed at its end](ContainerDir::removed_at_end)).
    pub fn write_file(&self, store: &Store, name: &str, bytes: &[u8]) -> Result<()> {
        match self.durable {
            true => fsutil::write_atomic(store, &self.path.join(name), bytes),
            false => fsutil::write_atomic_unsynced(store, &self.path.join(name), bytes),
        }
    }

    /// [`ContainerDir::write_file`] without waiting for the disk, for a file that only
    /// describes the run in progress (its addresses): a crash of the machine ends the run
    /// it describes, so losing it loses nothing, and a container start does not wait for
    /// two more flushes.
    pub fn write_run_file(&self, store: &Store, name: &str, bytes: &[u8]) -> Result<()> {
        fsutil::write_atomic_unsynced(store, &self.path.join(name), bytes)
    }

    /// The file `name` in the container's dir (at most 1 MiB), `None` when missing.
    pub fn read_file(&self, name: &str) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        fs::File::open(self.path.join(name))
            .ok()?
            .take(MAX_STATE)
            .read_to_end(&mut bytes)
            .ok()?;
        Some(bytes)
    }

    /// The state as it is on disk now (`None` once the container is gone).
    pub fn read_state(&self) -> Option<ContainerState> {
        read_state(&self.path)
    }

    /// The container's log (`container.log`, rotated to `container.log.1` …).
    pub fn log_path(&self) -> PathBuf {
        self.path.join(LOG_FILE)
    }

    /// Whether a process holds the container's lock, i.e. runs it now.
    pub fn is_locked(&self) -> bool {
        matches!(flock(&self.path.join(LOCK), libc::LOCK_SH | libc::LOCK_NB), Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK))
    }

    /// The status: running (or restarting) while the lock is held, else exited once an
    /// exit is recorded, else created.
    pub fn status(&self, state: &ContainerState) -> Status {
        let at = state.finished.unwrap_or(0);
        match (state.exit_code, state.started) {
            (Some(code), _) if state.restarting && self.is_locked() => {
                Status::Restarting { code, at }
            }
            (Some(code), _) => Status::Exited { code, at },
            (None, Some(since)) if self.is_locked() => Status::Running { since },
            _ => Status::Created,
        }
    }

    /// Takes the container's lock, waiting up to `timeout` for its holder to let go;
    /// `None` when it did not in time.
    pub fn lock_within(&self, timeout: Duration) -> Result<Option<ContainerLock>> {
        let path = self.path.join(LOCK);
        let deadline = Instant::now() + timeout;
        loop {
            match flock(&path, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(file) => return Ok(Some(ContainerLock { _file: file })),
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
                Err(e) => return Err(StoreError::io("lock", &path)(e)),
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Opens `path` (creating it) and `flock`s it with `operation`.
fn flock(path: &Path, operation: libc::c_int) -> std::io::Result<fs::File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    // SAFETY: flock on an fd this function owns.
    match unsafe { libc::flock(file.as_raw_fd(), operation) } {
        0 => Ok(file),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The largest `state.json` kiln reads.
const MAX_STATE: u64 = 1 << 20;

impl Store {
    pub fn containers_dir(&self) -> PathBuf {
        self.root().join("containers")
    }

    /// Creates a container dir with a fresh random ID and its upper and work dirs, and
    /// returns it with its lock held. It is made in `tmp/` and its lock taken before it is
    /// renamed into place, so no other kiln ever sees it unlocked while it is set up, and a
    /// kiln killed before it wrote `state.json` leaves an unlocked dir without a state,
    /// which [`abandoned_containers`](Store::abandoned_containers) finds.
    pub fn create_container(&self) -> Result<(ContainerDir, ContainerLock)> {
        let parent = self.containers_dir();
        fs::create_dir_all(&parent).map_err(StoreError::io("create", &parent))?;
        let id = random_id()?;
        let staging = fsutil::staging_path(&self.tmp_dir(), "container");
        fs::create_dir(&staging).map_err(StoreError::io("create", &staging))?;
        for sub in ["upper", "work"] {
            let sub = staging.join(sub);
            fs::create_dir(&sub).map_err(StoreError::io("create", &sub))?;
        }
        let lock_path = staging.join(LOCK);
        let lock = flock(&lock_path, libc::LOCK_EX | libc::LOCK_NB)
            .map_err(StoreError::io("lock", &lock_path))?;
        // Marked before it appears, so a kiln killed from here on leaves a dir the next
        // look for abandoned containers finds (or a marker without a dir, which it drops).
        self.mark_live(&id)?;
        let path = parent.join(&id);
        fs::rename(&staging, &path).map_err(StoreError::io("rename", &path))?;
        Ok((ContainerDir::new(id, path), ContainerLock { _file: lock }))
    }

    /// Holds container names still while a new container's name is checked and its state
    /// written, so two `kiln run --name web` at once cannot both take `web`.
    pub fn lock_container_names(&self) -> Result<ContainerLock> {
        let parent = self.containers_dir();
        fs::create_dir_all(&parent).map_err(StoreError::io("create", &parent))?;
        let file = fs::File::open(&parent).map_err(StoreError::io("open", &parent))?;
        // SAFETY: flock on an fd this function owns; blocks until the holder lets go.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(StoreError::io("lock", &parent)(e));
        }
        Ok(ContainerLock { _file: file })
    }

    /// Records containers whose runner is gone without having recorded their end (a
    /// `kiln run` or a monitor killed with SIGKILL; the container died with it) as exited
    /// with [`LOST_EXIT_CODE`] now, so they never show as running. `--rm` containers are
    /// left to [`remove_abandoned_containers`](Store::remove_abandoned_containers).
    /// Returns how many containers of killed kilns it found (those killed before their
    /// command started included).
    pub fn record_lost_containers(&self) -> Result<usize> {
        let mut lost = 0;
        for (dir, state) in self.live_containers()? {
            let Some(state) = state else { continue };
            let ended = state.exit_code.is_some() && !state.restarting;
            if ended || state.auto_remove {
                continue;
            }
            let Some(_lock) = dir.lock_within(Duration::ZERO)? else {
                continue;
            };
            if state.started.is_none() {
                // Its kiln was killed before the command ran: it stays `created` (and can
                // be started), but it does not run, so it leaves the index.
                self.unmark_live(&dir.id)?;
                lost += 1;
                continue;
            }
            // Read again under the lock: its runner may have recorded the end meanwhile.
            let Some(mut state) = dir.read_state() else {
                continue;
            };
            if state.restarting {
                // It had ended; only the restart its runner waited to make is lost.
                state.restarting = false;
                state.pid = None;
                dir.write_state(self, &state)?;
                lost += 1;
            } else if state.exit_code.is_none() {
                state.exit_code = Some(LOST_EXIT_CODE);
                state.finished = Some(now());
                state.pid = None;
                state.init_pid = None;
                dir.write_state(self, &state)?;
                lost += 1;
            }
        }
        Ok(lost)
    }

    /// Every container with a readable state, oldest first.
    pub fn containers(&self) -> Result<Vec<(ContainerDir, ContainerState)>> {
        let parent = self.containers_dir();
        let entries = match fs::read_dir(&parent) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(StoreError::Io {
                    what: "list",
                    path: parent,
                    source: e,
                })
            }
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let id = entry.file_name().to_string_lossy().into_owned();
            if let Some(state) = read_state(&path) {
                out.push((ContainerDir::new(id, path), state));
            }
        }
        out.sort_by_key(|(_, s)| s.created);
        Ok(out)
    }

    /// Finds a container by name, ID or unique ID prefix.
    pub fn find_container(&self, key: &str) -> Result<Option<(ContainerDir, ContainerState)>> {
        let all = self.containers()?;
        if let Some(hit) = all.iter().find(|(d, s)| s.name == key || d.id == key) {
            return Ok(Some(hit.clone()));
        }
        let mut prefixed = all
            .into_iter()
            .filter(|(d, _)| !key.is_empty() && d.id.starts_with(key));
        match (prefixed.next(), prefixed.next()) {
            (Some(hit), None) => Ok(Some(hit)),
            _ => Ok(None),
        }
    }

    /// `--rm` containers whose kiln process died before it could remove them (`kill -9`),
    /// and container dirs without a readable `state.json` that nobody holds locked (a kiln
    /// killed while it set the container up, or a machine crash that lost a `--rm`
    /// container's unsynced state; their state is `None`).
    pub fn abandoned_containers(&self) -> Result<Vec<(ContainerDir, Option<ContainerState>)>> {
        Ok(self
            .live_containers()?
            .into_iter()
            .filter(|(dir, state)| match state {
                Some(state) => state.auto_remove && state.exit_code.is_none() && !dir.is_locked(),
                None => !dir.is_locked(),
            })
            .collect())
    }

    fn live_dir(&self) -> PathBuf {
        self.containers_dir().join(LIVE)
    }

    /// Notes that the container `id` may still run.
    fn mark_live(&self, id: &str) -> Result<()> {
        let dir = self.live_dir();
        fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        let marker = dir.join(id);
        fs::File::create(&marker).map_err(StoreError::io("create", &marker))?;
        Ok(())
    }

    /// Notes that the container `id` has ended or is gone.
    fn unmark_live(&self, id: &str) -> Result<()> {
        let marker = self.live_dir().join(id);
        match fs::remove_file(&marker) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::io("remove", &marker)(e))
            }
            _ => Ok(()),
        }
    }

    /// The containers that may still run, with their state (`None`: not written yet),
    /// from the index; markers of containers that ended or are gone are dropped.
    fn live_containers(&self) -> Result<Vec<(ContainerDir, Option<ContainerState>)>> {
        self.complete_live_index()?;
        let mut out = Vec::new();
        for id in list_names(&self.live_dir())? {
            if id.starts_with('.') {
                continue;
            }
            let dir = ContainerDir::new(id.clone(), self.containers_dir().join(&id));
            let state = dir.read_state();
            let gone = !dir.path.is_dir() || state.as_ref().is_some_and(has_ended);
            match gone {
                true => self.unmark_live(&dir.id)?,
                false => out.push((dir, state)),
            }
        }
        Ok(out)
    }

    /// Indexes, once, the containers of a store from before the index: every container
    /// dir whose state has not recorded its end, or that has none yet.
    fn complete_live_index(&self) -> Result<()> {
        let complete = self.live_dir().join(COMPLETE);
        if complete.exists() {
            return Ok(());
        }
        for id in list_names(&self.containers_dir())? {
            if id.starts_with('.') {
                continue;
            }
            let ended = read_state(&self.containers_dir().join(&id)).is_some_and(|s| has_ended(&s));
            if !ended {
                self.mark_live(&id)?;
            }
        }
        fs::create_dir_all(self.live_dir()).map_err(StoreError::io("create", &self.live_dir()))?;
        fs::File::create(&complete).map_err(StoreError::io("create", &complete))?;
        Ok(())
    }

    /// Removes the [abandoned containers](Store::abandoned_containers), so they never
    /// pile up; returns how many there were.
    pub fn remove_abandoned_containers(&self) -> Result<usize> {
        let abandoned = self.abandoned_containers()?;
        for (dir, _) in &abandoned {
            self.remove_container(dir)?;
        }
        Ok(abandoned.len())
    }

    /// Removes a container's directory and everything in it: first renamed into `tmp/`, so
    /// a kiln killed while it removes leaves staging (which the next kiln command removes),
    /// never a container dir without its state.
    pub fn remove_container(&self, dir: &ContainerDir) -> Result<()> {
        let staging = fsutil::staging_path(&self.tmp_dir(), "removing");
        match fs::rename(&dir.path, &staging) {
            Ok(()) => {
                self.unmark_live(&dir.id)?;
                fsutil::remove_tree(&staging)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io {
                what: "remove",
                path: dir.path.clone(),
                source: e,
            }),
        }
    }
}

/// The index of containers that may still run, in `containers/`.
const LIVE: &str = ".live";
/// In the index: it was completed from a full scan.
const COMPLETE: &str = ".complete";

/// Whether the state records the container's end (not one it is about to restart after).
fn has_ended(state: &ContainerState) -> bool {
    state.exit_code.is_some() && !state.restarting
}

/// The names in a directory (none when it does not exist).
fn list_names(dir: &Path) -> Result<Vec<String>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::io("list", dir)(e)),
    }
}
/// The file in a container dir whose `flock` its runner holds.
const LOCK: &str = "lock";
/// The container's log, written by its monitor.
const LOG_FILE: &str = "container.log";

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn read_state(dir: &Path) -> Option<ContainerState> {
    let mut bytes = Vec::new();
    fs::File::open(dir.join("state.json"))
        .ok()?
        .take(MAX_STATE)
        .read_to_end(&mut bytes)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// 64 random hex digits, like docker's container IDs.
fn random_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    let path = Path::new("/dev/urandom");
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(StoreError::io("read", path))?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_created_listed_found_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let (dir, _lock) = store.create_container().unwrap();
        assert_eq!(dir.id.len(), 64);
        assert!(dir.upper().is_dir() && dir.work().is_dir());
        let state = ContainerState {
            id: dir.id.clone(),
            name: "web".into(),
            image: "localhost/hello:latest".into(),
            image_digest: Digest::of_bytes(b"x"),
            command: vec!["true".into()],
            created: 1,
            pid: None,
            exit_code: Some(0),
            auto_remove: false,
            started: Some(1),
            finished: Some(2),
            stop_signal: None,
            detached: false,
            init_pid: None,
            restart_count: 0,
            restarting: false,
        };
        dir.write_state(&store, &state).unwrap();
        assert_eq!(store.containers().unwrap().len(), 1);
        assert_eq!(store.find_container("web").unwrap().unwrap().1, state);
        assert!(store.find_container(&dir.id[..6]).unwrap().is_some());
        assert_eq!(dir.status(&state), Status::Exited { code: 0, at: 2 });
        store.remove_container(&dir).unwrap();
        assert!(store.containers().unwrap().is_empty());
    }

    #[test]
    fn state_json_keeps_the_digest_as_text_and_refuses_bad_ones() {
        let digest = Digest::of_bytes(b"manifest");
        let json = format!(
            r#"{{"id":"i","name":"n","image":"localhost/a:latest","image_digest":"{digest}","command":[],"created":1,"pid":null,"exit_code":null,"auto_remove":false}}"#
        );
        let state: ContainerState = serde_json::from_str(&json).unwrap();
        assert_eq!(state.image_digest, digest);
        assert_eq!(serde_json::to_string(&state).unwrap(), json);
        let bad = json.replace(&digest.to_string(), "sha256:x");
        assert!(serde_json::from_str::<ContainerState>(&bad).is_err());
    }

    #[test]
    fn abandoned_rm_containers_are_removed_and_others_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let dead_pid = i32::MAX - 1; // far above pid_max: no such process
        let make = |auto_remove: bool, pid: Option<i32>| {
            let (dir, lock) = store.create_container().unwrap();
            let state = ContainerState {
                id: dir.id.clone(),
                name: dir.id[..12].into(),
                image: "i".into(),
                image_digest: Digest::of_bytes(b"d"),
                command: vec![],
                created: 1,
                pid,
                exit_code: None,
                auto_remove,
                started: Some(1),
                finished: None,
                stop_signal: None,
                detached: false,
                init_pid: None,
                restart_count: 0,
                restarting: false,
            };
            dir.write_state(&store, &state).unwrap();
            (dir.id, lock)
        };
        // A runner that died drops its lock; a live one keeps it.
        let (abandoned, _) = make(true, Some(dead_pid));
        let (kept, _) = make(false, Some(dead_pid));
        let (running, _held) = make(true, Some(std::process::id() as i32));
        store.remove_abandoned_containers().unwrap();
        let ids: Vec<String> = store
            .containers()
            .unwrap()
            .into_iter()
            .map(|(d, _)| d.id)
            .collect();
        assert!(!ids.contains(&abandoned));
        assert!(ids.contains(&kept) && ids.contains(&running));
    }

    #[test]
    fn a_container_whose_runner_died_is_recorded_as_exited() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let (dir, lock) = store.create_container().unwrap();
        let state = ContainerState {
            id: dir.id.clone(),
            name: "lost".into(),
            image: "i".into(),
            image_digest: Digest::of_bytes(b"d"),
            command: vec![],
            created: 1,
            pid: Some(1),
            exit_code: None,
            auto_remove: false,
            started: Some(5),
            finished: None,
            stop_signal: None,
            detached: true,
            init_pid: None,
            restart_count: 0,
            restarting: false,
        };
        dir.write_state(&store, &state).unwrap();
        assert_eq!(dir.status(&state), Status::Running { since: 5 });
        store.record_lost_containers().unwrap();
        assert_eq!(
            dir.read_state().unwrap().exit_code,
            None,
            "its lock is held"
        );
        drop(lock);
        assert_eq!(dir.status(&state), Status::Created);
        store.record_lost_containers().unwrap();
        let recorded = dir.read_state().unwrap();
        assert_eq!(recorded.exit_code, Some(LOST_EXIT_CODE));
        assert!(recorded.finished.is_some() && recorded.pid.is_none());
    }

    #[test]
    fn a_dir_without_state_is_abandoned_only_when_nobody_holds_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        // Being set up by this (live) process: kept.
        let (live, _live_lock) = store.create_container().unwrap();
        // Set up by a kiln that was killed before it wrote `state.json` (its lock went
        // with it).
        let (dead, _) = store.create_container().unwrap();
        // A `--rm` container's state does not wait for the disk: after a crash of the
        // machine it may be empty.
        let (torn, torn_lock) = store.create_container().unwrap();
        fs::write(torn.path.join("state.json"), b"").unwrap();
        drop(torn_lock);
        let abandoned: Vec<String> = store
            .abandoned_containers()
            .unwrap()
            .into_iter()
            .map(|(d, state)| {
                assert!(state.is_none());
                d.id
            })
            .collect();
        let mut expected = vec![dead.id.clone(), torn.id.clone()];
        expected.sort();
        let mut abandoned = abandoned;
        abandoned.sort();
        assert_eq!(abandoned, expected);
        store.remove_abandoned_containers().unwrap();
        assert!(live.path.is_dir() && !dead.path.exists() && !torn.path.exists());
        // Removal goes through `tmp/` and leaves nothing there.
        store.remove_container(&live).unwrap();
        assert!(!live.path.exists());
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    fn state_of(dir: &ContainerDir, exit_code: Option<i32>) -> ContainerState {
        ContainerState {
            id: dir.id.clone(),
            name: dir.id[..12].into(),
            image: "i".into(),
            image_digest: Digest::of_bytes(b"d"),
            command: vec![],
            created: 1,
            pid: Some(1),
            exit_code,
            auto_remove: false,
            started: Some(1),
            finished: exit_code.map(|_| 2),
            stop_signal: None,
            detached: false,
            init_pid: None,
            restart_count: 0,
            restarting: false,
        }
    }

    fn indexed(store: &Store) -> Vec<String> {
        let mut ids: Vec<String> = list_names(&store.live_dir())
            .unwrap()
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect();
        ids.sort();
        ids
    }

    /// The look for lost containers reads only those that may still run: ended ones leave
    /// the index when their end is written, and come back when they start again.
    #[test]
    fn only_containers_that_may_still_run_are_indexed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let (ended, _) = store.create_container().unwrap();
        let (running, lock) = store.create_container().unwrap();
        assert_eq!(indexed(&store).len(), 2, "indexed from creation");
        ended
            .write_state(&store, &state_of(&ended, Some(0)))
            .unwrap();
        running
            .write_state(&store, &state_of(&running, None))
            .unwrap();
        assert_eq!(indexed(&store), vec![running.id.clone()]);
        // A restart (kiln start) puts it back; a removal takes it out.
        ended.write_state(&store, &state_of(&ended, None)).unwrap();
        assert_eq!(indexed(&store).len(), 2);
        store.remove_container(&ended).unwrap();
        assert_eq!(indexed(&store), vec![running.id.clone()]);
        // Its runner dies: found through the index and recorded.
        drop(lock);
        store.record_lost_containers().unwrap();
        assert_eq!(
            running.read_state().unwrap().exit_code,
            Some(LOST_EXIT_CODE)
        );
        assert!(indexed(&store).is_empty());
    }

    /// A store from before the index: its first look indexes every container that has not
    /// ended (a lost one is found), and markers without a container are dropped.
    #[test]
    fn a_store_from_before_the_index_is_indexed_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let (ended, _) = store.create_container().unwrap();
        let (lost, lock) = store.create_container().unwrap();
        ended
            .write_state(&store, &state_of(&ended, Some(0)))
            .unwrap();
        lost.write_state(&store, &state_of(&lost, None)).unwrap();
        drop(lock);
        fs::remove_dir_all(store.live_dir()).unwrap();
        store.record_lost_containers().unwrap();
        assert_eq!(lost.read_state().unwrap().exit_code, Some(LOST_EXIT_CODE));
        assert_eq!(ended.read_state().unwrap().exit_code, Some(0));
        assert!(store.live_dir().join(COMPLETE).exists());
        store.mark_live("0123").unwrap();
        store.record_lost_containers().unwrap();
        assert!(
            indexed(&store).is_empty(),
            "a marker without a container goes"
        );
    }
}
