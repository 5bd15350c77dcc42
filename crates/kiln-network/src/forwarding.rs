//! `ip_forward`, one switch for all of kiln's networks: turned on by the first network
//! that needs it when it was off, turned off again only when the last network that used
//! it is gone — never by one network while another (of this store or another store)
//! still routes through it, and never if it was on before kiln came.
//!
//! Kept apart from each network's IPAM state because that state is per network (and a
//! named network's lives in its store), while the switch is the host's: the state here
//! (`forwarding.json`: whether kiln turned it on, which networks use it) lives in a
//! directory every network of the host is given (`/run/kiln/networks`), under an
//! `flock` of its own, taken inside a network's lock (never the other way round).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bridge::write_sysctl;
use crate::ipam::{read_json, write_json, NetworkLock};
use crate::NetworkError;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// kiln found `ip_forward` off and turned it on.
    enabled_by_kiln: bool,
    /// The tables of the networks that are up.
    users: BTreeSet<String>,
}

/// The host's forwarding switch, its state in `dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    dir: PathBuf,
}

impl Forwarding {
    pub fn new(dir: &Path) -> Forwarding {
        Forwarding {
            dir: dir.to_owned(),
        }
    }

    /// Network `user` comes up: forwarding on (recorded as kiln's doing if it was off).
    pub fn acquire(&self, user: &str) -> Result<(), NetworkError> {
        self.update(|state| {
            if fs::read_to_string(IP_FORWARD)
                .map_err(|source| NetworkError::Sysctl {
                    path: IP_FORWARD.into(),
                    source,
                })?
                .trim()
                == "0"
            {
                write_sysctl(IP_FORWARD.to_owned(), "1")?;
                state.enabled_by_kiln = true;
            }
            state.users.insert(user.to_owned());
            Ok(())
        })
    }

    /// Network `user` went down: forwarding off if kiln turned it on and no other kiln
    /// network is up.
    pub fn release(&self, user: &str) -> Result<(), NetworkError> {
        self.update(|state| {
            state.users.remove(user);
            if state.users.is_empty() && state.enabled_by_kiln {
                write_sysctl(IP_FORWARD.to_owned(), "0")?;
                state.enabled_by_kiln = false;
            }
            Ok(())
        })
    }

    fn update(
        &self,
        change: impl FnOnce(&mut State) -> Result<(), NetworkError>,
    ) -> Result<(), NetworkError> {
        fs::create_dir_all(&self.dir).map_err(|source| NetworkError::State {
            path: self.dir.clone(),
            source,
        })?;
        let _lock = NetworkLock::of(&self.dir.join("forwarding.lock"))?;
        let path = self.dir.join("forwarding.json");
        let mut state: State = read_json(&path)?;
        let changed = change(&mut state);
        // Saved also after a failed change: what did happen is recorded.
        write_json(&path, &state)?;
        changed
    }
}
