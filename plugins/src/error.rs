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
    #[error("--vtep-addr {0:?}: expected this host's unicast IPv4 address, such as 192.168.1.10")]
    Vtep(String),
    #[error("{0}")]
    Netlink(String),
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
    #[error("berth.join={pool_id} does not match the requested subnet {subnet}")]
    JoinMismatch { pool_id: String, subnet: String },
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
    #[error("{kind} {name} is used by volume(s) {volumes} (host/volume): remove them first with docker volume rm")]
    InUse {
        kind: &'static str,
        name: String,
        volumes: String,
    },
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

/// Why a network driver request was refused.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("registry: {0}")]
    Registry(#[from] ClientError),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("docker: {0}")]
    Docker(String),
    #[error("missing NetworkID")]
    MissingNetworkId,
    #[error("missing EndpointID")]
    MissingEndpointId,
    #[error("berth networks are IPv4 only: drop --ipv6")]
    V6,
    #[error(
        "no IPv4 pool in the request: create the network with --ipam-driver berth --subnet CIDR"
    )]
    NoPool,
    #[error("{0} IPv4 pools given: a berth network takes exactly one --subnet")]
    ManyPools(usize),
    #[error("address space {0:?} is not berth's: create the network with --ipam-driver berth so addresses are unique across hosts")]
    ForeignIpam(String),
    #[error("invalid subnet {0:?}")]
    Subnet(String),
    #[error(
        "the network has no gateway; berth's IPAM always gives one, so use --ipam-driver berth"
    )]
    NoGateway,
    #[error("invalid gateway {0:?}: expected an address inside the subnet")]
    Gateway(String),
    #[error("invalid driver options {0}: -o values must be strings")]
    Options(String),
    #[error(
        "unknown driver option {0:?}: berth takes berth.vni and com.docker.network.driver.mtu"
    )]
    UnknownOption(String),
    #[error("invalid berth.vni {0:?}: expected a VXLAN id from 1 to 16777215")]
    Vni(String),
    #[error("VNI {0} is already used by another berth network: pick another berth.vni")]
    VniTaken(u32),
    #[error("no free VNI left")]
    NoFreeVni,
    #[error("invalid com.docker.network.driver.mtu {0:?}: expected a number")]
    MtuValue(String),
    #[error("MTU {requested} does not fit: the underlay leaves at most {max} after VXLAN's 50 bytes (minimum 576)")]
    Mtu { requested: u32, max: u32 },
    #[error("berth.join={join} does not name this network's subnet ({net})")]
    Join { join: String, net: String },
    #[error("network {net} cannot be joined: {detail}")]
    JoinMismatch { net: String, detail: String },
    #[error("network {0} is not in the registry (it was removed on another host); remove it here with docker network rm")]
    UnknownNetwork(String),
    #[error("a berth network for subnet {0} already exists: docker network create it once, the plugin creates it on every other host")]
    Exists(String),
    #[error("network {id} is unknown to this plugin (not created through it, or already removed)")]
    UnknownDockerNetwork { id: String },
    #[error(
        "network {net} still has endpoints on other hosts ({hosts}): remove those containers first"
    )]
    RemoteEndpoints { net: String, hosts: String },
    #[error(
        "invalid interface address {0:?}: expected an IPv4 address inside the network's subnet"
    )]
    Address(String),
    #[error("invalid MAC address {0:?}: expected a unicast aa:bb:cc:dd:ee:ff")]
    Mac(String),
    #[error("no VTEP address: pass --vtep-addr (the address other hosts reach this one on)")]
    NoVtep,
    #[error("endpoint {0} is unknown (never created, or already deleted)")]
    UnknownEndpoint(String),
    #[error("stored network state under {key} is corrupt: {detail}")]
    Corrupt { key: String, detail: String },
}
