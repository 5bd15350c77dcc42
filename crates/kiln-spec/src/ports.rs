//! Published ports as docker writes them: `-p [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]`, with
//! ranges (`8000-8010:80-90`), IPv6 host addresses in brackets (`[::1]:8080:80`), an empty
//! host port for "any free one" (`127.0.0.1::80`, or just `80`).
//!
//! One parser for the `-p` flag and for the spec's `run: ports:` (docker compose's short
//! syntax is the same string), so both mean the same thing. A mapping is checked here as
//! text; whether the host port is free is the network's business when the container
//! starts.

use std::net::IpAddr;

use super::units::Invalid;

type Parsed<T> = Result<T, Invalid>;

const HINT: &str = "write [IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp|/sctp], e.g. 8080:80, \
                    127.0.0.1:8080:80/tcp, 53:53/udp or 8000-8009:80-89";

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// One container port published on the host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    /// The host address to listen on; `None`: every address (docker's `0.0.0.0` and `::`).
    pub host_ip: Option<IpAddr>,
    /// The host port; `None`: a free one chosen when the container starts.
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// Every mapping one `-p` value means (a range gives one per port).
pub(crate) fn parse_publish(text: &str) -> Parsed<Vec<PortMapping>> {
    let bad = |why: String| Invalid::new(format!("invalid port mapping {text:?}: {why}"), HINT);
    let (addr_and_ports, protocol) = split_protocol(text).map_err(bad)?;
    let (host_ip, host_ports, container_ports) = split_fields(addr_and_ports).map_err(bad)?;
    let container = parse_range(container_ports, "container port")
        .map_err(bad)?
        .ok_or_else(|| bad("the container port is missing".into()))?;
    let host = parse_range(host_ports, "host port").map_err(bad)?;
    let host_ports: Vec<Option<u16>> = match host {
        None => vec![None; container.len()],
        Some(h) if h.len() == container.len() => h.into_iter().map(Some).collect(),
        Some(h) => {
            return Err(bad(format!(
                "{} host ports for {} container ports: a range maps port by port",
                h.len(),
                container.len()
            )))
        }
    };
    Ok(container
        .into_iter()
        .zip(host_ports)
        .map(|(container_port, host_port)| PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol,
        })
        .collect())
}

/// `TEXT/PROTO` → (TEXT, protocol), tcp when none is given.
fn split_protocol(text: &str) -> Result<(&str, Protocol), String> {
    let (rest, proto) = match text.rsplit_once('/') {
        Some((rest, proto)) => (rest, proto),
        None => (text, "tcp"),
    };
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        other => return Err(format!("unknown protocol {other:?}")),
    };
    Ok((rest, protocol))
}

/// `[IP:][HOST:]CONTAINER` → (IP, HOST text, CONTAINER text); IPv6 addresses in brackets.
fn split_fields(text: &str) -> Result<(Option<IpAddr>, &str, &str), String> {
    let (ip, rest) = match text.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, rest) = bracketed
                .split_once(']')
                .ok_or("an IPv6 address opened with [ is not closed")?;
            let rest = rest
                .strip_prefix(':')
                .ok_or("a host address must be followed by :HOSTPORT:CONTAINERPORT")?;
            (Some(parse_ip(ip)?), rest)
        }
        None => match text.matches(':').count() {
            0 | 1 => (None, text),
            2 => {
                let (ip, rest) = text.split_once(':').expect("two colons");
                (Some(parse_ip(ip)?), rest)
            }
            _ => return Err("an IPv6 host address must be in brackets, e.g. [::1]:8080:80".into()),
        },
    };
    let (host, container) = match rest.split_once(':') {
        Some((host, container)) => (host, container),
        None if ip.is_some() => {
            return Err("the host port and the container port are missing".into())
        }
        None => ("", rest),
    };
    Ok((ip, host, container))
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IP address"))
}

/// `80` or `8000-8010` (ports 1–65535, at most 65535 of them); `None` for an empty field.
fn parse_range(text: &str, what: &str) -> Result<Option<Vec<u16>>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let port = |t: &str| match t.parse::<u16>() {
        Ok(p) if p > 0 && t.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(format!("{what} {t:?} is not a number from 1 to 65535")),
    };
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(text)?;
            (p, p)
        }
    };
    if last < first {
        return Err(format!("the {what} range {text} ends before it starts"));
    }
    Ok(Some((first..=last).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> PortMapping {
        let mut all = parse_publish(text).unwrap();
        assert_eq!(all.len(), 1, "{text}");
        all.remove(0)
    }

    fn map(ip: Option<&str>, host: Option<u16>, container: u16, p: Protocol) -> PortMapping {
        PortMapping {
            host_ip: ip.map(|i| i.parse().unwrap()),
            host_port: host,
            container_port: container,
            protocol: p,
        }
    }

    #[test]
    fn dockers_forms_parse() {
        use Protocol::*;
        assert_eq!(one("80"), map(None, None, 80, Tcp));
        assert_eq!(one("8080:80"), map(None, Some(8080), 80, Tcp));
        assert_eq!(one("8080:80/udp"), map(None, Some(8080), 80, Udp));
        assert_eq!(
            one("127.0.0.1:8080:80"),
            map(Some("127.0.0.1"), Some(8080), 80, Tcp)
        );
        assert_eq!(one("127.0.0.1::80"), map(Some("127.0.0.1"), None, 80, Tcp));
        assert_eq!(
            one("[::1]:8080:80/SCTP"),
            map(Some("::1"), Some(8080), 80, Sctp)
        );
        let range = parse_publish("8000-8002:80-82").unwrap();
        let pairs: Vec<_> = range
            .iter()
            .map(|m| (m.host_port.unwrap(), m.container_port))
            .collect();
        assert_eq!(pairs, [(8000, 80), (8001, 81), (8002, 82)]);
        assert_eq!(parse_publish("80-81").unwrap().len(), 2);
    }

    #[test]
    fn bad_mappings_say_what_is_wrong() {
        for (text, says) in [
            ("", "container port is missing"),
            ("8080:", "container port is missing"),
            ("0:80", "host port \"0\""),
            ("8080:70000", "container port \"70000\""),
            ("8080:80/icmp", "unknown protocol"),
            ("8000-8001:80", "2 host ports for 1 container ports"),
            ("90-80", "ends before it starts"),
            ("::1:8080:80", "must be in brackets"),
            ("[::1:8080:80", "not closed"),
            ("localhost:8080:80", "not an IP address"),
            ("1.2.3.4:80", "host port \"1.2.3.4\""),
            ("+80", "not a number"),
        ] {
            let e = parse_publish(text).unwrap_err();
            assert!(e.message.contains(says), "{text:?}: {}", e.message);
            assert!(e.hint.is_some());
        }
    }
}
