//! Answers from the catalog: which names the zone has and what they hold. Pure: a query name
//! and type plus a [`Catalog`] give an [`Outcome`].
//!
//! Names (with the default zone `berth.`):
//!
//! | name | type | answer |
//! |---|---|---|
//! | `<service>.berth.` | A | the VIP |
//! | `tasks.<service>.berth.` | A / AAAA | addresses of the live (active-color) instances |
//! | `_<service>._tcp.berth.` (`_udp`) | SRV | one per instance, targets `<ip-with-dashes>.<service>.berth.`, their A/AAAA in the additional section |
//! | `<ip-with-dashes>.<service>.berth.` | A / AAAA | that instance address |
//! | `<service>.`, `tasks.<service>.`, `_<service>._tcp.` | as above | when the service exists (else forwarded) |
//! | `<d>.<c>.<b>.<a>.in-addr.arpa.` in the VIP range | PTR | `<service>.berth.` |
//!
//! An existing name asked for another type gets an empty NOERROR with the SOA; an unknown
//! name in the zone gets NXDOMAIN with the SOA.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};

use crate::vip::VipRange;
use registry::catalog::Catalog;
use registry::catalog::Proto;

/// An authoritative answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

impl Answer {
    fn records(answers: Vec<Record>) -> Answer {
        Answer {
            rcode: ResponseCode::NoError,
            answers,
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

/// What to do with a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answer from the zone.
    Answer(Answer),
    /// The service exists but has no VIP yet: wait for the allocator, then look up again.
    NeedVip(String),
    /// Not a name of ours: forward it (or refuse it without recursion).
    NotOurs,
}

/// The zone's fixed parts: its name, TTL and the VIP range (for PTR).
#[derive(Debug, Clone)]
pub struct Zone {
    origin: Name,
    labels: Vec<String>,
    ttl: u32,
    vip_range: VipRange,
    reverse_origin: Name,
    soa: Record,
    reverse_soa: Record,
}

/// The name being asked for, relative to what we serve.
#[derive(Debug, PartialEq)]
enum Target<'a> {
    Apex,
    /// `tasks.<domain>`, `_tcp.<domain>`: exist only as parents of other names.
    EmptyNonTerminal,
    Vip(&'a str),
    Tasks(&'a str),
    Srv(&'a str, Proto),
    Instance(&'a str, IpAddr),
    Ptr(Ipv4Addr),
    Unknown,
}

impl Zone {
    /// `domain` lower case with a trailing dot (see [`crate::config::parse_domain`]).
    pub fn new(domain: &str, ttl: u32, vip_range: VipRange) -> Zone {
        let origin = Name::from_ascii(domain).expect("validated domain");
        let labels = domain
            .trim_end_matches('.')
            .split('.')
            .map(str::to_string)
            .collect();
        let reverse_origin = reverse_zone(vip_range);
        let soa = soa_record(&origin, &origin, ttl);
        let reverse_soa = soa_record(&reverse_origin, &origin, ttl);
        Zone {
            origin,
            labels,
            ttl,
            vip_range,
            reverse_origin,
            soa,
            reverse_soa,
        }
    }

    /// The zone name.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// Whether `name` is the zone or below it (or in the VIP range's reverse zone).
    pub fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name) || self.reverse_origin.zone_of(name)
    }

    fn classify<'a>(&self, labels: &'a [String], catalog: &Catalog) -> Option<Target<'a>> {
        let n = labels.len();
        let z = self.labels.len();
        if n >= z && labels[n - z..] == self.labels[..] {
            return Some(classify_relative(&labels[..n - z], catalog, true));
        }
        if n == 6 && labels[4] == "in-addr" && labels[5] == "arpa" {
            let mut o = [0u8; 4];
            for (i, l) in labels[..4].iter().enumerate() {
                o[3 - i] = l.parse().ok()?;
            }
            let ip = Ipv4Addr::from(o);
            return self.vip_range.contains(ip).then_some(Target::Ptr(ip));
        }
        match classify_relative(labels, catalog, false) {
            Target::Unknown => None,
            t => Some(t),
        }
    }

    /// Looks a query up. `name` is the question's name as asked (its case is kept in the
    /// answer); `catalog` the current state.
    pub fn lookup(&self, catalog: &Catalog, name: &Name, qtype: RecordType) -> Outcome {
        let labels: Vec<String> = name
            .iter()
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect();
        let Some(target) = self.classify(&labels, catalog) else {
            return Outcome::NotOurs;
        };
        let any = qtype == RecordType::ANY;
        let name = name.clone();
        match target {
            Target::Unknown => self.nxdomain(&self.soa),
            Target::Apex => {
                if qtype == RecordType::SOA || any {
                    Outcome::Answer(Answer::records(vec![self.soa.clone()]))
                } else {
                    self.nodata(&self.soa)
                }
            }
            Target::EmptyNonTerminal => self.nodata(&self.soa),
            Target::Vip(s) => {
                if !catalog.knows(s) {
                    return self.nxdomain(&self.soa);
                }
                if qtype != RecordType::A && !any {
                    return self.nodata(&self.soa);
                }
                match catalog.vip(s) {
                    Some(ip) => Outcome::Answer(Answer::records(vec![Record::from_rdata(
                        name,
                        self.ttl,
                        RData::A(A(ip)),
                    )])),
                    None => Outcome::NeedVip(s.to_string()),
                }
            }
            Target::Tasks(s) => {
                if !catalog.knows(s) {
                    return self.nxdomain(&self.soa);
                }
                let addrs: BTreeSet<IpAddr> =
                    catalog.active_instances(s).map(|(_, i)| i.addr).collect();
                let records: Vec<Record> = addrs
                    .into_iter()
                    .filter_map(|ip| self.address_record(&name, ip, qtype))
                    .collect();
                if records.is_empty() {
                    self.nodata(&self.soa)
                } else {
                    Outcome::Answer(Answer::records(records))
                }
            }
            Target::Srv(s, proto) => {
                if !catalog.knows(s) {
                    return self.nxdomain(&self.soa);
                }
                if qtype != RecordType::SRV && !any {
                    return self.nodata(&self.soa);
                }
                let mut answers = Vec::new();
                let mut targets = BTreeSet::new();
                let mut seen = BTreeSet::new();
                for (_, i) in catalog
                    .active_instances(s)
                    .filter(|(_, i)| i.proto == proto)
                {
                    if !seen.insert((i.addr, i.port)) {
                        continue;
                    }
                    let target = self.instance_name(s, i.addr);
                    answers.push(Record::from_rdata(
                        name.clone(),
                        self.ttl,
                        RData::SRV(SRV::new(1, i.weight, i.port, target.clone())),
                    ));
                    targets.insert((i.addr, target));
                }
                if answers.is_empty() {
                    return self.nodata(&self.soa);
                }
                let additionals = targets
                    .into_iter()
                    .filter_map(|(ip, t)| self.address_record(&t, ip, RecordType::ANY))
                    .collect();
                Outcome::Answer(Answer {
                    rcode: ResponseCode::NoError,
                    answers,
                    authorities: Vec::new(),
                    additionals,
                })
            }
            Target::Instance(s, ip) => {
                if !catalog.active_instances(s).any(|(_, i)| i.addr == ip) {
                    return self.nxdomain(&self.soa);
                }
                match self.address_record(&name, ip, qtype) {
                    Some(r) => Outcome::Answer(Answer::records(vec![r])),
                    None => self.nodata(&self.soa),
                }
            }
            Target::Ptr(ip) => match catalog.service_of_vip(ip) {
                Some(s) => {
                    if qtype != RecordType::PTR && !any {
                        return self.nodata(&self.reverse_soa);
                    }
                    let target = Name::from_ascii(s)
                        .and_then(|n| n.append_domain(&self.origin))
                        .expect("service names are DNS labels");
                    Outcome::Answer(Answer::records(vec![Record::from_rdata(
                        name,
                        self.ttl,
                        RData::PTR(PTR(target)),
                    )]))
                }
                None => self.nxdomain(&self.reverse_soa),
            },
        }
    }

    /// `<ip-with-dashes>.<service>.<domain>`, the SRV target of an instance.
    fn instance_name(&self, service: &str, ip: IpAddr) -> Name {
        let label = ip.to_string().replace(['.', ':'], "-");
        Name::from_ascii(format!("{label}.{service}"))
            .and_then(|n| n.append_domain(&self.origin))
            .expect("dashed addresses and service names are DNS labels")
    }

    fn address_record(&self, name: &Name, ip: IpAddr, qtype: RecordType) -> Option<Record> {
        let rdata = match ip {
            IpAddr::V4(v4) if matches!(qtype, RecordType::A | RecordType::ANY) => RData::A(A(v4)),
            IpAddr::V6(v6) if matches!(qtype, RecordType::AAAA | RecordType::ANY) => {
                RData::AAAA(AAAA(v6))
            }
            _ => return None,
        };
        Some(Record::from_rdata(name.clone(), self.ttl, rdata))
    }

    fn nodata(&self, soa: &Record) -> Outcome {
        Outcome::Answer(Answer {
            rcode: ResponseCode::NoError,
            answers: Vec::new(),
            authorities: vec![soa.clone()],
            additionals: Vec::new(),
        })
    }

    fn nxdomain(&self, soa: &Record) -> Outcome {
        Outcome::Answer(Answer {
            rcode: ResponseCode::NXDomain,
            answers: Vec::new(),
            authorities: vec![soa.clone()],
            additionals: Vec::new(),
        })
    }
}

fn classify_relative<'a>(rel: &'a [String], catalog: &Catalog, in_zone: bool) -> Target<'a> {
    let known = |s: &str| in_zone || catalog.knows(s);
    match rel {
        [] if in_zone => Target::Apex,
        [t] if in_zone && matches!(t.as_str(), "tasks" | "_tcp" | "_udp") && !catalog.knows(t) => {
            Target::EmptyNonTerminal
        }
        [s] if known(s) && !s.starts_with('_') => Target::Vip(s),
        [t, s] if t == "tasks" && known(s) => Target::Tasks(s),
        [s, p] if s.len() > 1 && s.starts_with('_') && (p == "_tcp" || p == "_udp") => {
            let s = &s[1..];
            if !known(s) {
                return Target::Unknown;
            }
            Target::Srv(s, if p == "_udp" { Proto::Udp } else { Proto::Tcp })
        }
        [ip, s] if in_zone => match undash(ip) {
            Some(ip) => Target::Instance(s, ip),
            None => Target::Unknown,
        },
        _ => Target::Unknown,
    }
}

/// `10-0-0-5` -> 10.0.0.5, `fd00--1` -> fd00::1.
fn undash(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label.replace('-', ":").parse().ok()
}

/// The reverse zone covering the VIP range, rounded out to whole octets
/// (127.77.0.0/16 -> `77.127.in-addr.arpa.`).
fn reverse_zone(range: VipRange) -> Name {
    let net = range.net();
    let octets = (net.prefix_len() / 8) as usize;
    let o = net.network().octets();
    let mut s = String::new();
    for i in (0..octets).rev() {
        s.push_str(&format!("{}.", o[i]));
    }
    s.push_str("in-addr.arpa.");
    Name::from_ascii(&s).expect("reverse zone name")
}

fn soa_record(owner: &Name, origin: &Name, ttl: u32) -> Record {
    let mname = Name::from_ascii("ns")
        .and_then(|n| n.append_domain(origin))
        .expect("ns name");
    let rname = Name::from_ascii("hostmaster")
        .and_then(|n| n.append_domain(origin))
        .expect("hostmaster name");
    Record::from_rdata(
        owner.clone(),
        ttl,
        RData::SOA(SOA::new(mname, rname, 1, 3600, 600, 86400, ttl)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry::client::{Node, Response};

    fn catalog() -> Catalog {
        let mut c = Catalog::new();
        let mut set = |k: &str, v: &str| {
            c.apply(&Response {
                action: "set".into(),
                node: Node {
                    key: k.into(),
                    value: Some(v.into()),
                    modified_index: 1,
                    ..Default::default()
                },
                ..Default::default()
            });
        };
        set(
            "/services/web/a",
            r#"{"host":"10.0.0.1","port":80,"color":"blue"}"#,
        );
        set(
            "/services/web/b",
            r#"{"host":"10.0.0.2","port":8080,"color":"green"}"#,
        );
        set(
            "/services/web/c",
            r#"{"host":"fd00::2","port":80,"color":"green"}"#,
        );
        set("/services/db/a", "10.0.1.1:5432");
        set("/services/dns/h:dns:53:udp", "10.0.2.1:53");
        set("/_berth/vips/service/web", "127.77.0.10");
        set("/_berth/routes/web", r#"{"active":"green"}"#);
        c
    }

    fn zone() -> Zone {
        Zone::new("berth.", 7, "127.77.0.0/16".parse().unwrap())
    }

    fn look(name: &str, t: RecordType) -> Outcome {
        zone().lookup(&catalog(), &Name::from_ascii(name).unwrap(), t)
    }

    fn answer(name: &str, t: RecordType) -> Answer {
        match look(name, t) {
            Outcome::Answer(a) => a,
            o => panic!("{name} {t}: {o:?}"),
        }
    }

    fn rdata(a: &Answer) -> Vec<String> {
        a.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn vip_names() {
        let a = answer("WEB.berth.", RecordType::A);
        assert_eq!(rdata(&a), ["127.77.0.10"]);
        assert_eq!(a.answers[0].ttl, 7);
        assert_eq!(a.answers[0].name.to_string(), "WEB.berth.");
        assert_eq!(rdata(&answer("web.", RecordType::A)), ["127.77.0.10"]);
        assert_eq!(
            look("db.berth.", RecordType::A),
            Outcome::NeedVip("db".into())
        );
        let a = answer("web.berth.", RecordType::AAAA);
        assert_eq!((a.rcode, a.answers.len()), (ResponseCode::NoError, 0));
        assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
        let a = answer("nope.berth.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        assert_eq!(a.authorities[0].name.to_string(), "berth.");
        assert_eq!(look("nope.", RecordType::A), Outcome::NotOurs);
        assert_eq!(look("example.com.", RecordType::A), Outcome::NotOurs);
    }

    #[test]
    fn tasks_follow_the_active_color() {
        assert_eq!(
            rdata(&answer("tasks.web.berth.", RecordType::A)),
            ["10.0.0.2"]
        );
        assert_eq!(rdata(&answer("tasks.web.", RecordType::AAAA)), ["fd00::2"]);
        assert_eq!(
            rdata(&answer("tasks.db.berth.", RecordType::A)),
            ["10.0.1.1"]
        );
        let a = answer("tasks.nope.berth.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        let a = answer("tasks.db.berth.", RecordType::AAAA);
        assert_eq!((a.rcode, a.answers.len()), (ResponseCode::NoError, 0));
        assert_eq!(
            answer("tasks.berth.", RecordType::A).rcode,
            ResponseCode::NoError
        );
    }

    #[test]
    fn srv_with_additionals() {
        let a = answer("_web._tcp.berth.", RecordType::SRV);
        assert_eq!(
            rdata(&a),
            ["1 1 8080 10-0-0-2.web.berth.", "1 1 80 fd00--2.web.berth."]
        );
        let add: Vec<String> = a
            .additionals
            .iter()
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        assert_eq!(
            add,
            ["10-0-0-2.web.berth. 10.0.0.2", "fd00--2.web.berth. fd00::2"]
        );
        assert_eq!(rdata(&answer("_dns._udp.berth.", RecordType::SRV)).len(), 1);
        let a = answer("_dns._tcp.berth.", RecordType::SRV);
        assert_eq!((a.rcode, a.answers.len()), (ResponseCode::NoError, 0));
        assert_eq!(rdata(&answer("_db._tcp.", RecordType::SRV)).len(), 1);
        assert_eq!(
            rdata(&answer("10-0-0-2.web.berth.", RecordType::A)),
            ["10.0.0.2"]
        );
        assert_eq!(
            answer("10-0-0-1.web.berth.", RecordType::A).rcode,
            ResponseCode::NXDomain
        );
        assert_eq!(
            answer("_nope._tcp.berth.", RecordType::SRV).rcode,
            ResponseCode::NXDomain
        );
    }

    #[test]
    fn ptr_and_apex() {
        let a = answer("10.0.77.127.in-addr.arpa.", RecordType::PTR);
        assert_eq!(rdata(&a), ["web.berth."]);
        let a = answer("11.0.77.127.in-addr.arpa.", RecordType::PTR);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        assert_eq!(a.authorities[0].name.to_string(), "77.127.in-addr.arpa.");
        assert_eq!(
            look("1.0.0.10.in-addr.arpa.", RecordType::PTR),
            Outcome::NotOurs
        );
        assert_eq!(answer("berth.", RecordType::SOA).answers.len(), 1);
        assert_eq!(answer("berth.", RecordType::A).answers.len(), 0);
    }
}
