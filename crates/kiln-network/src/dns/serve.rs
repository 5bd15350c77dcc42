//! kiln's DNS responder for one network: one process per network (the `flock` of
//! [`Network::dns_lock_path`]), in the host's namespace, on the bridge's gateway
//! address, port 53 UDP.
//!
//! It answers the names kept in the network's leases (containers' names, short IDs and
//! aliases), read from the state file at each query, so a container started later is
//! found at once, whatever order they started in. Every other query is forwarded as it
//! came to the upstream resolvers (the host's, or the network's own `--dns`), from the
//! host's namespace, so a loopback resolver of the host works too; an internal network
//! forwards nothing. It ends once the network has had no lease for a while.
//!
//! Why a responder rather than `/etc/hosts` written into each container: a file is
//! written when a container starts and cannot name containers started after it (docker's
//! embedded DNS and podman's aardvark-dns made the same choice).

use std::fs::{File, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::{answer, error_reply, lookup, parse_query, RCODE_FORMERR, RCODE_SERVFAIL};
use crate::{Network, NetworkError};

/// At most this many forwarded queries wait for an upstream at once; more get SERVFAIL.
const MAX_IN_FLIGHT: usize = 64;
/// How long one upstream gets to answer before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// A bound responder, holding the network's DNS lock.
#[derive(Debug)]
pub struct Responder {
    network: Network,
    upstreams: Vec<SocketAddr>,
    socket: UdpSocket,
    _lock: Flock<File>,
}

/// What [`Responder::bind`] found.
#[derive(Debug)]
pub enum Bound {
    Serving(Box<Responder>),
    /// Another process holds the network's DNS lock: it serves the network.
    AlreadyRunning,
}

impl Responder {
    /// Takes the network's DNS lock and binds its gateway's port 53 (with
    /// `IP_FREEBIND`: the bridge, and so the address, may come and go while it runs).
    pub fn bind(network: Network, upstreams: Vec<SocketAddr>) -> Result<Bound, NetworkError> {
        let path = network.dns_lock_path();
        let state_err = |source: io::Error| NetworkError::State {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&network.config().state_dir).map_err(state_err)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(state_err)?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(Bound::AlreadyRunning),
            Err((_, errno)) => return Err(state_err(errno.into())),
        };
        let gateway = network.config().subnet.gateway();
        let socket = bind_freely(SocketAddrV4::new(gateway, 53)).map_err(NetworkError::netlink(
            format!("binding {gateway}:53 for DNS"),
        ))?;
        Ok(Bound::Serving(Box::new(Responder {
            network,
            upstreams,
            socket,
            _lock: lock,
        })))
    }

    /// Answers until the network has had no lease for `idle`.
    pub fn serve(self, idle: Duration) -> Result<(), NetworkError> {
        let io_err = NetworkError::netlink("serving DNS");
        self.socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(io_err)?;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let mut buf = [0u8; 4096];
        let mut idle_since: Option<Instant> = None;
        let mut checked = Instant::now();
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((len, peer)) => self.handle(&buf[..len], peer, &in_flight),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(NetworkError::netlink("serving DNS")(e)),
            }
            if checked.elapsed() >= Duration::from_millis(500) {
                checked = Instant::now();
                let empty = self.network.leases().map(|l| l.is_empty()).unwrap_or(true);
                match (empty, idle_since) {
                    (false, _) => idle_since = None,
                    (true, None) => idle_since = Some(Instant::now()),
                    (true, Some(since)) if since.elapsed() >= idle => return Ok(()),
                    (true, Some(_)) => {}
                }
            }
        }
    }

    /// One datagram: answered from the leases, forwarded, or refused. Only the
    /// network's own subnet is served (containers of other networks, isolated from it,
    /// must not learn its names).
    fn handle(&self, message: &[u8], peer: SocketAddr, in_flight: &Arc<AtomicUsize>) {
        let SocketAddr::V4(from) = peer else { return };
        if !self.network.config().subnet.contains(*from.ip()) {
            return;
        }
        let Some(query) = parse_query(message) else {
            if let Some(reply) = error_reply(message, RCODE_FORMERR) {
                let _ = self.socket.send_to(&reply, peer);
            }
            return;
        };
        let leases = self.network.leases().unwrap_or_default();
        if let Some(address) = lookup(&query.name, &leases) {
            let _ = self.socket.send_to(&answer(&query, message, address), peer);
            return;
        }
        self.forward(message, peer, in_flight);
    }

    /// Asks the upstreams on a thread of its own (one slow upstream must not hold up
    /// the containers' names), relaying the first answer; SERVFAIL when none answers,
    /// the network is internal, or too many queries wait already.
    fn forward(&self, message: &[u8], peer: SocketAddr, in_flight: &Arc<AtomicUsize>) {
        if self.network.config().internal || self.upstreams.is_empty() {
            return servfail(&self.socket, message, peer);
        }
        if in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            return servfail(&self.socket, message, peer);
        }
        let (Ok(reply_socket), message) = (self.socket.try_clone(), message.to_vec()) else {
            in_flight.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        let upstreams = self.upstreams.clone();
        let in_flight = Arc::clone(in_flight);
        std::thread::spawn(move || {
            match upstreams.iter().find_map(|u| ask(*u, &message).ok()) {
                Some(reply) => {
                    let _ = reply_socket.send_to(&reply, peer);
                }
                None => servfail(&reply_socket, &message, peer),
            }
            in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn servfail(socket: &UdpSocket, message: &[u8], peer: SocketAddr) {
    if let Some(reply) = error_reply(message, RCODE_SERVFAIL) {
        let _ = socket.send_to(&reply, peer);
    }
}

/// One exchange with an upstream; the answer must carry the query's ID.
fn ask(upstream: SocketAddr, message: &[u8]) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(upstream)?;
    socket.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    socket.send(message)?;
    let mut buf = vec![0u8; 65535];
    let deadline = Instant::now() + UPSTREAM_TIMEOUT;
    while Instant::now() < deadline {
        let len = socket.recv(&mut buf)?;
        if len >= 2 && buf[..2] == message[..2] {
            buf.truncate(len);
            return Ok(buf);
        }
    }
    Err(io::ErrorKind::TimedOut.into())
}

/// A UDP socket bound to `address` even if no interface has it (yet): `IP_FREEBIND`,
/// which `std` does not offer.
fn bind_freely(address: SocketAddrV4) -> io::Result<UdpSocket> {
    // SAFETY: plain socket calls on a descriptor this function owns until it is handed
    // to `UdpSocket`, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = UdpSocket::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let set = libc::setsockopt(
            fd,
            libc::SOL_IP,
            libc::IP_FREEBIND,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        if set != 0 {
            return Err(io::Error::last_os_error());
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: address.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*address.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let bound = libc::bind(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if bound != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }
}

/// The nameservers of a resolv.conf's text, port 53 (what the responder forwards to
/// when the network names none of its own).
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}
