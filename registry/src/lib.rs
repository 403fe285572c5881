//! berth's registry: a key-value store that speaks etcd's v2 HTTP API, replicated with
//! openraft and persisted in RocksDB.
//!
//! Layout, from the pure core outwards:
//!
//! - [`v2`]: etcd v2 store semantics as plain data structures (tree, TTLs, event history,
//!   watchers, request parsing, errors). Deterministic; no I/O, no clock.
//! - [`raft`]: openraft wiring: the RocksDB log store, the state machine around [`v2::Store`],
//!   and the peer RPC client.
//! - [`node`]: a running member: bootstrap or join, leader routing (followers forward writes),
//!   quorum reads, membership changes, TTL expiry proposed by the leader.
//! - [`http`]: the client API handlers; [`peer`]: the peer API handlers.
//! - [`server`]: [`run`] ties listeners, node and shutdown together.
//! - [`config`]: etcd-named flags, member and cluster ids.
//! - [`catalog`]: the service catalog of SPEC §3 (instances, blue-green routes, VIP claims)
//!   as pure state, and the watch loop that keeps a copy current; read by DNS and the proxy.
//! - [`client`] and [`ctl`]: the v2 client used by every other berth component, and
//!   `berth ctl`, an etcdctl v2 work-alike.

pub mod catalog;
pub mod client;
pub mod config;
pub mod ctl;
pub mod error;
pub mod http;
pub mod node;
pub mod peer;
pub mod raft;
pub mod server;
pub mod stats;
pub mod v2;

pub use config::{ClusterState, Config};
pub use error::{ConfigError, Error};
pub use node::Node;
pub use server::run;
