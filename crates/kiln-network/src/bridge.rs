//! The bridge and each container's veth pair, over rtnetlink ([`crate::netlink`]).
//!
//! A container's veth is made with its peer created *directly in the container's
//! namespace* as `eth0` (the veth driver takes the peer's namespace and name in the same
//! request), so the peer never appears in the host's namespace under a temporary name.
//! Deleting the host end deletes the pair; so does the container's namespace ending,
//! which is why a killed container leaves no veth behind, only its lease (reclaimed).

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::PathBuf;

use crate::netlink::Socket;
use crate::netns::in_netns;
use crate::subnet::Subnet;
use crate::NetworkError;

/// The interface name inside the container.
pub const CONTAINER_IFNAME: &str = "eth0";

/// The host end's name for `owner` (a container ID): `kv` and 12 hex digits of a hash
/// (interface names are at most 15 bytes; FNV-1a, stable across runs and versions).
pub fn host_ifname(owner: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in owner.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("kv{:012x}", hash & 0xffff_ffff_ffff)
}

/// The container's MAC address, derived from its IP address (docker's idea): a
/// locally administered unicast prefix `02:6b` ('k') and the four bytes of the address.
/// An address handed out again comes with the same MAC, so the host's neighbour entry
/// for it, left by the container before, is still right. The bridge's own MAC is the
/// gateway address's, so a bridge made again has the one the containers knew.
pub fn container_mac(address: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = address.octets();
    [0x02, 0x6b, a, b, c, d]
}

/// Makes the bridge `name` with the subnet's gateway address, up, unless it exists;
/// returns its index. Its MAC is set (derived from the gateway's address like a
/// container's): a bridge left to choose takes its lowest port's and changes it as
/// containers come and go, and a container that learned the old one loses its gateway
/// (DNS, outbound traffic) until its neighbour entry expires, ~30 s. A new bridge's subnet is first checked against the routes of the
/// namespace, where the bridge's own route would otherwise be found.
pub fn ensure_bridge(
    socket: &mut Socket,
    name: &str,
    subnet: &Subnet,
) -> Result<i32, NetworkError> {
    let lookup = NetworkError::netlink(format!("looking up {name}"));
    let index = match socket.link(name).map_err(lookup)? {
        Some((index, Some(kind))) if kind == "bridge" => index,
        Some(_) => {
            return Err(NetworkError::NotABridge {
                name: name.to_owned(),
            })
        }
        None => {
            crate::routes::check_free(subnet)?;
            socket
                .add_bridge(name, container_mac(subnet.gateway()))
                .map_err(NetworkError::netlink(format!("creating bridge {name}")))?;
            let lookup = NetworkError::netlink(format!("looking up {name}"));
            socket
                .link_index(name)
                .map_err(lookup)?
                .ok_or_else(|| NetworkError::Netlink {
                    what: format!("bridge {name} vanished after it was made"),
                    source: io::Error::from_raw_os_error(libc::ENODEV),
                })?
        }
    };
    // Also on a bridge that exists: a kiln killed between making it and addressing it
    // left it bare. Both are idempotent and cost microseconds.
    match socket.add_address(index, subnet.gateway(), subnet.prefix()) {
        Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {}
        other => other.map_err(NetworkError::netlink(format!(
            "adding {} to {name}",
            subnet.gateway()
        )))?,
    }
    // Lets traffic DNATed from 127.0.0.1 leave through the bridge (published ports on
    // loopback); per interface, so it goes with the bridge and affects nothing else.
    write_sysctl(
        format!("/proc/sys/net/ipv4/conf/{name}/route_localnet"),
        "1",
    )?;
    Ok(index)
}

/// Removes the bridge `name` if it exists; a link of that name that is not a bridge is
/// not kiln's and stays.
pub fn remove_bridge(socket: &mut Socket, name: &str) -> Result<(), NetworkError> {
    let what = || format!("removing {name}");
    match socket.link(name).map_err(NetworkError::netlink(what()))? {
        Some((_, Some(kind))) if kind == "bridge" => delete_link_named(socket, name),
        _ => Ok(()),
    }
}

/// What a container's interface is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    pub address: Ipv4Addr,
    pub subnet: Subnet,
}

/// Bandwidth limits of a container, in bits per second (`--network-rate-in/-out`).
///
/// Both shape with a token bucket filter (TBF) on the egress of one end of the veth:
/// `rate_in` (to the container) on the host end, `rate_out` (from the container) on the
/// container's `eth0`, set before the container's command runs. Shaping where packets
/// leave, rather than policing where they arrive, queues instead of dropping, which TCP
/// follows smoothly. A container given `CAP_NET_ADMIN` could lift its own `rate_out`;
/// moving it to the host end's ingress through an `ifb` device would close that, at the
/// cost of a second device per container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shaping {
    pub rate_in: Option<u64>,
    pub rate_out: Option<u64>,
}

/// A TBF of `bits_per_second` on the link `index`: bursts of 20 ms of traffic, but at
/// least 68 KiB, so that a whole 64 KiB GSO packet fits in the bucket (with 16 KiB, TBF
/// split them and TCP stalled on a retransmission timeout in about a third of the
/// test's runs, 10–20 % below the rate; with 68 KiB none in 8); at most 200 ms of it
/// queued.
fn shape(socket: &mut Socket, index: i32, bits_per_second: u64) -> io::Result<()> {
    let rate = (bits_per_second / 8).max(1);
    let burst = (rate / 50).clamp(68 * 1024, u64::from(u32::MAX / 2)) as u32;
    let limit = (rate / 5)
        .saturating_add(u64::from(burst))
        .min(u64::from(u32::MAX)) as u32;
    socket.set_tbf(index, rate, burst, limit)
}

/// The container's end of a veth: its name, and whether the default route goes through
/// it (a container's first network; `eth1`, … of further networks route only their
/// subnet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inside {
    pub ifname: String,
    pub default_route: bool,
}

impl Default for Inside {
    fn default() -> Inside {
        Inside {
            ifname: CONTAINER_IFNAME.to_owned(),
            default_route: true,
        }
    }
}

/// Makes the veth pair `host` ↔ `eth0` (in `netns`), the host end on the bridge, and
/// inside the namespace: `lo` up, `eth0` with the address, up, default route via the
/// gateway; then the shaping. On failure the pair is removed again.
pub fn attach_veth(
    socket: &mut Socket,
    bridge: i32,
    host: &str,
    netns: BorrowedFd<'_>,
    addressing: Addressing,
    shaping: Shaping,
) -> Result<(), NetworkError> {
    attach_veth_as(
        socket,
        (bridge, host),
        netns,
        addressing,
        shaping,
        &Inside::default(),
    )
}

/// [`attach_veth`] with the container's end named and routed as `inside` says.
pub fn attach_veth_as(
    socket: &mut Socket,
    (bridge, host): (i32, &str),
    netns: BorrowedFd<'_>,
    addressing: Addressing,
    shaping: Shaping,
    inside: &Inside,
) -> Result<(), NetworkError> {
    let mac = container_mac(addressing.address);
    let peer = inside.ifname.as_str();
    let made = socket.add_veth(host, bridge, peer, mac, netns.as_raw_fd());
    let made = match made {
        // A pair of the same name whose namespace is still being destroyed by the
        // kernel (a detach that left the veth to it, then the same container again).
        Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {
            delete_link_named(socket, host)?;
            socket.add_veth(host, bridge, peer, mac, netns.as_raw_fd())
        }
        other => other,
    };
    made.map_err(NetworkError::netlink(format!("creating veth {host}")))?;
    let configured = in_netns(netns, || {
        configure_inside(addressing, shaping.rate_out, inside)
    });
    let mut outside = || -> Result<(), NetworkError> {
        if let Some(rate) = shaping.rate_in {
            let what = || format!("shaping {host}");
            let index = socket
                .link_index(host)
                .map_err(NetworkError::netlink(what()))?;
            let index = index.ok_or_else(|| NetworkError::Netlink {
                what: what(),
                source: io::Error::from_raw_os_error(libc::ENODEV),
            })?;
            shape(socket, index, rate).map_err(NetworkError::netlink(what()))?;
        }
        Ok(())
    };
    let done = configured
        .map_err(|source| NetworkError::Netlink {
            what: format!("configuring the container's {peer}"),
            source,
        })
        .and_then(|()| outside());
    if done.is_err() {
        let _ = delete_link_named(socket, host);
    }
    done
}

/// Runs in the container's namespace (see [`in_netns`]).
fn configure_inside(
    addressing: Addressing,
    rate_out: Option<u64>,
    inside: &Inside,
) -> io::Result<()> {
    let mut socket = Socket::open()?;
    let missing = |name: &str| io::Error::new(io::ErrorKind::NotFound, format!("no {name}"));
    let lo = socket.link_index("lo")?.ok_or_else(|| missing("lo"))?;
    socket.set_up(lo)?;
    let eth0 = socket
        .link_index(&inside.ifname)?
        .ok_or_else(|| missing(&inside.ifname))?;
    socket.add_address(eth0, addressing.address, addressing.subnet.prefix())?;
    socket.set_up(eth0)?;
    if inside.default_route {
        socket.add_default_route(addressing.subnet.gateway(), eth0)?;
    }
    if let Some(rate) = rate_out {
        shape(&mut socket, eth0, rate)?;
    }
    Ok(())
}

/// Removes a container's veth pair by its host end; gone already is fine (the
/// container's namespace ending removes the pair).
pub fn detach_veth(socket: &mut Socket, host: &str) -> Result<(), NetworkError> {
    delete_link_named(socket, host)
}

fn delete_link_named(socket: &mut Socket, name: &str) -> Result<(), NetworkError> {
    let what = || format!("removing {name}");
    let Some(index) = socket
        .link_index(name)
        .map_err(NetworkError::netlink(what()))?
    else {
        return Ok(());
    };
    match socket.delete_link(index) {
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        other => other.map_err(NetworkError::netlink(what())),
    }
}

pub(crate) fn write_sysctl(path: String, value: &str) -> Result<(), NetworkError> {
    let path = PathBuf::from(path);
    fs::write(&path, value).map_err(|source| NetworkError::Sysctl { path, source })
}

#[cfg(test)]
mod tests;
