//! Typed errors of the DNS crate.

use registry::client::ClientError;

/// A flag or setting that cannot be used; the message names the flag and what is expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--endpoints: {0}")]
    Endpoints(#[source] ClientError),
    #[error("--domain {0:?}: expected a DNS name such as `berth.` (labels of letters, digits and hyphens)")]
    Domain(String),
    #[error("--vip-range {0:?}: expected an IPv4 CIDR such as 127.77.0.0/16")]
    VipRange(String),
    #[error("--upstream {0:?}: expected resolver addresses such as 1.1.1.1 or 10.0.0.2:53, comma-separated")]
    Upstream(String),
    #[error("--allow {0:?}: expected networks in CIDR form such as 10.0.0.0/8, comma-separated")]
    Allow(String),
    #[error("--ttl {0}: must be at most 2147483647 seconds")]
    Ttl(u64),
    #[error("--udp-threads {0}: must be at most 64 (0 picks one per CPU core)")]
    UdpThreads(usize),
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("DNS listener failed: {0}")]
    Listener(String),
    #[error("I/O error on {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a query could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolver configured")]
    NoUpstream,
    #[error("every upstream failed: {0}")]
    AllFailed(String),
}

/// Why a VIP could not be claimed or released.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("registry: {0}")]
    Registry(#[from] ClientError),
    #[error("VIP range {0} is exhausted")]
    Exhausted(String),
    #[error("gave up claiming a VIP for {0} after repeated conflicts")]
    Contended(String),
}
