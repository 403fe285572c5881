//! VIP allocation decisions, without I/O: the key schema under `/_berth/vips/`, the range
//! addresses are taken from, which address to try for a service, and which claims are due
//! for release. [`crate::allocator`] carries the decisions out against the registry.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use crate::error::ConfigError;
use registry::catalog::Catalog;

/// Directory of the service -> VIP claims (the deciding keys).
pub const SERVICE_DIR: &str = "/_berth/vips/service";
/// Directory of the VIP -> service reservations.
pub const IP_DIR: &str = "/_berth/vips/ip";

/// `/_berth/vips/service/<service>`: value is the VIP, e.g. `127.77.0.12`.
pub fn service_key(service: &str) -> String {
    format!("{SERVICE_DIR}/{service}")
}

/// `/_berth/vips/ip/<ip>`: value is the service name.
pub fn ip_key(ip: Ipv4Addr) -> String {
    format!("{IP_DIR}/{ip}")
}

/// The IPv4 range VIPs are taken from (`--vip-range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipRange {
    net: Ipv4Net,
}

impl FromStr for VipRange {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let net: Ipv4Net = s
            .trim()
            .parse()
            .map_err(|_| ConfigError::VipRange(s.to_string()))?;
        Ok(VipRange { net: net.trunc() })
    }
}

impl std::fmt::Display for VipRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.net.fmt(f)
    }
}

impl VipRange {
    /// The network.
    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.net.contains(&ip)
    }

    /// First usable address and how many there are (network and broadcast addresses are
    /// left out when the prefix is shorter than /31).
    fn span(&self) -> (u32, u32) {
        let base = u32::from(self.net.network());
        let size: u64 = 1u64 << (32 - self.net.prefix_len() as u32);
        if size > 2 {
            (base + 1, (size - 2) as u32)
        } else {
            (base, size as u32)
        }
    }

    /// Number of addresses that can be handed out.
    pub fn capacity(&self) -> u32 {
        self.span().1
    }

    /// The address a service tries first: a stable hash of its name into the range, so that
    /// servers racing for the same service try the same address.
    pub fn preferred(&self, service: &str) -> Ipv4Addr {
        let (first, n) = self.span();
        Ipv4Addr::from(first + (fnv1a(service.as_bytes()) % n as u64) as u32)
    }

    /// The next address to try for `service`: the preferred one, then upward (wrapping),
    /// skipping addresses `taken` says are reserved. `None` when the range is exhausted.
    pub fn candidate(&self, service: &str, taken: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        let (first, n) = self.span();
        let start = u32::from(self.preferred(service)) - first;
        (0..n)
            .map(|i| Ipv4Addr::from(first + (start + i) % n))
            .find(|ip| !taken(*ip))
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Something the allocator should do to release a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The service has had no instances for the grace period: delete its service key (if it
    /// still has `index`), then its ip reservation.
    Service {
        service: String,
        ip: Ipv4Addr,
        index: u64,
    },
    /// A reservation no service key points at (a claimant died between its two writes, or
    /// lost a race and could not clean up): delete it if it still has `index`.
    Orphan {
        ip: Ipv4Addr,
        service: String,
        index: u64,
    },
}

/// Tracks since when each VIP has been idle (no instances) or orphaned, as this server has
/// observed it, and says what is due for release.
#[derive(Debug, Default)]
pub struct ReleaseTracker {
    idle_since: HashMap<(String, u64), Instant>,
    orphan_since: HashMap<(Ipv4Addr, u64), Instant>,
}

impl ReleaseTracker {
    /// Updates the observation times from the catalog and returns the releases due at `now`.
    pub fn due(&mut self, catalog: &Catalog, now: Instant, grace: Duration) -> Vec<Release> {
        let mut out = Vec::new();
        let mut idle_seen = HashSet::new();
        for (service, claim) in catalog.vips() {
            if catalog.has_instances(service) {
                continue;
            }
            let k = (service.clone(), claim.index);
            let since = *self.idle_since.entry(k.clone()).or_insert(now);
            idle_seen.insert(k);
            if now.duration_since(since) >= grace {
                out.push(Release::Service {
                    service: service.clone(),
                    ip: claim.ip,
                    index: claim.index,
                });
            }
        }
        self.idle_since.retain(|k, _| idle_seen.contains(k));
        let mut orphan_seen = HashSet::new();
        for (ip, res) in catalog.reservations() {
            let owned = catalog
                .vips()
                .get(&res.service)
                .is_some_and(|c| c.ip == *ip);
            if owned {
                continue;
            }
            let k = (*ip, res.index);
            let since = *self.orphan_since.entry(k).or_insert(now);
            orphan_seen.insert(k);
            if now.duration_since(since) >= grace.max(Duration::from_secs(5)) {
                out.push(Release::Orphan {
                    ip: *ip,
                    service: res.service.clone(),
                    index: res.index,
                });
            }
        }
        self.orphan_since.retain(|k, _| orphan_seen.contains(k));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_parsing_and_span() {
        let r: VipRange = "127.77.0.0/16".parse().unwrap();
        assert_eq!(r.capacity(), 65534);
        assert!(r.contains("127.77.3.4".parse().unwrap()));
        let r: VipRange = "10.0.0.7/30".parse().unwrap();
        assert_eq!(r.to_string(), "10.0.0.4/30");
        assert_eq!(r.capacity(), 2);
        let r: VipRange = "10.0.0.7/32".parse().unwrap();
        assert_eq!(r.capacity(), 1);
        assert!("nonsense".parse::<VipRange>().is_err());
        assert!("::1/128".parse::<VipRange>().is_err());
    }

    #[test]
    fn candidates_are_stable_and_skip_taken() {
        let r: VipRange = "127.77.0.0/16".parse().unwrap();
        let a = r.preferred("web");
        assert_eq!(a, r.preferred("web"));
        assert!(r.contains(a) && a != "127.77.0.0".parse::<Ipv4Addr>().unwrap());
        assert_eq!(r.candidate("web", |_| false), Some(a));
        let b = r.candidate("web", |ip| ip == a).unwrap();
        assert_ne!(a, b);
        assert!(r.contains(b));
        let small: VipRange = "10.0.0.0/30".parse().unwrap();
        let all: Vec<Ipv4Addr> = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert!(all.contains(&small.candidate("x", |_| false).unwrap()));
        assert_eq!(small.candidate("x", |ip| all.contains(&ip)), None);
    }

    #[test]
    fn hashing_spreads() {
        let r: VipRange = "127.77.0.0/16".parse().unwrap();
        let set: HashSet<Ipv4Addr> = (0..1000).map(|i| r.preferred(&format!("s{i}"))).collect();
        assert!(set.len() > 980, "{}", set.len());
    }
}
