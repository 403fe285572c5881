//! Typed errors of the plugins crate. Each message is what Docker (and so the user of
//! `docker network create` / `docker run`) sees in the plugin's `{"Err": ...}`.

use std::path::PathBuf;

use registry::client::ClientError;

/// A flag or setting that cannot be used; the message names the flag and what is expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--endpoints: {0}")]
    Endpoints(#[source] ClientError),
    #[error("--socket {0:?}: expected an absolute path such as /run/docker/plugins/berth.sock")]
    Socket(PathBuf),
    #[error("--volume-root {0:?}: expected an absolute directory path")]
    VolumeRoot(PathBuf),
    #[error("--ipam-default-pool {0:?}: expected an IPv4 CIDR such as 10.90.0.0/16")]
    DefaultPool(String),
    #[error("--ipam-pool-size {size}: expected a prefix length between {min} and 30")]
    PoolSize { size: u8, min: u8 },
    #[error("--node {0:?}: expected a DNS label (letters, digits and hyphens)")]
    Node(String),
}

/// Why the plugin server stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("I/O error on {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why an IPAM request was refused.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("registry: {0}")]
    Registry(#[from] ClientError),
    #[error("address space {0:?} is not served by berth (use \"berth\", or leave it empty)")]
    AddressSpace(String),
    #[error("invalid subnet {0:?}: expected an IPv4 CIDR such as 10.90.0.0/24")]
    Subnet(String),
    #[error("invalid --ip-range {sub:?}: expected a CIDR inside the subnet {pool}")]
    SubPool { sub: String, pool: String },
    #[error("IPv6 pools are not supported by berth yet")]
    V6,
    #[error(
        "subnet {subnet} overlaps {existing} (pool {pool_id}), already allocated in the registry"
    )]
    Overlap {
        subnet: String,
        existing: String,
        pool_id: String,
    },
    #[error("no free /{size} left in the default pool {range}: pass --subnet")]
    NoFreePool { range: String, size: u8 },
    #[error("missing PoolID")]
    MissingPoolId,
    #[error(
        "unknown pool {0:?}: it does not exist in the registry (released, or never requested)"
    )]
    UnknownPool(String),
    #[error("invalid address {0:?}: expected an IP address such as 10.90.0.5")]
    Address(String),
    #[error("address {addr} is outside pool {pool}")]
    OutOfRange { addr: String, pool: String },
    #[error("address {addr} is the network or broadcast address of pool {pool}")]
    Reserved { addr: String, pool: String },
    #[error("address {addr} is already allocated in pool {pool}")]
    InUse { addr: String, pool: String },
    #[error("address {addr} is not allocated in pool {pool}")]
    NotAllocated { addr: String, pool: String },
    #[error("no free address left in pool {0}")]
    Exhausted(String),
    #[error("gave up after repeated conflicts in the registry ({0}); retry")]
    Contended(String),
    #[error("stored IPAM state under {key} is corrupt: {detail}")]
    Corrupt { key: String, detail: String },
}

/// Why a secret or config could not be created, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("registry: {0}")]
    Registry(#[from] ClientError),
    #[error("invalid {kind} name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")]
    Name { kind: &'static str, name: String },
    #[error("{kind} {name} is too large: more than the limit of {max} bytes (500 KiB)")]
    TooLarge {
        kind: &'static str,
        name: String,
        size: usize,
        max: usize,
    },
    #[error("{kind} {name} is empty")]
    Empty { kind: &'static str, name: String },
    #[error("config {0} is not UTF-8 text; put binary data in a secret")]
    NotText(String),
    #[error(
        "{kind} {name} already exists ({kind}s are immutable: remove it first, or use a new name)"
    )]
    Exists { kind: &'static str, name: String },
    #[error("{kind} {name} does not exist")]
    Missing { kind: &'static str, name: String },
    #[error("cluster key {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    #[error("secret {name} cannot be decrypted with the cluster key {key}: it was encrypted with another key, or the stored value was altered")]
    Decrypt { name: String, key: PathBuf },
    #[error("secret {0} is stored in an unknown format")]
    Format(String),
    #[error("reading {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a volume request was refused.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("registry: {0}")]
    Registry(#[from] ClientError),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("missing volume Name")]
    MissingName,
    #[error("invalid volume name {0:?}: use letters, digits, '-', '_' or '.' (at most 128)")]
    Name(String),
    #[error("volume option {0}")]
    Option(String),
    #[error("volume {0} does not exist")]
    Unknown(String),
    #[error("volume {0} already exists with other options")]
    Conflict(String),
    #[error("volume {name} is mounted (by {ids}); unmount it first")]
    InUse { name: String, ids: String },
    #[error("stored volume {key} is corrupt: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
