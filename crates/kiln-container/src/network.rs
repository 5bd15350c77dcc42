//! A container on kiln's bridge network (`--network bridge`): its address and published
//! ports, for each run of its command.
//!
//! The runner connects the container's new network namespace between its clone and its
//! first instruction (`kiln_runtime::start_container_attached`), keeps the
//! [`kiln_network::Attachment`] (whose lease lock says the address is in use) for the run,
//! and releases it when the container's PID 1 has ended. What the container got is written
//! to `network.json` in its dir for `kiln inspect`.

use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};

use kiln_network::{Attachment, Network, NetworkConfig};
use kiln_spec::{PortMapping, Protocol};
use kiln_store::{ContainerDir, Store};
use serde::{Deserialize, Serialize};

use super::error::{ContainerError, Result};

/// The file in a container's dir that says what its last run got.
const NETWORK_FILE: &str = "network.json";
/// Every network of its last run, named networks included.
const NETWORKS_FILE: &str = "networks.json";

/// kiln's default bridge network, its state under `$ROOT/networks`.
pub fn default_network(store: &Store) -> Result<Network> {
    let config = NetworkConfig::default_bridge(store.root().join("networks"));
    Network::new(config).map_err(|e| ContainerError::Network(e.to_string()))
}

/// The host side of each published port: every address when none is given, a free port
/// when none is given (chosen now: the attach checks it is still free).
pub fn host_ports(publish: &[PortMapping]) -> Result<Vec<kiln_network::PortMapping>> {
    publish.iter().map(host_port).collect()
}

fn host_port(p: &PortMapping) -> Result<kiln_network::PortMapping> {
    let host_ip = match p.host_ip {
        None => Ipv4Addr::UNSPECIFIED,
        Some(IpAddr::V4(ip)) => ip,
        Some(IpAddr::V6(ip)) => {
            return Err(ContainerError::Network(format!(
                "publishing on the IPv6 address {ip} is not supported yet"
            )))
        }
    };
    let protocol = match p.protocol {
        Protocol::Tcp => kiln_network::Protocol::Tcp,
        Protocol::Udp => kiln_network::Protocol::Udp,
        Protocol::Sctp => {
            return Err(ContainerError::Network(
                "publishing sctp ports is not supported yet".into(),
            ))
        }
    };
    let host_port = match p.host_port {
        Some(port) => port,
        None => free_port(host_ip, protocol)?,
    };
    Ok(kiln_network::PortMapping {
        host_ip,
        host_port,
        container_port: p.container_port,
        protocol,
    })
}

/// A port the kernel says is free on `ip` now.
fn free_port(ip: Ipv4Addr, protocol: kiln_network::Protocol) -> Result<u16> {
    let port = match protocol {
        kiln_network::Protocol::Tcp => TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()),
        kiln_network::Protocol::Udp => UdpSocket::bind((ip, 0)).and_then(|s| s.local_addr()),
    };
    port.map(|a| a.port())
        .map_err(|e| ContainerError::Network(format!("find a free port on {ip}: {e}")))
}

/// What a container's run got on the network, as `kiln inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    pub mac: String,
    pub ports: Vec<kiln_network::PortMapping>,
    /// The named network (none: the default network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

impl NetworkRecord {
    pub fn of(attachment: &Attachment) -> NetworkRecord {
        let mac = kiln_network::bridge::container_mac(attachment.address)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        NetworkRecord {
            address: attachment.address,
            gateway: attachment.gateway,
            prefix: attachment.prefix,
            mac,
            ports: attachment.ports.clone(),
            network: None,
            aliases: Vec::new(),
        }
    }

    /// Writes the records of every network of the run (the first also as the one
    /// record older readers know).
    pub fn write_all(records: &[NetworkRecord], store: &Store, dir: &ContainerDir) -> Result<()> {
        if let Some(first) = records.first() {
            first.write(store, dir)?;
        }
        let json = serde_json::to_vec_pretty(records).expect("network records serialise");
        dir.write_file(store, NETWORKS_FILE, &json)?;
        Ok(())
    }

    /// Every network of the container's last run.
    pub fn read_all(dir: &ContainerDir) -> Vec<NetworkRecord> {
        dir.read_file(NETWORKS_FILE)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .or_else(|| NetworkRecord::read(dir).map(|r| vec![r]))
            .unwrap_or_default()
    }

    pub fn write(&self, store: &Store, dir: &ContainerDir) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("a network record serialises");
        dir.write_file(store, NETWORK_FILE, &json)?;
        Ok(())
    }

    pub fn read(dir: &ContainerDir) -> Option<NetworkRecord> {
        serde_json::from_slice(&dir.read_file(NETWORK_FILE)?).ok()
    }
}

/// Connects the network namespace of process `pid` (the container's first process, just
/// cloned) for container `id`.
pub fn attach(
    network: &Network,
    id: &str,
    pid: i32,
    ports: &[kiln_network::PortMapping],
) -> std::result::Result<Attachment, String> {
    let netns = kiln_network::netns::NetNs::of_pid(pid as u32)
        .map_err(|e| format!("open the container's network namespace: {e}"))?;
    network
        .attach(id, std::os::fd::AsFd::as_fd(&netns), ports)
        .map_err(|e| match e.hint() {
            Some(hint) => format!("{e} ({hint})"),
            None => e.to_string(),
        })
}
