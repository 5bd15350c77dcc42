use std::collections::BTreeMap;

use super::*;
use crate::ipam::Lease;

/// A query as a resolver sends it: id 0x1234, RD set, one question.
fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    m
}

#[test]
fn reads_the_question_in_lower_case() {
    let q = parse_query(&query("Web.Example", TYPE_A)).unwrap();
    assert_eq!(q.id, 0x1234);
    assert!(q.recursion_desired);
    assert_eq!(q.name, "web.example");
    assert_eq!((q.qtype, q.qclass), (TYPE_A, CLASS_IN));
}

#[test]
fn an_a_question_gets_one_record_pointing_at_the_question() {
    let m = query("web", TYPE_A);
    let q = parse_query(&m).unwrap();
    let a = answer(&q, &m, Ipv4Addr::new(10, 89, 1, 2));
    assert_eq!(&a[..2], &[0x12, 0x34]);
    assert_eq!(a[2] & 0x80, 0x80, "a response");
    assert_eq!(a[2] & 0x04, 0x04, "authoritative");
    assert_eq!(a[3] & 0x0f, 0, "no error");
    assert_eq!(&a[4..8], &[0, 1, 0, 1], "one question, one answer");
    assert_eq!(&a[12..m.len()], &m[12..]);
    let record = &a[m.len()..];
    assert_eq!(&record[..2], &[0xc0, 12]);
    assert_eq!(u16::from_be_bytes([record[2], record[3]]), TYPE_A);
    assert_eq!(u32::from_be_bytes(record[6..10].try_into().unwrap()), TTL);
    assert_eq!(&record[10..], &[0, 4, 10, 89, 1, 2]);
}

#[test]
fn another_type_for_a_known_name_is_an_empty_answer() {
    let m = query("web", 28); // AAAA
    let a = answer(&parse_query(&m).unwrap(), &m, Ipv4Addr::new(10, 89, 1, 2));
    assert_eq!(&a[4..8], &[0, 1, 0, 0]);
    assert_eq!(a.len(), m.len());
    assert_eq!(a[3] & 0x0f, 0);
}

#[test]
fn what_is_not_one_plain_question_is_not_read() {
    assert_eq!(parse_query(&[0; 11]), None);
    let mut answer_msg = query("web", TYPE_A);
    answer_msg[2] |= 0x80;
    assert_eq!(parse_query(&answer_msg), None);
    assert_eq!(
        error_reply(&answer_msg, RCODE_SERVFAIL),
        None,
        "never answer an answer"
    );
    let mut two = query("web", TYPE_A);
    two[5] = 2;
    assert_eq!(parse_query(&two), None);
    let mut pointer = query("web", TYPE_A);
    pointer[12] = 0xc0;
    assert_eq!(parse_query(&pointer), None);
    let truncated = &query("web", TYPE_A)[..15];
    assert_eq!(parse_query(truncated), None);
    let mut long = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..5 {
        long.push(63);
        long.extend_from_slice(&[b'a'; 63]);
    }
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(parse_query(&long), None, "a name over 253 bytes");
}

#[test]
fn errors_keep_the_id_and_the_question() {
    let m = query("gone.example", TYPE_A);
    let e = error_reply(&m, RCODE_SERVFAIL).unwrap();
    assert_eq!(&e[..2], &[0x12, 0x34]);
    assert_eq!(e[3] & 0x0f, RCODE_SERVFAIL);
    assert_eq!(&e[4..8], &[0, 1, 0, 0]);
    assert_eq!(&e[12..], &m[12..]);
    let garbage = [0xab, 0xcd, 0x01, 0, 0, 9, 0, 0, 0, 0, 0, 0, 7];
    let e = error_reply(&garbage, RCODE_FORMERR).unwrap();
    assert_eq!(e.len(), 12);
    assert_eq!(e[3] & 0x0f, RCODE_FORMERR);
}

#[test]
fn names_and_aliases_are_found_in_any_case() {
    let lease = |names: &[&str]| Lease {
        owner: "x".into(),
        interface: "kv0".into(),
        ports: Vec::new(),
        names: names.iter().map(|n| n.to_string()).collect(),
    };
    let leases = BTreeMap::from([
        (
            Ipv4Addr::new(10, 89, 1, 2),
            lease(&["web", "0123456789ab", "www"]),
        ),
        (Ipv4Addr::new(10, 89, 1, 3), lease(&["db"])),
    ]);
    assert_eq!(lookup("WWW.", &leases), Some(Ipv4Addr::new(10, 89, 1, 2)));
    assert_eq!(lookup("db", &leases), Some(Ipv4Addr::new(10, 89, 1, 3)));
    assert_eq!(
        lookup("0123456789ab", &leases),
        Some(Ipv4Addr::new(10, 89, 1, 2))
    );
    assert_eq!(lookup("web.example", &leases), None);
}

/// Random bytes never panic the reader.
#[test]
fn any_bytes_are_read_without_panicking() {
    let mut seed: u32 = 0x1234_5678;
    for len in 0..600 {
        let bytes: Vec<u8> = (0..len % 80)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (seed >> 24) as u8
            })
            .collect();
        let _ = parse_query(&bytes);
        let _ = error_reply(&bytes, RCODE_FORMERR);
    }
}
