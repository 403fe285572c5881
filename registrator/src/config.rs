//! Settings of the registrator and the announcer (what the command-line flags fill in).

use std::time::Duration;

use crate::error::Error;
use crate::model::check_instance_id;

/// Default Docker socket.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// When entries of a stopped container are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Deregister {
    /// Whenever the container stops.
    #[default]
    Always,
    /// Only when it exits with status 0; a failed container's entries stay until their TTL.
    OnSuccess,
}

impl std::str::FromStr for Deregister {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Deregister::Always),
            "on-success" => Ok(Deregister::OnSuccess),
            other => Err(format!(
                "invalid --deregister {other:?}: expected \"always\" or \"on-success\""
            )),
        }
    }
}

/// Settings of [`crate::run`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Registry client URLs.
    pub endpoints: Vec<String>,
    /// Docker socket path (`unix://` prefix accepted).
    pub docker_socket: String,
    /// This node's name: `node` of every entry, first part of instance ids (default: hostname).
    pub hostname: Option<String>,
    /// Address registered for published ports (default: the binding's address, else this
    /// host's first non-loopback IPv4 address).
    pub ip: Option<String>,
    pub internal: bool,
    pub explicit: bool,
    /// Key prefix of the catalog.
    pub prefix: String,
    /// TTL of entries in seconds (0: none).
    pub ttl: u64,
    /// Seconds between TTL refreshes.
    pub ttl_refresh: u64,
    pub deregister: Deregister,
    /// Seconds between full reconciliations (0: only at start and after gaps).
    pub resync: u64,
    /// Tags added to every entry.
    pub tags: Vec<String>,
    /// Containers handled at once.
    pub concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoints: vec![registry::client::DEFAULT_ENDPOINT.to_string()],
            docker_socket: DEFAULT_DOCKER_SOCKET.to_string(),
            hostname: None,
            ip: None,
            internal: false,
            explicit: false,
            prefix: "/services".to_string(),
            ttl: 30,
            ttl_refresh: 10,
            deregister: Deregister::Always,
            resync: 60,
            tags: Vec::new(),
            concurrency: 16,
        }
    }
}

impl Config {
    /// Checks the flags together; nothing runs with an invalid configuration.
    pub fn validate(&self) -> Result<(), Error> {
        check_prefix(&self.prefix)?;
        if let Some(h) = &self.hostname {
            check_hostname(h)?;
        }
        if let Some(ip) = &self.ip {
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| Error::Config(format!("--ip {ip:?} is not an IP address")))?;
        }
        if self.ttl > 0 && (self.ttl_refresh == 0 || self.ttl_refresh >= self.ttl) {
            return Err(Error::Config(format!(
                "--ttl-refresh ({}) must be between 1 and --ttl - 1 ({}), or entries expire between refreshes",
                self.ttl_refresh,
                self.ttl.saturating_sub(1)
            )));
        }
        if self.concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
        Ok(())
    }

    pub fn ttl_refresh_interval(&self) -> Option<Duration> {
        (self.ttl > 0).then(|| Duration::from_secs(self.ttl_refresh))
    }
}

/// A key prefix: absolute, no empty, `.` or `..` segments, no trailing slash needed.
pub fn check_prefix(prefix: &str) -> Result<(), Error> {
    let ok = prefix.starts_with('/')
        && prefix
            .trim_end_matches('/')
            .split('/')
            .skip(1)
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && !prefix.trim_end_matches('/').is_empty();
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "--prefix {prefix:?} must be an absolute key path such as /services"
        )))
    }
}

/// A node name usable inside instance ids.
pub fn check_hostname(h: &str) -> Result<(), Error> {
    if h.contains(':') {
        return Err(Error::Config(format!(
            "--hostname {h:?} must not contain ':' (it separates the parts of instance ids)"
        )));
    }
    check_instance_id(h).map_err(|r| Error::Config(format!("--hostname {h:?}: {r}")))
}

/// This machine's host name (`gethostname`).
pub fn system_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "localhost".to_string();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The first IPv4 address of an interface that is up, not loopback and not a Docker bridge
/// or veth (the address other hosts reach this one at); 127.0.0.1 when there is none.
pub fn default_host_ip() -> String {
    let mut found: Option<(String, String)> = None;
    // SAFETY: getifaddrs fills a linked list we only read and then free with freeifaddrs.
    unsafe {
        let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut ifap) == 0 {
            let mut p = ifap;
            while !p.is_null() {
                let ifa = &*p;
                p = ifa.ifa_next;
                if ifa.ifa_addr.is_null() || (*ifa.ifa_addr).sa_family as i32 != libc::AF_INET {
                    continue;
                }
                let flags = ifa.ifa_flags;
                if flags & libc::IFF_UP as u32 == 0 || flags & libc::IFF_LOOPBACK as u32 != 0 {
                    continue;
                }
                let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                    .to_string_lossy()
                    .into_owned();
                if name.starts_with("docker") || name.starts_with("br-") || name.starts_with("veth")
                {
                    continue;
                }
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if found.is_none() {
                    found = Some((name, ip.to_string()));
                }
            }
            libc::freeifaddrs(ifap);
        }
    }
    found
        .map(|(_, ip)| ip)
        .unwrap_or_else(|| "127.0.0.1".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(Config::default().validate().is_ok());
        let bad = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(|c| c.prefix = "services".into()).contains("--prefix"));
        assert!(bad(|c| c.prefix = "/a//b".into()).contains("--prefix"));
        assert!(bad(|c| c.hostname = Some("a:b".into())).contains("--hostname"));
        assert!(bad(|c| c.ip = Some("nope".into())).contains("--ip"));
        assert!(bad(|c| c.ttl_refresh = 30).contains("--ttl-refresh"));
        let c = Config {
            ttl: 0,
            ttl_refresh: 0,
            ..Config::default()
        };
        assert!(c.validate().is_ok());
        assert_eq!(
            "on-success".parse::<Deregister>(),
            Ok(Deregister::OnSuccess)
        );
        assert!("sometimes".parse::<Deregister>().is_err());
    }

    #[test]
    fn host_facts() {
        assert!(!system_hostname().is_empty());
        assert!(default_host_ip().parse::<std::net::Ipv4Addr>().is_ok());
    }
}
