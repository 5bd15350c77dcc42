//! The networks one container is on, for each run of its command: the default network
//! (`--network bridge`) or its named networks (`--network NAME`, `kiln network
//! connect`), the first with `eth0`, the default route and the published ports, the
//! others with `eth1`, … routing only their subnet. What `run_to_end` attaches between
//! the clone and the first instruction and releases at the end.

use std::net::SocketAddr;

use kiln_network::bridge::Inside;
use kiln_network::{Attachment, Endpoint, Network, PortMapping, Shaping};
use kiln_runtime::NetworkMode;
use kiln_store::{ContainerDir, Store};

use super::error::{ContainerError, Result};
use super::named_network::{self, NetworkChoice};
use super::network::{default_network, host_ports, NetworkRecord};
use super::resolv::{resolv_conf, ResolverFor};
use super::start::StartConfig;

/// The name `kiln run --network` and `inspect` give the default network.
pub const DEFAULT_NETWORK: &str = "bridge";

/// One network of the container and how it joins it.
#[derive(Debug, Clone)]
pub struct Joined {
    /// `bridge` or the named network's name.
    pub label: String,
    pub network: Network,
    pub endpoint: Endpoint,
    pub aliases: Vec<String>,
    ports: Vec<PortMapping>,
    /// `--network-rate-in/-out` on the veth of the first network (the one with the
    /// default route, where traffic to and from the outside goes).
    shaping: Shaping,
    /// The network's DNS responder must run: a named network, or the default one when
    /// the container's resolv.conf names its gateway.
    pub needs_responder: bool,
    /// The named network's own upstream resolvers (`--dns`), if any.
    pub upstreams: Vec<SocketAddr>,
}

/// Every network a container on a bridge network joins, in order; empty for `none` and
/// `host`. `name` is the container's name (with its short ID, what DNS answers).
pub fn networks_of(
    store: &Store,
    start: &StartConfig,
    dir: &ContainerDir,
    name: &str,
) -> Result<Vec<Joined>> {
    if start.spec.process.network != NetworkMode::Bridge {
        return Ok(Vec::new());
    }
    let ports = host_ports(&start.publish)?;
    if start.networks.is_empty() {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let network = default_network()?;
        let gateway = network.config().subnet.gateway();
        let needs_responder =
            resolv_conf(&host, ResolverFor::DefaultBridge { gateway }).uses_responder;
        return Ok(vec![Joined {
            label: DEFAULT_NETWORK.into(),
            network,
            endpoint: Endpoint::default(),
            aliases: Vec::new(),
            ports,
            shaping: start.rates,
            needs_responder,
            upstreams: Vec::new(),
        }]);
    }
    if start.networks_disconnected {
        return Ok(Vec::new());
    }
    let mut joined = Vec::new();
    for (index, choice) in start.networks.iter().enumerate() {
        let mut one = named_joined(store, dir, name, choice, index)?;
        if index == 0 {
            one.ports = ports.clone();
            one.shaping = start.rates;
        }
        joined.push(one);
    }
    Ok(joined)
}

/// How the container called `name` joins the named network `choice` as `eth{index}`
/// (the default route with index 0 only), with no published port and no shaping.
pub fn named_joined(
    store: &Store,
    dir: &ContainerDir,
    name: &str,
    choice: &NetworkChoice,
    index: usize,
) -> Result<Joined> {
    let definition = named_network::find(store, &choice.name)?;
    let mut names = vec![name.to_owned(), dir.id[..12].to_owned()];
    names.extend(choice.aliases.iter().cloned());
    names.dedup();
    Ok(Joined {
        label: definition.name.clone(),
        network: definition.network(store)?,
        endpoint: Endpoint {
            inside: Inside {
                ifname: format!("eth{index}"),
                default_route: index == 0,
            },
            names,
        },
        aliases: choice.aliases.clone(),
        ports: Vec::new(),
        shaping: Shaping::default(),
        needs_responder: true,
        upstreams: definition
            .dns
            .iter()
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect(),
    })
}

/// Connects process `pid`'s network namespace (the container's first process, just
/// cloned) to every network; on a failure, what was connected is released again.
pub fn attach_all(
    networks: &[Joined],
    id: &str,
    pid: i32,
) -> std::result::Result<Vec<Attachment>, String> {
    let netns = kiln_network::netns::NetNs::of_pid(pid as u32)
        .map_err(|e| format!("open the container's network namespace: {e}"))?;
    let mut made: Vec<Attachment> = Vec::new();
    for joined in networks {
        match attach_one(joined, id, &netns) {
            Ok(attachment) => made.push(attachment),
            Err(e) => {
                for (joined, attachment) in networks.iter().zip(made) {
                    let _ = joined.network.detach(attachment);
                }
                return Err(e);
            }
        }
    }
    Ok(made)
}

/// Connects the network namespace `netns` of container `id` to one network.
pub fn attach_one(
    joined: &Joined,
    id: &str,
    netns: &kiln_network::netns::NetNs,
) -> std::result::Result<Attachment, String> {
    joined
        .network
        .attach_endpoint(
            id,
            std::os::fd::AsFd::as_fd(netns),
            (&joined.ports, joined.shaping),
            &joined.endpoint,
        )
        .map_err(|e| {
            let hint = e.hint().map(|h| format!(" ({h})")).unwrap_or_default();
            format!("network {}: {e}{hint}", joined.label)
        })
}

/// What each attachment is, as `kiln inspect` shows it.
pub fn records(networks: &[Joined], attachments: &[Attachment]) -> Vec<NetworkRecord> {
    networks
        .iter()
        .zip(attachments)
        .map(|(joined, attachment)| {
            let mut record = NetworkRecord::of(attachment);
            record.network = Some(joined.label.clone());
            record.aliases = joined.aliases.clone();
            record
        })
        .collect()
}

/// What the end of a run leaves to the runner, per network label.
#[derive(Debug, Default)]
pub struct RunEnd {
    /// Networks left without a container: their bridge and table go a little later.
    pub idle: Vec<String>,
    /// Networks whose port rules are still to be rewritten, with their lock, held: for a
    /// process of the runner's own (`Network::sync_ports`), off the path of the exit.
    pub port_locks: Vec<(String, std::os::fd::OwnedFd)>,
    pub problems: Vec<ContainerError>,
}

/// Releases each attachment of a container whose namespace has ended.
pub fn release_all(networks: &[Joined], attachments: Vec<Attachment>) -> RunEnd {
    let mut end = RunEnd::default();
    for (joined, attachment) in networks.iter().zip(attachments) {
        match joined.network.release_deferring_ports(attachment) {
            Ok(released) => {
                if released.idle {
                    end.idle.push(joined.label.clone());
                }
                if let Some(lock) = released.ports_lock {
                    end.port_locks.push((joined.label.clone(), lock));
                }
            }
            Err(e) => end.problems.push(ContainerError::Network(format!(
                "release the container's address on {}: {e}",
                joined.label
            ))),
        }
    }
    end
}

/// The network a label names: `bridge` or a named network.
pub fn network_named(store: &Store, label: &str) -> Result<Network> {
    match label {
        DEFAULT_NETWORK => default_network(),
        name => Ok(named_network::find(store, name)?.network(store)?),
    }
}

/// The upstream resolvers of the network called `label` when it names its own.
pub fn own_upstreams(store: &Store, label: &str) -> Result<Vec<SocketAddr>> {
    match label {
        DEFAULT_NETWORK => Ok(Vec::new()),
        name => Ok(named_network::find(store, name)?
            .dns
            .iter()
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect()),
    }
}

impl From<kiln_network::NetworkError> for ContainerError {
    fn from(e: kiln_network::NetworkError) -> ContainerError {
        ContainerError::Network(match e.hint() {
            Some(hint) => format!("{e} ({hint})"),
            None => e.to_string(),
        })
    }
}
