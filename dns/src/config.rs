//! `berth dns` flags ([`Args`], each with a `BERTH_...` environment variable) and the validated
//! [`Config`] the server runs with.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use crate::error::ConfigError;
use crate::vip::VipRange;

/// Networks allowed to query by default: loopback, RFC 1918, unique-local and link-local.
pub const DEFAULT_ALLOW: &str =
    "127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,169.254.0.0/16,::1/128,fc00::/7,fe80::/10";

/// Flags of `berth dns`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Registry client URLs, comma-separated.
    #[arg(long, env = "BERTH_ENDPOINTS", default_value = "http://127.0.0.1:2379")]
    pub endpoints: String,
    /// Address to serve DNS on, UDP and TCP.
    #[arg(long, env = "BERTH_DNS_LISTEN", default_value = "127.0.0.1:8600")]
    pub listen: SocketAddr,
    /// Zone answered from the registry: <service>.<domain>, tasks.<service>.<domain>,
    /// _<service>._tcp.<domain>.
    #[arg(long, env = "BERTH_DOMAIN", default_value = "berth.")]
    pub domain: String,
    /// TTL of answers from the zone, in seconds (also the negative-caching TTL in the SOA).
    #[arg(long, env = "BERTH_DNS_TTL", default_value_t = 5)]
    pub ttl: u64,
    /// IPv4 range VIPs are allocated from (one stable address per service).
    #[arg(long, env = "BERTH_VIP_RANGE", default_value = "127.77.0.0/16")]
    pub vip_range: String,
    /// Seconds a service keeps its VIP after its last instance is gone.
    #[arg(long, env = "BERTH_VIP_GRACE", default_value_t = 60)]
    pub vip_grace: u64,
    /// Upstream resolvers for names outside the zone, comma-separated (IP or IP:PORT);
    /// default: the nameservers of /etc/resolv.conf.
    #[arg(long, env = "BERTH_DNS_UPSTREAM")]
    pub upstream: Option<String>,
    /// Answer only the zone; refuse everything else instead of forwarding it.
    #[arg(long, env = "BERTH_DNS_NO_RECURSION")]
    pub no_recursion: bool,
    /// Networks allowed to query, comma-separated CIDRs; others get REFUSED.
    #[arg(long, env = "BERTH_DNS_ALLOW", default_value = DEFAULT_ALLOW)]
    pub allow: String,
    /// Threads answering UDP; 0: one per CPU core, at most 4.
    #[arg(long, env = "BERTH_DNS_UDP_THREADS", default_value_t = 0)]
    pub udp_threads: usize,
}

impl Args {
    /// Defaults, as `berth up` uses them (a `Args` parsed from no flags and no environment).
    pub fn defaults() -> Args {
        Args {
            endpoints: "http://127.0.0.1:2379".into(),
            listen: "127.0.0.1:8600".parse().expect("literal"),
            domain: "berth.".into(),
            ttl: 5,
            vip_range: "127.77.0.0/16".into(),
            vip_grace: 60,
            upstream: None,
            no_recursion: false,
            allow: DEFAULT_ALLOW.into(),
            udp_threads: 0,
        }
    }

    /// Validates the flags. Reads /etc/resolv.conf when no `--upstream` is given.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let endpoints = registry::client::split_endpoints(&self.endpoints);
        registry::client::Client::new(&endpoints).map_err(ConfigError::Endpoints)?;
        let domain = parse_domain(&self.domain)?;
        if self.ttl > i32::MAX as u64 {
            return Err(ConfigError::Ttl(self.ttl));
        }
        let vip_range: VipRange = self.vip_range.parse()?;
        let allow = parse_allow(&self.allow)?;
        if self.udp_threads > MAX_UDP_THREADS {
            return Err(ConfigError::UdpThreads(self.udp_threads));
        }
        let udp_threads = match self.udp_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            n => n,
        };
        let upstreams = if self.no_recursion {
            Vec::new()
        } else {
            match &self.upstream {
                Some(u) => parse_upstreams(u)?,
                None => parse_resolv_conf(
                    &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
                ),
            }
        };
        // Never forward to ourselves.
        let upstreams = upstreams
            .into_iter()
            .filter(|u| *u != self.listen)
            .collect();
        Ok(Config {
            endpoints,
            domain,
            ttl: self.ttl as u32,
            vip_range,
            vip_grace: Duration::from_secs(self.vip_grace),
            upstreams,
            recursion: !self.no_recursion,
            allow,
            upstream_timeout: Duration::from_millis(1500),
            udp_threads,
        })
    }
}

/// What the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Registry client URLs.
    pub endpoints: Vec<String>,
    /// The zone, lower case with a trailing dot (`berth.`).
    pub domain: String,
    pub ttl: u32,
    pub vip_range: VipRange,
    pub vip_grace: Duration,
    /// Resolvers for names outside the zone, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// Whether names outside the zone are forwarded (else REFUSED).
    pub recursion: bool,
    /// Networks allowed to query.
    pub allow: Vec<IpNet>,
    /// How long to wait for one upstream before trying the next.
    pub upstream_timeout: Duration,
    /// Threads answering UDP (at least 1).
    pub udp_threads: usize,
}

/// Most `--udp-threads`.
pub const MAX_UDP_THREADS: usize = 64;

/// Normalises a zone name: lower case, trailing dot, DNS-safe labels.
pub fn parse_domain(s: &str) -> Result<String, ConfigError> {
    let t = s.trim().trim_end_matches('.').to_ascii_lowercase();
    if t.is_empty() || t.len() > 200 || !t.split('.').all(registry::catalog::is_dns_label) {
        return Err(ConfigError::Domain(s.to_string()));
    }
    Ok(format!("{t}."))
}

/// Parses `--allow`.
pub fn parse_allow(s: &str) -> Result<Vec<IpNet>, ConfigError> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let net = match item.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => match item.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => return Err(ConfigError::Allow(s.to_string())),
            },
        };
        out.push(net.trunc());
    }
    if out.is_empty() {
        return Err(ConfigError::Allow(s.to_string()));
    }
    Ok(out)
}

/// Parses `--upstream`: `IP`, `IP:PORT` or `[IPv6]:PORT`, comma-separated (port 53 default).
pub fn parse_upstreams(s: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let addr = match item.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => match item.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, 53),
                Err(_) => return Err(ConfigError::Upstream(s.to_string())),
            },
        };
        if addr.port() == 0 {
            return Err(ConfigError::Upstream(s.to_string()));
        }
        out.push(addr);
    }
    if out.is_empty() {
        return Err(ConfigError::Upstream(s.to_string()));
    }
    Ok(out)
}

/// The `nameserver` lines of a resolv.conf, as port-53 addresses (bad lines are skipped).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let l = l.split(['#', ';']).next()?.trim();
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip = words.next()?;
            let ip = ip.split('%').next()?;
            ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert_eq!(parse_domain("berth.").unwrap(), "berth.");
        assert_eq!(parse_domain("Svc.Cluster").unwrap(), "svc.cluster.");
        assert!(parse_domain(".").is_err());
        assert!(parse_domain("a..b").is_err());
        assert!(parse_domain("a_b.").is_err());
    }

    #[test]
    fn upstreams_and_allow() {
        assert_eq!(
            parse_upstreams("1.1.1.1, 10.0.0.2:5353,[::1]:53").unwrap(),
            vec![
                "1.1.1.1:53".parse().unwrap(),
                "10.0.0.2:5353".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert!(parse_upstreams("dns.google").is_err());
        assert!(parse_upstreams("").is_err());
        let a = parse_allow(DEFAULT_ALLOW).unwrap();
        assert_eq!(a.len(), 8);
        assert_eq!(
            parse_allow("10.1.2.3/8").unwrap()[0].to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_allow("10.1.2.3").unwrap()[0].to_string(),
            "10.1.2.3/32"
        );
        assert!(parse_allow("everyone").is_err());
    }

    #[test]
    fn resolv_conf() {
        let text = "# c\nsearch x\nnameserver 10.0.0.1\nnameserver fe80::1%eth0 # c\nnameserver bad\noptions ndots:5\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.0.0.1:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn defaults_validate() {
        let mut a = Args::defaults();
        a.upstream = Some("127.0.0.1:8600,127.0.0.1:53".into());
        let c = a.config().unwrap();
        assert_eq!(c.upstreams, vec!["127.0.0.1:53".parse().unwrap()]);
        assert!(c.recursion);
        assert!((1..=4).contains(&c.udp_threads), "{}", c.udp_threads);
        a.no_recursion = true;
        assert!(a.config().unwrap().upstreams.is_empty());
        a.udp_threads = 3;
        assert_eq!(a.config().unwrap().udp_threads, 3);
        a.udp_threads = 65;
        assert_eq!(
            a.config().unwrap_err().to_string(),
            "--udp-threads 65: must be at most 64 (0 picks one per CPU core)"
        );
        a.udp_threads = 0;
        a.vip_range = "x".into();
        assert!(a.config().is_err());
    }
}
