use std::time::Instant;

use super::*;
use crate::test_support::{require_tool, run, unique, LinkGuard, TestNetns};

/// A subnet for one test on the host: 10.231.X.0/24 with X from the pid, so that
/// concurrent test runs rarely pick the same (and refuse it if they do, as kiln would).
fn test_subnet(n: u32) -> Subnet {
    let x = (std::process::id() * 7 + n) % 250;
    format!("10.231.{x}.0/24").parse().unwrap()
}

/// Fails if the host has a link of one of these names. (Not a comparison of the whole
/// `ip link`: the other tests of the run make links of their own meanwhile.)
fn assert_gone(names: &[&str]) {
    let links = String::from_utf8(run("ip", &["-br", "link"]).stdout).unwrap();
    for line in links.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let name = name.split('@').next().unwrap();
        assert!(!names.contains(&name), "{name} left behind:\n{links}");
    }
}

#[test]
fn host_ifname_is_short_and_stable() {
    let name = host_ifname("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    assert_eq!(name.len(), 14);
    assert_eq!(
        name,
        host_ifname("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    assert_ne!(
        name,
        host_ifname("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdee")
    );
}

#[test]
fn a_container_on_the_bridge_pings_its_gateway_and_leaves_nothing_behind() {
    require_root!("network interfaces");
    require_tool("busybox", "busybox-static");
    let bridge = unique("kb");
    let veth = unique("kvt");
    let _cleanup = (LinkGuard(bridge.clone()), LinkGuard(veth.clone()));
    let subnet = test_subnet(1);
    let container = TestNetns::new("ctr");
    let mut socket = Socket::open().unwrap();

    let index = ensure_bridge(&mut socket, &bridge, &subnet).unwrap();
    // A second call finds it, and gives a bare one (a killed kiln's) its address.
    run("ip", &["addr", "flush", "dev", &bridge]);
    assert_eq!(ensure_bridge(&mut socket, &bridge, &subnet).unwrap(), index);
    let addr = String::from_utf8(run("ip", &["-br", "addr", "show", &bridge]).stdout).unwrap();
    assert!(addr.contains(&format!("{}/24", subnet.gateway())), "{addr}");
    let address = subnet.container_addresses().next().unwrap();
    let started = Instant::now();
    attach_veth(
        &mut socket,
        index,
        &veth,
        container.fd(),
        Addressing { address, subnet },
        Shaping::default(),
    )
    .unwrap();
    eprintln!("veth attached and configured in {:?}", started.elapsed());

    let link = String::from_utf8(container.ip(&["-br", "link"]).stdout).unwrap();
    assert!(
        link.contains(&format!(
            "02:6b:0a:e7:{:02x}:02",
            subnet.network().octets()[2]
        )),
        "{link}"
    );
    let inside = String::from_utf8(container.ip(&["-br", "addr"]).stdout).unwrap();
    assert!(inside.contains(&format!("{address}/24")), "{inside}");
    let routes = String::from_utf8(container.ip(&["route"]).stdout).unwrap();
    assert!(
        routes.contains(&format!("default via {} dev eth0", subnet.gateway())),
        "{routes}"
    );
    let ping = container.exec(&[
        "busybox",
        "ping",
        "-c1",
        "-W1",
        &subnet.gateway().to_string(),
    ]);
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    detach_veth(&mut socket, &veth).unwrap();
    detach_veth(&mut socket, &veth).unwrap(); // gone is fine
    remove_bridge(&mut socket, &bridge).unwrap();
    assert_gone(&[&bridge, &veth]);
    let inside = String::from_utf8(container.ip(&["-br", "link"]).stdout).unwrap();
    assert!(!inside.contains("eth0"), "{inside}");
}

#[test]
fn a_failed_setup_inside_removes_the_pair() {
    require_root!("network interfaces");
    let bridge = unique("kb");
    let veth = unique("kvt");
    let _cleanup = (LinkGuard(bridge.clone()), LinkGuard(veth.clone()));
    let subnet = test_subnet(2);
    let container = TestNetns::new("ctr");
    // An eth0 already there: the veth's peer cannot take the name.
    container.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    let mut socket = Socket::open().unwrap();
    let index = ensure_bridge(&mut socket, &bridge, &subnet).unwrap();
    let address = subnet.container_addresses().next().unwrap();
    let err = attach_veth(
        &mut socket,
        index,
        &veth,
        container.fd(),
        Addressing { address, subnet },
        Shaping::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("creating veth"), "{err}");
    remove_bridge(&mut socket, &bridge).unwrap();
    assert_gone(&[&bridge, &veth]);
}

#[test]
fn a_bridge_subnet_overlapping_a_host_route_is_refused() {
    require_root!("network interfaces");
    let host = TestNetns::new("host");
    host.ip(&["link", "set", "lo", "up"]);
    host.ip(&["route", "add", "10.89.0.0/16", "dev", "lo"]);
    let err = in_netns(host.fd(), || {
        let mut socket = Socket::open()?;
        Ok(ensure_bridge(&mut socket, "kiln0", &Subnet::DEFAULT))
    })
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(err, NetworkError::SubnetOverlapsRoute { .. }),
        "{err}"
    );
    let links = String::from_utf8(host.ip(&["-br", "link"]).stdout).unwrap();
    assert!(!links.contains("kiln0"), "{links}");
}

/// The figures of ARCHITECTURE.md § kiln-network: one container's veth made, configured
/// inside and removed, over netlink and with the `ip` tool. In the suite it checks that
/// both ways work over and over and leave no link; the figures print with
/// `cargo test --release -p kiln-network measure_ -- --nocapture`.
#[test]
fn measure_veth_setup_netlink_vs_ip_tool() {
    require_root!("network interfaces");
    const RUNS: usize = 30;
    let bridge = unique("kb");
    let veth = unique("kvm");
    let _cleanup = (LinkGuard(bridge.clone()), LinkGuard(veth.clone()));
    let subnet = test_subnet(3);
    let mut socket = Socket::open().unwrap();
    let index = ensure_bridge(&mut socket, &bridge, &subnet).unwrap();
    let address = subnet.container_addresses().next().unwrap();
    let addressing = Addressing { address, subnet };
    let median = |mut v: Vec<std::time::Duration>| {
        v.sort();
        v[v.len() / 2]
    };

    let (mut setup, mut teardown) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let container = TestNetns::new("m");
        let t = Instant::now();
        attach_veth(
            &mut socket,
            index,
            &veth,
            container.fd(),
            addressing,
            Shaping::default(),
        )
        .unwrap();
        setup.push(t.elapsed());
        let t = Instant::now();
        detach_veth(&mut socket, &veth).unwrap();
        teardown.push(t.elapsed());
    }
    eprintln!(
        "netlink: setup {:?}, teardown {:?} (median of {RUNS})",
        median(setup),
        median(teardown)
    );

    let (mut setup, mut teardown) = (Vec::new(), Vec::new());
    let addr = format!("{address}/{}", subnet.prefix());
    let gateway = subnet.gateway().to_string();
    for _ in 0..RUNS {
        let container = TestNetns::new("m");
        let ns = container.name.as_str();
        let t = Instant::now();
        run(
            "ip",
            &[
                "link", "add", &veth, "master", &bridge, "up", "type", "veth", "peer", "name",
                "eth0", "netns", ns,
            ],
        );
        run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        run("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
        run("ip", &["-n", ns, "link", "set", "eth0", "up"]);
        run(
            "ip",
            &["-n", ns, "route", "add", "default", "via", &gateway],
        );
        setup.push(t.elapsed());
        let t = Instant::now();
        run("ip", &["link", "del", &veth]);
        teardown.push(t.elapsed());
    }
    eprintln!(
        "ip tool: setup {:?}, teardown {:?} (median of {RUNS})",
        median(setup),
        median(teardown)
    );
    remove_bridge(&mut socket, &bridge).unwrap();
}

/// A bridge left to pick its own MAC takes the lowest of its ports' and changes it as
/// containers come and go: a container that learned the gateway's MAC while another
/// (lower) one was attached then sends to an address no port has, and its DNS and
/// outbound traffic stop for the ~30 s its neighbour entry stays "reachable". kiln's
/// bridge has a MAC of its own, set when it is made.
#[test]
fn the_gateway_keeps_its_mac_while_containers_come_and_go() {
    require_root!("network interfaces");
    require_tool("busybox", "busybox-static");
    let bridge = unique("kb");
    let (first_veth, second_veth) = (unique("kvf"), unique("kvs"));
    let _cleanup = (
        LinkGuard(bridge.clone()),
        LinkGuard(first_veth.clone()),
        LinkGuard(second_veth.clone()),
    );
    let subnet = test_subnet(4);
    let (first, second) = (TestNetns::new("first"), TestNetns::new("second"));
    let mut socket = Socket::open().unwrap();
    let index = ensure_bridge(&mut socket, &bridge, &subnet).unwrap();
    let mut addresses = subnet.container_addresses();
    for (netns, veth) in [(&first, &first_veth), (&second, &second_veth)] {
        let address = addresses.next().unwrap();
        let addressing = Addressing { address, subnet };
        attach_veth(
            &mut socket,
            index,
            veth,
            netns.fd(),
            addressing,
            Shaping::default(),
        )
        .unwrap();
    }
    // The second's host end gets the lowest MAC there is: a bridge that follows its
    // ports would take it.
    run(
        "ip",
        &[
            "link",
            "set",
            "dev",
            &second_veth,
            "address",
            "02:00:00:00:00:01",
        ],
    );
    let gateway = subnet.gateway().to_string();
    let ping = |netns: &TestNetns| {
        netns
            .exec(&["busybox", "ping", "-c1", "-W1", &gateway])
            .status
            .success()
    };
    assert!(ping(&first), "the first reaches its gateway");
    detach_veth(&mut socket, &second_veth).unwrap();
    assert!(
        ping(&first),
        "the first reaches its gateway after the second left"
    );
    let mac = std::fs::read_to_string(format!("/sys/class/net/{bridge}/address")).unwrap();
    let [a, b, c, d] = subnet.gateway().octets();
    assert_eq!(mac.trim(), format!("02:6b:{a:02x}:{b:02x}:{c:02x}:{d:02x}"));
    detach_veth(&mut socket, &first_veth).unwrap();
    remove_bridge(&mut socket, &bridge).unwrap();
}
