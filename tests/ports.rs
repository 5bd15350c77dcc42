//! Published ports and bandwidth limits of containers on kiln's bridge network, through
//! the CLI: `-p` ranges and free host ports, `-P`, the spec's `run: ports:` under the
//! flags, `kiln port`, `kiln ps` and `kiln inspect`, a busy host port, a port reached from
//! another network namespace (not through 127.0.0.1), and `--network-rate-in/-out`
//! measured with iperf3. Traffic stays on this machine: 127.0.0.1, kiln's bridge and a
//! namespace the test makes.
//!
//! These tests share kiln's default network (`kiln0`, its state host-wide) with whatever
//! else runs on the machine, so they assert only on their own containers' rules, veths
//! and leases. They run one at a time (see [`Serial`]), so that the network's rules and
//! leases one test compares before and after are not changed by another of them, and
//! the bandwidth measurements have the machine to themselves.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::containers::{busybox_image, http_get, ps_entry, run_detached, wait_until};
use common::{free_port, text, Env};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A test's store, its turn on kiln's bridge. At its end its containers are removed and
/// `kiln gc` frees what they left on the network.
struct Serial {
    env: Env,
    _turn: MutexGuard<'static, ()>,
}

impl Serial {
    fn new() -> Serial {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        common::require("nft", "nftables");
        common::require("ip", "iproute2");
        let env = Env::new();
        busybox_image(&env);
        Serial { env, _turn: turn }
    }
}

impl std::ops::Deref for Serial {
    type Target = Env;
    fn deref(&self) -> &Env {
        &self.env
    }
}

impl Drop for Serial {
    fn drop(&mut self) {
        let ids = self.env.kiln(&["ps", "-a", "-q"]);
        let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.env.kiln(&args);
        }
        let _ = self.env.kiln(&["gc"]);
    }
}

/// A shell command for the container: busybox httpd serving "port N" on each port.
fn serve(ports: &[u16]) -> String {
    let mut script = String::new();
    for port in ports {
        script.push_str(&format!(
            "mkdir -p /www{port} && echo port {port} > /www{port}/index.html && \
             httpd -p {port} -h /www{port} && "
        ));
    }
    script + "exec sleep 300"
}

/// `count` consecutive TCP ports nothing listens on now, on every address.
fn free_ports(count: u16) -> u16 {
    (0..200)
        .map(|_| free_port())
        .filter(|&first| first < 60_000)
        .find(|&first| (first..first + count).all(|p| TcpListener::bind(("0.0.0.0", p)).is_ok()))
        .expect("consecutive free ports")
}

fn stdout_lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

#[test]
fn ranges_and_free_host_ports_are_published_and_shown_as_docker_shows_them() {
    common::require_root!("network namespaces, a bridge, nftables");
    let env = Serial::new();
    let base = free_ports(3);
    let range = format!("{base}-{}:80-82", base + 2);
    let web = run_detached(
        &env,
        &[
            "--name",
            "web",
            "--network",
            "bridge",
            "-p",
            &range,
            "-p",
            "127.0.0.1::80",
            "bb",
            "sh",
            "-c",
            &serve(&[80, 81, 82]),
        ],
    );
    for (offset, port) in [(0, 80), (1, 81), (2, 82)] {
        wait_until(Duration::from_secs(10), "each port of the range", || {
            http_get("127.0.0.1", base + offset) == Some(format!("port {port}\n"))
        });
    }
    // The free port kiln chose on 127.0.0.1, as `kiln port` tells it.
    let listed = env.kiln_ok(&["port", "web"]);
    let lines = stdout_lines(&listed);
    assert_eq!(lines.len(), 4, "{listed}");
    assert_eq!(lines[0], format!("80/tcp -> 0.0.0.0:{base}"));
    let chosen: u16 = lines[1]
        .strip_prefix("80/tcp -> 127.0.0.1:")
        .unwrap_or_else(|| panic!("{listed}"))
        .parse()
        .unwrap();
    assert_eq!(
        lines[2..],
        [
            format!("81/tcp -> 0.0.0.0:{}", base + 1),
            format!("82/tcp -> 0.0.0.0:{}", base + 2),
        ]
    );
    assert_eq!(http_get("127.0.0.1", chosen).as_deref(), Some("port 80\n"));
    assert_eq!(
        env.kiln_ok(&["port", &web, "80"]),
        format!("0.0.0.0:{base}\n127.0.0.1:{chosen}")
    );
    assert_eq!(
        env.kiln_ok(&["port", "web", "82/tcp"]),
        format!("0.0.0.0:{}", base + 2)
    );
    for (args, says) in [
        (
            &["port", "web", "81/udp"][..],
            "no public port 81/udp published for web",
        ),
        (&["port", "web", "83"], "no public port 83/tcp"),
        (&["port", "web", "http"], "invalid port \"http\""),
        (&["port", "nosuch"], "no such container: nosuch"),
    ] {
        let out = env.kiln(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }

    // ps: docker's PORTS, consecutive ports as a range.
    let column = format!(
        "0.0.0.0:{base}-{}->80-82/tcp, 127.0.0.1:{chosen}->80/tcp",
        base + 2
    );
    let table = env.kiln_ok(&["ps"]);
    assert!(table.lines().next().unwrap().contains("PORTS"), "{table}");
    assert!(table.contains(&column), "{table}");
    let entry = ps_entry(&env, "web").unwrap();
    let ports = entry["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 4, "{entry}");
    assert!(ports.contains(&serde_json::json!({
        "host_ip": "127.0.0.1", "host_port": chosen, "container_port": 80, "protocol": "tcp"
    })));

    // inspect: every binding, and what was asked for.
    let doc: serde_json::Value = serde_json::from_str(&env.kiln_ok(&["inspect", "web"])).unwrap();
    let doc = if doc.is_array() { doc[0].clone() } else { doc };
    assert_eq!(
        doc["NetworkSettings"]["Ports"]["80/tcp"],
        serde_json::json!([
            { "HostIp": "0.0.0.0", "HostPort": base.to_string() },
            { "HostIp": "127.0.0.1", "HostPort": chosen.to_string() },
        ]),
        "{doc}"
    );
    assert_eq!(
        doc["HostConfig"]["PortBindings"]["80/tcp"],
        serde_json::json!([
            { "HostIp": "", "HostPort": base.to_string() },
            { "HostIp": "127.0.0.1", "HostPort": "" },
        ]),
        "{doc}"
    );
    let settings = &doc["NetworkSettings"];
    assert!(
        settings["IPAddress"]
            .as_str()
            .unwrap()
            .starts_with("10.89.0."),
        "{settings}"
    );
    assert_eq!(settings["Gateway"], "10.89.0.1");
    assert!(settings["MacAddress"]
        .as_str()
        .unwrap()
        .starts_with("02:6b:0a:59:00:"));

    // A stopped container publishes nothing, as docker's `port` and `ps -a` say.
    env.kiln_ok(&["stop", "-t", "1", "web"]);
    assert_eq!(env.kiln_ok(&["port", "web"]), "");
    assert!(!env.kiln_ok(&["ps", "-a"]).contains(&column));
    drop(web);
}

/// The spec: a web image exposing 80, 81 and 5353/udp, with `run: ports:` for 80 and 81.
fn web_spec(p80: u16, p81: u16) -> String {
    format!(
        r#"image: web:latest
from: bb
steps:
  - workdir: /
config:
  expose: [80, 81/tcp, 5353/udp]
run:
  network: bridge
  ports:
    - "127.0.0.1:{p80}:80"
    - {{ target: 81, published: "{p81}", host_ip: 127.0.0.1, protocol: tcp }}
"#
    )
}

#[test]
fn spec_ports_apply_under_the_flags_and_publish_all_adds_every_exposed_port() {
    common::require_root!("network namespaces, a bridge, nftables");
    let env = Serial::new();
    let (p80, p81, p80_flag) = (free_port(), free_port(), free_port());
    env.write("project/kiln.yaml", &web_spec(p80, p81));
    let built = env.kiln_in("project", &["build"]);
    assert!(built.status.success(), "{}", text(&built));
    let script = serve(&[80, 81]);

    // The spec's ports alone.
    let first = run_detached(&env, &["--name", "one", "web", "sh", "-c", &script]);
    wait_until(Duration::from_secs(10), "the spec's port 80", || {
        http_get("127.0.0.1", p80).as_deref() == Some("port 80\n")
    });
    assert_eq!(
        env.kiln_ok(&["port", "one"]),
        format!("80/tcp -> 127.0.0.1:{p80}\n81/tcp -> 127.0.0.1:{p81}")
    );
    drop(first);

    // -p for port 80 replaces the spec's; -P adds the exposed ports published by neither.
    let flag = format!("127.0.0.1:{p80_flag}:80");
    let second = run_detached(
        &env,
        &[
            "--name", "two", "-P", "-p", &flag, "web", "sh", "-c", &script,
        ],
    );
    wait_until(Duration::from_secs(10), "the flag's port 80", || {
        http_get("127.0.0.1", p80_flag).as_deref() == Some("port 80\n")
    });
    assert_eq!(
        http_get("127.0.0.1", p80),
        None,
        "the spec's 80 is replaced"
    );
    // Its two servers start one after the other: 81 may answer a moment after 80.
    wait_until(Duration::from_secs(10), "the spec's port 81", || {
        http_get("127.0.0.1", p81).as_deref() == Some("port 81\n")
    });
    let listed = env.kiln_ok(&["port", "two"]);
    let lines = stdout_lines(&listed);
    assert_eq!(lines.len(), 3, "{listed}");
    assert_eq!(lines[0], format!("80/tcp -> 127.0.0.1:{p80_flag}"));
    assert_eq!(lines[1], format!("81/tcp -> 127.0.0.1:{p81}"));
    let udp: u16 = lines[2]
        .strip_prefix("5353/udp -> 0.0.0.0:")
        .unwrap_or_else(|| panic!("-P publishes 5353/udp on every address: {listed}"))
        .parse()
        .unwrap();
    assert!(udp > 0);
    drop(second);

    // -P on an image without the bridge is an error; the spec's ports under --network
    // none are dropped with a notice, and the container runs.
    let out = env.kiln(&["run", "--rm", "--network", "none", "-P", "web", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--network bridge"), "{}", text(&out));
    let out = env.kiln(&["run", "--rm", "--network", "none", "web", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("run: ports are not published: the container's network is none"),
        "{}",
        text(&out)
    );
}

/// The names of the host's veths kiln made (`kv…`).
fn kiln_veths() -> Vec<String> {
    common::run(Command::new("ip").args(["-br", "link"]))
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with("kv"))
        .map(|name| name.split('@').next().unwrap().to_owned())
        .collect()
}

/// kiln's nftables table as text (empty when there is none).
fn kiln_table() -> String {
    let out = Command::new("nft")
        .args(["list", "table", "ip", "kiln"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The leases of kiln's default network (its state is the host's, not a store's).
fn leases() -> serde_json::Value {
    let path = std::path::Path::new("/run/kiln/networks/kiln.json");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    state["leases"].clone()
}

#[test]
fn a_busy_host_port_fails_before_the_command_runs_and_leaves_nothing() {
    common::require_root!("network namespaces, a bridge, nftables");
    let env = Serial::new();
    // A container on the network meanwhile, so that the network itself stays and what
    // the failed start would have left is its own.
    let keeper = run_detached(&env, &["--network", "bridge", "bb", "sleep", "300"]);
    let port = free_port();
    let _busy = TcpListener::bind(("0.0.0.0", port)).unwrap();
    let (veths, table, leased) = (kiln_veths(), kiln_table(), leases());
    let marks = env.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let volume = format!("{}:/marks", marks.display());
    let publish = format!("{port}:80");
    let out = env.kiln(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "-v",
        &volume,
        "-p",
        &publish,
        "bb",
        "touch",
        "/marks/ran",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("port 0.0.0.0:{port}/tcp is already in use")),
        "{stderr}"
    );
    assert!(!marks.join("ran").exists(), "the command ran");
    assert_eq!(kiln_veths(), veths, "a veth is left");
    assert_eq!(kiln_table(), table, "the rules changed");
    assert!(!kiln_table().contains(&format!("dport {port} ")));
    assert_eq!(leases(), leased, "an address is left leased");
    assert_eq!(env.kiln_ok(&["ps", "-a", "-q"]).lines().count(), 1);
    drop(keeper);
}

/// A network namespace of the test's own, joined to the host by a veth on a test subnet
/// (198.51.100.0/30, TEST-NET-2): another host, as far as the published port can tell.
struct OtherHost {
    netns: String,
    host_end: String,
}

impl OtherHost {
    const HOST_ADDRESS: &str = "198.51.100.1";

    fn new() -> OtherHost {
        let routes = common::run(Command::new("ip").args(["-4", "route", "show", "table", "all"]));
        assert!(
            !routes.contains("198.51.100."),
            "this test's subnet 198.51.100.0/30 is in use on this host:\n{routes}"
        );
        let pid = std::process::id();
        let other = OtherHost {
            netns: format!("kiln-ports-{pid}"),
            host_end: format!("kpt{pid}"),
        };
        let peer = format!("kpp{pid}");
        let ip = |args: &[&str]| common::run(Command::new("ip").args(args));
        ip(&["netns", "add", &other.netns]);
        ip(&[
            "link",
            "add",
            &other.host_end,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &other.netns]);
        ip(&["addr", "add", "198.51.100.1/30", "dev", &other.host_end]);
        ip(&["link", "set", &other.host_end, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &other.netns, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", "198.51.100.2/30", "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        other
    }

    /// `curl http://ADDRESS:PORT/` from inside: the body, or `None`.
    fn fetch(&self, address: &str, port: u16) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "curl",
                "-s",
                "--max-time",
                "3",
            ])
            .arg(format!("http://{address}:{port}/"))
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_end])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

#[test]
fn a_published_port_is_reached_from_another_host_but_one_on_loopback_is_not() {
    common::require_root!("network namespaces, a bridge, nftables");
    common::require("curl", "curl");
    let env = Serial::new();
    let other = OtherHost::new();
    let (everywhere, loopback) = (free_port(), free_port());
    let web = run_detached(
        &env,
        &[
            "--network",
            "bridge",
            "-p",
            &format!("{everywhere}:80"),
            "-p",
            &format!("127.0.0.1:{loopback}:81"),
            "bb",
            "sh",
            "-c",
            &serve(&[80, 81]),
        ],
    );
    wait_until(Duration::from_secs(10), "the page on loopback", || {
        http_get("127.0.0.1", loopback).as_deref() == Some("port 81\n")
    });
    assert_eq!(
        other.fetch(OtherHost::HOST_ADDRESS, everywhere).as_deref(),
        Some("port 80\n"),
        "a port published on every address answers another host"
    );
    assert_eq!(
        other.fetch(OtherHost::HOST_ADDRESS, loopback),
        None,
        "a port published on 127.0.0.1 answers only the host"
    );
    drop(web);
}

/// A busybox image with iperf3 (the host's binary and the libraries `ldd` lists), `ip3`.
fn iperf3_image(env: &Env) {
    common::require("iperf3", "iperf3");
    let root = common::busybox_rootfs(env, "ip3");
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let binary = PathBuf::from("/usr/bin/iperf3");
    let _ = std::fs::remove_file(root.join("bin/iperf3"));
    std::fs::copy(&binary, root.join("bin/iperf3")).unwrap();
    let libraries = common::run(Command::new("ldd").arg(&binary));
    for library in libraries.split_whitespace().filter(|w| w.starts_with('/')) {
        let target = root.join(library.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(library, target).unwrap();
    }
    env.kiln_ok(&["import", root.to_str().unwrap(), "-t", "ip3"]);
}

/// An iperf3 server in a container with `args`, published on 127.0.0.1: its host port.
fn iperf3_server<'a>(env: &'a Env, args: &[&str]) -> (common::containers::Detached<'a>, u16) {
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:5201");
    let mut all = vec!["--network", "bridge", "-p", &publish];
    all.extend_from_slice(args);
    all.extend(["iperf3", "-s", "-p", "5201"]);
    let server = run_detached(env, &all);
    wait_until(Duration::from_secs(10), "iperf3 listening", || {
        let out = env.kiln(&["exec", &server, "netstat", "-ltn"]);
        String::from_utf8_lossy(&out.stdout).contains(":5201 ")
    });
    (server, port)
}

/// Bits per second of payload iperf3 measured at the receiver over 3 s: from the host to
/// the container, or with `reverse` from the container to the host.
fn measure(port: u16, reverse: bool) -> f64 {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-c", "127.0.0.1", "-p", &port.to_string(), "-t", "3", "-J"]);
    if reverse {
        cmd.arg("-R");
    }
    let report: serde_json::Value = serde_json::from_str(&common::run(&mut cmd)).unwrap();
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("{report}"))
}

/// Within ±15 % of 8 Mbit/s (payload: whole frames count against the rate, so about
/// 4 % less is the norm).
fn assert_about_8mbit(measured: f64, what: &str) {
    let rate = 8_000_000.0;
    assert!(
        (rate * 0.85..=rate * 1.15).contains(&measured),
        "{what}: {measured:.0} bit/s, not within 15 % of {rate}"
    );
}

#[test]
fn network_rates_shape_each_direction_from_flags_and_the_spec() {
    common::require_root!("network namespaces, a bridge, tc");
    let env = Serial::new();
    iperf3_image(&env);

    // --network-rate-out: from the container only.
    let (server, port) = iperf3_server(&env, &["--network-rate-out", "8mbit", "ip3"]);
    assert_about_8mbit(
        measure(port, true),
        "--network-rate-out 8mbit, container → host",
    );
    let unshaped = measure(port, false);
    assert!(
        unshaped > 4.0 * 8_000_000.0,
        "host → container is not limited by --network-rate-out: {unshaped:.0} bit/s"
    );
    drop(server);

    // run: network_rate_in: to the container only.
    env.write(
        "project/kiln.yaml",
        "image: shaped:latest\nfrom: ip3\nsteps:\n  - workdir: /\nrun:\n  network: bridge\n  network_rate_in: 8mbit\n",
    );
    let built = env.kiln_in("project", &["build"]);
    assert!(built.status.success(), "{}", text(&built));
    let (server, port) = iperf3_server(&env, &["shaped"]);
    assert_about_8mbit(
        measure(port, false),
        "run: network_rate_in: 8mbit, host → container",
    );
    drop(server);

    // A rate without the bridge, or in a unit tc does not know, is refused.
    for (args, says) in [
        (
            &["--network", "host", "--network-rate-out", "8mbit"][..],
            "--network-rate-out: a network rate limit needs the container's own network",
        ),
        (
            &["--network", "none", "--network-rate-in", "1gbit"],
            "--network-rate-in:",
        ),
        (
            &["--network", "bridge", "--network-rate-in", "8mb"],
            "unknown unit \"mb\"",
        ),
    ] {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        all.extend(["bb", "true"]);
        let out = env.kiln(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("hint:"), "{args:?}: {}", text(&out));
    }
}
