//! Container networks (issue 15): addresses, a bridge and veth pairs, NAT and published
//! ports, for `kiln run --network bridge` (through `kiln_container::network`).
//!
//! - [`ipam`]: addresses from a subnet, shared by every kiln process through a state file
//!   under an `flock`; a lease lives while its holder keeps the lock of its lease file,
//!   so a dead kiln's leases are reclaimed, never a PID compared.
//! - [`bridge`]: the bridge and a veth per container over rtnetlink ([`netlink`]),
//!   because one `ip` process costs more (1.6 ms) than the whole setup over netlink
//!   (0.8 ms); the container's end is configured from a thread in its namespace
//!   ([`netns`]).
//! - [`routes`]: a subnet overlapping a host route is refused.
//! - [`nft`]: kiln's own nftables table (masquerade, DNAT of published ports, also from
//!   the host's 127.0.0.1), one `nft -f -` transaction per change.
//! - [`Network`]: what a container start and end call, [`Network::attach`] and
//!   [`Network::detach`], each under the IPAM lock from start to end; the first
//!   container makes the bridge and table and turns `ip_forward` on if it was off, the
//!   last one undoes all three; [`Network::reclaim`] frees what dead kilns left.
//! - [`pasta`]: a container's network without root (issue 16): pasta, run as the user,
//!   gives the namespace an interface, outbound traffic and published ports.
//!
//! Like every library crate of kiln it never prints or reads the environment; errors
//! are [`NetworkError`] with a `hint()`. ARCHITECTURE.md § kiln-network has the design
//! and the figures behind it.

#[cfg(test)]
#[macro_use]
extern crate kiln_testing;

pub mod bridge;
pub mod dns;
mod error;
pub mod forwarding;
pub mod ipam;
pub mod netlink;
pub mod netns;
mod network;
pub mod nft;
pub mod pasta;
pub mod ports;
pub mod routes;
mod subnet;
#[cfg(test)]
mod test_support;

pub use bridge::Shaping;
pub use error::NetworkError;
pub use network::{Attachment, Endpoint, Network, NetworkConfig, Released};
pub use pasta::{Pasta, PastaOptions};
pub use ports::{PortMapping, Protocol};
pub use subnet::Subnet;
