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
//! - **IpamDriver** (complete): `docker network create --ipam-driver berth --subnet
//!   10.90.0.0/24 ...` with any network driver that takes a remote IPAM (e.g. `bridge`).
//!   Pools and addresses are allocated in the registry by compare-and-swap, so two hosts
//!   never hand out one address and a subnet overlapping an existing pool is refused.
//!   IPv4 only (an IPv6 pool request is refused with a clear error).
//! - **VolumeDriver** (complete): volumes of secrets and configs on a read-only tmpfs, see
//!   [`volume`]; `berth secret create|ls|rm` and `berth config create|ls|rm`, see [`secrets`].
//!
//! # What is not done yet
//!
//! - **NetworkDriver**: only `GetCapabilities` (scope `local`) and `DiscoverNew` /
//!   `DiscoverDelete` (accepted, nothing to do) work. `CreateNetwork`, `DeleteNetwork`,
//!   `CreateEndpoint`, `EndpointOperInfo`, `DeleteEndpoint`, `Join`, `Leave`,
//!   `ProgramExternalConnectivity`, `RevokeExternalConnectivity`, `AllocateNetwork` and
//!   `FreeNetwork` decode their request (so malformed JSON is still reported as such) and
//!   answer `{"Err": "... is not implemented yet ..."}`. The VXLAN overlay (netlink),
//!   network and endpoint records in the registry, and cross-host reachability are the
//!   next step; `docker network create -d berth` therefore fails today.
//! - A plugin restart forgets which containers mount which volume: it unmounts its volumes
//!   when it stops, and a later `Unmount` of such a volume just cleans up.
//! - `berth secret rm` does not check whether a volume still refers to the secret (the next
//!   mount of such a volume fails with "secret ... does not exist").
//!
//! # Registry key schema
//!
//! | key | value | written |
//! |---|---|---|
//! | `/_berth/ipam/pools` | JSON `{"<pool-id>": {"subnet", "sub_pool"?, "gateway", "uid", "options"?}}` | replaced with `prevIndex` (first with `prevExist=false`): the overlap check and the claim are one atomic step |
//! | `/_berth/ipam/addrs/<pool-id>/<ip>` | JSON `{"gateway": bool}` | `prevExist=false`: the first creator owns the address; deleted on release |
//! | `/_berth/secrets/<name>` | `xchacha20poly1305:<base64(nonce ‖ ciphertext ‖ tag)>` | `prevExist=false` (immutable) |
//! | `/_berth/configs/<name>` | the config's text | `prevExist=false` (immutable) |
//! | `/_berth/volumes/<node>/<volume>` | JSON `{"files": [{"kind", "name", "target", "mode", "uid", "gid"}]}` | `prevExist=false` at `Create`; deleted at `Remove` |
//!
//! A pool id is the subnet with `-` for `/` (`10.90.0.0-24`). The cluster key that encrypts
//! secrets is never in the registry (`--key-file`, default `/var/lib/berth/secrets.key`).
//!
//! # Layout
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | flags ([`Args`]) and the validated [`Config`] |
//! | [`protocol`] | serde types of every endpoint, the method table, body decoding |
//! | [`ipam`] | pure pool/address decisions and their compare-and-swap in the registry |
//! | [`secrets`] | the cluster key (AEAD), secrets and configs in the registry, the CLI |
//! | [`volume`] | volume options (pure), definitions, tmpfs mount and wipe |
//! | [`server`] | [`run`], [`bind`], and [`Plugin::handle`] (request -> answer) |
//! | [`error`] | typed errors |

pub mod config;
pub mod error;
pub mod ipam;
pub mod protocol;
pub mod secrets;
pub mod server;
pub mod volume;

pub use config::{Args, Config};
pub use error::{ConfigError, Error, IpamError, SecretError, VolumeError};
pub use secrets::{run_config, run_secret, ClusterKey, ConfigArgs, Kind, SecretArgs};
pub use server::{bind, run, Answer, Plugin};
