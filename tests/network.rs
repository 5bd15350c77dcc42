//! `kiln run --network bridge -p …`: a container with its own address on kiln's bridge,
//! reached from the host through a published port, and nothing left of the network once
//! the last container ended. Traffic stays on this machine (127.0.0.1 and kiln's bridge).
//!
//! One test function uses kiln's default network (`kiln0`, table `ip kiln`), so the
//! host-wide checks cannot race another test of this binary.

mod common;

use std::process::Command;
use std::time::Duration;

use common::containers::{busybox_image, http_get, run_detached, wait_until};
use common::{free_port, text, Env};

/// What of kiln's network the host has: its links, its nftables table.
fn kiln_network_on_host() -> (Vec<String>, bool) {
    let links = common::run(Command::new("ip").args(["-br", "link"]));
    let links = links
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name == "kiln0" || name.starts_with("kv"))
        .map(str::to_owned)
        .collect();
    let table = Command::new("nft")
        .args(["list", "table", "ip", "kiln"])
        .output()
        .unwrap()
        .status
        .success();
    (links, table)
}

/// Waits until kiln's network is gone from the host and `ip_forward` is `forward`; on a
/// timeout the failure shows what is left, with the network's state.
fn wait_network_gone(what: &str, forward: &str) {
    let gone = || kiln_network_on_host() == (vec![], false) && ip_forward() == forward;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gone() {
        if std::time::Instant::now() > deadline {
            panic!(
                "{what}: not within 10 s: {:?}, ip_forward {}, state {}, forwarding {}, processes:\n{}",
                kiln_network_on_host(),
                ip_forward().trim(),
                std::fs::read_to_string("/run/kiln/networks/kiln.json").unwrap_or_default(),
                std::fs::read_to_string("/run/kiln/networks/forwarding.json").unwrap_or_default(),
                common::run(Command::new("sh").args(["-c", "ps -eo pid,pgid,args | grep -v grep | grep 'kiln' || true"])),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap()
}

#[test]
fn a_published_port_reaches_the_container_and_the_network_goes_with_the_last_one() {
    common::require_root!("network namespaces, a bridge, nftables");
    common::require("nft", "nftables");
    common::require("ip", "iproute2");
    let env = Env::new();
    busybox_image(&env);
    // The test binary before this one may have left the network lingering (kiln removes
    // an idle one 2 s after its last container); what it had on is back off after it.
    wait_until(Duration::from_secs(10), "kiln's network idle", || {
        kiln_network_on_host() == (vec![], false)
    });
    let forward_before = ip_forward();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    let serve = "mkdir -p /www && echo hello over the bridge > /www/index.html && \
                 exec httpd -f -p 80 -h /www";
    let web = run_detached(
        &env,
        &[
            "--network",
            "bridge",
            "-p",
            &publish,
            "bb",
            "sh",
            "-c",
            serve,
        ],
    );
    wait_until(Duration::from_secs(10), "the page through the port", || {
        http_get("127.0.0.1", port).is_some_and(|b| b == "hello over the bridge\n")
    });
    let doc: serde_json::Value = serde_json::from_str(&env.kiln_ok(&["inspect", &web])).unwrap();
    let net = &doc["NetworkSettings"];
    let address = net["IPAddress"].as_str().unwrap().to_owned();
    assert!(address.starts_with("10.89.0."), "{net}");
    assert_eq!(net["Gateway"], "10.89.0.1");
    assert_eq!(net["Ports"]["80/tcp"][0]["HostPort"], port.to_string());
    // The one-liner docker users script the address with.
    let template = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}";
    assert_eq!(env.kiln_ok(&["inspect", "-f", template, &web]), address);
    // Inside: its own eth0 with that address, a default route through the bridge.
    let inside = env.kiln_ok(&["exec", &web, "sh", "-c", "ip -4 addr show eth0; ip route"]);
    assert!(inside.contains(&format!("inet {address}/24")), "{inside}");
    assert!(inside.contains("default via 10.89.0.1"), "{inside}");

    // A second container gets another address and reaches the first through the bridge.
    let other = env.kiln_ok(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "bb",
        "sh",
        "-c",
        &format!("ip -4 addr show eth0; wget -q -O- http://{address}/"),
    ]);
    assert!(other.contains("hello over the bridge"), "{other}");
    assert!(!other.contains(&format!("inet {address}/")), "{other}");

    // A host port in use is an error before the container starts, and leaves nothing.
    let out = env.kiln(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "-p",
        &publish,
        "bb",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out));
    assert!(text(&out).contains(&port.to_string()), "{}", text(&out));
    // -p needs the bridge.
    let out = env.kiln(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-p",
        "8080:80",
        "bb",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--network bridge"), "{}", text(&out));

    drop(web);
    // Removed by a process of its own, after the last container's exit was reported.
    wait_network_gone("the network removed", &forward_before);
    assert!(http_get("127.0.0.1", port).is_none());

    // A kiln killed with its container leaves its lease; `kiln gc` frees it, and the
    // network with it.
    let mut run = env
        .command()
        .args(["run", "--network", "bridge", "bb", "sleep", "300"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the bridge made", || {
        kiln_network_on_host().1
    });
    run.kill().unwrap();
    let _ = run.wait();
    env.kiln_ok(&["gc"]);
    assert_eq!(kiln_network_on_host(), (vec![], false));
    assert_eq!(ip_forward(), forward_before);

    // kiln's config file moves the default network to another subnet; one that is not a
    // subnet is an error that names its place in the file.
    let config = env.write("config.yaml", "# kiln\ndefault_subnet: 10.77.7.0/24\n");
    let out = env
        .command()
        .env("KILN_CONFIG", &config)
        .args([
            "run",
            "--rm",
            "bb",
            "sh",
            "-c",
            "ip -4 addr show eth0; ip route",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("inet 10.77.7.2/24"), "{}", text(&out));
    assert!(
        text(&out).contains("default via 10.77.7.1"),
        "{}",
        text(&out)
    );
    let bad = env.write("bad.yaml", "default_subnet: 10.77.7.9/24\n");
    let out = env
        .command()
        .env("KILN_CONFIG", &bad)
        .args(["run", "--rm", "bb", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("bad.yaml:1:17: default_subnet: invalid subnet 10.77.7.9/24"),
        "{}",
        text(&out)
    );
    wait_network_gone(
        "the network removed after the config's subnet",
        &forward_before,
    );
}
