//! IPv4 subnets: parsing `A.B.C.D/N`, the gateway and container addresses in one, and
//! overlap between two (the check against the host's routes).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::NetworkError;

/// An IPv4 subnet with its host bits zero (`10.89.0.0/24`, never `10.89.0.7/24`: a typo
/// there would silently mean another network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// kiln's default bridge network, podman's neighbour (podman uses 10.88.0.0/16).
    pub const DEFAULT: Subnet = Subnet {
        network: Ipv4Addr::new(10, 89, 0, 0),
        prefix: 24,
    };

    /// A subnet from its parts; the prefix must leave room for a gateway and at least one
    /// container (at most /30) and the host bits must be zero.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Subnet, NetworkError> {
        let invalid = |why: &str| NetworkError::InvalidSubnet {
            subnet: format!("{network}/{prefix}"),
            why: why.to_owned(),
        };
        if prefix > 30 {
            return Err(invalid(
                "the prefix must be at most 30 (a gateway and one container)",
            ));
        }
        if u32::from(network) & !mask(prefix) != 0 {
            return Err(invalid("host bits are set"));
        }
        Ok(Subnet { network, prefix })
    }

    /// The network `addr` is in at `prefix` (up to /32): what a host route names.
    pub(crate) fn masked(addr: Ipv4Addr, prefix: u8) -> Subnet {
        let prefix = prefix.min(32);
        Subnet {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The bridge's address: the first host address (`.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Container addresses, in order: from the second host address up to the last one
    /// before the broadcast address.
    pub fn container_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) + 2;
        let broadcast = u32::from(self.network) | !mask(self.prefix);
        (first..broadcast).map(Ipv4Addr::from)
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether the two share any address: one contains the other's network address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let shorter = self.prefix.min(other.prefix);
        u32::from(self.network) & mask(shorter) == u32::from(other.network) & mask(shorter)
    }
}

/// The netmask of a prefix length (`mask(24)` = 255.255.255.0 as a number).
pub(crate) fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Subnet, NetworkError> {
        let invalid = || NetworkError::InvalidSubnet {
            subnet: s.to_owned(),
            why: "expected A.B.C.D/N".to_owned(),
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        Subnet::new(addr, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_its_addresses() {
        let s: Subnet = "10.89.0.0/24".parse().unwrap();
        assert_eq!(s, Subnet::DEFAULT);
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 89, 0, 1));
        let all: Vec<_> = s.container_addresses().collect();
        assert_eq!(all.len(), 253);
        assert_eq!(all[0], Ipv4Addr::new(10, 89, 0, 2));
        assert_eq!(all[252], Ipv4Addr::new(10, 89, 0, 254));
        let small: Subnet = "192.168.7.4/30".parse().unwrap();
        assert_eq!(
            small.container_addresses().collect::<Vec<_>>(),
            [Ipv4Addr::new(192, 168, 7, 6)]
        );
    }

    #[test]
    fn refuses_malformed_subnets() {
        for bad in [
            "10.89.0.1/24",
            "10.89.0.0",
            "10.89.0.0/31",
            "10.89.0.0/x",
            "10.89.0/24",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        let s = |t: &str| t.parse::<Subnet>().unwrap();
        assert!(s("10.89.0.0/24").overlaps(&s("10.0.0.0/8")));
        assert!(s("10.0.0.0/8").overlaps(&s("10.89.0.0/24")));
        assert!(s("10.89.0.0/24").overlaps(&s("10.89.0.128/25")));
        assert!(!s("10.89.0.0/24").overlaps(&s("10.89.1.0/24")));
        assert!(!s("10.89.0.0/24").overlaps(&s("192.0.2.0/24")));
        assert!(s("10.89.0.0/24").contains(Ipv4Addr::new(10, 89, 0, 200)));
        assert!(!s("10.89.0.0/24").contains(Ipv4Addr::new(10, 89, 1, 2)));
    }
}
