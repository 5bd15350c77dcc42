//! `kiln port CONTAINER [PRIVATE_PORT[/PROTO]]`: where a running container's published
//! ports are on the host, in docker's words (`80/tcp -> 0.0.0.0:18080`), so that a script
//! finds the free port `-P` or `-p 127.0.0.1::80` chose. Also the docker-shaped texts of
//! those ports that `kiln ps` and `kiln inspect` show, so the three always agree.

use std::collections::BTreeMap;

use clap::Args;
use serde_json::{json, Value};

use kiln_network::{PortMapping, Protocol};
use kiln_store::containers::Status;
use kiln_store::{ContainerDir, ContainerState};

use super::{CmdResult, Failure, Globals};

#[derive(Args, Debug)]
#[command(
    about = "List a container's published ports, or where one of them is on the host",
    after_help = "Examples:\n  kiln port web            # 80/tcp -> 0.0.0.0:18080, one line per published port\n  kiln port web 80         # 0.0.0.0:18080\n  kiln port web 53/udp\n  curl http://$(kiln port web 80)/"
)]
pub struct PortArgs {
    /// Container name or ID (a unique ID prefix is enough)
    container: String,
    /// Only where this container port is published: PORT or PORT/tcp|udp (tcp if none)
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    private_port: Option<String>,
}

pub fn port(globals: &Globals, args: PortArgs) -> CmdResult {
    let store = super::containers::container_store(globals)?;
    let wanted = args.private_port.as_deref().map(private_port).transpose()?;
    let (dir, state) = super::containers::find(&store, &args.container)?;
    let ports = published(&dir, &state);
    let Some((port, protocol)) = wanted else {
        for p in &ports {
            println!("{}/{} -> {}", p.container_port, p.protocol, host_address(p));
        }
        return Ok(0);
    };
    let matching: Vec<&PortMapping> = ports
        .iter()
        .filter(|p| p.container_port == port && p.protocol == protocol)
        .collect();
    if matching.is_empty() {
        return Err(Failure::user(format!(
            "no public port {port}/{protocol} published for {}",
            args.container
        ))
        .hint(Some(format!(
            "`kiln port {}` lists the ports it publishes (a running container's only)",
            args.container
        ))));
    }
    for p in matching {
        println!("{}", host_address(p));
    }
    Ok(0)
}

/// `80`, `80/tcp` or `53/udp`.
fn private_port(text: &str) -> Result<(u16, Protocol), Failure> {
    let bad = || {
        Failure::user(format!("invalid port {text:?}"))
            .hint(Some("write PORT or PORT/tcp|udp, e.g. 80 or 53/udp".into()))
    };
    let (port, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return Err(bad()),
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((p, protocol)),
        _ => Err(bad()),
    }
}

/// The host ports a container publishes now: its last run's, while it runs (docker shows
/// none for a container that does not run), in the order of container port, protocol,
/// host address.
pub(super) fn published(dir: &ContainerDir, state: &ContainerState) -> Vec<PortMapping> {
    if !matches!(dir.status(state), Status::Running { .. }) {
        return Vec::new();
    }
    let mut ports = match kiln_container::network::NetworkRecord::read(dir) {
        Some(net) => net.ports,
        None => kiln_container::rootless_network::published_ports(&dir.path),
    };
    ports.sort_by_key(|p| {
        (
            p.container_port,
            p.protocol.to_string(),
            p.host_ip,
            p.host_port,
        )
    });
    ports
}

/// `0.0.0.0:18080`.
fn host_address(p: &PortMapping) -> String {
    format!("{}:{}", p.host_ip, p.host_port)
}

/// `kiln ps`'s PORTS, docker's format: `0.0.0.0:18080->80/tcp, 127.0.0.1:5353->53/udp`,
/// consecutive ports of one address and protocol as one range
/// (`0.0.0.0:8000-8002->80-82/tcp`).
pub(super) fn ps_column(ports: &[PortMapping]) -> String {
    let mut sorted = ports.to_vec();
    sorted.sort_by_key(|p| {
        (
            p.host_ip,
            p.protocol.to_string(),
            p.container_port,
            p.host_port,
        )
    });
    // Each run: its first mapping and how many follow it port by port.
    let mut runs: Vec<(PortMapping, u16)> = Vec::new();
    for p in sorted {
        match runs.last_mut() {
            Some((first, n))
                if first.host_ip == p.host_ip
                    && first.protocol == p.protocol
                    && u32::from(first.container_port) + u32::from(*n) + 1
                        == u32::from(p.container_port)
                    && u32::from(first.host_port) + u32::from(*n) + 1 == u32::from(p.host_port) =>
            {
                *n += 1
            }
            _ => runs.push((p, 0)),
        }
    }
    runs.sort_by_key(|(p, _)| (p.container_port, p.protocol.to_string(), p.host_ip));
    let range = |first: u16, n: u16| match n {
        0 => first.to_string(),
        n => format!("{first}-{}", first + n),
    };
    runs.iter()
        .map(|(p, n)| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip,
                range(p.host_port, *n),
                range(p.container_port, *n),
                p.protocol
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Docker's `NetworkSettings.Ports`: `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort":
/// "18080"}]}`, every binding of a container port in its list.
pub(super) fn inspect_ports(ports: &[PortMapping]) -> Value {
    let mut by_port: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in ports {
        by_port
            .entry(format!("{}/{}", p.container_port, p.protocol))
            .or_default()
            .push(json!({ "HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string() }));
    }
    json!(by_port)
}

/// Docker's `HostConfig.PortBindings`: what was asked for, `""` for every address and for
/// a free port.
pub(super) fn port_bindings(asked: &[kiln_spec::PortMapping]) -> Value {
    let mut by_port: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in asked {
        let ip = p.host_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let port = p.host_port.map(|p| p.to_string()).unwrap_or_default();
        by_port
            .entry(format!("{}/{}", p.container_port, p.protocol))
            .or_default()
            .push(json!({ "HostIp": ip, "HostPort": port }));
    }
    json!(by_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(ip: &str, host: u16, container: u16, protocol: Protocol) -> PortMapping {
        PortMapping {
            host_ip: ip.parse().unwrap(),
            host_port: host,
            container_port: container,
            protocol,
        }
    }

    #[test]
    fn ps_shows_dockers_ports_with_ranges() {
        use Protocol::*;
        let ports = [
            map("127.0.0.1", 5353, 53, Udp),
            map("0.0.0.0", 8002, 82, Tcp),
            map("0.0.0.0", 8000, 80, Tcp),
            map("0.0.0.0", 8001, 81, Tcp),
            map("0.0.0.0", 9000, 83, Tcp),
            map("127.0.0.1", 18080, 80, Tcp),
        ];
        assert_eq!(
            ps_column(&ports),
            "127.0.0.1:5353->53/udp, 0.0.0.0:8000-8002->80-82/tcp, \
             127.0.0.1:18080->80/tcp, 0.0.0.0:9000->83/tcp"
        );
        assert_eq!(ps_column(&[]), "");
    }

    #[test]
    fn inspect_lists_every_binding_of_a_port() {
        use Protocol::*;
        let ports = [
            map("0.0.0.0", 8080, 80, Tcp),
            map("127.0.0.1", 9090, 80, Tcp),
        ];
        assert_eq!(
            inspect_ports(&ports),
            json!({"80/tcp": [
                {"HostIp": "0.0.0.0", "HostPort": "8080"},
                {"HostIp": "127.0.0.1", "HostPort": "9090"},
            ]})
        );
        let asked = [kiln_spec::PortMapping {
            host_ip: None,
            host_port: None,
            container_port: 53,
            protocol: kiln_spec::Protocol::Udp,
        }];
        assert_eq!(
            port_bindings(&asked),
            json!({"53/udp": [{"HostIp": "", "HostPort": ""}]})
        );
    }

    #[test]
    fn private_ports_read_as_docker_writes_them() {
        assert_eq!(private_port("80").unwrap(), (80, Protocol::Tcp));
        assert_eq!(private_port("53/UDP").unwrap(), (53, Protocol::Udp));
        for bad in ["", "0", "http", "80/sctp", "+80", "70000"] {
            assert!(private_port(bad).is_err(), "{bad}");
        }
    }
}
