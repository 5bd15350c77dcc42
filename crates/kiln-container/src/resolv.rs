//! A container's `/etc/resolv.conf`: which resolver works from inside its network.
//!
//! From a network namespace of its own, a loopback nameserver of the host (systemd-resolved's
//! 127.0.0.53, a local dnsmasq) is the container's own loopback, where nothing answers.
//! - On a named network: kiln's DNS responder on the network's gateway, which answers
//!   the names of the network's containers and forwards the rest (from the host's
//!   namespace, where loopback resolvers work).
//! - On the default network (docker's default bridge resolves no container names): the
//!   host's nameservers that are not loopback; when none is left, kiln's responder on
//!   the default network's gateway, forwarding only.
//!
//! The host's `search` and `options` lines are kept either way. Build steps on the
//! default network take theirs from here too.

use std::net::{IpAddr, Ipv4Addr};

/// The network a container's resolver must work from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolverFor {
    /// A named network, whose responder is on `gateway`.
    Named { gateway: Ipv4Addr },
    /// kiln's default network, its gateway `gateway`.
    DefaultBridge { gateway: Ipv4Addr },
    /// An ordinary user's default network: pasta, which forwards queries to `nameserver`
    /// to the host's resolver.
    Pasta { nameserver: Ipv4Addr },
}

/// What the container gets, and whether kiln's DNS responder must run for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub text: String,
    /// The text names the gateway: the responder must serve the network.
    pub uses_responder: bool,
}

/// The resolv.conf for a container on `network`, from the host's (`host`, its text).
pub fn resolv_conf(host: &str, network: ResolverFor) -> ResolvConf {
    let kept: Vec<&str> = host
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("search") || l.starts_with("domain") || l.starts_with("options"))
        .collect();
    let reachable: Vec<&str> = host
        .lines()
        .map(str::trim)
        .filter(|l| nameserver(l).is_some_and(|ip| !ip.is_loopback()))
        .collect();
    let (servers, uses_responder) = match network {
        ResolverFor::Named { gateway } => (vec![format!("nameserver {gateway}")], true),
        ResolverFor::DefaultBridge { gateway } if reachable.is_empty() => {
            (vec![format!("nameserver {gateway}")], true)
        }
        ResolverFor::DefaultBridge { .. } => {
            (reachable.iter().map(|l| l.to_string()).collect(), false)
        }
        ResolverFor::Pasta { nameserver } => (vec![format!("nameserver {nameserver}")], false),
    };
    let mut text = String::new();
    for line in servers.iter().map(String::as_str).chain(kept) {
        text.push_str(line);
        text.push('\n');
    }
    ResolvConf {
        text,
        uses_responder,
    }
}

fn nameserver(line: &str) -> Option<IpAddr> {
    let rest = line.strip_prefix("nameserver")?;
    // `nameserver fe80::1%eth0`: the zone does not change loopback-ness.
    rest.trim().split('%').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 89, 1, 1);

    #[test]
    fn a_named_network_asks_its_gateway_and_keeps_search_and_options() {
        let host =
            "# generated\nnameserver 192.0.2.53\nsearch corp.example\noptions ndots:2 edns0\n";
        let conf = resolv_conf(host, ResolverFor::Named { gateway: GATEWAY });
        assert_eq!(
            conf.text,
            "nameserver 10.89.1.1\nsearch corp.example\noptions ndots:2 edns0\n"
        );
        assert!(conf.uses_responder);
    }

    #[test]
    fn the_default_network_keeps_the_hosts_reachable_nameservers() {
        let host = "nameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\nsearch x\n";
        let conf = resolv_conf(host, ResolverFor::DefaultBridge { gateway: GATEWAY });
        assert_eq!(conf.text, "nameserver 192.0.2.53\nsearch x\n");
        assert!(!conf.uses_responder);
    }

    #[test]
    fn only_loopback_nameservers_send_the_default_network_to_kiln() {
        let host = "nameserver 127.0.0.53\noptions edns0 trust-ad\n";
        let conf = resolv_conf(host, ResolverFor::DefaultBridge { gateway: GATEWAY });
        assert_eq!(conf.text, "nameserver 10.89.1.1\noptions edns0 trust-ad\n");
        assert!(conf.uses_responder);
        let empty = resolv_conf("", ResolverFor::DefaultBridge { gateway: GATEWAY });
        assert!(empty.uses_responder);
    }
}
