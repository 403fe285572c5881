//! Command-line flags of `berth registrator` and `berth announce` (clap), turned into
//! [`Config`] and [`AnnounceConfig`]. Every flag has a `BERTH_*` environment variable.

use std::time::Duration;

use clap::Args;

use crate::announce::{AnnounceConfig, ServiceSpec};
use crate::checks::Check;
use crate::config::{check_hostname, system_hostname, Config, Deregister, DEFAULT_DOCKER_SOCKET};
use crate::error::Error;
use crate::model::Proto;

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// `berth registrator`: registers running containers in the catalog from Docker events.
#[derive(Args, Debug, Clone)]
pub struct RegistratorArgs {
    /// Registry client URLs, comma-separated.
    #[arg(long, env = "BERTH_ENDPOINTS", default_value = registry::client::DEFAULT_ENDPOINT)]
    pub endpoints: String,
    /// Docker Engine API socket.
    #[arg(long, env = "BERTH_DOCKER_SOCKET", default_value = DEFAULT_DOCKER_SOCKET)]
    pub docker_socket: String,
    /// This node's name in entries and instance ids (default: the host name).
    #[arg(long, env = "BERTH_HOSTNAME")]
    pub hostname: Option<String>,
    /// Address to register for published ports (default: the binding's address, else the
    /// first non-loopback IPv4 address of this host).
    #[arg(long, env = "BERTH_IP")]
    pub ip: Option<String>,
    /// Register the container's own address and exposed ports (on SERVICE_NETWORK or its
    /// first user network) instead of published ports.
    #[arg(long, env = "BERTH_INTERNAL")]
    pub internal: bool,
    /// Only register containers that set SERVICE_NAME (or SERVICE_<port>_NAME).
    #[arg(long, env = "BERTH_EXPLICIT")]
    pub explicit: bool,
    /// Key prefix of the service catalog.
    #[arg(long, env = "BERTH_PREFIX", default_value = "/services")]
    pub prefix: String,
    /// TTL of entries in seconds; 0 for none.
    #[arg(long, env = "BERTH_TTL", default_value_t = 30)]
    pub ttl: u64,
    /// Seconds between TTL refreshes (less than --ttl).
    #[arg(long, env = "BERTH_TTL_REFRESH", default_value_t = 10)]
    pub ttl_refresh: u64,
    /// When to remove a stopped container's entries: "always" or "on-success" (exit 0 only;
    /// a failed container's entries expire with their TTL).
    #[arg(long, env = "BERTH_DEREGISTER", default_value = "always")]
    pub deregister: Deregister,
    /// Seconds between full reconciliations with Docker and the registry; 0 for none.
    #[arg(long, env = "BERTH_RESYNC", default_value_t = 60)]
    pub resync: u64,
    /// Tags added to every entry, comma-separated.
    #[arg(long, env = "BERTH_TAGS", default_value = "")]
    pub tags: String,
}

impl RegistratorArgs {
    pub fn config(&self) -> Result<Config, Error> {
        let c = Config {
            endpoints: vec![self.endpoints.clone()],
            docker_socket: self.docker_socket.clone(),
            hostname: self.hostname.clone(),
            ip: self.ip.clone(),
            internal: self.internal,
            explicit: self.explicit,
            prefix: self.prefix.clone(),
            ttl: self.ttl,
            ttl_refresh: self.ttl_refresh,
            deregister: self.deregister,
            resync: self.resync,
            tags: split_list(&self.tags),
            ..Config::default()
        };
        c.validate()?;
        Ok(c)
    }
}

/// `berth announce`: keeps one catalog key alive while a container runs or a check passes.
#[derive(Args, Debug, Clone)]
pub struct AnnounceArgs {
    /// Registry client URLs, comma-separated.
    #[arg(long, env = "BERTH_ENDPOINTS", default_value = registry::client::DEFAULT_ENDPOINT)]
    pub endpoints: String,
    /// Key to announce (with --value), e.g. /services/website/apache1.
    #[arg(
        long,
        env = "BERTH_KEY",
        requires = "value",
        conflicts_with = "service"
    )]
    pub key: Option<String>,
    /// Value of --key, e.g. '{"host": "10.0.0.5", "port": 8080}'.
    #[arg(long, env = "BERTH_VALUE", requires = "key")]
    pub value: Option<String>,
    /// Service name (a DNS label); with --port (and --host) builds the catalog key and value.
    #[arg(long, env = "BERTH_SERVICE", requires = "port")]
    pub service: Option<String>,
    /// Address of the instance (default: the first non-loopback IPv4 address of this host).
    #[arg(long, env = "BERTH_HOST")]
    pub host: Option<String>,
    /// Port of the instance.
    #[arg(long, env = "BERTH_PORT", requires = "service")]
    pub port: Option<u16>,
    /// Instance id (default: <hostname>:<bound container or service>:<port>).
    #[arg(long, env = "BERTH_ID")]
    pub id: Option<String>,
    /// Node name in the value and the default id (default: the host name).
    #[arg(long, env = "BERTH_HOSTNAME")]
    pub hostname: Option<String>,
    /// Catalog prefix for --service.
    #[arg(long, env = "BERTH_PREFIX", default_value = "/services")]
    pub prefix: String,
    /// Tags, comma-separated.
    #[arg(long, env = "BERTH_TAGS", default_value = "")]
    pub tags: String,
    /// Deployment color: blue or green.
    #[arg(long, env = "BERTH_COLOR")]
    pub color: Option<String>,
    /// HTTP route: host name.
    #[arg(long, env = "BERTH_HTTP_DOMAIN")]
    pub http_domain: Option<String>,
    /// HTTP route: path prefix.
    #[arg(long, env = "BERTH_HTTP_PATH")]
    pub http_path: Option<String>,
    /// tcp or udp.
    #[arg(long, env = "BERTH_PROTO", default_value = "tcp", value_parser = ["tcp", "udp"])]
    pub proto: String,
    /// Relative weight for load balancing.
    #[arg(long, env = "BERTH_WEIGHT")]
    pub weight: Option<u32>,
    /// TTL of the key in seconds (0: none).
    #[arg(long, env = "BERTH_TTL", default_value_t = 60)]
    pub ttl: u64,
    /// Seconds between refreshes (less than --ttl).
    #[arg(long, env = "BERTH_INTERVAL", default_value_t = 45)]
    pub interval: u64,
    /// Announce only while this passes: tcp://HOST:PORT or http://HOST:PORT/PATH.
    #[arg(long, env = "BERTH_CHECK")]
    pub check: Option<String>,
    /// Seconds between checks.
    #[arg(long, env = "BERTH_CHECK_INTERVAL", default_value_t = 2)]
    pub check_interval: u64,
    /// Follow this container: announce while it runs, withdraw and exit when it stops.
    #[arg(long, env = "BERTH_BIND_CONTAINER")]
    pub bind_container: Option<String>,
    /// Docker Engine API socket (for --bind-container).
    #[arg(long, env = "BERTH_DOCKER_SOCKET", default_value = DEFAULT_DOCKER_SOCKET)]
    pub docker_socket: String,
}

impl AnnounceArgs {
    pub fn config(&self) -> Result<AnnounceConfig, Error> {
        let (key, value) = match (&self.key, &self.value, &self.service) {
            (Some(k), Some(v), None) => (k.clone(), v.clone()),
            (None, None, Some(service)) => {
                let hostname = self.hostname.clone().unwrap_or_else(system_hostname);
                check_hostname(&hostname)?;
                ServiceSpec {
                    prefix: self.prefix.clone(),
                    service: service.clone(),
                    id: self.id.clone(),
                    host: self
                        .host
                        .clone()
                        .unwrap_or_else(crate::config::default_host_ip),
                    port: self.port.unwrap_or(0),
                    hostname,
                    container: self.bind_container.clone(),
                    tags: split_list(&self.tags),
                    color: self.color.clone(),
                    http_domain: self.http_domain.clone(),
                    http_path: self.http_path.clone(),
                    proto: Some(if self.proto == "udp" {
                        Proto::Udp
                    } else {
                        Proto::Tcp
                    }),
                    weight: self.weight,
                }
                .entry()?
            }
            _ => {
                return Err(Error::Config(
                    "give either --key and --value, or --service and --port (with --host)".into(),
                ))
            }
        };
        let mut c = AnnounceConfig::new(vec![self.endpoints.clone()], key, value);
        c.ttl = self.ttl;
        c.interval = Duration::from_secs(self.interval);
        c.check = self
            .check
            .as_deref()
            .map(Check::parse)
            .transpose()
            .map_err(Error::Config)?;
        c.check_interval = Duration::from_secs(self.check_interval.max(1));
        c.check_timeout = c.check_interval.min(Duration::from_secs(2));
        c.bind_container = self.bind_container.clone();
        c.docker_socket = self.docker_socket.clone();
        c.validate()?;
        Ok(c)
    }
}
