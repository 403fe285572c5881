//! `berth proxy` flags ([`Args`], each with a `BERTH_...` environment variable) and the
//! validated [`Config`].

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::balance::Policy;
use crate::error::ConfigError;

/// Most HTTP worker threads `--threads` accepts.
pub const MAX_THREADS: usize = 256;

/// Flags of `berth proxy`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Registry client URLs, comma-separated.
    #[arg(long, env = "BERTH_ENDPOINTS", default_value = "http://127.0.0.1:2379")]
    pub endpoints: String,
    /// Address for HTTP/1.1 and h2c clients.
    #[arg(long, env = "BERTH_HTTP_LISTEN", default_value = "127.0.0.1:8800")]
    pub http_listen: SocketAddr,
    /// Address for HTTPS clients (HTTP/1.1 and HTTP/2 by ALPN); needs --tls-cert and --tls-key.
    #[arg(long, env = "BERTH_TLS_LISTEN", requires_all = ["tls_cert", "tls_key"])]
    pub tls_listen: Option<SocketAddr>,
    /// PEM file with the certificate chain served on --tls-listen.
    #[arg(long, env = "BERTH_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM file with the private key of --tls-cert.
    #[arg(long, env = "BERTH_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Address for /metrics (Prometheus), /routes (the routing table as JSON) and /health;
    /// none by default.
    #[arg(long, env = "BERTH_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Services' VIPs in this range get TCP listeners on VIP:port (L4). 127.0.0.0/8
    /// addresses need no set-up; others must be on a local interface (e.g. a dummy
    /// `berth0`).
    #[arg(long, env = "BERTH_VIP_RANGE", default_value = "127.77.0.0/16")]
    pub vip_range: String,
    /// Dummy interface that VIPs outside 127.0.0.0/8 are added to (by netlink; needs root),
    /// so that containers reach them through their default route.
    #[arg(long, env = "BERTH_VIP_INTERFACE", default_value = "berth0")]
    pub vip_interface: String,
    /// Do not open VIP listeners (HTTP routing only).
    #[arg(long, env = "BERTH_NO_VIP_LISTENERS")]
    pub no_vip_listeners: bool,
    /// How requests and connections are spread over a service's instances.
    #[arg(long, env = "BERTH_BALANCE", value_enum, default_value = "round-robin")]
    pub balance: Policy,
    /// Milliseconds to connect to an instance before trying another.
    #[arg(long, env = "BERTH_CONNECT_TIMEOUT_MS", default_value_t = 1000)]
    pub connect_timeout_ms: u64,
    /// Seconds to wait for an instance's response headers before answering 504.
    #[arg(long, env = "BERTH_RESPONSE_TIMEOUT", default_value_t = 60)]
    pub response_timeout: u64,
    /// Seconds a client has to send a request's headers (slowloris guard).
    #[arg(long, env = "BERTH_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout: u64,
    /// Largest request body in bytes (413 beyond it); 0 for no limit.
    #[arg(long, env = "BERTH_MAX_BODY", default_value_t = 64 << 20)]
    pub max_body: u64,
    /// Further instances tried when connecting to one fails (requests without a body only:
    /// a streamed body cannot be sent twice).
    #[arg(long, env = "BERTH_RETRIES", default_value_t = 2)]
    pub retries: u32,
    /// Milliseconds an instance is left out after a failed connect; doubles with each
    /// consecutive failure, at most 30 s.
    #[arg(long, env = "BERTH_EJECT_MS", default_value_t = 1000)]
    pub eject_ms: u64,
    /// Active health check: GET this path on every instance with an HTTP route; a failure or
    /// a status >= 500 ejects it. Off by default (passive checks only).
    #[arg(long, env = "BERTH_HEALTH_PATH")]
    pub health_path: Option<String>,
    /// Milliseconds between active health checks.
    #[arg(long, env = "BERTH_HEALTH_INTERVAL_MS", default_value_t = 2000)]
    pub health_interval_ms: u64,
    /// Log every request (target `berth::access`: client, method, host, path, status,
    /// service, instance, duration).
    #[arg(long, env = "BERTH_ACCESS_LOG")]
    pub access_log: bool,
    /// Seconds open connections get to finish on shutdown.
    #[arg(long, env = "BERTH_DRAIN", default_value_t = 5)]
    pub drain: u64,
    /// Threads serving HTTP clients, each with its own event loop and keep-alive pool
    /// (HAProxy's nbthread); 0 for one per CPU.
    #[arg(long, env = "BERTH_PROXY_THREADS", default_value_t = 0)]
    pub threads: usize,
}

impl Args {
    /// Defaults, as `berth up` uses them.
    pub fn defaults() -> Args {
        Args {
            endpoints: "http://127.0.0.1:2379".into(),
            http_listen: "127.0.0.1:8800".parse().expect("literal"),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            admin_listen: None,
            vip_range: "127.77.0.0/16".into(),
            vip_interface: "berth0".into(),
            no_vip_listeners: false,
            balance: Policy::RoundRobin,
            connect_timeout_ms: 1000,
            response_timeout: 60,
            header_timeout: 10,
            max_body: 64 << 20,
            retries: 2,
            eject_ms: 1000,
            health_path: None,
            health_interval_ms: 2000,
            access_log: false,
            drain: 5,
            threads: 0,
        }
    }

    /// Validates the flags.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let endpoints = registry::client::split_endpoints(&self.endpoints);
        registry::client::Client::new(&endpoints)?;
        let vip_range: Ipv4Net = self
            .vip_range
            .trim()
            .parse()
            .map_err(|_| ConfigError::VipRange(self.vip_range.clone()))?;
        for (flag, v) in [
            ("connect-timeout-ms", self.connect_timeout_ms),
            ("response-timeout", self.response_timeout),
            ("header-timeout", self.header_timeout),
            ("eject-ms", self.eject_ms),
            ("health-interval-ms", self.health_interval_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero { flag });
            }
        }
        if let Some(p) = &self.health_path {
            if !p.starts_with('/') {
                return Err(ConfigError::HealthPath(p.clone()));
            }
        }
        let tls = match (&self.tls_listen, &self.tls_cert, &self.tls_key) {
            (None, _, _) => None,
            (Some(_), Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            (Some(_), _, _) => {
                return Err(ConfigError::Tls(
                    "--tls-listen needs --tls-cert and --tls-key".into(),
                ))
            }
        };
        if self.threads > MAX_THREADS {
            return Err(ConfigError::Threads(self.threads));
        }
        let threads = match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let name = self.vip_interface.trim();
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            return Err(ConfigError::Interface(self.vip_interface.clone()));
        }
        Ok(Config {
            tls,
            endpoints,
            vip_range,
            vip_interface: name.to_string(),
            vip_listeners: !self.no_vip_listeners,
            balance: self.balance,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            response_timeout: Duration::from_secs(self.response_timeout),
            header_timeout: Duration::from_secs(self.header_timeout),
            max_body: (self.max_body > 0).then_some(self.max_body),
            retries: self.retries,
            eject: Duration::from_millis(self.eject_ms),
            health_path: self.health_path.clone(),
            health_interval: Duration::from_millis(self.health_interval_ms),
            access_log: self.access_log,
            drain: Duration::from_secs(self.drain),
            threads,
        })
    }
}

/// What the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub endpoints: Vec<String>,
    /// The HTTPS listener's rustls configuration, when --tls-listen is given.
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    pub vip_range: Ipv4Net,
    pub vip_interface: String,
    pub vip_listeners: bool,
    pub balance: Policy,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub header_timeout: Duration,
    pub max_body: Option<u64>,
    pub retries: u32,
    pub eject: Duration,
    pub health_path: Option<String>,
    pub health_interval: Duration,
    pub access_log: bool,
    pub drain: Duration,
    /// HTTP worker threads (at least 1).
    pub threads: usize,
}

impl Config {
    /// Whether the proxy opens a listener for this VIP.
    pub fn serves_vip(&self, ip: Ipv4Addr) -> bool {
        self.vip_listeners && self.vip_range.contains(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Args::defaults().config().unwrap();
        assert!(c.serves_vip("127.77.1.2".parse().unwrap()));
        assert!(!c.serves_vip("10.0.0.1".parse().unwrap()));
        assert_eq!(c.max_body, Some(64 << 20));
    }

    #[test]
    fn bad_flags() {
        let mut a = Args::defaults();
        a.vip_range = "127.77.0.0/33".into();
        assert!(matches!(a.config(), Err(ConfigError::VipRange(_))));
        let mut a = Args::defaults();
        a.connect_timeout_ms = 0;
        assert!(a
            .config()
            .unwrap_err()
            .to_string()
            .contains("--connect-timeout-ms"));
        let mut a = Args::defaults();
        a.health_path = Some("health".into());
        assert!(matches!(a.config(), Err(ConfigError::HealthPath(_))));
        let mut a = Args::defaults();
        a.tls_listen = Some("127.0.0.1:8443".parse().unwrap());
        a.tls_cert = Some("/nonexistent/cert.pem".into());
        a.tls_key = Some("/nonexistent/key.pem".into());
        let e = a.config().unwrap_err().to_string();
        assert!(e.contains("--tls-cert /nonexistent/cert.pem"), "{e}");
        let mut a = Args::defaults();
        a.threads = MAX_THREADS + 1;
        assert!(a.config().unwrap_err().to_string().contains("--threads"));
        a.threads = 0;
        assert!(a.config().unwrap().threads >= 1);
        let mut a = Args::defaults();
        a.endpoints = "ftp://x".into();
        assert!(matches!(a.config(), Err(ConfigError::Endpoints(_))));
    }
}
