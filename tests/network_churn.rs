//! 50 containers start and end on kiln's default network — ten at a time, half of them
//! publishing a port, some killed, some ending on their own — and the host is back to
//! what it was: its links, its whole nftables ruleset, `ip_forward`, and the network's
//! leases. A binary of its own with one test, so nothing else changes the host's network
//! meanwhile and the comparisons can be of everything.

mod common;

use std::process::Command;
use std::time::Duration;

use common::containers::{busybox_image, wait_until};
use common::{free_port, Env};

/// What kiln could leave on the host's network.
#[derive(Debug, PartialEq, Eq)]
struct HostNetwork {
    links: Vec<String>,
    ruleset: String,
    ip_forward: String,
    leases: Vec<String>,
}

fn host_network() -> HostNetwork {
    let links = common::run(Command::new("ip").args(["-br", "link"]));
    let mut links: Vec<String> = links
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    links.sort();
    let ruleset = common::run(Command::new("nft").args(["list", "ruleset"]));
    let leases = std::fs::read_dir("/run/kiln/networks/kiln.leases")
        .map(|dir| {
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    HostNetwork {
        links,
        ruleset,
        ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        leases,
    }
}

/// A `kiln run` that a failing test does not leave running.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn leased_addresses() -> usize {
    let Ok(state) = std::fs::read("/run/kiln/networks/kiln.json") else {
        return 0;
    };
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    state["leases"].as_object().map_or(0, |l| l.len())
}

#[test]
fn fifty_containers_on_the_bridge_leave_the_host_as_it_was() {
    common::require_root!("network namespaces, a bridge, nftables");
    common::require("nft", "nftables");
    common::require("ip", "iproute2");
    let env = Env::new();
    busybox_image(&env);
    // The binary before this one may have left the network lingering (2 s), or leases of
    // kilns it killed (which `kiln gc` frees).
    env.kiln_ok(&["gc"]);
    wait_until(Duration::from_secs(10), "kiln's network idle", || {
        !host_network().links.iter().any(|l| l == "kiln0")
    });
    let before = host_network();
    for batch in 0..5 {
        let mut running = Vec::new();
        for i in 0..10 {
            let mut args = vec!["run".to_owned(), "--rm".to_owned()];
            if i % 2 == 0 {
                args.extend(["-p".to_owned(), format!("127.0.0.1:{}:80", free_port())]);
            }
            // Every third one is still running when it is killed; the others end.
            let command = if i % 3 == 0 { "sleep 30" } else { "sleep 2" };
            args.extend([
                "bb".to_owned(),
                "sh".to_owned(),
                "-c".to_owned(),
                command.to_owned(),
            ]);
            let child = env
                .command()
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            running.push((i, KillOnDrop(Some(child))));
        }
        wait_until(
            Duration::from_secs(20),
            "ten containers on the network",
            || leased_addresses() >= 10,
        );
        let in_use = host_network();
        assert!(
            in_use.links.iter().any(|l| l == "kiln0"),
            "batch {batch}: no bridge"
        );
        assert!(
            in_use.ruleset.contains("dnat to 10.89.0."),
            "batch {batch}: no port rule"
        );
        for (i, mut child) in running {
            let mut child = child.0.take().unwrap();
            if i % 3 == 0 {
                child.kill().unwrap(); // the kiln itself, as a crash would
            }
            let out = child.wait_with_output().unwrap();
            if i % 3 != 0 {
                assert!(
                    out.status.success(),
                    "batch {batch} #{i}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        // The killed kilns' leases, so the next batch counts only its own.
        env.kiln_ok(&["gc"]);
    }
    // What the killed kilns left is freed by the next attach or `kiln gc`; the idle
    // network goes 2 s after its last container.
    env.kiln_ok(&["gc"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while host_network() != before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(host_network(), before, "the host is not as it was");
}
