//! The network end to end, in a namespace that plays the host (so `nft list ruleset`,
//! `ip_forward` and `ip link` are compared without another test run changing them), with
//! an "outside" namespace behind the host's uplink and a container namespace.

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::netns::in_netns;
use crate::test_support::{require_tool, TestNetns};

const OUTSIDE: &str = "198.51.100.2";
const UPLINK: &str = "198.51.100.1";

/// A `busybox httpd` serving `page` as /index.html on `port` inside a namespace; killed
/// when dropped.
struct Httpd {
    child: Child,
    _root: tempfile::TempDir,
}

impl Httpd {
    fn start(ns: &TestNetns, port: u16, page: &str) -> Httpd {
        Httpd::serving(ns, port, page, 0)
    }

    /// Also serves /big, `big` bytes.
    fn serving(ns: &TestNetns, port: u16, page: &str, big: usize) -> Httpd {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("index.html"), page).unwrap();
        fs::write(root.path().join("big"), vec![b'k'; big]).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "busybox", "httpd", "-f", "-p"])
            .arg(port.to_string())
            .arg("-h")
            .arg(root.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Httpd { child, _root: root }
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `curl` of `url` from inside `ns` (Debian's static busybox `wget -q -T` crashes), retried for up to 3 s while the server
/// starts; the page, or the last error.
fn fetch(ns: &TestNetns, url: &str) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let out = ns.exec(&["curl", "-sS", "--max-time", "1", url]);
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() > deadline {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Lab {
    host: TestNetns,
    outside: TestNetns,
    state: tempfile::TempDir,
}

impl Lab {
    /// The host with an uplink to the outside namespace (which has no route back to
    /// the containers' subnet: only NAT lets them in).
    fn new() -> Lab {
        require_tool("busybox", "busybox-static");
        require_tool("nft", "nftables");
        require_tool("curl", "curl");
        let host = TestNetns::new("host");
        let outside = TestNetns::new("out");
        host.ip(&["link", "set", "lo", "up"]);
        outside.ip(&["link", "set", "lo", "up"]);
        // A new namespace starts with the machine's ip_forward (netavark turns it on and
        // leaves it on): the lab's host starts from off, as a fresh machine.
        let off = host.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        assert!(off.status.success());
        host.ip(&[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "up1",
            "netns",
            &outside.name,
        ]);
        host.ip(&["addr", "add", &format!("{UPLINK}/24"), "dev", "up0"]);
        host.ip(&["link", "set", "up0", "up"]);
        outside.ip(&["addr", "add", &format!("{OUTSIDE}/24"), "dev", "up1"]);
        outside.ip(&["link", "set", "up1", "up"]);
        Lab {
            host,
            outside,
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn network(&self) -> Network {
        Network::new(NetworkConfig::default_bridge(self.state.path().to_owned())).unwrap()
    }

    /// What the tests compare before and after: links, rules, forwarding.
    /// The lab host's links (names and addresses: not their state, which the uplink's
    /// carrier changes on its own time), its ruleset and `ip_forward`.
    fn snapshot(&self) -> (String, String, String) {
        let links = String::from_utf8(self.host.ip(&["-br", "link"]).stdout).unwrap();
        let links: String = links
            .lines()
            .map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                format!("{} {}\n", words[0], words.get(2).unwrap_or(&""))
            })
            .collect();
        let rules = self.host.exec(&["nft", "list", "ruleset"]);
        assert!(rules.status.success());
        let forward = self.host.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
        (
            links,
            String::from_utf8(rules.stdout).unwrap(),
            String::from_utf8(forward.stdout).unwrap(),
        )
    }

    fn in_host<T: Send>(
        &self,
        work: impl FnOnce() -> Result<T, NetworkError> + Send,
    ) -> Result<T, NetworkError> {
        in_netns(self.host.fd(), || Ok(work())).unwrap()
    }
}

fn leases(state: &Path) -> usize {
    let text = fs::read_to_string(state.join("kiln.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["leases"].as_object().unwrap().len()
}

#[test]
fn a_container_reaches_the_outside_through_nat_and_is_reached_on_a_published_port() {
    require_root!("network namespaces, nftables");
    let lab = Lab::new();
    let before = lab.snapshot();
    assert_eq!(before.2.trim(), "0", "a fresh namespace forwards nothing");
    let container = TestNetns::new("ctr");
    let _outside_server = Httpd::start(&lab.outside, 8080, "outside");
    let _container_server = Httpd::start(&container, 80, "inside");
    let network = lab.network();
    let published = [PortMapping {
        host_ip: Ipv4Addr::UNSPECIFIED,
        host_port: 18080,
        container_port: 80,
        protocol: Protocol::Tcp,
    }];

    let started = Instant::now();
    let attachment = lab
        .in_host(|| network.attach("c1", container.fd(), &published))
        .unwrap();
    eprintln!(
        "first attach (bridge, table, veth, ports) in {:?}",
        started.elapsed()
    );
    assert_eq!(attachment.address, Ipv4Addr::new(10, 89, 0, 2));
    assert_eq!(lab.snapshot().2.trim(), "1");

    // Out through the masquerade: the outside has no route to 10.89.0.0/24.
    assert_eq!(
        fetch(&container, &format!("http://{OUTSIDE}:8080/")).unwrap(),
        "outside"
    );
    // In through the published port: from the host's loopback and from the outside.
    assert_eq!(
        fetch(&lab.host, "http://127.0.0.1:18080/").unwrap(),
        "inside"
    );
    assert_eq!(
        fetch(&lab.outside, &format!("http://{UPLINK}:18080/")).unwrap(),
        "inside"
    );

    let started = Instant::now();
    lab.in_host(|| network.detach(attachment)).unwrap();
    eprintln!(
        "last detach (veth, table, bridge) in {:?}",
        started.elapsed()
    );
    assert_eq!(lab.snapshot(), before);
    assert_eq!(leases(lab.state.path()), 0);
}

#[test]
fn a_busy_port_is_refused_and_leaves_nothing_behind() {
    require_root!("network namespaces, nftables");
    let lab = Lab::new();
    let before = lab.snapshot();
    let network = lab.network();
    let port = |host_port| PortMapping {
        host_ip: Ipv4Addr::LOCALHOST,
        host_port,
        container_port: 80,
        protocol: Protocol::Tcp,
    };
    let first = TestNetns::new("c1");
    let second = TestNetns::new("c2");
    let attachment = lab
        .in_host(|| network.attach("c1", first.fd(), &[port(18080)]))
        .unwrap();
    // Published by another container.
    let err = lab
        .in_host(|| network.attach("c2", second.fd(), &[port(18080)]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            NetworkError::PortInUse {
                by_container: true,
                ..
            }
        ),
        "{err}"
    );
    // Listened on by a host process.
    let err = lab
        .in_host(|| {
            let _listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 18081)).unwrap();
            network.attach("c2", second.fd(), &[port(18081)])
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("127.0.0.1:18081/tcp is already in use"),
        "{err}"
    );
    assert!(err.hint().is_some());
    assert_eq!(leases(lab.state.path()), 1);
    lab.in_host(|| network.detach(attachment)).unwrap();
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn leases_of_a_dead_kiln_are_reclaimed_with_the_network() {
    require_root!("network namespaces, nftables");
    let lab = Lab::new();
    let before = lab.snapshot();
    let network = lab.network();
    let container = TestNetns::new("ctr");
    let attachment = lab
        .in_host(|| network.attach("lost", container.fd(), &[]))
        .unwrap();
    // As if its kiln was killed: the lease's lock goes, nothing is detached.
    let Attachment { hold, .. } = attachment;
    drop(hold);
    lab.in_host(|| network.reclaim()).unwrap();
    assert_eq!(lab.snapshot(), before);
    assert_eq!(leases(lab.state.path()), 0);
}

#[test]
fn a_released_container_veth_goes_with_its_namespace() {
    require_root!("network namespaces, nftables");
    let lab = Lab::new();
    let before = lab.snapshot();
    let network = lab.network();
    let resident = TestNetns::new("r");
    let kept = lab
        .in_host(|| network.attach("resident", resident.fd(), &[]))
        .unwrap();
    // A container as kiln runs it: a process in a network namespace of its own.
    let mut process = Command::new("unshare")
        .args(["--net", "sleep", "30"])
        .spawn()
        .unwrap();
    let netns = wait_for_own_netns(process.id());
    let attachment = lab
        .in_host(|| network.attach("gone", netns.as_fd(), &[]))
        .unwrap();
    let interface = attachment.interface.clone();
    drop(netns);
    process.kill().unwrap();
    process.wait().unwrap();
    let started = Instant::now();
    lab.in_host(|| network.release(attachment)).unwrap();
    eprintln!("release in {:?}", started.elapsed());
    // The kernel removes the pair when it destroys the namespace, shortly after.
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab
        .host
        .exec(&["ip", "link", "show", &interface])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "{interface} still there");
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.in_host(|| network.detach(kept)).unwrap();
    assert_eq!(lab.snapshot(), before);
}

/// The network namespace of `pid` once `unshare` has made it (until then it is ours).
fn wait_for_own_netns(pid: u32) -> crate::netns::NetNs {
    let ours = fs::read_link("/proc/self/ns/net").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let theirs = fs::read_link(format!("/proc/{pid}/ns/net"));
        if theirs.is_ok_and(|t| t != ours) {
            return crate::netns::NetNs::of_pid(pid).unwrap();
        }
        assert!(Instant::now() < deadline, "unshare made no namespace");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Bytes per second of a download of `{base}/big` from inside `ns`, once the server
/// answers.
fn download_rate(ns: &TestNetns, base: &str) -> f64 {
    fetch(ns, &format!("{base}/")).unwrap();
    let url = &format!("{base}/big");
    let out = ns.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "15",
        "-o",
        "/dev/null",
        "-w",
        "%{speed_download}",
        url,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn rate_in_and_rate_out_shape_the_container_traffic() {
    require_root!("network namespaces, traffic control");
    const RATE: u64 = 8_000_000; // 8mbit: 1 MB/s
    const SIZE: usize = 2_500_000;
    let lab = Lab::new();
    let before = lab.snapshot();
    let network = lab.network();
    let container = TestNetns::new("ctr");
    let shaping = Shaping {
        rate_in: Some(RATE),
        rate_out: Some(RATE),
    };
    let attachment = lab
        .in_host(|| network.attach_shaped("c", container.fd(), &[], shaping))
        .unwrap();
    let _in_container = Httpd::serving(&container, 80, "ready", SIZE);
    let _on_host = Httpd::serving(&lab.host, 8080, "ready", SIZE);
    // TBF counts whole frames: a 1514-byte frame carries 1448 bytes of TCP payload
    // (timestamps on), and curl measures payload.
    let expected = RATE as f64 / 8.0 * 1448.0 / 1514.0;
    // From the container (its eth0's TBF), then to it (the host end's TBF).
    let out = download_rate(&lab.host, &format!("http://{}:80", attachment.address));
    let inbound = download_rate(&container, &format!("http://{}:8080", attachment.gateway));
    eprintln!("rate out {out:.0} B/s, rate in {inbound:.0} B/s, limit {expected:.0} B/s");
    for (what, rate) in [("out", out), ("in", inbound)] {
        let off = (rate - expected).abs() / expected;
        assert!(
            off < 0.15,
            "rate {what}: {rate:.0} B/s against {expected:.0} B/s"
        );
    }
    // Unshaped, the same transfer is far faster.
    let other = TestNetns::new("free");
    let free = lab
        .in_host(|| network.attach("free", other.fd(), &[]))
        .unwrap();
    let unshaped = download_rate(&other, &format!("http://{}:8080", free.gateway));
    assert!(unshaped > 5.0 * expected, "unshaped {unshaped:.0} B/s");
    lab.in_host(|| network.detach(free)).unwrap();
    lab.in_host(|| network.detach(attachment)).unwrap();
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn rules_and_forwarding_kiln_did_not_set_are_left_alone() {
    require_root!("network namespaces, nftables");
    let lab = Lab::new();
    // Another tool's table, and forwarding already on.
    let foreign = lab.host.exec(&[
        "nft",
        "add table inet other; add chain inet other passing { type filter hook forward priority 0; policy accept; }; add rule inet other passing ip saddr 192.0.2.99 drop",
    ]);
    assert!(
        foreign.status.success(),
        "{}",
        String::from_utf8_lossy(&foreign.stderr)
    );
    let on = lab.host.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    assert!(on.status.success());
    let before = lab.snapshot();
    let network = lab.network();
    let container = TestNetns::new("ctr");
    let port = PortMapping {
        host_ip: Ipv4Addr::UNSPECIFIED,
        host_port: 18080,
        container_port: 80,
        protocol: Protocol::Tcp,
    };
    let attachment = lab
        .in_host(|| network.attach("c", container.fd(), &[port]))
        .unwrap();
    let during = lab.snapshot();
    assert!(during.1.contains("table inet other"), "{}", during.1);
    assert!(during.1.contains("table ip kiln"), "{}", during.1);
    lab.in_host(|| network.detach(attachment)).unwrap();
    // Still there, untouched, and forwarding still on: kiln did not turn it on.
    assert_eq!(lab.snapshot(), before);
}

#[test]
fn a_link_named_like_the_bridge_that_is_not_one_is_refused_and_kept() {
    require_root!("network namespaces, nftables");
    let lab = Lab::new();
    lab.host.ip(&[
        "link", "add", "kiln0", "type", "veth", "peer", "name", "notkiln",
    ]);
    let before = lab.snapshot();
    let network = lab.network();
    let container = TestNetns::new("ctr");
    let err = lab
        .in_host(|| network.attach("c", container.fd(), &[]))
        .unwrap_err();
    assert!(matches!(err, NetworkError::NotABridge { .. }), "{err}");
    assert!(err.hint().is_some());
    assert_eq!(lab.snapshot(), before);
    assert!(before.0.contains("kiln0@notkiln"), "{}", before.0);
}

#[test]
fn containers_starting_and_ending_at_once_share_one_network() {
    require_root!("network namespaces, nftables");
    const THREADS: usize = 8;
    let lab = Lab::new();
    let before = lab.snapshot();
    let containers: Vec<_> = (0..THREADS).map(|_| TestNetns::new("p")).collect();
    // Each thread its own `Network`, as separate kiln processes would have; two rounds,
    // so first and last containers race with each other too.
    for round in 0..2 {
        std::thread::scope(|scope| {
            for (i, container) in containers.iter().enumerate() {
                let lab = &lab;
                scope.spawn(move || {
                    let network = lab.network();
                    let port = PortMapping {
                        host_ip: Ipv4Addr::UNSPECIFIED,
                        host_port: 20000 + i as u16,
                        container_port: 80,
                        protocol: Protocol::Tcp,
                    };
                    let owner = format!("r{round}c{i}");
                    let a = lab
                        .in_host(|| network.attach(&owner, container.fd(), &[port]))
                        .unwrap();
                    lab.in_host(|| network.detach(a)).unwrap();
                });
            }
        });
    }
    assert_eq!(lab.snapshot(), before);
    assert_eq!(leases(lab.state.path()), 0);
}

#[test]
fn many_containers_start_and_end_and_the_host_is_as_before() {
    require_root!("network namespaces, nftables");
    const CONTAINERS: usize = 50;
    let lab = Lab::new();
    let before = lab.snapshot();
    let network = lab.network();
    let containers: Vec<_> = (0..CONTAINERS).map(|_| TestNetns::new("m")).collect();
    let attachments: Vec<_> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            lab.in_host(|| network.attach(&format!("c{i}"), c.fd(), &[]))
                .unwrap()
        })
        .collect();
    let mut addresses: Vec<_> = attachments.iter().map(|a| a.address).collect();
    addresses.dedup();
    assert_eq!(addresses.len(), CONTAINERS);
    let last = addresses[CONTAINERS - 1].to_string();
    let ping = containers[0].exec(&["busybox", "ping", "-c1", "-W1", &last]);
    assert!(
        ping.status.success(),
        "container to container over the bridge"
    );
    for attachment in attachments {
        lab.in_host(|| network.detach(attachment)).unwrap();
    }
    assert_eq!(lab.snapshot(), before);
}

/// The figures of ARCHITECTURE.md § kiln-network for a whole attach and detach. In the
/// suite it checks that repeated first/last attaches leave the host as it was; the
/// figures print with `cargo test --release -p kiln-network measure_ -- --nocapture`.
#[test]
fn measure_attach_and_detach() {
    require_root!("network namespaces, nftables");
    const RUNS: usize = 15;
    let lab = Lab::new();
    let before = lab.snapshot();
    let network = lab.network();
    let port = [PortMapping {
        host_ip: Ipv4Addr::UNSPECIFIED,
        host_port: 18080,
        container_port: 80,
        protocol: Protocol::Tcp,
    }];
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let timed = |ports: &[PortMapping]| {
        let (mut attach, mut detach) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let container = TestNetns::new("m");
            let t = Instant::now();
            let a = lab
                .in_host(|| network.attach("m", container.fd(), ports))
                .unwrap();
            attach.push(t.elapsed());
            let t = Instant::now();
            lab.in_host(|| network.detach(a)).unwrap();
            detach.push(t.elapsed());
        }
        (median(attach), median(detach))
    };
    let parts = lab.in_host(|| {
        let mut socket = Socket::open().unwrap();
        let table = network.table();
        let (mut bridge_made, mut bridge_gone, mut table_made, mut table_gone) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let t = Instant::now();
            bridge::ensure_bridge(&mut socket, "kiln0", &Subnet::DEFAULT)?;
            bridge_made.push(t.elapsed());
            let t = Instant::now();
            nft::apply(&table.create_script())?;
            table_made.push(t.elapsed());
            let t = Instant::now();
            nft::apply(&table.delete_script())?;
            table_gone.push(t.elapsed());
            let t = Instant::now();
            bridge::remove_bridge(&mut socket, "kiln0")?;
            bridge_gone.push(t.elapsed());
        }
        Ok([bridge_made, bridge_gone, table_made, table_gone].map(median))
    });
    let [bridge_made, bridge_gone, table_made, table_gone] = parts.unwrap();
    eprintln!(
        "bridge made {bridge_made:?}, removed {bridge_gone:?}; table made {table_made:?}, removed {table_gone:?}"
    );
    let (first, last) = timed(&port);
    eprintln!("first attach with a port {first:?}, last detach {last:?} (median of {RUNS})");
    let resident = TestNetns::new("r");
    let kept = lab
        .in_host(|| network.attach("resident", resident.fd(), &[]))
        .unwrap();
    let (attach, detach) = timed(&[]);
    eprintln!("another container: attach {attach:?}, detach {detach:?}");
    let (attach, detach) = timed(&port);
    eprintln!("another container with a port: attach {attach:?}, detach {detach:?}");
    lab.in_host(|| network.detach(kept)).unwrap();
    assert_eq!(lab.snapshot(), before);
}
