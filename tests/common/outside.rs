//! An "outside" network namespace reached through a veth of the host, with busybox httpd
//! serving `outside-page` on port 8080 of its address, in TEST-NET-2 (198.51.100.0/24:
//! routed nowhere else here): where the tests' containers go "out" to without any packet
//! leaving the machine. Removed on drop.

use std::net::Ipv4Addr;
use std::process::{Child, Command};

use super::Env;

pub struct Outside {
    name: String,
    host_end: String,
    server: Child,
    /// The server's address (the host's end is the one before it).
    pub address: Ipv4Addr,
}

impl Outside {
    /// The namespace on `198.51.100.(4 × slot)/30`, so tests running at once take
    /// different slots; `route_back` is a subnet it routes back through the host.
    pub fn new(env: &Env, slot: u8, route_back: Option<&str>) -> Outside {
        let id = std::process::id();
        let name = format!("kiln-out-{id}-{slot}");
        let host_end = format!("ko{}s{slot}", id % 1_000_000);
        let host = Ipv4Addr::new(198, 51, 100, 4 * slot + 1);
        let address = Ipv4Addr::new(198, 51, 100, 4 * slot + 2);
        let ip = |args: &[&str]| {
            super::run(Command::new("ip").args(args));
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        ip(&["addr", "add", &format!("{host}/30"), "dev", &host_end]);
        ip(&["link", "set", &host_end, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{address}/30"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        if let Some(subnet) = route_back {
            ip(&[
                "-n",
                &name,
                "route",
                "add",
                subnet,
                "via",
                &host.to_string(),
            ]);
        }
        let www = env.write(&format!("outside-{slot}/index.html"), "outside-page\n");
        let server = Command::new("ip")
            .args(["netns", "exec", &name, "busybox", "httpd", "-f", "-p"])
            .arg(format!("{address}:8080"))
            .arg("-h")
            .arg(www.parent().unwrap())
            .spawn()
            .unwrap();
        Outside {
            name,
            host_end,
            server,
            address,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_end])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
