//! `berth plugin` flags ([`Args`], each with a `BERTH_...` environment variable) and the
//! validated [`Config`] the server runs with.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::error::ConfigError;
use crate::secrets::DEFAULT_KEY_FILE;

/// Where Docker looks for legacy plugins by name: `<dir>/<name>.sock`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/berth.sock";
/// Where volumes are mounted.
pub const DEFAULT_VOLUME_ROOT: &str = "/run/berth/volumes";
/// Range pools come from when `docker network create` gives no `--subnet`.
pub const DEFAULT_POOL_RANGE: &str = "10.90.0.0/16";

/// Flags of `berth plugin`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Registry client URLs, comma-separated.
    #[arg(long, env = "BERTH_ENDPOINTS", default_value = "http://127.0.0.1:2379")]
    pub endpoints: String,
    /// Unix socket to serve on. Docker finds the plugin by the file name: berth.sock is the
    /// driver `berth` (`-d berth`, `--ipam-driver berth`, `volume-driver=berth`).
    #[arg(long, env = "BERTH_PLUGIN_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The cluster key secrets are encrypted with (made by `berth secret create`).
    #[arg(long, env = "BERTH_SECRET_KEY_FILE", default_value = DEFAULT_KEY_FILE)]
    pub key_file: PathBuf,
    /// Directory where volumes are mounted (each one a tmpfs).
    #[arg(long, env = "BERTH_VOLUME_ROOT", default_value = DEFAULT_VOLUME_ROOT)]
    pub volume_root: PathBuf,
    /// This host's name in the registry (volume definitions are per host); default: the
    /// host name.
    #[arg(long, env = "BERTH_NODE")]
    pub node: Option<String>,
    /// IPv4 range that pools come from when a network is created without --subnet.
    #[arg(long, env = "BERTH_IPAM_DEFAULT_POOL", default_value = DEFAULT_POOL_RANGE)]
    pub ipam_default_pool: String,
    /// Prefix length of the pools taken from --ipam-default-pool.
    #[arg(long, env = "BERTH_IPAM_POOL_SIZE", default_value_t = 24)]
    pub ipam_pool_size: u8,
    /// The address other hosts reach this one on for VXLAN (UDP 4789); default: the source
    /// address of this host's default route.
    #[arg(long, env = "BERTH_VTEP_ADDR")]
    pub vtep_addr: Option<String>,
    /// Docker's API socket: networks recorded in the registry are created in this Docker
    /// (none: "none").
    #[arg(
        long,
        env = "DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock"
    )]
    pub docker: String,
}

impl Args {
    /// Defaults (an `Args` parsed from no flags and no environment).
    pub fn defaults() -> Args {
        Args {
            endpoints: "http://127.0.0.1:2379".into(),
            socket: DEFAULT_SOCKET.into(),
            key_file: DEFAULT_KEY_FILE.into(),
            volume_root: DEFAULT_VOLUME_ROOT.into(),
            node: None,
            ipam_default_pool: DEFAULT_POOL_RANGE.into(),
            ipam_pool_size: 24,
            vtep_addr: None,
            docker: "unix:///var/run/docker.sock".into(),
        }
    }

    /// Validates the flags.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let endpoints = registry::client::split_endpoints(&self.endpoints);
        registry::client::Client::new(&endpoints).map_err(ConfigError::Endpoints)?;
        if !self.socket.is_absolute() || self.socket.file_name().is_none() {
            return Err(ConfigError::Socket(self.socket.clone()));
        }
        if !self.volume_root.is_absolute() {
            return Err(ConfigError::VolumeRoot(self.volume_root.clone()));
        }
        let node = match &self.node {
            Some(n) => n.clone(),
            None => hostname(),
        };
        if !is_dns_label(&node) {
            return Err(ConfigError::Node(node));
        }
        let range: Ipv4Net = self
            .ipam_default_pool
            .trim()
            .parse()
            .map_err(|_| ConfigError::DefaultPool(self.ipam_default_pool.clone()))?;
        let range = range.trunc();
        if self.ipam_pool_size < range.prefix_len() || self.ipam_pool_size > 30 {
            return Err(ConfigError::PoolSize {
                size: self.ipam_pool_size,
                min: range.prefix_len(),
            });
        }
        let vtep = match self.vtep_addr.as_deref().map(str::trim) {
            Some(a) => Some(
                a.parse::<Ipv4Addr>()
                    .ok()
                    .filter(|ip| !ip.is_unspecified() && !ip.is_multicast() && !ip.is_broadcast())
                    .ok_or_else(|| ConfigError::Vtep(a.to_string()))?,
            ),
            None => default_route_source(),
        };
        let docker = match self.docker.trim() {
            "" | "none" => None,
            d => Some(PathBuf::from(d.strip_prefix("unix://").unwrap_or(d))),
        };
        Ok(Config {
            endpoints,
            vtep,
            docker,
            socket: self.socket.clone(),
            key_file: self.key_file.clone(),
            volume_root: self.volume_root.clone(),
            node,
            default_pool: range,
            pool_size: self.ipam_pool_size,
        })
    }
}

/// What the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub endpoints: Vec<String>,
    /// For logs; the server serves the listener it is given.
    pub socket: PathBuf,
    pub key_file: PathBuf,
    pub volume_root: PathBuf,
    pub node: String,
    pub default_pool: Ipv4Net,
    pub pool_size: u8,
    /// This host's VXLAN tunnel endpoint (None: no route to guess it from; networks then
    /// cannot be created here).
    pub vtep: Option<Ipv4Addr>,
    /// Docker's socket, if networks are to be replicated into a local Docker.
    pub docker: Option<PathBuf>,
}

/// The source address the kernel picks for the default route (a UDP "connect" sends
/// nothing), or None without one.
pub fn default_route_source() -> Option<Ipv4Addr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:4789").ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// The kernel's host name (lower case), or `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_ascii_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub use registry::catalog::is_dns_label;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let mut a = Args::defaults();
        a.node = Some("host-1".into());
        let c = a.config().unwrap();
        assert_eq!(c.default_pool.to_string(), "10.90.0.0/16");
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(is_dns_label(&Args::defaults().config().unwrap().node));
    }

    #[test]
    fn bad_flags() {
        let base = || {
            let mut a = Args::defaults();
            a.node = Some("h".into());
            a
        };
        let mut a = base();
        a.socket = "berth.sock".into();
        assert!(matches!(a.config(), Err(ConfigError::Socket(_))));
        let mut a = base();
        a.volume_root = "vols".into();
        assert!(matches!(a.config(), Err(ConfigError::VolumeRoot(_))));
        let mut a = base();
        a.node = Some("a_b".into());
        assert!(matches!(a.config(), Err(ConfigError::Node(_))));
        let mut a = base();
        a.ipam_default_pool = "x".into();
        assert!(matches!(a.config(), Err(ConfigError::DefaultPool(_))));
        let mut a = base();
        a.ipam_pool_size = 8;
        assert!(matches!(a.config(), Err(ConfigError::PoolSize { .. })));
        let mut a = base();
        a.vtep_addr = Some("224.0.0.1".into());
        assert!(matches!(a.config(), Err(ConfigError::Vtep(_))));
        let mut a = base();
        a.vtep_addr = Some("10.0.0.300".into());
        assert!(matches!(a.config(), Err(ConfigError::Vtep(_))));
        let mut a = base();
        a.vtep_addr = Some("192.168.77.2".into());
        a.docker = "none".into();
        let c = a.config().unwrap();
        assert_eq!(c.vtep, Some("192.168.77.2".parse().unwrap()));
        assert_eq!(c.docker, None);
        let mut a = base();
        a.endpoints = "ftp://x".into();
        assert!(matches!(a.config(), Err(ConfigError::Endpoints(_))));
    }
}
