//! A container's network without root: pasta (issue 16).
//!
//! An ordinary user cannot make kiln's bridge, veths or nftables rules: they need
//! `CAP_NET_ADMIN` in the host's network namespace. pasta (Debian package `passt`, what
//! podman 5 uses by default) needs none of it: it runs as the user in the host's
//! namespace, makes a tap interface in the container's (which the user owns through its
//! user namespace), and turns the container's frames into ordinary sockets of its own on
//! the host, so outbound traffic leaves with the user's own connections. Published ports
//! are sockets pasta binds on the host; a connection to one is carried into the
//! container's namespace as a socket there (layer 4, `splice(2)` for TCP), not as frames
//! through the tap and not by a proxy process per port.
//!
//! Why pasta and not slirp4netns (podman 4's default): slirp4netns is a userspace TCP/IP
//! stack (libslirp) that re-segments every connection, and publishes ports only through
//! a separate port-forwarding API (podman's `rootlessport` proxy, a process copying every
//! byte). pasta maps layer-4 sockets and splices local traffic, sets the namespace up
//! itself (`--config-net`: address, route, link up) in one process, and is where podman
//! moved (podman 5).
//!
//! What kiln asks of pasta, and why (each flag in [`arguments`]):
//! - nothing of the host is forwarded into the container: `-T none -U none` (pasta's
//!   default, `auto`, would let the container reach every port bound on the host's
//!   loopback through its own 127.0.0.1), and `--no-map-gw` (by default pasta maps
//!   connections to the gateway address to the host's loopback: CVE-2020-8558's hole,
//!   which kiln's bridge closes with its `guard` chain);
//! - nothing of the container is published but the ports asked for: `-t`/`-u` default
//!   to `auto` too (every port the container binds), so `none` is given when there are
//!   none, and one `-t`/`-u` per port otherwise (pasta fails a spec only when none of its
//!   ports can be bound: one port a spec makes a busy port an error);
//! - IPv4 only (`-4`), like kiln's networks;
//! - DNS: UDP queries to [`NAMESERVER`] are forwarded to the first nameserver of the
//!   host's `/etc/resolv.conf` (a loopback one works: pasta sends from the host's
//!   namespace), so the container's resolv.conf does not depend on the host's. No other
//!   upstream can be given: Debian 12's pasta, given `--dns` with `--dns-forward`,
//!   forwards to 0.0.0.0 (the host itself); a container given its own `--dns` servers
//!   gets them in its resolv.conf instead, reached through pasta like any address.
//! - ready when `start` returns: pasta's own start-up (not `--foreground`) forks into the
//!   background only once the namespace is configured and every port bound, so the exit
//!   of the process kiln spawned *is* the readiness signal, and its status and stderr say
//!   what failed; the daemon writes its PID to `--pid`, and is held by a pidfd from
//!   then on, so stopping it can never signal a reused PID. The daemon also lives in a
//!   PID namespace of its own, which `--foreground` would give up.
//!
//! As root, pasta drops to `nobody` before it opens the namespaces (Debian 12's version),
//! so it could not enter a namespace root made: kiln passes `--runas 0` (pasta still drops
//! every capability but the few it needs).

use std::fs;
use std::io::{self, Read};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::{access, AccessFlags};

use crate::ports::{PortMapping, Protocol};
use crate::NetworkError;

/// The address the container sends its DNS queries to; pasta forwards them to the
/// host's resolver. Link-local, as podman's, so it is the same on every host and no
/// real server can have it.
pub const NAMESERVER: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The interface pasta makes in the container, named as on kiln's bridge network
/// (pasta's default is the host's uplink's name).
const IFNAME: &str = "eth0";

/// How long pasta may take to be ready: a hung start is an error, not a hung `kiln run`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopped pasta may take to be gone before `stop` gives up waiting.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a container's pasta network publishes and where its DNS goes.
#[derive(Debug, Clone)]
pub struct PastaOptions {
    /// Host `[IP:]PORT` → container port, per protocol. `host_ip` 0.0.0.0 is every
    /// address of the host.
    pub ports: Vec<PortMapping>,
    /// Where pasta writes its PID: the container's directory, so that a kiln that finds
    /// the container dead can find and end a pasta its runner left.
    pub pid_file: PathBuf,
}

/// A running pasta serving one container's network namespace. Dropping it (or
/// [`Pasta::stop`]) kills pasta and waits until it is gone, its published ports with it.
#[derive(Debug)]
pub struct Pasta {
    pid: i32,
    pidfd: OwnedFd,
}

/// Gives the network namespace at `netns` (e.g. `/proc/PID/ns/net`) a pasta network:
/// `eth0` with the host's address, default route and MTU, outbound TCP/UDP/ICMP through
/// pasta, `options.ports` published, DNS at [`NAMESERVER`]. `userns` is the user
/// namespace that owns `netns` (`/proc/PID/ns/user`): needed when kiln is not root, as
/// pasta must join it to configure the namespace. Returns once pasta is ready.
pub fn start(
    netns: &Path,
    userns: Option<&Path>,
    options: &PastaOptions,
) -> Result<Pasta, NetworkError> {
    check_tun()?;
    // A stale file would be read as this start's PID if pasta failed to write it; its
    // pasta, if a killed kiln left it running, would hold the ports.
    end_left(&options.pid_file)?;
    let root = nix::unistd::geteuid().is_root();
    let args = arguments(netns, userns, options, root);
    tracing::debug!(?args, "starting pasta");
    let started = Instant::now();
    let child = spawn("pasta", &args)?;
    let stderr = wait_ready(child)?.map_err(|stderr| explain(stderr, &options.ports))?;
    if !stderr.is_empty() {
        tracing::debug!(%stderr, "pasta said");
    }
    let pasta = adopt(&options.pid_file)?;
    tracing::debug!(pid = pasta.pid, elapsed = ?started.elapsed(), "pasta ready");
    Ok(pasta)
}

impl Pasta {
    /// pasta's PID (the daemon's, as this process sees it).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The address to write in the container's resolv.conf.
    pub fn nameserver(&self) -> Ipv4Addr {
        NAMESERVER
    }

    /// Kills pasta and waits (up to 5 s) until it is gone.
    pub fn stop(self) {
        drop(self);
    }

    fn kill_and_wait(&self) {
        // pasta keeps no state worth a graceful end: SIGKILL, through the pidfd, so a
        // PID reused since cannot be hit.
        if pidfd_send_signal(&self.pidfd, libc::SIGKILL).is_err() {
            return; // gone already
        }
        // A pidfd polls readable once the process has exited (its sockets closed),
        // whether or not anyone reaped it: the daemon is not our child.
        let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(STOP_TIMEOUT).unwrap_or(PollTimeout::MAX);
        if let Err(err) = poll(&mut fds, timeout) {
            tracing::debug!(%err, pid = self.pid, "waiting for pasta to end");
        }
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        self.kill_and_wait();
    }
}

/// The command line (without the program). See the module's documentation for why
/// each flag.
fn arguments(
    netns: &Path,
    userns: Option<&Path>,
    options: &PastaOptions,
    root: bool,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "--config-net",
        "--quiet",
        "--ipv4-only",
        "--ns-ifname",
        IFNAME,
        "--no-map-gw",
        "--tcp-ns",
        "none",
        "--udp-ns",
        "none",
        "--dns-forward",
    ]
    .map(str::to_owned)
    .into();
    args.push(NAMESERVER.to_string());
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        args.extend(port_arguments(&options.ports, protocol));
    }
    if root {
        args.extend(["--runas".to_owned(), "0".to_owned()]);
    }
    args.push("--pid".to_owned());
    args.push(options.pid_file.display().to_string());
    if let Some(userns) = userns {
        args.push("--userns".to_owned());
        args.push(userns.display().to_string());
    }
    args.push("--netns".to_owned());
    args.push(netns.display().to_string());
    args
}

/// `-t SPEC` per published port of `protocol`, or `-t none`.
fn port_arguments(ports: &[PortMapping], protocol: Protocol) -> Vec<String> {
    let flag = match protocol {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
    };
    let specs: Vec<String> = ports
        .iter()
        .filter(|p| p.protocol == protocol)
        .map(port_spec)
        .collect();
    if specs.is_empty() {
        return vec![flag.to_owned(), "none".to_owned()];
    }
    specs
        .into_iter()
        .flat_map(|spec| [flag.to_owned(), spec])
        .collect()
}

/// pasta's spec of one port: `[ADDRESS/]HOSTPORT:CONTAINERPORT`.
fn port_spec(port: &PortMapping) -> String {
    let mapping = format!("{}:{}", port.host_port, port.container_port);
    match port.host_ip.is_unspecified() {
        true => mapping,
        false => format!("{}/{mapping}", port.host_ip),
    }
}

/// pasta needs `/dev/net/tun` for the container's interface. Debian's udev makes it
/// 0666; a host where only root may open it fails here, clearly, rather than with
/// pasta's "Failed to open tun socket in namespace".
fn check_tun() -> Result<(), NetworkError> {
    let tun = Path::new("/dev/net/tun");
    access(tun, AccessFlags::R_OK | AccessFlags::W_OK).map_err(|errno| {
        NetworkError::TunUnavailable {
            source: io::Error::from(errno),
        }
    })
}

/// Ends the pasta a killed kiln left behind for this PID file, if it still runs (Debian
/// 12's pasta outlives its namespace and keeps the ports bound), and removes the file.
/// The PID is taken for pasta only while `/proc/PID/comm` says so (`pasta`, or the
/// `passt.avx2` pasta execs itself into on CPUs with AVX2).
pub fn end_left(pid_file: &Path) -> Result<(), NetworkError> {
    let is_pasta = |comm: String| {
        let comm = comm.trim();
        comm == "pasta" || comm.starts_with("passt") || comm.starts_with("pasta.")
    };
    let left = fs::read_to_string(pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .filter(|pid| fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(is_pasta));
    if left.is_some() {
        if let Ok(pasta) = adopt(pid_file) {
            tracing::debug!(pid = pasta.pid, "a pasta left by a killed kiln ended");
            pasta.stop();
        }
    }
    remove_stale(pid_file)
}

fn remove_stale(pid_file: &Path) -> Result<(), NetworkError> {
    match fs::remove_file(pid_file) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(NetworkError::State {
            path: pid_file.to_owned(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// Runs `program` (pasta, found on PATH) with `args`.
fn spawn(program: &str, args: &[String]) -> Result<Child, NetworkError> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => NetworkError::ToolMissing {
                tool: program.to_owned(),
                package: "passt".to_owned(),
            },
            _ => NetworkError::Pasta {
                what: "could not be started".to_owned(),
                stderr: err.to_string(),
            },
        })
}

/// Waits for the process kiln spawned to exit: 0 once the daemon it forked serves the
/// namespace. `Ok(Ok(stderr))` then; `Ok(Err(stderr))` when pasta failed.
fn wait_ready(mut child: Child) -> Result<Result<String, String>, NetworkError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let stderr = child.stderr.take().expect("stderr is piped");
    // Its stderr reaches end of file when it exits (the daemon has /dev/null): read it
    // with the deadline, then reap.
    let text = match read_until_eof(stderr, deadline) {
        Ok(text) => text,
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NetworkError::Pasta {
                what: "did not get ready".to_owned(),
                stderr: err.to_string(),
            });
        }
    };
    let status = child.wait().map_err(|err| NetworkError::Pasta {
        what: "could not be waited for".to_owned(),
        stderr: err.to_string(),
    })?;
    let text = without_syslog_noise(&text);
    Ok(match status.success() {
        true => Ok(text),
        false => Err(text),
    })
}

fn read_until_eof(mut stderr: ChildStderr, deadline: Instant) -> io::Result<String> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(stderr.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, timeout)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer in {READY_TIMEOUT:?}"),
            ));
        }
        match stderr.read(&mut chunk)? {
            0 => return Ok(String::from_utf8_lossy(&bytes).into_owned()),
            n => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

/// pasta also logs to syslog, and says so on stderr when the host has no `/dev/log`
/// (a container, a minimal host): not what went wrong.
fn without_syslog_noise(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|line| !(line.starts_with("Failed to send ") && line.ends_with(" to syslog")))
        .filter(|line| !line.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The error for a pasta that failed: a port it could not bind is named, with why
/// (kiln binds it a moment to learn the reason pasta does not print); anything else
/// is pasta's own words.
fn explain(stderr: String, ports: &[PortMapping]) -> NetworkError {
    let unbindable = ports
        .iter()
        .find(|port| stderr.contains(&format!("'{} {}'", flag(port), port_spec(port))));
    let Some(port) = unbindable else {
        return NetworkError::Pasta {
            what: "failed".to_owned(),
            stderr,
        };
    };
    let name = format!("{}:{}/{}", port.host_ip, port.host_port, port.protocol);
    match bind_error(port) {
        Some(source) if source.kind() != io::ErrorKind::AddrInUse => {
            NetworkError::PortUnavailable { port: name, source }
        }
        // In use, or free again by now: the likeliest reason either way.
        _ => NetworkError::PortInUse {
            port: name,
            by_container: false,
        },
    }
}

fn flag(port: &PortMapping) -> &'static str {
    match port.protocol {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
    }
}

fn bind_error(port: &PortMapping) -> Option<io::Error> {
    let address = (port.host_ip, port.host_port);
    match port.protocol {
        Protocol::Tcp => TcpListener::bind(address).err(),
        Protocol::Udp => UdpSocket::bind(address).err(),
    }
}

/// Reads the daemon's PID and holds it by a pidfd.
fn adopt(pid_file: &Path) -> Result<Pasta, NetworkError> {
    let text = fs::read_to_string(pid_file).map_err(|source| NetworkError::State {
        path: pid_file.to_owned(),
        source,
    })?;
    let pid: i32 = text.trim().parse().map_err(|_| NetworkError::Pasta {
        what: "wrote no PID".to_owned(),
        stderr: format!("{}: {text:?}", pid_file.display()),
    })?;
    let pidfd = pidfd_open(pid).map_err(|err| NetworkError::Pasta {
        what: "ended as soon as it started".to_owned(),
        stderr: err.to_string(),
    })?;
    Ok(Pasta { pid, pidfd })
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_send_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests;
