//! Typed errors of the proxy crate.

use std::net::SocketAddr;

/// A flag that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--endpoints: {0}")]
    Endpoints(#[from] registry::client::ClientError),
    #[error("--vip-range {0:?} is not an IPv4 CIDR such as 127.77.0.0/16")]
    VipRange(String),
    #[error("--{flag} must be greater than 0")]
    Zero { flag: &'static str },
    #[error("--vip-interface {0:?} is not an interface name (1-15 characters, no '/' or space)")]
    Interface(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("--health-path {0:?} must start with /")]
    HealthPath(String),
    #[error("--threads {0} is more than {max}; use 0 for one thread per CPU", max = crate::config::MAX_THREADS)]
    Threads(usize),
}

/// Why the proxy could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind {addr}: {source}; is another proxy running there? choose another address with {flag}")]
    Bind {
        addr: SocketAddr,
        /// The flag that gave the address.
        flag: &'static str,
        source: std::io::Error,
    },
    #[error("Docker: {0}")]
    Docker(String),
    #[error("registry: {0}")]
    Registry(#[from] registry::client::ClientError),
    #[error("{0}")]
    Deploy(String),
    #[error("cannot start an HTTP worker thread: {0}")]
    Worker(std::io::Error),
}
