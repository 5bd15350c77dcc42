//! pasta on the real kernel. The tests that run pasta need root (named namespaces) but
//! one, which runs it as `nobody` the way rootless kiln will. Each plays the host in a
//! namespace of its own ("host", with an uplink to "world", its gateway), so every
//! packet stays on this machine and the host's real ports are never touched: pasta is
//! started from a thread inside "host" and inherits it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::*;
use crate::netns::in_netns;
use crate::test_support::{require_tool, run, unique, TestNetns};

/// The lab host's uplink address (pasta copies it into the container) and its gateway,
/// the "world" namespace.
const UPLINK: &str = "198.51.100.1";
const WORLD: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

struct Lab {
    host: TestNetns,
    world: TestNetns,
    state: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        require_tool("pasta", "passt");
        let host = TestNetns::new("phost");
        let world = TestNetns::new("pworld");
        host.ip(&["link", "set", "lo", "up"]);
        world.ip(&["link", "set", "lo", "up"]);
        let peer = ["peer", "name", "up1", "netns", &world.name];
        host.ip(&[&["link", "add", "up0", "type", "veth"][..], &peer[..]].concat());
        host.ip(&["addr", "add", &format!("{UPLINK}/24"), "dev", "up0"]);
        host.ip(&["link", "set", "up0", "up"]);
        world.ip(&["addr", "add", &format!("{WORLD}/24"), "dev", "up1"]);
        world.ip(&["link", "set", "up1", "up"]);
        host.ip(&["route", "add", "default", "via", &WORLD.to_string()]);
        Lab {
            host,
            world,
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn options(&self, ports: Vec<PortMapping>) -> PastaOptions {
        PastaOptions {
            ports,
            pid_file: self.state.path().join(unique("pasta.pid")),
        }
    }

    /// `start` for `container`, from the lab's host.
    fn start(&self, container: &TestNetns, options: &PastaOptions) -> Result<Pasta, NetworkError> {
        let netns = Path::new("/run/netns").join(&container.name);
        in_netns(self.host.fd(), || Ok(start(&netns, None, options))).unwrap()
    }
}

/// A TCP server in a namespace that answers every connection with `reply`; stopped
/// when dropped.
struct Server {
    listener: Arc<TcpListener>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(ns: BorrowedFd<'_>, address: &str, reply: &'static str) -> Server {
        let address: SocketAddr = address.parse().unwrap();
        // A socket belongs to the namespace it was made in, whichever thread uses it.
        let listener = Arc::new(in_netns(ns, || TcpListener::bind(address)).unwrap());
        let serving = Arc::clone(&listener);
        let thread = std::thread::spawn(move || {
            for stream in serving.incoming() {
                let Ok(mut stream) = stream else { return };
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        Server {
            listener,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // shutdown(2) of a listening socket wakes its accept with an error (Linux).
        let fd = self.listener.as_raw_fd();
        // SAFETY: a valid socket this struct owns.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a connection from inside `ns` to `address` reads, or the error.
fn fetch(ns: BorrowedFd<'_>, address: &str) -> io::Result<String> {
    let address: SocketAddr = address.parse().unwrap();
    in_netns(ns, || {
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })
}

/// PIDs of the pasta processes whose command line names `netns`.
fn pastas_for(netns: &str) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.starts_with("pasta") && cmdline.contains(netns)
        })
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what} after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

fn tcp(host_ip: &str, host_port: u16, container_port: u16) -> PortMapping {
    PortMapping {
        host_ip: host_ip.parse().unwrap(),
        host_port,
        container_port,
        protocol: Protocol::Tcp,
    }
}

#[test]
fn arguments_forward_nothing_but_the_published_ports() {
    let options = PastaOptions {
        ports: vec![
            tcp("127.0.0.1", 8080, 80),
            tcp("0.0.0.0", 8443, 443),
            PortMapping {
                protocol: Protocol::Udp,
                ..tcp("0.0.0.0", 5353, 53)
            },
        ],
        pid_file: "/run/c/pasta.pid".into(),
    };
    let args = arguments(
        Path::new("/proc/7/ns/net"),
        Some(Path::new("/proc/7/ns/user")),
        &options,
        false,
    )
    .join(" ");
    for expected in [
        "--tcp-ns none --udp-ns none",
        "--no-map-gw",
        "-t 127.0.0.1/8080:80 -t 8443:443 -u 5353:53",
        "--dns-forward 169.254.1.1",
        "--pid /run/c/pasta.pid --userns /proc/7/ns/user --netns /proc/7/ns/net",
    ] {
        assert!(args.contains(expected), "{expected:?} not in {args}");
    }
    assert!(!args.contains("--runas"), "{args}");

    let bare = PastaOptions {
        ports: Vec::new(),
        ..options
    };
    let args = arguments(Path::new("/run/netns/x"), None, &bare, true).join(" ");
    assert!(args.contains("-t none -u none"), "{args}");
    assert!(args.contains("--runas 0"), "{args}");
    assert!(!args.contains("--userns"), "{args}");
}

#[test]
fn a_missing_pasta_says_which_package_has_it() {
    // A path, not a name: a PATH search whose directories the user cannot read (as
    // nobody in the root-free tier) fails with EACCES instead.
    let err = spawn("/nonexistent/pasta", &[]).unwrap_err();
    assert!(matches!(err, NetworkError::ToolMissing { .. }), "{err}");
    assert_eq!(err.to_string(), "/nonexistent/pasta is not installed");
    assert!(err.hint().unwrap().contains("apt-get install passt"));
}

#[test]
fn syslog_complaints_are_not_reported_as_the_error() {
    let stderr = "Failed to send 67 bytes to syslog\n\
                  Failed to bind any port for '-t 127.0.0.1/18081:80', exiting\n";
    assert_eq!(
        without_syslog_noise(stderr),
        "Failed to bind any port for '-t 127.0.0.1/18081:80', exiting"
    );
}

#[test]
fn the_namespace_gets_an_address_a_default_route_and_a_nameserver() {
    require_root!("network namespaces");
    let lab = Lab::new();
    let container = TestNetns::new("pctr");
    let mut times = Vec::new();
    for _ in 0..9 {
        let started = Instant::now();
        let pasta = lab.start(&container, &lab.options(Vec::new())).unwrap();
        times.push(started.elapsed());
        assert_eq!(pasta.nameserver(), NAMESERVER);
        assert!(Path::new(&format!("/proc/{}", pasta.pid())).exists());
        let addr = String::from_utf8(container.ip(&["-4", "-br", "addr"]).stdout).unwrap();
        assert!(addr.contains("eth0"), "{addr}");
        assert!(addr.contains(&format!("{UPLINK}/24")), "{addr}");
        let routes = String::from_utf8(container.ip(&["-4", "route"]).stdout).unwrap();
        assert!(
            routes.contains(&format!("default via {WORLD} dev eth0")),
            "{routes}"
        );
        pasta.stop();
        // The tap interface goes with pasta: the next start makes it again.
        let links = String::from_utf8(container.ip(&["-br", "link"]).stdout).unwrap();
        assert!(!links.contains("eth0"), "{links}");
    }
    times.sort();
    eprintln!(
        "pasta start to ready: median {:?} (min {:?}, max {:?}, {} starts)",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
}

#[test]
fn a_published_port_answers_from_the_host_and_no_other_port_is_published() {
    require_root!("network namespaces");
    let lab = Lab::new();
    let container = TestNetns::new("pctr");
    let _web = Server::start(container.fd(), "0.0.0.0:80", "hello from the container");
    let _other = Server::start(container.fd(), "0.0.0.0:81", "not published");
    let pasta = lab
        .start(&container, &lab.options(vec![tcp("127.0.0.1", 18080, 80)]))
        .unwrap();

    let page = fetch(lab.host.fd(), "127.0.0.1:18080").unwrap();
    assert_eq!(page, "hello from the container");
    // pasta's default (`-t auto`) would have published 81 as well.
    let other = fetch(lab.host.fd(), "127.0.0.1:81");
    assert!(other.is_err(), "port 81 published: {other:?}");
    // Bound to 127.0.0.1 only: not on the host's other addresses.
    let uplink = fetch(lab.host.fd(), &format!("{UPLINK}:18080"));
    assert!(uplink.is_err(), "published beyond 127.0.0.1: {uplink:?}");

    pasta.stop();
    assert!(fetch(lab.host.fd(), "127.0.0.1:18080").is_err());
    // The port is free again as soon as stop returns.
    in_netns(lab.host.fd(), || TcpListener::bind("127.0.0.1:18080")).unwrap();
}

#[test]
fn the_container_reaches_the_outside_but_not_the_hosts_loopback() {
    require_root!("network namespaces");
    let lab = Lab::new();
    let outside = Server::start(lab.world.fd(), "0.0.0.0:8080", "hello from the world");
    // The host's loopback-only service, started before pasta (`-T auto` forwards the
    // ports bound when it starts), on a port the world does not serve.
    let private = Server::start(lab.host.fd(), "127.0.0.1:2000", "host secret");
    assert_eq!(
        fetch(lab.host.fd(), "127.0.0.1:2000").unwrap(),
        "host secret"
    );
    let container = TestNetns::new("pctr");
    let _pasta = lab.start(&container, &lab.options(Vec::new())).unwrap();

    let page = fetch(container.fd(), &format!("{WORLD}:8080")).unwrap();
    assert_eq!(page, "hello from the world");
    for address in ["127.0.0.1:2000".to_owned(), format!("{WORLD}:2000")] {
        let reached = fetch(container.fd(), &address);
        assert!(
            reached.is_err(),
            "the container reached {address}: {reached:?}"
        );
    }

    // The control: pasta's defaults (`-T auto`, the gateway mapped to the host) do let a
    // container in, so the checks above would see it.
    let open = TestNetns::new("popen");
    let mut args = arguments(
        &Path::new("/run/netns").join(&open.name),
        None,
        &lab.options(Vec::new()),
        true,
    );
    let pid_file = args[args.iter().position(|a| a == "--pid").unwrap() + 1].clone();
    args.retain(|arg| arg != "--no-map-gw");
    let at = args.iter().position(|a| a == "--tcp-ns").unwrap();
    args[at + 1] = "auto".to_owned();
    let _control = in_netns(lab.host.fd(), || {
        let child = spawn("pasta", &args).unwrap();
        wait_ready(child).unwrap().unwrap();
        Ok(adopt(Path::new(&pid_file)).unwrap())
    })
    .unwrap();
    for address in ["127.0.0.1:2000".to_owned(), format!("{WORLD}:2000")] {
        let reached = fetch(open.fd(), &address);
        assert_eq!(reached.unwrap(), "host secret", "control via {address}");
    }
    drop((outside, private));
}

/// The first nameserver of the host's resolv.conf: where pasta forwards DNS.
fn host_nameserver() -> Ipv4Addr {
    let conf = fs::read_to_string("/etc/resolv.conf").unwrap();
    conf.lines()
        .filter_map(|line| line.strip_prefix("nameserver"))
        .find_map(|address| address.trim().parse().ok())
        .expect("an IPv4 nameserver in /etc/resolv.conf")
}

#[test]
fn dns_queries_to_the_nameserver_reach_the_hosts_resolver() {
    require_root!("network namespaces");
    let lab = Lab::new();
    // The host's resolver, played in the lab by an echo server (pasta maps addresses, it
    // does not read DNS): on the lab host's loopback if it is a loopback one (a local
    // caching resolver), else in the world, where the lab host's default route goes.
    let upstream = host_nameserver();
    let ns = match upstream.is_loopback() {
        true => &lab.host,
        false => {
            lab.world
                .ip(&["addr", "add", &format!("{upstream}/32"), "dev", "lo"]);
            &lab.world
        }
    };
    let resolver = in_netns(ns.fd(), || UdpSocket::bind((upstream, 53))).unwrap();
    resolver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, from) = resolver.recv_from(&mut buf)?;
        resolver.send_to(&buf[..n], from)?;
        io::Result::Ok(())
    });
    let container = TestNetns::new("pctr");
    let pasta = lab.start(&container, &lab.options(Vec::new())).unwrap();

    let answer = in_netns(container.fd(), || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(3)))?;
        socket.send_to(b"a query", (pasta.nameserver(), 53))?;
        let mut buf = [0u8; 512];
        let (n, from) = socket.recv_from(&mut buf)?;
        Ok((buf[..n].to_vec(), from))
    });
    echo.join().unwrap().expect("the resolver got no query");
    let (answer, from) = answer.unwrap();
    assert_eq!(answer, b"a query");
    // The answer comes from the address the container asked, not the upstream's.
    assert_eq!(from, SocketAddr::from((NAMESERVER, 53)));
}

#[test]
fn a_busy_host_port_is_a_clear_error_and_leaves_no_pasta() {
    require_root!("network namespaces");
    let lab = Lab::new();
    let container = TestNetns::new("pctr");
    let _busy = in_netns(lab.host.fd(), || TcpListener::bind("127.0.0.1:18081")).unwrap();
    let ports = vec![tcp("127.0.0.1", 18080, 80), tcp("127.0.0.1", 18081, 81)];
    let err = lab.start(&container, &lab.options(ports)).unwrap_err();
    assert!(
        matches!(&err, NetworkError::PortInUse { port, by_container: false }
            if port == "127.0.0.1:18081/tcp"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "port 127.0.0.1:18081/tcp is already in use"
    );
    assert!(err.hint().is_some());
    assert_eq!(pastas_for(&container.name), Vec::<i32>::new());
    // Nor did it keep the port it could bind.
    in_netns(lab.host.fd(), || TcpListener::bind("127.0.0.1:18080")).unwrap();
}

#[test]
fn pasta_ends_by_itself_when_a_named_namespace_is_deleted() {
    require_root!("network namespaces");
    let lab = Lab::new();
    let container = TestNetns::new("pctr");
    let name = container.name.clone();
    let pasta = lab.start(&container, &lab.options(Vec::new())).unwrap();
    assert_eq!(pastas_for(&name), vec![pasta.pid()]);
    drop(container); // ip netns del: pasta watches /run/netns
    let took = wait_until("pasta still running", Duration::from_secs(10), || {
        pastas_for(&name).is_empty()
    });
    eprintln!("pasta gone {took:?} after its namespace was deleted");
    pasta.stop(); // gone already: nothing to do, no error
}

/// A container as kiln runs it: a process in a user and network namespace of its own,
/// given to pasta as `/proc/PID/ns/…`. Debian 12's pasta watches the namespace's
/// directory with inotify, which procfs never fires: it keeps running (and keeps the
/// namespace) after the process ends, so kiln must stop it; newer pasta polls procfs
/// and ends within a second. Either way, none is left once the `Pasta` is dropped.
#[test]
fn no_pasta_is_left_once_the_container_ends_and_kiln_drops_it() {
    require_root!("network namespaces");
    require_tool("unshare", "util-linux");
    let lab = Lab::new();
    let mut process = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "sleep", "60"])
        .spawn()
        .unwrap();
    let pid = process.id();
    let own = |ns: &str| {
        let ours = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        fs::read_link(format!("/proc/{pid}/ns/{ns}")).is_ok_and(|theirs| theirs != ours)
    };
    wait_until("no namespaces", Duration::from_secs(5), || {
        own("user") && own("net")
    });
    let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let userns = PathBuf::from(format!("/proc/{pid}/ns/user"));
    let options = lab.options(vec![tcp("127.0.0.1", 18080, 80)]);
    let pasta = in_netns(lab.host.fd(), || Ok(start(&netns, Some(&userns), &options)))
        .unwrap()
        .unwrap();
    let needle = netns.display().to_string();
    assert_eq!(pastas_for(&needle), vec![pasta.pid()]);

    process.kill().unwrap();
    process.wait().unwrap();
    let alone = Instant::now() + Duration::from_secs(3);
    while !pastas_for(&needle).is_empty() && Instant::now() < alone {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "3 s after the container's last process ended, pasta {}",
        match pastas_for(&needle).is_empty() {
            true => "had ended by itself",
            false => "was still running (it does not watch /proc namespaces)",
        }
    );
    drop(pasta);
    assert_eq!(pastas_for(&needle), Vec::<i32>::new());
    in_netns(lab.host.fd(), || TcpListener::bind("127.0.0.1:18080")).unwrap();
}

/// What the rootless test's child does as `nobody`, in the machine's own namespaces:
/// a container (user and network namespace, busybox httpd on port 80) given a pasta
/// network that publishes it on 127.0.0.1:`port`, then fetched from the host.
const ROOTLESS_PORT: &str = "KILN_TEST_PASTA_ROOTLESS_PORT";

#[test]
fn rootless_child() {
    let Some(port) = std::env::var_os(ROOTLESS_PORT) else {
        return;
    };
    let port: u16 = port.to_str().unwrap().parse().unwrap();
    let www = tempfile::tempdir().unwrap();
    fs::write(www.path().join("index.html"), "hello rootless").unwrap();
    let mut httpd = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net"])
        .args(["busybox", "httpd", "-f", "-p", "80", "-h"])
        .arg(www.path())
        .spawn()
        .unwrap();
    let pid = httpd.id();
    let ours = fs::read_link("/proc/self/ns/net").unwrap();
    wait_until("no namespace", Duration::from_secs(5), || {
        fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|ns| ns != ours)
    });
    let options = PastaOptions {
        ports: vec![tcp("127.0.0.1", port, 80)],
        pid_file: www.path().join("pasta.pid"),
    };
    let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let userns = PathBuf::from(format!("/proc/{pid}/ns/user"));
    let pasta = start(&netns, Some(&userns), &options).unwrap();
    let status = fs::read_to_string(format!("/proc/{}/status", pasta.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    println!("pasta {uid}");
    // httpd may still be starting.
    let url = format!("http://127.0.0.1:{port}/");
    let mut page = String::new();
    for _ in 0..50 {
        let out = Command::new("curl")
            .args(["-sf", "-m", "3", &url])
            .output()
            .unwrap();
        page = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("fetched {page:?}");
    drop(pasta);
    httpd.kill().unwrap();
    httpd.wait().unwrap();
}

#[test]
fn an_ordinary_user_publishes_a_port_with_pasta() {
    require_root!("runs the check as nobody");
    require_tool("pasta", "passt");
    require_tool("setpriv", "util-linux");
    require_tool("curl", "curl");
    require_tool("busybox", "busybox-static");
    let tun = fs::metadata("/dev/net/tun").unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        tun.permissions().mode() & 0o666,
        0o666,
        "pasta needs /dev/net/tun open to every user, as udev makes it: chmod 0666 /dev/net/tun"
    );
    // A free port of the machine's loopback (this test runs in the host's namespace).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A copy nobody may run: the build tree may be private to root (CI's checkout is).
    let bin_dir = tempfile::Builder::new()
        .prefix("kiln-pasta-test")
        .tempdir()
        .unwrap();
    fs::set_permissions(bin_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let exe = bin_dir.path().join("tests");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(
        "setpriv",
        &[
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "env",
            &format!("{ROOTLESS_PORT}={port}"),
            "TMPDIR=/tmp",
            exe.to_str().unwrap(),
            "--exact",
            "pasta::tests::rootless_child",
            "--nocapture",
            "--test-threads=1",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("fetched \"hello rootless\""), "{stdout}");
    // pasta ran as nobody (65534), not as root.
    assert!(stdout.contains("pasta Uid:\t65534"), "{stdout}");
}
