//! The DNS messages kiln's responder reads and writes: one question read from a query,
//! an A answer (or an empty one, or an error) written for it. Everything else is
//! forwarded byte for byte ([`serve`]), so this is all of DNS kiln has to understand.
//!
//! Hand-written (RFC 1035 § 4.1, about 150 lines) rather than `hickory-proto`: the
//! responder reads one name and writes one fixed-layout record; a general message model
//! (and the async stack around it) would be most of kiln-network's build for that, and
//! the same reasoning kept the netlink encoder hand-written. Every read is bounds-checked;
//! a message kiln cannot read is answered FORMERR (or forwarded, when it is a query kiln
//! simply does not answer itself).

use std::net::Ipv4Addr;

pub mod serve;

/// Resource record types and the class kiln answers.
pub const TYPE_A: u16 = 1;
pub const CLASS_IN: u16 = 1;

/// Response codes kiln gives.
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;

/// How long a resolver may keep kiln's answer: short, since containers come and go.
pub const TTL: u32 = 5;

const HEADER_LEN: usize = 12;

/// The one question of a standard query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Recursion desired, echoed in the answer.
    pub recursion_desired: bool,
    /// The name asked for, lower case, without the final dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// Where the question ends in the message (the answer copies `[12..end]`).
    question_end: usize,
}

/// Reads a standard query (QR 0, opcode 0) with exactly one question; `None` for
/// anything else, which kiln does not answer itself.
pub fn parse_query(message: &[u8]) -> Option<Query> {
    let header = message.get(..HEADER_LEN)?;
    let flags = u16::from_be_bytes([header[2], header[3]]);
    let is_query = flags & 0x8000 == 0;
    let opcode = (flags >> 11) & 0xf;
    if !is_query || opcode != 0 || u16::from_be_bytes([header[4], header[5]]) != 1 {
        return None;
    }
    let (name, mut at) = read_name(message, HEADER_LEN)?;
    let fixed = message.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    at += 4;
    Some(Query {
        id: u16::from_be_bytes([header[0], header[1]]),
        recursion_desired: flags & 0x0100 != 0,
        name,
        qtype,
        qclass,
        question_end: at,
    })
}

/// A name of uncompressed labels from `at` (a question has no earlier name to point
/// at): the name and where it ends.
fn read_name(message: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    loop {
        let len = usize::from(*message.get(at)?);
        at += 1;
        if len == 0 {
            return Some((name, at));
        }
        if len > 63 || name.len() + len > 253 {
            return None; // a compression pointer, or longer than a name can be
        }
        let label = message.get(at..at + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
        at += len;
    }
}

/// The answer to `query` (read from `message`): an A record with `address` when the
/// question asks for one, else no record (the name exists, without that type).
pub fn answer(query: &Query, message: &[u8], address: Ipv4Addr) -> Vec<u8> {
    let with_record = query.qtype == TYPE_A && query.qclass == CLASS_IN;
    let mut out = reply_header(
        query.id,
        query.recursion_desired,
        0,
        (1, u16::from(with_record)),
    );
    out.extend_from_slice(&message[HEADER_LEN..query.question_end]);
    if with_record {
        out.extend_from_slice(&[0xc0, HEADER_LEN as u8]); // the name: the question's
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&address.octets());
    }
    out
}

/// An error answer (`rcode`) to `message`, with its question when it could be read;
/// `None` when the message is not even a header's length, or is itself an answer.
pub fn error_reply(message: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let header = message.get(..HEADER_LEN)?;
    if header[2] & 0x80 != 0 {
        return None; // never answer an answer: no loops between two responders
    }
    let id = u16::from_be_bytes([header[0], header[1]]);
    let recursion_desired = header[2] & 0x01 != 0;
    match parse_query(message) {
        Some(query) => {
            let mut out = reply_header(id, recursion_desired, rcode, (1, 0));
            out.extend_from_slice(&message[HEADER_LEN..query.question_end]);
            Some(out)
        }
        None => Some(reply_header(id, recursion_desired, rcode, (0, 0))),
    }
}

/// A response header: authoritative, recursion available, the given code and counts.
fn reply_header(id: u16, recursion_desired: bool, rcode: u8, (qd, an): (u16, u16)) -> Vec<u8> {
    let flags: u16 =
        0x8000 | 0x0400 | 0x0080 | u16::from(recursion_desired) << 8 | u16::from(rcode & 0xf);
    let mut out = Vec::with_capacity(64);
    for word in [id, flags, qd, an, 0, 0] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out
}

/// The address of the container called `name` (a name or alias kept in its lease, any
/// case; a final dot allowed), if one is on the network.
pub fn lookup<'a>(
    name: &str,
    leases: impl IntoIterator<Item = (&'a Ipv4Addr, &'a crate::ipam::Lease)>,
) -> Option<Ipv4Addr> {
    let name = name.trim_end_matches('.');
    leases
        .into_iter()
        .find(|(_, lease)| lease.names.iter().any(|n| n.eq_ignore_ascii_case(name)))
        .map(|(address, _)| *address)
}

#[cfg(test)]
mod tests;
