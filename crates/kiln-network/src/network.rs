//! One bridge network as a whole: what a container start and end call.
//!
//! Every attach and detach runs under the IPAM lock from start to end, so the first
//! container's bridge, table and `ip_forward`, and the last one's teardown, are decided
//! on a state no other kiln changes meanwhile. Both also reclaim the leases of kilns that
//! died (their veth, their port rules), and a detach or [`Network::reclaim`] that leaves
//! no lease tears the network down.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::time::Duration;

use crate::bridge::{self, Addressing, Inside, Shaping};
use crate::forwarding::Forwarding;
use crate::ipam::{Ipam, IpamGuard, Lease, LeaseHold};
use crate::netlink::Socket;
use crate::nft::{self, Table};
use crate::ports::{PortMapping, Protocol};
use crate::subnet::Subnet;
use crate::NetworkError;

/// A bridge network's names and subnet, and where its state is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Names the state files (`NAME.json`, …).
    pub name: String,
    /// The bridge interface (at most 15 bytes).
    pub bridge: String,
    /// kiln's nftables table for this network.
    pub table: String,
    pub subnet: Subnet,
    /// kiln's store gives `$ROOT/networks`.
    pub state_dir: PathBuf,
    /// Where the host's `ip_forward` switch is kept ([`Forwarding`]): the same directory
    /// for every network of the host.
    pub forwarding_dir: PathBuf,
    /// No masquerade and no forwarding out of the bridge (`kiln network create
    /// --internal`).
    pub internal: bool,
    /// Containers on other kiln bridges cannot reach this network's, nor it theirs
    /// (named networks, as docker isolates its networks).
    pub isolated: bool,
}

impl NetworkConfig {
    /// The default network: bridge `kiln0`, table `ip kiln`, 10.89.0.0/24.
    pub fn default_bridge(state_dir: PathBuf) -> NetworkConfig {
        NetworkConfig {
            name: "kiln".to_owned(),
            bridge: "kiln0".to_owned(),
            table: "kiln".to_owned(),
            subnet: Subnet::DEFAULT,
            forwarding_dir: state_dir.clone(),
            state_dir,
            internal: false,
            isolated: false,
        }
    }
}

/// What a container got: its address, and its lease (held until [`Network::detach`]).
#[derive(Debug)]
pub struct Attachment {
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    /// The host end of its veth.
    pub interface: String,
    pub ports: Vec<PortMapping>,
    hold: LeaseHold,
}

/// How a container appears on a network beyond its address: its interface inside, and
/// the names kiln's DNS responder answers with its address (kept in its lease).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub inside: Inside,
    pub names: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Network {
    config: NetworkConfig,
    ipam: Ipam,
}

impl Network {
    /// Checks the names (they go into interface names and nft scripts).
    pub fn new(config: NetworkConfig) -> Result<Network, NetworkError> {
        let valid = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                && s.as_bytes()[0].is_ascii_alphabetic()
        };
        for (what, value, max) in [
            ("network name", &config.name, 64),
            ("bridge name", &config.bridge, 15),
            ("table name", &config.table, 64),
        ] {
            if !valid(value, max) {
                return Err(NetworkError::InvalidName {
                    what,
                    name: value.clone(),
                });
            }
        }
        let ipam = Ipam::new(&config.state_dir, &config.name, config.subnet);
        Ok(Network { config, ipam })
    }

    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The leases as last saved, read without the network's lock (the state file is
    /// replaced whole): what kiln's DNS responder answers from. A lease whose holder
    /// died stays here until the next attach, release or reclaim frees it.
    pub fn leases(&self) -> Result<BTreeMap<Ipv4Addr, Lease>, NetworkError> {
        Ok(self.ipam.read_state()?.leases)
    }

    /// The file whose `flock` the network's one DNS responder holds.
    pub fn dns_lock_path(&self) -> PathBuf {
        self.config
            .state_dir
            .join(format!("{}.dns.lock", self.config.name))
    }

    fn table(&self) -> Table {
        Table {
            name: self.config.table.clone(),
            bridge: self.config.bridge.clone(),
            subnet: self.config.subnet,
            internal: self.config.internal,
            isolated: self.config.isolated,
        }
    }

    /// Connects the network namespace `netns` of container `owner`, publishing `ports`.
    /// Runs in the host's network namespace (the calling thread's).
    pub fn attach(
        &self,
        owner: &str,
        netns: BorrowedFd<'_>,
        ports: &[PortMapping],
    ) -> Result<Attachment, NetworkError> {
        self.attach_shaped(owner, netns, ports, Shaping::default())
    }

    /// [`Network::attach`] with bandwidth limits.
    pub fn attach_shaped(
        &self,
        owner: &str,
        netns: BorrowedFd<'_>,
        ports: &[PortMapping],
        shaping: Shaping,
    ) -> Result<Attachment, NetworkError> {
        self.attach_endpoint(owner, netns, (ports, shaping), &Endpoint::default())
    }

    /// [`Network::attach_shaped`] with the container's interface and names given.
    pub fn attach_endpoint(
        &self,
        owner: &str,
        netns: BorrowedFd<'_>,
        (ports, shaping): (&[PortMapping], Shaping),
        endpoint: &Endpoint,
    ) -> Result<Attachment, NetworkError> {
        let mut guard = self.ipam.lock()?;
        let mut socket = Socket::open().map_err(NetworkError::netlink("opening rtnetlink"))?;
        let reclaimed = self.remove_stale(&mut guard, &mut socket)?;
        check_ports(&guard, ports)?;
        let bridge = match self.prepare(&mut guard, &mut socket) {
            Ok(bridge) => bridge,
            Err(err) => {
                // A first container that could not make the network leaves none of it.
                if guard.state.leases.is_empty() {
                    let _ = self.settle(&mut guard, &mut socket, true);
                }
                return Err(err);
            }
        };
        // One container may be on several networks: one host end per network.
        let interface = bridge::host_ifname(&format!("{owner}@{}", self.config.bridge));
        let hold = guard.allocate(owner, &interface)?;
        let address = hold.address;
        let link = Link {
            bridge,
            interface: &interface,
            netns,
            shaping,
            endpoint,
        };
        let made = self.connect(&mut guard, &mut socket, link, address, ports, reclaimed);
        if let Err(err) = made {
            // Undo this attach, and the network too if it was the first.
            let _ = bridge::detach_veth(&mut socket, &interface);
            let _ = guard.release(hold);
            let _ = self.settle(&mut guard, &mut socket, true);
            return Err(err);
        }
        Ok(Attachment {
            address,
            gateway: self.config.subnet.gateway(),
            prefix: self.config.subnet.prefix(),
            interface,
            ports: ports.to_vec(),
            hold,
        })
    }

    /// The bridge (made if missing) and, for the first container, the table and
    /// forwarding; the bridge's index. A network whose last container left less than its
    /// linger ago is still up (the state keeps its subnet until the teardown): its table
    /// is not made again, which saved an `nft` run on back-to-back `kiln run --rm`.
    /// One lingering with another subnet (kiln's config changed meanwhile) is torn down
    /// and made anew.
    fn prepare(&self, guard: &mut IpamGuard, socket: &mut Socket) -> Result<i32, NetworkError> {
        let first = guard.state.leases.is_empty();
        let up_with = guard.state.subnet.clone();
        let lingering = first && up_with == Some(self.config.subnet.to_string());
        if first && up_with.is_some() && !lingering {
            self.settle(guard, socket, true)?;
        }
        if first && !lingering {
            // Recorded before anything is made: a kiln killed while making the network
            // leaves a state that says it is up, so a reclaim removes what it made.
            guard.state.subnet = Some(self.config.subnet.to_string());
            guard.save()?;
        }
        let bridge = bridge::ensure_bridge(socket, &self.config.bridge, &self.config.subnet)?;
        if first && !lingering {
            self.start_network()?;
        }
        Ok(bridge)
    }

    fn connect(
        &self,
        guard: &mut IpamGuard,
        socket: &mut Socket,
        link: Link<'_>,
        address: Ipv4Addr,
        ports: &[PortMapping],
        reclaimed: bool,
    ) -> Result<(), NetworkError> {
        let lease = guard
            .state
            .leases
            .get_mut(&address)
            .expect("just allocated");
        lease.ports = ports.to_vec();
        lease.names = link.endpoint.names.clone();
        guard.save()?;
        let addressing = Addressing {
            address,
            subnet: self.config.subnet,
        };
        bridge::attach_veth_as(
            socket,
            (link.bridge, link.interface),
            link.netns,
            addressing,
            link.shaping,
            &link.endpoint.inside,
        )?;
        if !ports.is_empty() || reclaimed || guard.state.ports_stale {
            self.rewrite_ports(guard)?;
        }
        Ok(())
    }

    /// Disconnects a container whose namespace lives on: its veth, its lease and its
    /// port rules; the network itself with the last lease.
    pub fn detach(&self, attachment: Attachment) -> Result<(), NetworkError> {
        self.end(attachment, true)
    }

    /// Like [`Network::detach`] for a container whose network namespace has ended (its
    /// processes gone, no fd of it held): the kernel removes the veth pair itself, in
    /// the background, so kiln does not wait the 20–30 ms a veth's deletion takes.
    pub fn release(&self, attachment: Attachment) -> Result<(), NetworkError> {
        self.end(attachment, false)
    }

    /// [`Network::release`] that leaves the bridge, table and forwarding in place when
    /// this was the last container (its port rules go at once); `true` then: the caller
    /// has [`Network::reclaim`] remove them later, off the path of the exit it reports —
    /// deleting them costs the kernel ~65 ms, which a lone `kiln run --rm` would wait for.
    /// A container that attaches meanwhile finds the network ready.
    pub fn release_keeping_network(&self, attachment: Attachment) -> Result<bool, NetworkError> {
        self.end_keeping_network(attachment, false)
    }

    /// [`Network::detach`] that leaves the network in place when this was the last
    /// container, as [`Network::release_keeping_network`] does: for a container whose
    /// namespace lives on (`kiln network disconnect` of a running container), whose
    /// veth must go now.
    pub fn detach_keeping_network(&self, attachment: Attachment) -> Result<bool, NetworkError> {
        self.end_keeping_network(attachment, true)
    }

    fn end_keeping_network(
        &self,
        attachment: Attachment,
        remove_veth: bool,
    ) -> Result<bool, NetworkError> {
        let mut guard = self.ipam.lock()?;
        let mut socket = Socket::open().map_err(NetworkError::netlink("opening rtnetlink"))?;
        if remove_veth {
            bridge::detach_veth(&mut socket, &attachment.interface)?;
        }
        guard.release(attachment.hold)?;
        let reclaimed = self.remove_stale(&mut guard, &mut socket)?;
        if !attachment.ports.is_empty() || reclaimed || guard.state.ports_stale {
            self.rewrite_ports(&mut guard)?;
        }
        Ok(guard.state.leases.is_empty())
    }

    /// [`Network::release_keeping_network`] that leaves rewriting the port rules, when
    /// they must change, to the caller: it gets the network's lock, still held, to hand
    /// to a process of its own that calls [`Network::sync_ports`]. Removing a rule costs
    /// the kernel an RCU grace period (~10 ms here), which `kiln run --rm -p` would
    /// otherwise wait for before it reports the exit. Until the rules are rewritten
    /// nobody else takes the lock, so no container gets the address or the host port;
    /// if the lock is dropped instead, `ports_stale` makes its next holder rewrite them.
    pub fn release_deferring_ports(
        &self,
        attachment: Attachment,
    ) -> Result<Released, NetworkError> {
        let mut guard = self.ipam.lock()?;
        let mut socket = Socket::open().map_err(NetworkError::netlink("opening rtnetlink"))?;
        guard.release(attachment.hold)?;
        let reclaimed = self.remove_stale(&mut guard, &mut socket)?;
        let idle = guard.state.leases.is_empty();
        if attachment.ports.is_empty() && !reclaimed && !guard.state.ports_stale {
            return Ok(Released {
                idle,
                ports_lock: None,
            });
        }
        guard.state.ports_stale = true;
        guard.save()?;
        Ok(Released {
            idle,
            ports_lock: Some(guard.hand_over()),
        })
    }

    /// Rewrites the port rules under the lock `held` that [`Network::release_deferring_ports`]
    /// handed over.
    pub fn sync_ports(&self, held: std::os::fd::OwnedFd) -> Result<(), NetworkError> {
        let mut guard = self.ipam.adopt(held)?;
        self.rewrite_ports(&mut guard)
    }

    /// The port rules made to match the leases (one `nft` transaction), `ports_stale`
    /// cleared.
    fn rewrite_ports(&self, guard: &mut IpamGuard) -> Result<(), NetworkError> {
        nft::apply(&self.table().ports_script(&published(guard)))?;
        if guard.state.ports_stale {
            guard.state.ports_stale = false;
            guard.save()?;
        }
        Ok(())
    }

    fn end(&self, attachment: Attachment, remove_veth: bool) -> Result<(), NetworkError> {
        let mut guard = self.ipam.lock()?;
        let mut socket = Socket::open().map_err(NetworkError::netlink("opening rtnetlink"))?;
        if remove_veth {
            bridge::detach_veth(&mut socket, &attachment.interface)?;
        }
        guard.release(attachment.hold)?;
        self.remove_stale(&mut guard, &mut socket)?;
        self.settle(&mut guard, &mut socket, !attachment.ports.is_empty())
    }

    /// Frees what dead kilns left (for `kiln gc` and the start of every kiln run): their
    /// leases and veths, and the network itself if no lease is left.
    pub fn reclaim(&self) -> Result<(), NetworkError> {
        self.reclaim_idle(Duration::ZERO)
    }

    /// [`Network::reclaim`] for the process a last container's runner leaves behind
    /// `linger` earlier: an idle network goes only if no container left it since — a
    /// later one's runner left a process of its own to decide. Without this, back-to-back
    /// `kiln run --rm` found the network torn down under them every `linger`.
    pub fn reclaim_idle(&self, linger: Duration) -> Result<(), NetworkError> {
        let mut guard = self.ipam.lock()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let idle_for = Duration::from_millis(now.saturating_sub(guard.state.last_release_ms));
        if guard.state.leases.is_empty() && idle_for < linger {
            return Ok(());
        }
        let mut socket = Socket::open().map_err(NetworkError::netlink("opening rtnetlink"))?;
        let reclaimed = self.remove_stale(&mut guard, &mut socket)?;
        // With no lease, whatever is left goes (the state says the network is up from
        // before its bridge is made). A network already down is left alone: removing
        // its table again would make it for a moment (`add table` then `delete table`).
        let up = guard.state.subnet.is_some();
        if reclaimed || (guard.state.leases.is_empty() && up) {
            self.settle(&mut guard, &mut socket, true)?;
        }
        Ok(())
    }

    /// Frees the leases whose holders are gone and removes their veths; true if any.
    fn remove_stale(
        &self,
        guard: &mut IpamGuard,
        socket: &mut Socket,
    ) -> Result<bool, NetworkError> {
        let stale = guard.reclaim_stale()?;
        for (address, Lease { interface, .. }) in &stale {
            tracing::debug!(%address, interface, "reclaiming a stale lease");
            bridge::detach_veth(socket, interface)?;
        }
        Ok(!stale.is_empty())
    }

    /// After leases went: the network torn down if none is left, else the port rules
    /// rewritten if `ports_changed`.
    fn settle(
        &self,
        guard: &mut IpamGuard,
        socket: &mut Socket,
        ports_changed: bool,
    ) -> Result<(), NetworkError> {
        if !guard.state.leases.is_empty() {
            if ports_changed || guard.state.ports_stale {
                self.rewrite_ports(guard)?;
            }
            return Ok(());
        }
        // Every step is tried even when one fails, so a failure leaves as little as it
        // can; the first error is reported. The state forgets the subnet only when all
        // went, so `reclaim` tries again.
        // Forwarding first: whoever sees the bridge gone sees forwarding settled too.
        let steps = [
            self.forwarding().release(&self.config.table),
            nft::apply(&self.table().delete_script()),
            bridge::remove_bridge(socket, &self.config.bridge),
        ];
        if let Some(err) = steps.into_iter().find_map(Result::err) {
            return Err(err);
        }
        guard.state.subnet = None;
        guard.state.ports_stale = false;
        guard.save()
    }

    fn forwarding(&self) -> Forwarding {
        Forwarding::new(&self.config.forwarding_dir)
    }

    /// The first container's part: kiln's table, and `ip_forward` if it is off.
    fn start_network(&self) -> Result<(), NetworkError> {
        nft::apply(&self.table().create_script())?;
        self.forwarding().acquire(&self.config.table)
    }
}

/// What [`Network::release_deferring_ports`] leaves to its caller.
#[derive(Debug)]
pub struct Released {
    /// No container is left on the network: have it removed after its linger.
    pub idle: bool,
    /// The network's lock, still held, when the port rules must be rewritten: for the
    /// process that calls [`Network::sync_ports`] with it.
    pub ports_lock: Option<std::os::fd::OwnedFd>,
}

/// The veth to make: its host end's name and bridge, and the container's namespace.
struct Link<'a> {
    bridge: i32,
    interface: &'a str,
    netns: BorrowedFd<'a>,
    shaping: Shaping,
    endpoint: &'a Endpoint,
}

/// Every published port of the network with its container's address.
fn published(guard: &IpamGuard) -> Vec<(Ipv4Addr, PortMapping)> {
    guard
        .state
        .leases
        .iter()
        .flat_map(|(address, lease)| lease.ports.iter().map(move |port| (*address, *port)))
        .collect()
}

/// Refuses a host port another container of the network publishes, or that a process
/// of the host listens on (the DNAT would silently take its traffic): bound for a moment
/// here, in the host's namespace.
fn check_ports(guard: &IpamGuard, ports: &[PortMapping]) -> Result<(), NetworkError> {
    for port in ports {
        let clash = published(guard).into_iter().any(|(_, other)| {
            other.host_port == port.host_port
                && other.protocol == port.protocol
                && (other.host_ip == port.host_ip
                    || other.host_ip.is_unspecified()
                    || port.host_ip.is_unspecified())
        });
        let address = (port.host_ip, port.host_port);
        let bound = match port.protocol {
            Protocol::Tcp => TcpListener::bind(address).map(drop),
            Protocol::Udp => UdpSocket::bind(address).map(drop),
        };
        if clash || bound.is_err() {
            return Err(NetworkError::PortInUse {
                port: format!("{}:{}/{}", port.host_ip, port.host_port, port.protocol),
                by_container: clash,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
