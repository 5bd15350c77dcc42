//! Container state: `$ROOT/containers/<id>/` holds a container's overlay upper and work
//! dirs, the files kiln writes for it (/etc/hosts …) and `state.json`, which `kiln ps` and
//! `kiln rm` read.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

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
}

impl ContainerState {
    /// "running", or "exited (N)"; a container whose kiln died is "stopped".
    pub fn status(&self) -> String {
        match (self.exit_code, self.pid) {
            (Some(code), _) => format!("exited ({code})"),
            (None, Some(pid)) if process_alive(pid) => "running".into(),
            _ => "stopped".into(),
        }
    }

    pub fn is_running(&self) -> bool {
        self.exit_code.is_none() && self.pid.is_some_and(process_alive)
    }
}

fn process_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// A container's directory.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub id: String,
    pub path: PathBuf,
}

impl ContainerDir {
    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }

    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }

    pub fn write_state(&self, store: &Store, state: &ContainerState) -> Result<()> {
        let json = serde_json::to_vec_pretty(state).expect("container state serialises");
        fsutil::write_atomic(store, &self.path.join("state.json"), &json)
    }
}

/// The largest `state.json` kiln reads.
const MAX_STATE: u64 = 1 << 20;

impl Store {
    pub fn containers_dir(&self) -> PathBuf {
        self.root().join("containers")
    }

    /// Creates a container dir with a fresh random ID and its upper and work dirs. It is
    /// made in `tmp/` with a `creator` file (this process's ID) and renamed into place, so a
    /// kiln killed before it wrote `state.json` leaves a dir that
    /// [`abandoned_containers`](Store::abandoned_containers) finds.
    pub fn create_container(&self) -> Result<ContainerDir> {
        let parent = self.containers_dir();
        fs::create_dir_all(&parent).map_err(StoreError::io("create", &parent))?;
        let id = random_id()?;
        let staging = fsutil::staging_path(&self.tmp_dir(), "container");
        fs::create_dir(&staging).map_err(StoreError::io("create", &staging))?;
        for sub in ["upper", "work"] {
            let sub = staging.join(sub);
            fs::create_dir(&sub).map_err(StoreError::io("create", &sub))?;
        }
        let creator = staging.join(CREATOR);
        fs::write(&creator, std::process::id().to_string())
            .map_err(StoreError::io("write", &creator))?;
        let path = parent.join(&id);
        fs::rename(&staging, &path).map_err(StoreError::io("rename", &path))?;
        Ok(ContainerDir { id, path })
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
                out.push((ContainerDir { id, path }, state));
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
    /// and container dirs without a `state.json` whose creator is gone (a kiln killed while
    /// it set the container up; their state is `None`).
    pub fn abandoned_containers(&self) -> Result<Vec<(ContainerDir, Option<ContainerState>)>> {
        let mut out: Vec<(ContainerDir, Option<ContainerState>)> = self
            .containers()?
            .into_iter()
            .filter(|(_, state)| {
                state.auto_remove && state.exit_code.is_none() && !state.is_running()
            })
            .map(|(dir, state)| (dir, Some(state)))
            .collect();
        let entries = fs::read_dir(self.containers_dir()).into_iter().flatten();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.join("state.json").exists() {
                continue;
            }
            let creator = fs::read_to_string(path.join(CREATOR)).ok();
            let pid = creator.and_then(|c| c.trim().parse::<i32>().ok());
            if pid.is_some_and(|pid| !process_alive(pid)) {
                let id = entry.file_name().to_string_lossy().into_owned();
                out.push((ContainerDir { id, path }, None));
            }
        }
        Ok(out)
    }

    /// Removes the [abandoned containers](Store::abandoned_containers), so they never
    /// pile up.
    pub fn remove_abandoned_containers(&self) -> Result<()> {
        for (dir, _) in self.abandoned_containers()? {
            self.remove_container(&dir)?;
        }
        Ok(())
    }

    /// Removes a container's directory and everything in it: first renamed into `tmp/`, so
    /// a kiln killed while it removes leaves staging (which the next kiln command removes),
    /// never a container dir without its state.
    pub fn remove_container(&self, dir: &ContainerDir) -> Result<()> {
        let staging = fsutil::staging_path(&self.tmp_dir(), "removing");
        match fs::rename(&dir.path, &staging) {
            Ok(()) => fsutil::remove_tree(&staging),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Io {
                what: "remove",
                path: dir.path.clone(),
                source: e,
            }),
        }
    }
}

/// The file in a container dir naming the kiln process that created it.
const CREATOR: &str = "creator";

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
        let dir = store.create_container().unwrap();
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
        };
        dir.write_state(&store, &state).unwrap();
        assert_eq!(store.containers().unwrap().len(), 1);
        assert_eq!(store.find_container("web").unwrap().unwrap().1, state);
        assert!(store.find_container(&dir.id[..6]).unwrap().is_some());
        assert_eq!(state.status(), "exited (0)");
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
            let dir = store.create_container().unwrap();
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
            };
            dir.write_state(&store, &state).unwrap();
            dir.id
        };
        let abandoned = make(true, Some(dead_pid));
        let kept = make(false, Some(dead_pid));
        let running = make(true, Some(std::process::id() as i32));
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
    fn a_dir_without_state_is_abandoned_only_when_its_creator_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        // Being set up by this (live) process: kept.
        let live = store.create_container().unwrap();
        // Set up by a kiln that was killed before it wrote `state.json`.
        let dead = store.create_container().unwrap();
        fs::write(dead.path.join(CREATOR), (i32::MAX - 1).to_string()).unwrap();
        let abandoned: Vec<String> = store
            .abandoned_containers()
            .unwrap()
            .into_iter()
            .map(|(d, state)| {
                assert!(state.is_none());
                d.id
            })
            .collect();
        assert_eq!(abandoned, std::slice::from_ref(&dead.id));
        store.remove_abandoned_containers().unwrap();
        assert!(live.path.is_dir() && !dead.path.exists());
        // Removal goes through `tmp/` and leaves nothing there.
        store.remove_container(&live).unwrap();
        assert!(!live.path.exists());
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }
}
