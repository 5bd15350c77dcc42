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

    /// Creates a container dir with a fresh random ID and its upper and work dirs.
    pub fn create_container(&self) -> Result<ContainerDir> {
        let parent = self.containers_dir();
        fs::create_dir_all(&parent).map_err(StoreError::io("create", &parent))?;
        let id = random_id()?;
        let path = parent.join(&id);
        fs::create_dir(&path).map_err(StoreError::io("create", &path))?;
        let dir = ContainerDir { id, path };
        for sub in [dir.upper(), dir.work()] {
            fs::create_dir(&sub).map_err(StoreError::io("create", &sub))?;
        }
        Ok(dir)
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

    /// `--rm` containers whose kiln process died before it could remove them (`kill -9`).
    pub fn abandoned_containers(&self) -> Result<Vec<(ContainerDir, ContainerState)>> {
        Ok(self
            .containers()?
            .into_iter()
            .filter(|(_, state)| {
                state.auto_remove && state.exit_code.is_none() && !state.is_running()
            })
            .collect())
    }

    /// Removes the [abandoned containers](Store::abandoned_containers), so they never
    /// pile up.
    pub fn remove_abandoned_containers(&self) -> Result<()> {
        for (dir, _) in self.abandoned_containers()? {
            self.remove_container(&dir)?;
        }
        Ok(())
    }

    /// Removes a container's directory and everything in it.
    pub fn remove_container(&self, dir: &ContainerDir) -> Result<()> {
        fsutil::remove_tree(&dir.path)
    }
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
}
