//! `berth plugin`: a Docker plugin (the legacy plugin protocol: JSON over HTTP on
//! `/run/docker/plugins/berth.sock`) that gives plain `docker run` registry-backed IPAM and
//! Swarm-style secrets and configs; plus `berth secret` and `berth config`.
//!
//! `POST /Plugin.Activate` answers `{"Implements": ["NetworkDriver", "IpamDriver",
//! "VolumeDriver"]}`. Every endpoint of the three driver APIs is routed; an unknown path
//! answers 404 (what Docker takes as "this optional method is not supported"), a method other
//! than POST 405, and a failure 500 with `{"Err": "<reason>"}` (IPAM errors carry the reason
//! under `Error` as well: see [`protocol`] for why). A body that is not valid JSON for the
//! endpoint is refused with its parse error and changes nothing.
//!
//! # What works
//!
//! - **NetworkDriver**: `docker network create -d berth --ipam-driver berth --subnet
//!   10.90.0.0/24 appnet` makes a VXLAN overlay that spans every host running the plugin
//!   against the same registry (see [`network`] for the model, [`overlay`] for the
//!   kernel side, [`netdriver`] for the calls and the follow loop). The network is created
//!   once: every other plugin creates it in its own Docker (same name, subnet and options).
//!   Endpoints on other hosts are reached through static FDB and neighbour entries kept in
//!   step with the registry by watch; the MTU leaves room for VXLAN's 50 bytes.
//! - **IpamDriver**: `--ipam-driver berth --subnet 10.90.0.0/24 ...`, also with other
//!   network drivers (e.g. `bridge`). Pools and addresses are allocated in the registry by
//!   compare-and-swap, so two hosts never hand out one address and a subnet overlapping an
//!   existing pool is refused; a berth overlay's pool is shared by its hosts and released by
//!   the last. IPv4 only (an IPv6 pool request is refused with a clear error).
//! - **VolumeDriver**: volumes of secrets and configs on a read-only tmpfs, see
//!   [`volume`]; `berth secret create|ls|rm` and `berth config create|ls|rm`, see [`secrets`].
//!
//! # What is not done yet
//!
//! - Port publishing (`-p`) and outbound NAT on berth networks: a container that needs
//!   either also joins a bridge network, as with Swarm's overlays.
//!
//! # Registry key schema
//!
//! | key | value | written |
//! |---|---|---|
//! | `/_berth/ipam/pools` | JSON `{"<pool-id>": {"subnet", "sub_pool"?, "gateway", "uid", "options"?, "hosts"?}}` | replaced with `prevIndex` (first with `prevExist=false`): the overlap check and the claim are one atomic step |
//! | `/_berth/ipam/addrs/<pool-id>/<ip>` | JSON `{"gateway": bool}` | `prevExist=false`: the first creator owns the address; deleted on release |
//! | `/_berth/networks/<net>` | JSON [`network::NetworkRecord`] (`name`, `subnet`, `gateway`, `vni`, `mtu`, `options`, `created_by`) | `prevExist=false` at `CreateNetwork`; the name added by `prevValue` once Docker shows it; deleted at `DeleteNetwork` |
//! | `/_berth/vnis/<vni>` | the network | `prevExist=false`: the VNI claim |
//! | `/_berth/endpoints/<net>/<endpoint-id>` | JSON [`network::EndpointRecord`] (`ip`, `mac`, `vtep`, `node`) | at `CreateEndpoint`; deleted at `DeleteEndpoint` |
//! | `/_berth/vteps/<node>` | the host's VTEP address | at start |
//! | `/_berth/netids/<node>/<docker-network-id>` | JSON `{"net", "vni"}` | at `CreateNetwork`; deleted at `DeleteNetwork` |
//! | `/_berth/secrets/<name>` | `xchacha20poly1305:<base64(nonce ‖ ciphertext ‖ tag)>` | `prevExist=false` (immutable) |
//! | `/_berth/configs/<name>` | the config's text | `prevExist=false` (immutable) |
//! | `/_berth/volumes/<node>/<volume>` | JSON `{"files": [{"kind", "name", "target", "mode", "uid", "gid"}]}` | `prevExist=false` at `Create`; deleted at `Remove` |
//!
//! A pool id is the subnet with `-` for `/` (`10.90.0.0-24`); it also names the network
//! (`<net>`), since Docker's network ids differ from host to host. The cluster key that encrypts
//! secrets is never in the registry (`--key-file`, default `/var/lib/berth/secrets.key`).
//!
//! # Layout
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | flags ([`Args`]) and the validated [`Config`] |
//! | [`protocol`] | serde types of every endpoint, the method table, body decoding |
//! | [`ipam`] | pure pool/address decisions and their compare-and-swap in the registry |
//! | [`network`] | pure overlay model: records, validation, VNI, MTU, names, remote entries |
//! | [`overlay`] | the kernel side by netlink: bridge, VXLAN device, veths, FDB and neighbours |
//! | [`firewall`] | the iptables `FORWARD` accept rule each berth bridge needs |
//! | [`netdriver`] | the NetworkDriver calls, and the loop following other hosts and Docker |
//! | [`secrets`] | the cluster key (AEAD), secrets and configs in the registry, the CLI |
//! | [`volume`] | volume options (pure), definitions, tmpfs mount and wipe |
//! | [`server`] | [`run`], [`bind`], and [`Plugin::handle`] (request -> answer) |
//! | [`error`] | typed errors |

pub mod config;
pub mod error;
pub mod firewall;
pub mod ipam;
pub mod netdriver;
pub mod network;
pub mod overlay;
pub mod protocol;
pub mod secrets;
pub mod server;
pub mod volume;

pub use config::{Args, Config};
pub use error::{ConfigError, Error, IpamError, NetworkError, SecretError, VolumeError};
pub use netdriver::Networks;
pub use secrets::{run_config, run_secret, ClusterKey, ConfigArgs, Kind, SecretArgs};
pub use server::{bind, run, Answer, Plugin};
