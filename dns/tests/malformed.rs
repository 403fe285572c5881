//! Thousands of generated malformed packets through the request path (the deterministic
//! stand-in for the fuzz target in `dns/fuzz`, which needs a nightly toolchain): none may
//! panic; every answer must be a well-formed response with the query's id; afterwards valid
//! queries are still answered.

use std::net::SocketAddr;

use dns::packet::{check_answer, check_packet, respond, sample_handler};
use dns::Protocol;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn query(id: u16, name: &str, qtype: u16, edns: Option<(u16, u8)>) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    if let Some((size, version)) = edns {
        p.push(0);
        p.extend_from_slice(&41u16.to_be_bytes());
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&[0, version, 0, 0, 0, 0]);
    }
    p
}

const NAMES: &[&str] = &[
    "web.berth",
    "tasks.web.berth",
    "tasks.big.berth",
    "_web._tcp.berth",
    "_big._tcp.berth",
    "_udp._udp.berth",
    "10-0-0-2.web.berth",
    "nope.berth",
    "berth",
    "web",
    "tasks.big",
    "10.0.77.127.in-addr.arpa",
    "example.com",
];
const TYPES: &[u16] = &[1, 28, 33, 12, 6, 255, 16, 2, 5];

fn structured(rng: &mut Rng) -> Vec<Vec<u8>> {
    let h = |qd: u8, an: u8, ns: u8, ar: u8| vec![0xAB, 0xCD, 1, 0, 0, qd, 0, an, 0, ns, 0, ar];
    let mut out = vec![
        vec![],
        vec![0xAB],
        vec![0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0],
        h(1, 0, 0, 0),
        h(0, 0, 0, 0),
        h(255, 255, 255, 255),
        // Self-pointing name.
        [h(1, 0, 0, 0), vec![0xC0, 12, 0, 1, 0, 1]].concat(),
        // Two pointers at each other.
        [h(1, 0, 0, 0), vec![0xC0, 14, 0xC0, 12, 0, 1, 0, 1]].concat(),
        // Pointer past the end.
        [h(1, 0, 0, 0), vec![0xC0, 200, 0, 1, 0, 1]].concat(),
        // Forward pointer.
        [
            h(1, 0, 0, 0),
            vec![3, b'w', b'e', b'b', 0xC0, 20, 0, 1, 0, 1, 0, 0],
        ]
        .concat(),
        // Reserved label types 0x40 / 0x80.
        [h(1, 0, 0, 0), vec![0x41, b'a', 0, 0, 1, 0, 1]].concat(),
        [h(1, 0, 0, 0), vec![0x81, b'a', 0, 0, 1, 0, 1]].concat(),
        // Label longer than the packet.
        [h(1, 0, 0, 0), vec![63, b'a', b'b']].concat(),
        // Question without type/class.
        [h(1, 0, 0, 0), vec![3, b'w', b'e', b'b', 0]].concat(),
        // Record count claims with nothing behind.
        [query(1, "web.berth", 1, None), vec![]].concat(),
        // Two OPT records.
        {
            let mut p = query(2, "web.berth", 1, Some((1232, 0)));
            p[11] = 2;
            p.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
            p
        },
        // OPT with a bogus option length.
        {
            let mut p = query(3, "web.berth", 1, None);
            p[11] = 1;
            p.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 8, 0, 10, 0, 200, 1, 2]);
            p
        },
        // EDNS version 1: BADVERS.
        query(4, "web.berth", 1, Some((1232, 1))),
        // Tiny advertised payload.
        query(5, "tasks.big.berth", 1, Some((1, 0))),
    ];
    // A name longer than 255 bytes.
    let long = vec!["a".repeat(63); 5].join(".");
    out.push(query(6, &long, 1, None));
    // Every opcode, class CH.
    for op in 0..16u8 {
        let mut p = query(7, "web.berth", 1, None);
        p[2] = (op << 3) | 1;
        out.push(p);
    }
    let mut p = query(8, "web.berth", 16, None);
    let n = p.len();
    p[n - 1] = 3;
    out.push(p);
    for _ in 0..50 {
        let len = rng.below(20);
        out.push([h(1, 0, 0, 0), rng.bytes(len)].concat());
    }
    out
}

fn mutate(rng: &mut Rng, mut p: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !p.is_empty() => {
                let i = rng.below(p.len());
                p[i] ^= 1 << rng.below(8);
            }
            1 if !p.is_empty() => {
                let i = rng.below(p.len());
                p[i] = rng.next() as u8;
            }
            2 => {
                let n = rng.below(p.len() + 1);
                p.truncate(n);
            }
            3 => {
                let i = rng.below(p.len() + 1);
                let n = 1 + rng.below(4);
                let b = rng.bytes(n);
                p.splice(i..i, b);
            }
            _ => {
                if p.len() > 12 {
                    let i = 12 + rng.below(p.len() - 12);
                    p[i] = 0xC0 | (rng.next() as u8 & 0x3F);
                }
            }
        }
    }
    // Keep QR clear most of the time so the packet reaches the handler.
    if p.len() > 2 && rng.below(10) != 0 {
        p[2] &= 0x7F;
    }
    p
}

#[tokio::test]
async fn thousands_of_malformed_packets() {
    let handler = sample_handler();
    let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut packets = structured(&mut rng);
    for _ in 0..2000 {
        let len = rng.below(128);
        packets.push(rng.bytes(len));
    }
    for i in 0..4000 {
        let name = NAMES[i % NAMES.len()];
        let qtype = TYPES[rng.below(TYPES.len())];
        let edns = (rng.below(2) == 0).then(|| (rng.below(5000) as u16, 0));
        packets.push(mutate(&mut rng, query(i as u16, name, qtype, edns)));
    }
    let (mut answered, mut formerr, mut dropped) = (0, 0, 0);
    for p in &packets {
        for rcode in check_packet(&handler, p).await {
            match rcode {
                Some(1) => (answered, formerr) = (answered + 1, formerr + 1),
                Some(_) => answered += 1,
                None => dropped += 1,
            }
        }
    }
    assert!(packets.len() > 6000);
    assert!(
        formerr > 100 && dropped > 100 && answered > 1000,
        "{formerr} {dropped} {answered}"
    );

    // Still answering valid queries, with the sample catalog's data.
    let q = query(0x4242, "web.berth", 1, None);
    let a = respond(&handler, &q, src, Protocol::Udp)
        .await
        .expect("answer");
    assert_eq!(check_answer(&q, &a, Protocol::Udp), Ok(0));
    assert_eq!(&a[a.len() - 4..], &[127, 77, 0, 10]);
}

#[tokio::test]
async fn udp_answers_respect_the_payload_size_and_set_tc() {
    let handler = sample_handler();
    let src: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    for (edns, limit) in [
        (None, 512usize),
        (Some((1232, 0)), 1232),
        (Some((9000, 0)), 4096),
    ] {
        let q = query(9, "tasks.big.berth", 1, edns);
        let a = respond(&handler, &q, src, Protocol::Udp).await.unwrap();
        assert!(a.len() <= limit, "{} > {limit}", a.len());
        let tc = a[2] & 0x02 != 0;
        assert_eq!(tc, limit < 1700, "TC for a {limit}-byte limit");
        let a = respond(&handler, &q, src, Protocol::Tcp).await.unwrap();
        assert_eq!(a[2] & 0x02, 0, "TC over TCP");
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 100);
    }
}
