//! kiln's nftables table: masquerade for the network's subnet and DNAT for published
//! ports, written as `nft` scripts and applied as one transaction each (`nft -f -`).
//!
//! Why the tool and not nf_tables netlink, and what each step costs: ARCHITECTURE.md
//! § kiln-network. The table is kiln's alone (`ip kiln`, or the name the network is
//! given); every script names only that table, so no rule kiln did not create is read,
//! changed or removed.
//!
//! Layout:
//! - `ports`: one DNAT rule per published port, replaced whole on every change;
//! - `prerouting` (from other hosts) and `output` (from the host itself, 127.0.0.1
//!   included) jump to `ports` for packets to a local address;
//! - `postrouting`: masquerade what the subnet sends out of any interface but the bridge,
//!   and what leaves through the bridge from 127.0.0.0/8 (DNATed loopback traffic, which
//!   the container could not answer otherwise).
//! - `guard` (before conntrack, raw priority): drops whatever arrives from the bridge for
//!   127.0.0.0/8. The bridge has `route_localnet` (so the host's own 127.0.0.1 can be
//!   DNATed out through it), which would otherwise let a container reach every service
//!   the host binds to its loopback by sending a frame for 127.0.0.1 to the bridge's MAC
//!   with a packet socket (CAP_NET_RAW, a default capability): CVE-2020-8558. Replies of
//!   the DNATed loopback connections are not hit: they arrive for the bridge's address
//!   and become 127.0.0.1 only in conntrack, after this hook.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::ports::PortMapping;
use crate::subnet::Subnet;
use crate::NetworkError;

mod filter;

/// The table of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub bridge: String,
    pub subnet: Subnet,
    /// No masquerade, and no forwarding between the bridge and any other interface.
    pub internal: bool,
    /// No forwarding between this bridge and another kiln network's.
    pub isolated: bool,
}

impl Table {
    /// Creates the table, or resets one a killed kiln left: the chains are declared
    /// (which changes nothing if they exist), every rule flushed and the base rules
    /// added, one transaction. Not `delete table` then `table …`: deleting costs the
    /// kernel's unregistering of the hooks, and made this 16 ms instead of 3.
    pub fn create_script(&self) -> String {
        let Table {
            name,
            bridge,
            subnet,
            ..
        } = self;
        let masquerade = match self.internal {
            true => String::new(),
            false => format!(
                "add rule ip {name} postrouting ip saddr {subnet} oifname != \"{bridge}\" masquerade\n"
            ),
        };
        let script = format!(
            "table ip {name} {{\n\
             \tchain ports {{\n\t}}\n\
             \tchain prerouting {{\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t}}\n\
             \tchain output {{\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             \t}}\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t}}\n\
             \tchain guard {{\n\
             \t\ttype filter hook prerouting priority raw; policy accept;\n\
             \t}}\n\
             }}\n\
             flush table ip {name}\n\
             add rule ip {name} guard iifname \"{bridge}\" ip daddr 127.0.0.0/8 drop\n\
             add rule ip {name} prerouting fib daddr type local jump ports\n\
             add rule ip {name} output fib daddr type local jump ports\n\
             {masquerade}\
             add rule ip {name} postrouting ip saddr 127.0.0.0/8 oifname \"{bridge}\" masquerade\n"
        );
        script + &self.filter_script()
    }

    /// Replaces the port rules with those of `published` (container address, mapping).
    pub fn ports_script(&self, published: &[(Ipv4Addr, PortMapping)]) -> String {
        let name = &self.name;
        let mut script = format!("flush chain ip {name} ports\n");
        for (address, port) in published {
            let only_to = if port.host_ip.is_unspecified() {
                String::new()
            } else {
                format!("ip daddr {} ", port.host_ip)
            };
            script.push_str(&format!(
                "add rule ip {name} ports {only_to}{proto} dport {} dnat ip to {address}:{}\n",
                port.host_port,
                port.container_port,
                proto = port.protocol,
            ));
        }
        script
    }

    /// Removes the table if it exists.
    pub fn delete_script(&self) -> String {
        format!("add table ip {0}\ndelete table ip {0}\n", self.name)
    }
}

/// Runs `nft -f -` with `script` in the calling thread's network namespace.
pub fn apply(script: &str) -> Result<(), NetworkError> {
    let spawned = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(NetworkError::ToolMissing {
                tool: "nft".to_owned(),
                package: "nftables".to_owned(),
            })
        }
        Err(source) => {
            return Err(NetworkError::Netlink {
                what: "running nft".to_owned(),
                source,
            })
        }
    };
    let io_err = |source| NetworkError::Netlink {
        what: "running nft".to_owned(),
        source,
    };
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(script.as_bytes()).map_err(io_err)?;
    drop(stdin);
    let output = child.wait_with_output().map_err(io_err)?;
    if !output.status.success() {
        return Err(NetworkError::Nft {
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    tracing::debug!(script, "nft applied");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;

    fn table() -> Table {
        Table {
            name: "kiln".to_owned(),
            bridge: "kiln0".to_owned(),
            subnet: Subnet::DEFAULT,
            internal: false,
            isolated: false,
        }
    }

    #[test]
    fn port_rules_name_the_address_only_when_one_is_given() {
        let any = PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 18080,
            container_port: 80,
            protocol: Protocol::Tcp,
        };
        let local = PortMapping {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 5353,
            container_port: 53,
            protocol: Protocol::Udp,
        };
        let script = table().ports_script(&[
            (Ipv4Addr::new(10, 89, 0, 2), any),
            (Ipv4Addr::new(10, 89, 0, 3), local),
        ]);
        assert_eq!(
            script,
            "flush chain ip kiln ports\n\
             add rule ip kiln ports tcp dport 18080 dnat ip to 10.89.0.2:80\n\
             add rule ip kiln ports ip daddr 127.0.0.1 udp dport 5353 dnat ip to 10.89.0.3:53\n"
        );
    }

    #[test]
    fn the_table_masquerades_the_subnet_leaving_other_interfaces() {
        let script = table().create_script();
        assert!(script.contains(
            "add rule ip kiln postrouting ip saddr 10.89.0.0/24 oifname != \"kiln0\" masquerade\n"
        ));
        assert!(script.contains("flush table ip kiln\n"));
    }

    #[test]
    fn a_table_left_behind_is_reset_not_doubled() {
        require_root!("nftables in a network namespace");
        crate::test_support::require_tool("nft", "nftables");
        let host = crate::test_support::TestNetns::new("nft");
        let ruleset = || {
            let out = host.exec(&["nft", "list", "ruleset"]);
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        let apply_in_host =
            |script: String| crate::netns::in_netns(host.fd(), || Ok(apply(&script))).unwrap();
        let empty = ruleset();
        let table = table();
        apply_in_host(table.create_script()).unwrap();
        let once = ruleset();
        assert!(once.contains("masquerade"), "{once}");
        let port = PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 18080,
            container_port: 80,
            protocol: Protocol::Tcp,
        };
        apply_in_host(table.ports_script(&[(Ipv4Addr::new(10, 89, 0, 2), port)])).unwrap();
        // As the first container after a crash: the old table and its port rule go.
        apply_in_host(table.create_script()).unwrap();
        assert_eq!(ruleset(), once);
        apply_in_host(table.delete_script()).unwrap();
        apply_in_host(table.delete_script()).unwrap(); // gone is fine
        assert_eq!(ruleset(), empty);
        let err = apply_in_host("add rule ip nowhere x drop\n".to_owned()).unwrap_err();
        assert!(matches!(err, NetworkError::Nft { .. }), "{err}");
    }
}
