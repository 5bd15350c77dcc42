//! Address management for one network, shared by every kiln process on the machine.
//!
//! Files, in the directory the caller passes (kiln's store: `$ROOT/networks/`):
//! - `NAME.lock`: every change happens under an exclusive `flock` on it, taken by
//!   [`Ipam::lock`] and held by the [`IpamGuard`] (so a bridge or table is also created
//!   and removed under it: no process removes the bridge while another attaches).
//! - `NAME.json`: the state: subnet, leases (address → owner, host interface, ports),
//!   when the last lease went, whether the port rules are behind. Replaced atomically
//!   (temp file + rename).
//! - `NAME.leases/ADDRESS`: one file per lease, `flock`ed by the process that holds the
//!   lease for as long as it does ([`LeaseHold`]). As for containers and cgroups, a
//!   lease is alive while its lock is held, never by a PID: a lease whose file is not
//!   locked belongs to a kiln that died, and [`IpamGuard::reclaim_stale`] frees it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::ports::PortMapping;
use crate::subnet::Subnet;
use crate::NetworkError;

/// One container's address and what was made for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    /// The host end of the container's veth (removed with the lease).
    pub interface: String,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Names kiln's DNS responder answers with this address (container name, short ID,
    /// aliases); none on the default network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// The shared state of one network, as kept in `NAME.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub subnet: Option<String>,
    pub leases: BTreeMap<Ipv4Addr, Lease>,
    /// When the last lease was released (Unix milliseconds): an idle network lingers
    /// for a while after it ([`crate::Network::reclaim_idle`]).
    #[serde(default)]
    pub last_release_ms: u64,
    /// The port rules may name a released lease: whoever holds the lock next rewrites
    /// them (set when their rewrite was handed to another process, cleared by it).
    #[serde(default)]
    pub ports_stale: bool,
}

/// The files of one network's IPAM.
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    name: String,
    subnet: Subnet,
}

/// The network's state, locked against every other kiln process until dropped.
#[derive(Debug)]
pub struct IpamGuard {
    ipam: Ipam,
    pub state: State,
    lock: NetworkLock,
}

/// The network's lock: an exclusive `flock` on `NAME.lock`. Dropping it unlocks
/// explicitly, not just closes: a process that clones (a build's parallel steps) gives
/// each clone child a copy of every open file until it execs, and a copy alone would keep
/// the lock held — the next step's attach, in the same process, waited for its own
/// child, which waited for that attach. [`IpamGuard::hand_over`] gives the file away
/// still locked instead, for a process that keeps its copy until it is done.
#[derive(Debug)]
pub(crate) struct NetworkLock(Option<File>);

impl Drop for NetworkLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        if let Some(file) = &self.0 {
            // SAFETY: a valid fd for the duration of the call.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        }
    }
}

impl NetworkLock {
    /// Waits for the lock of the file at `path` (made if missing).
    pub(crate) fn of(path: &Path) -> Result<NetworkLock, NetworkError> {
        let io_err = |source| NetworkError::State {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err)?;
        NetworkLock::acquire(file).map_err(io_err)
    }

    fn acquire(file: File) -> io::Result<NetworkLock> {
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: a valid fd for the duration of the call.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(NetworkLock(Some(file)));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// A held lease: its file's lock. Dropping it without [`IpamGuard::release`] leaves a
/// stale lease that the next [`IpamGuard::reclaim_stale`] frees (as a crash would).
#[derive(Debug)]
pub struct LeaseHold {
    pub address: Ipv4Addr,
    _lock: Flock<File>,
}

impl Ipam {
    pub fn new(dir: &Path, name: &str, subnet: Subnet) -> Ipam {
        Ipam {
            dir: dir.to_owned(),
            name: name.to_owned(),
            subnet,
        }
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.name))
    }

    fn lease_path(&self, address: Ipv4Addr) -> PathBuf {
        self.dir
            .join(format!("{}.leases", self.name))
            .join(address.to_string())
    }

    /// Waits for the network's lock and reads its state. The subnet must be the one in
    /// use while any lease is held.
    pub fn lock(&self) -> Result<IpamGuard, NetworkError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| NetworkError::State { path, source }
        };
        fs::create_dir_all(self.dir.join(format!("{}.leases", self.name)))
            .map_err(io_err(&self.dir))?;
        let lock = NetworkLock::of(&self.dir.join(format!("{}.lock", self.name)))?;
        self.guard(lock)
    }

    /// The network's state under a lock this process was handed, still held (see
    /// [`IpamGuard::hand_over`]).
    pub fn adopt(&self, held: std::os::fd::OwnedFd) -> Result<IpamGuard, NetworkError> {
        self.guard(NetworkLock(Some(File::from(held))))
    }

    fn guard(&self, lock: NetworkLock) -> Result<IpamGuard, NetworkError> {
        let state = self.read_state()?;
        let guard = IpamGuard {
            ipam: self.clone(),
            state,
            lock,
        };
        guard.check_subnet()?;
        Ok(guard)
    }

    pub(crate) fn read_state(&self) -> Result<State, NetworkError> {
        read_json(&self.state_path())
    }
}

impl IpamGuard {
    /// The lock's file, still locked, for another process to finish the change under it
    /// ([`Ipam::adopt`]): the lock ends once every copy of it is closed.
    pub fn hand_over(mut self) -> std::os::fd::OwnedFd {
        self.lock.0.take().expect("a guard holds its lock").into()
    }

    fn check_subnet(&self) -> Result<(), NetworkError> {
        let requested = self.ipam.subnet.to_string();
        match &self.state.subnet {
            Some(in_use) if *in_use != requested && !self.state.leases.is_empty() => {
                Err(NetworkError::SubnetInUse {
                    network: self.ipam.name.clone(),
                    in_use: in_use.clone(),
                    requested,
                })
            }
            _ => Ok(()),
        }
    }

    /// Frees the leases whose holder is gone and returns them, so the caller removes
    /// what was made for them (their veth, their ports' rules).
    pub fn reclaim_stale(&mut self) -> Result<Vec<(Ipv4Addr, Lease)>, NetworkError> {
        let mut stale = Vec::new();
        for address in self.state.leases.keys().copied().collect::<Vec<_>>() {
            let path = self.ipam.lease_path(address);
            let Some(lock) = self.try_lock_lease(&path)? else {
                continue; // held: its owner is alive
            };
            // Under the network's lock nobody else opens the file: safe to remove it.
            remove_if_exists(&path)?;
            drop(lock);
            let lease = self
                .state
                .leases
                .remove(&address)
                .expect("key from the map");
            stale.push((address, lease));
        }
        if !stale.is_empty() {
            self.save()?;
        }
        Ok(stale)
    }

    /// The lease file's lock if nobody holds it (a missing file is not held either).
    fn try_lock_lease(&self, path: &Path) -> Result<Option<Flock<File>>, NetworkError> {
        let file = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
        {
            Ok(file) => file,
            Err(source) => {
                return Err(NetworkError::State {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(NetworkError::State {
                path: path.to_owned(),
                source: errno.into(),
            }),
        }
    }

    /// Takes the first free address for `owner` and records it (saved at once, so a
    /// crash right after leaves a stale lease rather than a lost one).
    pub fn allocate(&mut self, owner: &str, interface: &str) -> Result<LeaseHold, NetworkError> {
        let subnet = self.ipam.subnet;
        for address in subnet.container_addresses() {
            if self.state.leases.contains_key(&address) {
                continue;
            }
            let Some(lock) = self.try_lock_lease(&self.ipam.lease_path(address))? else {
                continue; // held without a record: never hand it out twice
            };
            self.state.subnet = Some(subnet.to_string());
            self.state.leases.insert(
                address,
                Lease {
                    owner: owner.to_owned(),
                    interface: interface.to_owned(),
                    ports: Vec::new(),
                    names: Vec::new(),
                },
            );
            self.save()?;
            return Ok(LeaseHold {
                address,
                _lock: lock,
            });
        }
        Err(NetworkError::Exhausted {
            subnet: subnet.to_string(),
        })
    }

    /// Frees a lease held by this process.
    pub fn release(&mut self, hold: LeaseHold) -> Result<Option<Lease>, NetworkError> {
        let lease = self.state.leases.remove(&hold.address);
        remove_if_exists(&self.ipam.lease_path(hold.address))?;
        drop(hold);
        self.state.last_release_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.save()?;
        Ok(lease)
    }

    /// Writes the state: a temp file renamed over the old one.
    pub fn save(&self) -> Result<(), NetworkError> {
        write_json(&self.ipam.state_path(), &self.state)
    }
}

/// A state file kept under a [`NetworkLock`]: its value, the default when it is missing.
pub(crate) fn read_json<T: Default + serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<T, NetworkError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| NetworkError::StateCorrupt {
            path: path.to_owned(),
            source,
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(NetworkError::State {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces a state file: a temp file renamed over the old one.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), NetworkError> {
    let tmp = path.with_extension("json.tmp");
    let write = || -> io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(value)?)?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| NetworkError::State {
        path: path.to_owned(),
        source,
    })
}

fn remove_if_exists(path: &Path) -> Result<(), NetworkError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetworkError::State {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests;
