//! Named networks (`kiln network create NAME`): their definitions, kept in the store, and
//! the [`Network`] each one is.
//!
//! A named network belongs to the store that made it: `$ROOT/networks/named/NAME/`
//! holds its definition (`network.json`: a random ID, the subnet, `--internal`, its own
//! upstream resolvers) and its IPAM state (`NAME.json`, `NAME.lock`, `NAME.leases/`, and
//! `NAME.dns.lock` of its DNS responder). Its bridge (`kb` + 12 hex digits of the ID) and
//! nftables table (`kiln_` + the same) are named from the ID, so two stores on one host
//! never take each other's, and exist only while a container is attached (as for the
//! default network: [`Network`] makes them with the first lease and removes them with
//! the last). Creating and removing definitions happens under `named/.lock`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use kiln_network::{Network, NetworkConfig, NetworkError, Subnet};
use kiln_store::Store;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Names `kiln run --network` gives another meaning.
pub const RESERVED: [&str; 3] = ["bridge", "host", "none"];

const DEFINITION_FILE: &str = "network.json";

/// A container's place on a named network: the network and the extra names it has there
/// (`--network-alias`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkChoice {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// What `kiln network create` decided, kept as `network.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    pub name: String,
    /// 64 hex digits, random.
    pub id: String,
    pub subnet: String,
    #[serde(default)]
    pub internal: bool,
    /// Resolvers its DNS responder forwards to instead of the host's (`--dns`).
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// Seconds since the epoch.
    pub created: u64,
}

/// Everything that can go wrong with a named network.
#[derive(Debug, thiserror::Error)]
pub enum NamedNetworkError {
    #[error("{0:?} is a reserved network name")]
    Reserved(String),
    #[error("invalid network name {0:?}: letters, digits, '-' and '_', starting with a letter, at most 64")]
    InvalidName(String),
    #[error("network {0} already exists")]
    Exists(String),
    #[error("no such network: {0}")]
    NotFound(String),
    #[error("network {network} is in use by {}", containers.join(", "))]
    InUse {
        network: String,
        containers: Vec<String>,
    },
    #[error("subnet {subnet} overlaps network {other} ({other_subnet})")]
    Overlaps {
        subnet: String,
        other: String,
        other_subnet: String,
    },
    #[error("no free /24 subnet left in 10.89.1.0–10.127.255.0")]
    NoFreeSubnet,
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is not a valid network definition: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl NamedNetworkError {
    pub fn hint(&self) -> Option<String> {
        match self {
            NamedNetworkError::Reserved(_) | NamedNetworkError::Exists(_) => {
                Some("pick another name; kiln network ls lists the networks".into())
            }
            NamedNetworkError::NotFound(_) => Some(
                "kiln network ls lists the networks; kiln network create NAME makes one".into(),
            ),
            NamedNetworkError::InUse { network, .. } => Some(format!(
                "stop or remove those containers first (kiln network inspect {network} lists them)"
            )),
            NamedNetworkError::Overlaps { .. } | NamedNetworkError::NoFreeSubnet => {
                Some("give another --subnet, or remove networks no longer used".into())
            }
            NamedNetworkError::Network(e) => e.hint(),
            NamedNetworkError::Corrupt { path, .. } => Some(format!(
                "remove {} (no container can be using it)",
                path.parent().unwrap_or(path).display()
            )),
            _ => None,
        }
    }
}

type Result<T, E = NamedNetworkError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> NamedNetworkError + '_ {
    move |source| NamedNetworkError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `$ROOT/networks/named`.
pub fn named_dir(store: &Store) -> PathBuf {
    store.root().join("networks").join("named")
}

impl Definition {
    /// The network's dir: its definition and IPAM state.
    pub fn dir(&self, store: &Store) -> PathBuf {
        named_dir(store).join(&self.name)
    }

    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    pub fn subnet(&self) -> Result<Subnet> {
        Ok(self.subnet.parse::<Subnet>()?)
    }

    pub fn gateway(&self) -> Result<Ipv4Addr> {
        Ok(self.subnet()?.gateway())
    }

    /// The bridge network this definition is.
    pub fn network(&self, store: &Store) -> Result<Network> {
        let config = NetworkConfig {
            name: self.name.clone(),
            bridge: format!("kb{}", self.short_id()),
            table: format!("kiln_{}", self.short_id()),
            subnet: self.subnet()?,
            state_dir: self.dir(store),
            forwarding_dir: crate::network::DEFAULT_NETWORK_STATE.into(),
            internal: self.internal,
            isolated: true,
        };
        Ok(Network::new(config)?)
    }
}

/// Checks a name for `kiln network create`.
pub fn check_name(name: &str) -> Result<()> {
    if RESERVED.contains(&name) {
        return Err(NamedNetworkError::Reserved(name.to_owned()));
    }
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match valid {
        true => Ok(()),
        false => Err(NamedNetworkError::InvalidName(name.to_owned())),
    }
}

/// Held while definitions are made or removed.
fn lock(store: &Store) -> Result<Flock<File>> {
    let dir = named_dir(store);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io_err(&path)(e.into()))
}

/// What `kiln network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: String,
    pub subnet: Option<Subnet>,
    pub internal: bool,
    pub dns: Vec<IpAddr>,
}

/// Makes a named network's definition (no bridge yet: the first container makes it).
pub fn create(store: &Store, request: CreateRequest) -> Result<Definition> {
    check_name(&request.name)?;
    let _lock = lock(store)?;
    if find(store, &request.name).is_ok() {
        return Err(NamedNetworkError::Exists(request.name));
    }
    let others = list(store)?;
    let subnet = match request.subnet {
        Some(subnet) => {
            check_subnet(&subnet, &others)?;
            subnet
        }
        None => pick_subnet(&others)?,
    };
    let definition = Definition {
        name: request.name,
        id: random_id()?,
        subnet: subnet.to_string(),
        internal: request.internal,
        dns: request.dns,
        created: kiln_store::containers::now(),
    };
    let dir = definition.dir(store);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let path = dir.join(DEFINITION_FILE);
    let json = serde_json::to_vec_pretty(&definition).expect("a definition serialises");
    let tmp = dir.join(".network.json.tmp");
    fs::write(&tmp, json)
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(io_err(&path))?;
    Ok(definition)
}

/// A subnet is refused when it overlaps another kiln network (the default one
/// included) or a route of the host.
fn check_subnet(subnet: &Subnet, others: &[Definition]) -> Result<()> {
    let default = crate::network::default_subnet();
    if subnet.overlaps(&default) {
        return Err(NamedNetworkError::Overlaps {
            subnet: subnet.to_string(),
            other: "bridge".into(),
            other_subnet: default.to_string(),
        });
    }
    for other in others {
        let other_subnet = other.subnet()?;
        if subnet.overlaps(&other_subnet) {
            return Err(NamedNetworkError::Overlaps {
                subnet: subnet.to_string(),
                other: other.name.clone(),
                other_subnet: other.subnet.clone(),
            });
        }
    }
    Ok(kiln_network::routes::check_free(subnet)?)
}

/// The first /24 from 10.89.1.0 up that [`check_subnet`] accepts.
fn pick_subnet(others: &[Definition]) -> Result<Subnet> {
    let first = u32::from(Ipv4Addr::new(10, 89, 1, 0)) >> 8;
    let last = u32::from(Ipv4Addr::new(10, 127, 255, 0)) >> 8;
    for n in first..=last {
        let subnet = Subnet::new(Ipv4Addr::from(n << 8), 24)?;
        match check_subnet(&subnet, others) {
            Ok(()) => return Ok(subnet),
            Err(NamedNetworkError::Overlaps { .. })
            | Err(NamedNetworkError::Network(NetworkError::SubnetOverlapsRoute { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(NamedNetworkError::NoFreeSubnet)
}

fn random_id() -> Result<String> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 32];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err(path))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Every named network of the store, by name.
pub fn list(store: &Store) -> Result<Vec<Definition>> {
    let dir = named_dir(store);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let mut all = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(&dir))?;
        let path = entry.path().join(DEFINITION_FILE);
        if path.is_file() {
            all.push(read(&path)?);
        }
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

fn read(path: &Path) -> Result<Definition> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|source| NamedNetworkError::Corrupt {
        path: path.to_owned(),
        source,
    })
}

/// The network called `key`, or whose ID starts with it (at least 3 digits).
pub fn find(store: &Store, key: &str) -> Result<Definition> {
    let path = named_dir(store).join(key).join(DEFINITION_FILE);
    if check_name(key).is_ok() && path.is_file() {
        return read(&path);
    }
    if key.len() >= 3 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        let matching: Vec<_> = list(store)?
            .into_iter()
            .filter(|d| d.id.starts_with(key))
            .collect();
        if let [one] = &matching[..] {
            return Ok(one.clone());
        }
    }
    Err(NamedNetworkError::NotFound(key.to_owned()))
}

/// Owners (container IDs) of the network's live leases: those of dead kilns are
/// reclaimed first.
pub fn attached(
    store: &Store,
    definition: &Definition,
) -> Result<Vec<(Ipv4Addr, kiln_network::ipam::Lease)>> {
    let network = definition.network(store)?;
    network.reclaim()?;
    Ok(network.leases()?.into_iter().collect())
}

/// Removes a named network: refused while a container is attached.
pub fn remove(store: &Store, key: &str) -> Result<Definition> {
    let _lock = lock(store)?;
    let definition = find(store, key)?;
    let attached = attached(store, &definition)?;
    if !attached.is_empty() {
        let containers = attached
            .iter()
            .map(|(_, lease)| container_name(store, &lease.owner))
            .collect();
        return Err(NamedNetworkError::InUse {
            network: definition.name.clone(),
            containers,
        });
    }
    let dir = definition.dir(store);
    fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    Ok(definition)
}

/// A container's name, or its short ID if it has none any more.
pub fn container_name(store: &Store, id: &str) -> String {
    match store.find_container(id) {
        Ok(Some((_, state))) => state.name,
        _ => id.chars().take(12).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_reserved_ones_refused() {
        for bad in [
            "bridge",
            "host",
            "none",
            "",
            "1net",
            "a b",
            "a/b",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in ["web", "my-net_2", "A"] {
            check_name(good).unwrap();
        }
    }

    #[test]
    fn a_subnet_overlapping_another_network_is_refused() {
        let other = Definition {
            name: "one".into(),
            id: "0".repeat(64),
            subnet: "10.89.1.0/24".into(),
            internal: false,
            dns: Vec::new(),
            created: 0,
        };
        let err = check_subnet(&"10.89.0.0/16".parse().unwrap(), &[]).unwrap_err();
        assert!(err.to_string().contains("overlaps network bridge"), "{err}");
        let err = check_subnet(&"10.89.1.128/25".parse().unwrap(), &[other]).unwrap_err();
        assert!(err.to_string().contains("overlaps network one"), "{err}");
        assert!(err.hint().is_some());
    }
}
