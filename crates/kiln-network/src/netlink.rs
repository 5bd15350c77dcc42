//! A minimal rtnetlink client: the dozen requests kiln needs (links, addresses, routes),
//! encoded by hand on a blocking `NETLINK_ROUTE` socket.
//!
//! Why not the `ip` tool: each `ip` process costs about 1.6 ms here and a container needs
//! about nine operations; one request on this socket is a few microseconds of syscall.
//! Why not `rtnetlink`/`netlink-packet-route`: they bring an async runtime (or a large
//! generated message model) for what is here a few hundred lines of fixed layouts.
//!
//! A netlink socket acts in the network namespace of the thread that created it, so a
//! [`Socket`] made inside [`crate::netns::in_netns`] configures that namespace.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::subnet::Subnet;

// Message types and flags (linux/rtnetlink.h, linux/netlink.h).
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

// Link attributes (linux/if_link.h, linux/veth.h).
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const IFF_UP: u32 = 0x1;

// Address and route attributes (linux/if_addr.h, linux/rtnetlink.h).
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u8 = 254;
const RT_TABLE_LOCAL: u8 = 255;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;

// Traffic control (linux/rtnetlink.h, linux/pkt_sched.h).
const RTM_NEWQDISC: u16 = 36;
const NLM_F_REPLACE: u16 = 0x100;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TC_H_ROOT: u32 = 0xffff_ffff;
const TC_LINKLAYER_ETHERNET: u8 = 1;

const AF_INET: u8 = libc::AF_INET as u8;
const AF_UNSPEC: u8 = libc::AF_UNSPEC as u8;

/// A blocking rtnetlink socket in the network namespace of the thread that opened it.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

/// A netlink request being built: header, fixed part, then attributes, each padded to 4.
struct Request {
    buf: Vec<u8>,
    /// Start offsets of the nested attributes still open.
    open: Vec<usize>,
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

impl Request {
    fn new(kind: u16, flags: u16) -> Request {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set by `Socket::send`
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        Request {
            buf,
            open: Vec::new(),
        }
    }

    /// `struct ifinfomsg`: family, type, index, flags and the mask of flags to change.
    fn ifinfo(mut self, index: i32, flags: u32, change: u32) -> Request {
        self.put_ifinfo(index, flags, change);
        self
    }

    fn put_ifinfo(&mut self, index: i32, flags: u32, change: u32) {
        self.buf.extend_from_slice(&[AF_UNSPEC, 0, 0, 0]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
    }

    fn attr(mut self, kind: u16, payload: &[u8]) -> Request {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    fn attr_str(self, kind: u16, value: &str) -> Request {
        let mut bytes = value.as_bytes().to_vec();
        bytes.push(0);
        self.attr(kind, &bytes)
    }

    fn attr_u32(self, kind: u16, value: u32) -> Request {
        self.attr(kind, &value.to_ne_bytes())
    }

    fn nest(mut self, kind: u16) -> Request {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end_nest(mut self) -> Request {
        let start = self.open.pop().expect("end_nest without nest");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        debug_assert!(self.open.is_empty());
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// A route of the host's routing tables, as far as the overlap check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Subnet,
    pub table: u32,
}

impl Socket {
    pub fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Make the kernel's refusals carry their reason (extended acks) where supported;
        // a kernel without them still answers with the errno.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_EXT_ACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        // The kernel answers at once; a bound on the wait turns a bug into an error
        // rather than a hung container start.
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a timeval of the right size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { fd, seq: 0 })
    }

    fn send(&mut self, request: Request) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let msg = request.finish(self.seq);
        // SAFETY: send(2) of an initialised buffer; netlink to the kernel needs no address.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Reads answers to `seq` and hands each message (type, body after the header) to
    /// `each` until the kernel's ack or, for a dump, NLMSG_DONE.
    fn receive(&mut self, seq: u32, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: recv(2) into a buffer we own, of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
                let msg_seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
                if len < 16 || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let body = &rest[16..len];
                rest = &rest[align(len).min(rest.len())..];
                if msg_seq != seq {
                    continue; // an answer to an earlier request we stopped reading
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = i32::from_ne_bytes(body[0..4].try_into().unwrap());
                        return if errno == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-errno))
                        };
                    }
                    _ => each(kind, body),
                }
            }
        }
    }

    /// Sends a request that changes something and waits for its ack.
    fn call(&mut self, request: Request) -> io::Result<()> {
        let seq = self.send(request)?;
        self.receive(seq, |_, _| {})
    }

    /// The index of the link named `name` in this socket's namespace.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<i32>> {
        Ok(self.link(name)?.map(|(index, _)| index))
    }

    /// The index and kind (`bridge`, `veth`, …; none for a plain device) of the link
    /// named `name`.
    pub fn link(&mut self, name: &str) -> io::Result<Option<(i32, Option<String>)>> {
        // With an ack asked for, the answer ends with one even when a link is found.
        let request = Request::new(RTM_GETLINK, NLM_F_ACK)
            .ifinfo(0, 0, 0)
            .attr_str(IFLA_IFNAME, name);
        let seq = self.send(request)?;
        let mut link = None;
        let found = self.receive(seq, |kind, body| {
            if kind == RTM_NEWLINK && body.len() >= 16 {
                let index = i32::from_ne_bytes(body[4..8].try_into().unwrap());
                link = Some((index, link_kind(&body[16..])));
            }
        });
        match found {
            Ok(()) => Ok(link),
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Creates a bridge named `name` with the MAC address `mac`, up. `EEXIST` if a link
    /// of that name exists.
    pub fn add_bridge(&mut self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let request = Request::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            .ifinfo(0, IFF_UP, IFF_UP)
            .attr_str(IFLA_IFNAME, name)
            .attr(IFLA_ADDRESS, &mac)
            .nest(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "bridge")
            .end_nest();
        self.call(request)
    }

    /// Creates a veth pair: `host` here, up and enslaved to `master`; its peer made
    /// directly in the namespace `peer_netns` under the name `peer` with the MAC address
    /// `peer_mac`, so the peer never exists in this namespace under a name that could
    /// collide.
    pub fn add_veth(
        &mut self,
        host: &str,
        master: i32,
        peer: &str,
        peer_mac: [u8; 6],
        peer_netns: RawFd,
    ) -> io::Result<()> {
        let mut request = Request::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            .ifinfo(0, IFF_UP, IFF_UP)
            .attr_str(IFLA_IFNAME, host)
            .attr_u32(IFLA_MASTER, master as u32)
            .nest(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .nest(IFLA_INFO_DATA)
            .nest(VETH_INFO_PEER);
        request.put_ifinfo(0, 0, 0);
        let request = request
            .attr_str(IFLA_IFNAME, peer)
            .attr(IFLA_ADDRESS, &peer_mac)
            .attr_u32(IFLA_NET_NS_FD, peer_netns as u32)
            .end_nest()
            .end_nest()
            .end_nest();
        self.call(request)
    }

    /// Sets a link up.
    pub fn set_up(&mut self, index: i32) -> io::Result<()> {
        self.call(Request::new(RTM_NEWLINK, NLM_F_ACK).ifinfo(index, IFF_UP, IFF_UP))
    }

    /// Deletes a link (for a veth, both ends).
    pub fn delete_link(&mut self, index: i32) -> io::Result<()> {
        self.call(Request::new(RTM_DELLINK, NLM_F_ACK).ifinfo(index, 0, 0))
    }

    /// Adds `addr/prefix` to a link. `EEXIST` if it has it.
    pub fn add_address(&mut self, index: i32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut request = Request::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        // struct ifaddrmsg: family, prefix length, flags, scope, index.
        request
            .buf
            .extend_from_slice(&[AF_INET, prefix, 0, RT_SCOPE_UNIVERSE]);
        request.buf.extend_from_slice(&(index as u32).to_ne_bytes());
        let request = request
            .attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        self.call(request)
    }

    /// Adds the default route via `gateway` out of the link `index`.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr, index: i32) -> io::Result<()> {
        let mut request = Request::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        request.buf.extend_from_slice(&[
            AF_INET,
            0,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
        ]);
        request.buf.extend_from_slice(&0u32.to_ne_bytes());
        let request = request
            .attr(RTA_GATEWAY, &gateway.octets())
            .attr_u32(RTA_OIF, index as u32);
        self.call(request)
    }

    /// Replaces the root qdisc of link `index` with a token bucket filter: `rate` bytes
    /// per second, bursts of `burst` bytes, at most `limit` bytes queued (beyond that,
    /// packets are dropped and TCP slows down).
    pub fn set_tbf(&mut self, index: i32, rate: u64, burst: u32, limit: u32) -> io::Result<()> {
        let mut request = Request::new(RTM_NEWQDISC, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
        // struct tcmsg: family, padding, ifindex, handle (1:0), parent, info.
        request.buf.extend_from_slice(&[AF_UNSPEC, 0, 0, 0]);
        request.buf.extend_from_slice(&index.to_ne_bytes());
        request.buf.extend_from_slice(&0x1_0000u32.to_ne_bytes());
        request.buf.extend_from_slice(&TC_H_ROOT.to_ne_bytes());
        request.buf.extend_from_slice(&0u32.to_ne_bytes());
        let mut request = request
            .attr_str(TCA_KIND, "tbf")
            .nest(TCA_OPTIONS)
            .attr(TCA_TBF_PARMS, &tbf_qopt(rate, limit))
            .attr_u32(TCA_TBF_BURST, burst);
        if rate > u64::from(u32::MAX) {
            request = request.attr(TCA_TBF_RATE64, &rate.to_ne_bytes());
        }
        self.call(request.end_nest())
    }

    /// The IPv4 routes of every table but `local` (which holds the host's own addresses,
    /// not networks), default routes left out: they overlap everything by definition.
    pub fn routes(&mut self) -> io::Result<Vec<Route>> {
        let mut request = Request::new(RTM_GETROUTE, NLM_F_DUMP);
        request
            .buf
            .extend_from_slice(&[AF_INET, 0, 0, 0, 0, 0, 0, 0]);
        request.buf.extend_from_slice(&0u32.to_ne_bytes());
        let seq = self.send(request)?;
        let mut routes = Vec::new();
        self.receive(seq, |kind, body| {
            if kind == RTM_NEWROUTE {
                if let Some(route) = parse_route(body) {
                    routes.push(route);
                }
            }
        })?;
        Ok(routes)
    }
}

/// `struct tc_tbf_qopt`: rate (`tc_ratespec`), no peak rate, limit; buffer and MTU are
/// left 0 because `TCA_TBF_BURST` gives the bucket in bytes and the kernel derives the
/// rest. A rate above 4 GB/s is saturated here and sent whole as `TCA_TBF_RATE64`.
fn tbf_qopt(rate: u64, limit: u32) -> Vec<u8> {
    let mut opt = Vec::with_capacity(36);
    // tc_ratespec: cell_log, linklayer, overhead, cell_align, mpu, rate.
    opt.extend_from_slice(&[0, TC_LINKLAYER_ETHERNET]);
    opt.extend_from_slice(&0u16.to_ne_bytes());
    opt.extend_from_slice(&(-1i16).to_ne_bytes());
    opt.extend_from_slice(&0u16.to_ne_bytes());
    opt.extend_from_slice(&(rate.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
    opt.extend_from_slice(&[0u8; 12]); // peak rate: none
    opt.extend_from_slice(&limit.to_ne_bytes());
    opt.extend_from_slice(&0u32.to_ne_bytes()); // buffer: from TCA_TBF_BURST
    opt.extend_from_slice(&0u32.to_ne_bytes()); // mtu: no peak rate, unused
    opt
}

/// One `RTM_NEWROUTE` body (rtmsg + attributes) as a [`Route`], if it is a network route
/// kiln's subnet could collide with.
pub(crate) fn parse_route(body: &[u8]) -> Option<Route> {
    if body.len() < 12 || body[0] != AF_INET {
        return None;
    }
    let dst_len = body[1];
    let mut table = u32::from(body[4]);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    for (kind, payload) in attributes(&body[12..]) {
        match kind {
            RTA_DST if payload.len() == 4 => {
                dst = Ipv4Addr::new(payload[0], payload[1], payload[2], payload[3]);
            }
            RTA_TABLE if payload.len() == 4 => {
                table = u32::from_ne_bytes(payload.try_into().unwrap());
            }
            _ => {}
        }
    }
    if dst_len == 0 || table == u32::from(RT_TABLE_LOCAL) {
        return None;
    }
    Some(Route {
        destination: Subnet::masked(dst, dst_len),
        table,
    })
}

/// `IFLA_INFO_KIND` inside `IFLA_LINKINFO` of a link's attributes.
fn link_kind(attrs: &[u8]) -> Option<String> {
    let (_, info) = attributes(attrs).find(|(kind, _)| *kind == IFLA_LINKINFO)?;
    let (_, name) = attributes(info).find(|(kind, _)| *kind == IFLA_INFO_KIND)?;
    let name = name.split(|b| *b == 0).next()?;
    Some(String::from_utf8_lossy(name).into_owned())
}

/// The attributes of a netlink message body: (type without flags, payload).
fn attributes(mut rest: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes(rest[0..2].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(rest[2..4].try_into().unwrap()) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        rest = &rest[align(len).min(rest.len())..];
        Some((kind, payload))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route_body(dst: [u8; 4], dst_len: u8, table: u8) -> Vec<u8> {
        let mut body = vec![AF_INET, dst_len, 0, 0, table, RTPROT_BOOT, 0, RTN_UNICAST];
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&RTA_DST.to_ne_bytes());
        body.extend_from_slice(&dst);
        body
    }

    #[test]
    fn parses_network_routes_and_skips_defaults_and_local() {
        let route = parse_route(&route_body([192, 0, 2, 0], 24, RT_TABLE_MAIN)).unwrap();
        assert_eq!(route.destination, "192.0.2.0/24".parse().unwrap());
        assert_eq!(route.table, 254);
        assert_eq!(
            parse_route(&route_body([0, 0, 0, 0], 0, RT_TABLE_MAIN)),
            None
        );
        assert_eq!(
            parse_route(&route_body([127, 0, 0, 1], 32, RT_TABLE_LOCAL)),
            None
        );
        // A host route (/32) is kept: it still collides.
        let host = parse_route(&route_body([10, 89, 0, 9], 32, RT_TABLE_MAIN)).unwrap();
        assert!(host.destination.overlaps(&Subnet::DEFAULT));
        assert!(!host.destination.overlaps(&"10.89.1.0/24".parse().unwrap()));
    }

    #[test]
    fn nested_attributes_carry_their_length() {
        let request = Request::new(RTM_NEWLINK, 0)
            .ifinfo(0, 0, 0)
            .nest(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end_nest();
        let msg = request.finish(7);
        assert_eq!(
            u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize,
            msg.len()
        );
        let attrs: Vec<_> = attributes(&msg[32..]).collect();
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs[0].0, IFLA_LINKINFO);
        let inner: Vec<_> = attributes(attrs[0].1).collect();
        assert_eq!(inner, [(IFLA_INFO_KIND, &b"veth\0"[..])]);
    }
}
