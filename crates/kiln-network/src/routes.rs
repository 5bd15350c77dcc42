//! The check that kiln's subnet does not overlap a network the host already routes.

use crate::netlink::{Route, Socket};
use crate::subnet::Subnet;
use crate::NetworkError;

/// The first of `routes` that overlaps `subnet`, if any (routes of the bridge itself
/// are the caller's to leave out: it checks before making the bridge).
pub fn overlapping<'a>(subnet: &Subnet, routes: &'a [Route]) -> Option<&'a Route> {
    routes
        .iter()
        .find(|route| route.destination.overlaps(subnet))
}

/// Refuses `subnet` if a route of the current network namespace overlaps it.
pub fn check_free(subnet: &Subnet) -> Result<(), NetworkError> {
    let routes = Socket::open()
        .and_then(|mut socket| socket.routes())
        .map_err(NetworkError::netlink("reading the host's routes"))?;
    match overlapping(subnet, &routes) {
        Some(route) => Err(NetworkError::SubnetOverlapsRoute {
            subnet: subnet.to_string(),
            route: route.destination.to_string(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestNetns;

    #[test]
    fn overlapping_finds_the_colliding_route() {
        let route = |s: &str| Route {
            destination: s.parse().unwrap(),
            table: 254,
        };
        let routes = [route("192.0.2.0/24"), route("10.0.0.0/8")];
        let subnet: Subnet = "10.89.0.0/24".parse().unwrap();
        assert_eq!(overlapping(&subnet, &routes), Some(&routes[1]));
        assert_eq!(
            overlapping(&"10.90.0.0/24".parse().unwrap(), &routes[..1]),
            None
        );
    }

    #[test]
    fn a_route_in_the_namespace_makes_the_subnet_refused() {
        require_root!("network namespaces");
        let ns = TestNetns::new("routes");
        // This kernel has no dummy links; a route needs only an interface that is up.
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["route", "add", "10.89.0.0/16", "dev", "lo"]);
        let subnet: Subnet = "10.89.0.0/24".parse().unwrap();
        let other: Subnet = "10.90.0.0/24".parse().unwrap();
        let (refused, free) =
            crate::netns::in_netns(ns.fd(), || Ok((check_free(&subnet), check_free(&other))))
                .unwrap();
        let err = refused.unwrap_err();
        assert!(
            err.to_string()
                .contains("overlaps the host's route to 10.89.0.0/16"),
            "{err}"
        );
        assert!(err.hint().is_some());
        free.unwrap();
    }
}
