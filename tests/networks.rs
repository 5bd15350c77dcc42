//! Named networks (`kiln network create`, `kiln run --network NAME`): containers find
//! each other by name and alias through kiln's DNS responder whatever order they started
//! in, `--internal` has no way out, two networks do not reach each other, and nothing of
//! a network is left once its last container ended. Traffic stays on this machine: the
//! networks' bridges, a network namespace the test makes as "outside", and loopback.
//!
//! Each test has its own store, network names and subnets (10.89.2xx.0/24), so they run
//! in parallel; none uses kiln's default network (`kiln0`).

mod common;

use common::outside::Outside;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::containers::{busybox_image, run_detached, wait_until};
use common::{text, Env};

/// A page server in a container: busybox httpd serving `body` on port 80.
fn httpd(body: &str) -> String {
    format!("mkdir -p /w && echo {body} > /w/index.html && exec httpd -f -p 80 -h /w")
}

/// `wget -qO- URL` run in a new container on `network`, bounded by `timeout`: its
/// output, or `None` when it failed.
fn fetch_from_new(env: &Env, network: &str, url: &str) -> Option<String> {
    let script = format!("timeout 5 wget -qO- {url}");
    let out = env.kiln(&[
        "run",
        "--rm",
        "--network",
        network,
        "bb",
        "sh",
        "-c",
        &script,
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The same from a running container.
fn fetch_from(env: &Env, container: &str, url: &str) -> Option<String> {
    let script = format!("timeout 5 wget -qO- {url}");
    let out = env.kiln(&["exec", container, "sh", "-c", &script]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A network name of this test process (names are per store; bridges come from IDs).
fn net_name(what: &str) -> String {
    format!("{what}{}", std::process::id())
}

/// The network's `kiln network inspect` document.
fn inspect(env: &Env, network: &str) -> serde_json::Value {
    let doc: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["network", "inspect", network])).unwrap();
    doc[0].clone()
}

/// Whether the host has a link of that name, an nftables table of that name, a DNS
/// responder of this store's network.
fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn table_exists(name: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "ip", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn responder_runs(env: &Env, network: &str) -> bool {
    let root = env.root().display().to_string();
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.windows(2)
            .any(|w| w == [b"network-dns".as_slice(), network.as_bytes()])
            && args.contains(&root.as_bytes())
    })
}

/// A named network of the test, created now; when dropped (after the test's containers,
/// so declared before them) it waits until the network's bridge and table are gone, as
/// the last container's runner has them removed 2 s after it ended — before the test's
/// store goes — and removes what a failed test left.
struct TestNetwork<'a> {
    env: &'a Env,
    name: String,
    bridge: String,
    table: String,
}

impl<'a> TestNetwork<'a> {
    fn create(env: &'a Env, what: &str, flags: &[&str]) -> TestNetwork<'a> {
        let name = net_name(what);
        let mut args = vec!["network", "create"];
        args.extend_from_slice(flags);
        args.push(&name);
        env.kiln_ok(&args);
        let doc = inspect(env, &name);
        let option = |key: &str| doc["Options"][key].as_str().unwrap().to_owned();
        TestNetwork {
            env,
            bridge: option("com.docker.network.bridge.name"),
            table: option("dev.kiln.nftables.table"),
            name,
        }
    }

    fn gone(&self) -> bool {
        !link_exists(&self.bridge)
            && !table_exists(&self.table)
            && !responder_runs(self.env, &self.name)
    }
}

impl Drop for TestNetwork<'_> {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !self.gone() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !self.gone() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .status();
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", &self.table])
                .status();
            if !std::thread::panicking() {
                panic!(
                    "network {} was not removed after its last container",
                    self.name
                );
            }
        }
    }
}

impl std::ops::Deref for TestNetwork<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

/// Host end veths of the network's containers: the links whose master is the bridge.
fn veths_on(bridge: &str) -> Vec<String> {
    let out = common::run(Command::new("ip").args(["-br", "link", "show", "master", bridge]));
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn containers_reach_each_other_by_name_and_alias_whatever_order_they_started_in() {
    common::require_root!("network namespaces, bridges, nftables");
    common::require("nft", "nftables");
    common::require("ip", "iproute2");
    let env = Env::new();
    busybox_image(&env);
    let net = TestNetwork::create(&env, "names", &["--subnet", "10.89.201.0/24"]);
    let (bridge, table) = (net.bridge.clone(), net.table.clone());
    assert!(bridge.starts_with("kb") && bridge.len() == 14, "{bridge}");
    assert!(
        !link_exists(&bridge),
        "no bridge before a container is attached"
    );

    let first = run_detached(
        &env,
        &[
            "--name",
            "first",
            "--network",
            &net,
            "--network-alias",
            "alpha",
            "bb",
            "sh",
            "-c",
            &httpd("page-of-first"),
        ],
    );
    wait_until(Duration::from_secs(10), "first serves", || {
        fetch_from_new(&env, &net, "http://first/").as_deref() == Some("page-of-first")
    });
    // The first looks up the second before it exists…
    assert_eq!(fetch_from(&env, &first, "http://second/"), None);
    let second = run_detached(
        &env,
        &[
            "--name",
            "second",
            "--network",
            &net,
            "--network-alias",
            "beta",
            "bb",
            "sh",
            "-c",
            &httpd("page-of-second"),
        ],
    );
    // …and finds it once it started; the second finds the first, by name and alias.
    // (The second's port must not change the gateway's MAC under the first: a bridge
    // that took its lowest port's MAC made this fail for ~30 s, one run in four.)
    wait_until(
        Duration::from_secs(10),
        "first reaches second by name",
        || fetch_from(&env, &first, "http://second/").as_deref() == Some("page-of-second"),
    );
    assert_eq!(
        fetch_from(&env, &first, "http://beta/").as_deref(),
        Some("page-of-second")
    );
    assert_eq!(
        fetch_from(&env, &second, "http://first/").as_deref(),
        Some("page-of-first")
    );
    assert_eq!(
        fetch_from(&env, &second, "http://alpha/").as_deref(),
        Some("page-of-first")
    );
    let short_id = &first.id[..12];
    assert_eq!(
        fetch_from(&env, &second, &format!("http://{short_id}/")).as_deref(),
        Some("page-of-first")
    );

    // inspect: the network lists both with address, MAC and aliases; the container its network.
    let doc = inspect(&env, &net);
    let entry = &doc["Containers"][&first.id];
    assert_eq!(entry["Name"], "first");
    assert_eq!(entry["Aliases"], serde_json::json!(["alpha"]));
    assert!(
        entry["IPv4Address"]
            .as_str()
            .unwrap()
            .starts_with("10.89.201."),
        "{entry}"
    );
    assert_eq!(doc["Containers"].as_object().unwrap().len(), 2);
    let container: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["inspect", "second"])).unwrap();
    let on_net = &container["NetworkSettings"]["Networks"][net.name.as_str()];
    assert_eq!(on_net["Gateway"], "10.89.201.1");
    assert_eq!(on_net["Aliases"], serde_json::json!(["beta"]));
    assert!(on_net["MacAddress"]
        .as_str()
        .unwrap()
        .starts_with("02:6b:0a:59:c9:"));

    // A network in use is not removed.
    let out = env.kiln(&["network", "rm", &net]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("network {} is in use by", net.name)),
        "{stderr}"
    );
    assert!(
        stderr.contains("first") && stderr.contains("second") && stderr.contains("hint:"),
        "{stderr}"
    );
    // The two (the kernel removes the veth of a container that ended, such as the
    // `fetch_from_new` ones, with its namespace, a moment later).
    wait_until(Duration::from_secs(5), "two veths on the bridge", || {
        veths_on(&bridge).len() == 2
    });

    // Once both ended: no bridge, table, veth, responder or lease is left.
    drop((first, second));
    wait_until(
        Duration::from_secs(15),
        "the network is gone from the host",
        || !link_exists(&bridge) && !table_exists(&table) && !responder_runs(&env, &net),
    );
    assert_eq!(inspect(&env, &net)["Containers"], serde_json::json!({}));
    let name = net.name.clone();
    let leases = env
        .root()
        .join(format!("networks/named/{name}/{name}.leases"));
    assert_eq!(std::fs::read_dir(&leases).unwrap().count(), 0);
    drop(net);
    env.kiln_ok(&["network", "rm", &name]);
    let out = env.kiln(&["network", "inspect", &name]);
    assert_eq!(out.status.code(), Some(1));
}

/// The internal network of the test below; the outside namespace routes back to it only
/// (so there only kiln's forward drop keeps a request from being answered); the others
/// need NAT.
const INTERNAL_SUBNET: &str = "10.89.203.0/24";

#[test]
fn an_internal_network_has_no_way_out_and_a_named_network_reaches_out_through_nat() {
    common::require_root!("network namespaces, bridges, nftables");
    common::require("nft", "nftables");
    common::require("ip", "iproute2");
    let env = Env::new();
    busybox_image(&env);
    let outside = Outside::new(&env, 0, Some(INTERNAL_SUBNET));
    let open = TestNetwork::create(&env, "open", &["--subnet", "10.89.202.0/24"]);
    let closed = TestNetwork::create(&env, "closed", &["--subnet", INTERNAL_SUBNET, "--internal"]);
    let url = "http://198.51.100.2:8080/";
    // The same request from an ordinary named network is answered: the test can fail.
    let mut reached = None;
    wait_until(
        Duration::from_secs(15),
        "the outside server answers",
        || {
            reached = fetch_from_new(&env, &open, url);
            reached.is_some()
        },
    );
    assert_eq!(reached.as_deref(), Some("outside-page"));
    assert_eq!(fetch_from_new(&env, &closed, url), None);
    // Not even to the outside's host end: nothing is forwarded out of the bridge.
    assert_eq!(
        fetch_from_new(&env, &closed, "http://198.51.100.1:1/"),
        None
    );
    let doc = inspect(&env, &closed);
    assert_eq!(doc["Internal"], true);
    drop(outside);
}

#[test]
fn containers_on_two_networks_do_not_reach_each_other() {
    common::require_root!("network namespaces, bridges, nftables");
    common::require("nft", "nftables");
    common::require("ip", "iproute2");
    let env = Env::new();
    busybox_image(&env);
    let left = TestNetwork::create(&env, "left", &["--subnet", "10.89.204.0/24"]);
    let right = TestNetwork::create(&env, "right", &["--subnet", "10.89.205.0/24"]);
    let server = run_detached(
        &env,
        &[
            "--name",
            "server",
            "--network",
            &left,
            "bb",
            "sh",
            "-c",
            &httpd("left-page"),
        ],
    );
    let address = inspect(&env, &left)["Containers"][&server.id]["IPv4Address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let url = format!("http://{address}/");
    // From its own network it answers (by address: the check below is not about names)…
    wait_until(
        Duration::from_secs(10),
        "the server answers on its network",
        || fetch_from_new(&env, &left, &url).as_deref() == Some("left-page"),
    );
    // …from the other network neither by address nor by name.
    assert_eq!(fetch_from_new(&env, &right, &url), None);
    assert_eq!(fetch_from_new(&env, &right, "http://server/"), None);
}

/// A DNS server on a loopback address of the host, port 53: every A query is answered
/// with 192.0.2.77; it counts what it was asked.
fn fake_upstream(
    address: Ipv4Addr,
) -> (
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    let socket = UdpSocket::bind((address, 53)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((len, peer)) = socket.recv_from(&mut buf) {
            let query = &buf[..len];
            // The question's name, for the test to see what was forwarded.
            let mut name = Vec::new();
            let mut at = 12;
            while at < len && query[at] != 0 {
                let l = query[at] as usize;
                name.push(String::from_utf8_lossy(&query[at + 1..at + 1 + l]).into_owned());
                at += l + 1;
            }
            let qtype = u16::from_be_bytes([query[at + 1], query[at + 2]]);
            let end = at + 5;
            let mut reply = query[..end].to_vec();
            reply[2] |= 0x80; // a response
            reply[3] = 0x80; // recursion available, no error
            reply[6..12].copy_from_slice(&[0, u8::from(qtype == 1), 0, 0, 0, 0]);
            if qtype == 1 {
                reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 77]);
            }
            let _ = socket.send_to(&reply, peer);
            if tx.send(name.join(".")).is_err() {
                break;
            }
        }
    });
    (rx, handle)
}

#[test]
fn a_name_that_is_no_container_is_forwarded_to_the_networks_resolver() {
    common::require_root!("network namespaces, bridges, a port 53 on loopback");
    common::require("nft", "nftables");
    let env = Env::new();
    busybox_image(&env);
    let upstream = Ipv4Addr::new(127, 53, (std::process::id() % 250) as u8, 9);
    let (asked, _server) = fake_upstream(upstream);
    let upstream_text = upstream.to_string();
    let net = TestNetwork::create(
        &env,
        "fwd",
        &["--subnet", "10.89.206.0/24", "--dns", &upstream_text],
    );
    let out = env.kiln_ok(&[
        "run",
        "--rm",
        "--network",
        &net,
        "--name",
        "asker",
        "bb",
        "sh",
        "-c",
        "cat /etc/resolv.conf; nslookup -type=a somewhere.example; nslookup -type=a asker",
    ]);
    assert!(out.starts_with("nameserver 10.89.206.1\n"), "{out}");
    // The fake upstream's answer reached the container through kiln's responder…
    assert!(out.contains("192.0.2.77"), "{out}");
    // …and the container's own name was answered by kiln, not forwarded.
    assert!(out.contains("10.89.206.2"), "{out}");
    let forwarded: Vec<String> = asked.try_iter().collect();
    assert!(
        forwarded.iter().any(|n| n == "somewhere.example"),
        "{forwarded:?}"
    );
    assert!(!forwarded.iter().any(|n| n == "asker"), "{forwarded:?}");
}

#[test]
fn network_names_and_values_are_checked() {
    common::require_root!("a store as root");
    let env = Env::new();
    for (args, says) in [
        (vec!["network", "create", "bridge"], "reserved network name"),
        (vec!["network", "create", "9lives"], "invalid network name"),
        (
            vec!["network", "create", "--subnet", "10.89.207.1/24", "x"],
            "host bits are set",
        ),
        (
            vec!["network", "create", "--subnet", "10.89.0.0/16", "x"],
            "overlaps network bridge",
        ),
        (vec!["network", "rm", "nothere"], "no such network: nothere"),
        (
            vec!["run", "--rm", "--network-alias", "a", "bb", "true"],
            "--network-alias needs a named network",
        ),
    ] {
        let out = env.kiln(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out)
        );
    }
    let net = net_name("dup");
    env.kiln_ok(&["network", "create", &net]);
    let out = env.kiln(&["network", "create", &net]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        text(&out)
    );
    // docker's pre-defined networks first, then the store's.
    let listed = env.kiln_ok(&["network", "ls", "--json"]);
    let entries: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bridge", "host", "none", net.as_str()]);
    assert_eq!(entries[2]["Driver"], "null");
    assert_eq!(
        env.kiln_ok(&["-q", "network", "ls"]),
        format!("bridge\nhost\nnone\n{net}")
    );
    env.kiln_ok(&["network", "rm", "-f", "nothere"]);
    let out = env.kiln(&["network", "rm", "bridge"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("pre-defined network"), "{}", text(&out));
}

/// `ip_forward` is the host's, not a network's: the network that turned it on must not
/// turn it off while another kiln network still routes through it.
#[test]
fn forwarding_stays_on_while_any_kiln_network_is_up() {
    common::require_root!("network namespaces, bridges, nftables");
    common::require("nft", "nftables");
    let env = Env::new();
    busybox_image(&env);
    let first = TestNetwork::create(&env, "fwda", &["--subnet", "10.89.206.0/24"]);
    let second = TestNetwork::create(&env, "fwdb", &["--subnet", "10.89.207.0/24"]);
    let on_first = run_detached(&env, &["--network", &first, "bb", "sleep", "300"]);
    let on_second = run_detached(&env, &["--network", &second, "bb", "sleep", "300"]);
    let forward = || std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    assert_eq!(forward().trim(), "1");
    drop(on_first);
    wait_until(Duration::from_secs(15), "the first network removed", || {
        first.gone()
    });
    assert_eq!(
        forward().trim(),
        "1",
        "the second network lost its forwarding"
    );
    drop(on_second);
}

/// The container's addresses and routes as `ip` in it shows them.
fn ip_in(env: &Env, container: &str, what: &str) -> String {
    env.kiln_ok(&["exec", container, "ip", what])
}

#[test]
fn a_running_container_is_connected_and_disconnected_and_keeps_it_over_a_restart() {
    common::require_root!("network namespaces, bridges, nftables");
    common::require("nft", "nftables");
    common::require("ip", "iproute2");
    let env = Env::new();
    busybox_image(&env);
    let front = TestNetwork::create(&env, "conna", &["--subnet", "10.89.211.0/24"]);
    let back = TestNetwork::create(&env, "connb", &["--subnet", "10.89.212.0/24"]);
    let web = run_detached(
        &env,
        &[
            "--name",
            "web",
            "--network",
            &front,
            "bb",
            "sh",
            "-c",
            &httpd("web-page"),
        ],
    );
    let client = run_detached(
        &env,
        &["--name", "client", "--network", &back, "bb", "sleep", "300"],
    );
    wait_until(Duration::from_secs(10), "web serves on its network", || {
        fetch_from_new(&env, &front, "http://web/").as_deref() == Some("web-page")
    });
    assert_eq!(fetch_from(&env, &client, "http://web/"), None);

    // Connected while it runs: the other network's container reaches it by name and alias.
    env.kiln_ok(&["network", "connect", "--alias", "api", &back, "web"]);
    assert_eq!(
        fetch_from(&env, &client, "http://web/").as_deref(),
        Some("web-page")
    );
    assert_eq!(
        fetch_from(&env, &client, "http://api/").as_deref(),
        Some("web-page")
    );
    let entry = inspect(&env, &back)["Containers"][&web.id].clone();
    assert_eq!(entry["Name"], "web");
    assert_eq!(entry["Aliases"], serde_json::json!(["api"]));
    let address = entry["IPv4Address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(address.starts_with("10.89.212."), "{entry}");
    let addrs = ip_in(&env, &web, "addr");
    assert!(
        addrs.contains("eth1") && addrs.contains(&format!("inet {address}/24")),
        "{addrs}"
    );
    // eth1 routes its subnet only: the default route stays on eth0.
    let routes = ip_in(&env, &web, "route");
    assert!(
        routes.contains("default via 10.89.211.1 dev eth0"),
        "{routes}"
    );
    assert!(!routes.contains("default via 10.89.212.1"), "{routes}");
    let container: serde_json::Value =
        serde_json::from_str(&env.kiln_ok(&["inspect", "web"])).unwrap();
    let networks = &container["NetworkSettings"]["Networks"];
    assert_eq!(networks[back.name.as_str()]["IPAddress"], address.as_str());
    assert_eq!(
        networks[back.name.as_str()]["Aliases"],
        serde_json::json!(["api"])
    );

    // Refused with a hint: twice on one network, a network that does not exist.
    for (args, says) in [
        (
            vec!["network", "connect", &back, "web"],
            "already on network",
        ),
        (
            vec!["network", "connect", "nosuchnet", "web"],
            "no such network: nosuchnet",
        ),
        (
            vec!["network", "connect", "bridge", "web"],
            "default bridge network",
        ),
    ] {
        let out = env.kiln(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(says) && stderr.contains("hint:"),
            "{args:?}: {stderr}"
        );
    }

    // Disconnected while it runs: unreachable by name and address, no eth1, not listed.
    env.kiln_ok(&["network", "disconnect", &back, "web"]);
    assert_eq!(fetch_from(&env, &client, "http://web/"), None);
    assert_eq!(
        fetch_from(&env, &client, &format!("http://{address}/")),
        None
    );
    assert!(!ip_in(&env, &web, "addr").contains("eth1"));
    assert!(inspect(&env, &back)["Containers"].get(&web.id).is_none());
    let out = env.kiln(&["network", "disconnect", &back, "web"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not on network"));
    assert_eq!(
        fetch_from_new(&env, &front, "http://web/").as_deref(),
        Some("web-page"),
        "its first network is untouched"
    );

    // A connect is kept in the start config: the next start attaches it again.
    env.kiln_ok(&["network", "connect", &back, "web"]);
    env.kiln_ok(&["restart", "-t", "1", "web"]);
    wait_until(
        Duration::from_secs(10),
        "web serves on both networks again",
        || fetch_from(&env, &client, "http://web/").as_deref() == Some("web-page"),
    );
    assert!(ip_in(&env, &web, "addr").contains("eth1"));
    drop((web, client));
}
