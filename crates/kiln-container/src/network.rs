//! A container on kiln's bridge network (`--network bridge`): its address and published
//! ports, for each run of its command.
//!
//! The runner connects the container's new network namespace between its clone and its
//! first instruction (`kiln_runtime::start_container_attached`), keeps the
//! [`kiln_network::Attachment`] (whose lease lock says the address is in use) for the run,
//! and releases it when the container's PID 1 has ended. What the container got is written
//! to `network.json` in its dir for `kiln inspect`.

use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};

use kiln_network::{Attachment, Network, NetworkConfig, Shaping, Subnet};
use kiln_spec::{PortMapping, Protocol};
use kiln_store::{ContainerDir, Store};
use serde::{Deserialize, Serialize};

use super::error::{ContainerError, Result};

/// The file in a container's dir that says what its last run got.
const NETWORK_FILE: &str = "network.json";
/// Every network of its last run, named networks included.
const NETWORKS_FILE: &str = "networks.json";

/// Where the default network's addresses are leased: one dir for the whole host, not one
/// per store, because the bridge, its subnet and its nftables table are the host's — two
/// stores (a second `--root`, every test's own) share them, so they must share the leases.
/// Under `/run`: a lease ends with the boot it was made in.
pub const DEFAULT_NETWORK_STATE: &str = "/run/kiln/networks";

/// The default network's subnet when kiln's config file names one (`default_subnet:`),
/// set once by the binary before it runs a command that uses networks.
static DEFAULT_SUBNET: std::sync::OnceLock<Subnet> = std::sync::OnceLock::new();

/// Makes `subnet` the default network's (and keeps named networks off it). Once per
/// process; a second call changes nothing.
pub fn configure_default_subnet(subnet: Subnet) {
    let _ = DEFAULT_SUBNET.set(subnet);
}

/// The default network's subnet: the configured one, else 10.89.0.0/24.
pub fn default_subnet() -> Subnet {
    DEFAULT_SUBNET.get().copied().unwrap_or(Subnet::DEFAULT)
}

/// kiln's default bridge network, its state in [`DEFAULT_NETWORK_STATE`].
pub fn default_network() -> Result<Network> {
    let config = NetworkConfig {
        subnet: default_subnet(),
        ..NetworkConfig::default_bridge(DEFAULT_NETWORK_STATE.into())
    };
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
        match records.first() {
            Some(first) => first.write(store, dir)?,
            // Every network was disconnected: no address to show.
            None => match std::fs::remove_file(dir.path.join(NETWORK_FILE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ContainerError::Network(format!(
                        "remove {NETWORK_FILE}: {e}"
                    )))
                }
                _ => {}
            },
        }
        let json = serde_json::to_vec_pretty(records).expect("network records serialise");
        dir.write_run_file(store, NETWORKS_FILE, &json)?;
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
        dir.write_run_file(store, NETWORK_FILE, &json)?;
        Ok(())
    }

    pub fn read(dir: &ContainerDir) -> Option<NetworkRecord> {
        serde_json::from_slice(&dir.read_file(NETWORK_FILE)?).ok()
    }
}

/// Connects the network namespace of process `pid` (the container's first process, just
/// cloned) for container `id`, its veth shaped by `rates`.
pub fn attach(
    network: &Network,
    id: &str,
    pid: i32,
    (ports, rates): (&[kiln_network::PortMapping], Shaping),
) -> std::result::Result<Attachment, String> {
    let netns = kiln_network::netns::NetNs::of_pid(pid as u32)
        .map_err(|e| format!("open the container's network namespace: {e}"))?;
    network
        .attach_shaped(id, std::os::fd::AsFd::as_fd(&netns), ports, rates)
        .map_err(|e| match e.hint() {
            Some(hint) => format!("{e} ({hint})"),
            None => e.to_string(),
        })
}

/// The `/etc/resolv.conf` of a build step on the default network, from the host's
/// ([`crate::resolv::resolv_conf`]): `None` when only kiln's DNS responder could serve it
/// (the host's resolvers are all loopback), which runs for containers only; the step
/// keeps its image's file then.
pub fn bridge_resolv_conf(host: &str) -> Option<String> {
    let gateway = default_subnet().gateway();
    let conf =
        crate::resolv::resolv_conf(host, crate::resolv::ResolverFor::DefaultBridge { gateway });
    (!conf.uses_responder).then_some(conf.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steps_resolv_conf_leaves_out_loopback_resolvers_or_is_the_images() {
        let host = "# by hand\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nsearch lan\noptions edns0\n";
        assert_eq!(
            bridge_resolv_conf(host).as_deref(),
            Some("nameserver 10.255.255.53\nsearch lan\noptions edns0\n")
        );
        assert_eq!(
            bridge_resolv_conf("nameserver 127.0.0.53\nsearch lan\n"),
            None
        );
        assert_eq!(bridge_resolv_conf("nameserver ::1\n"), None);
        assert_eq!(bridge_resolv_conf(""), None);
    }
}
