//! `berth proxy`: a reverse proxy whose routing table follows the registry live, and
//! `berth deploy`, blue-green deploys that flip it.
//!
//! The catalog (SPEC §3) is followed by watch ([`registry::catalog`]); every change rebuilds
//! the [`Table`] from scratch and swaps it in atomically, so no request ever sees half a
//! change and nothing is reloaded. HTTP requests are routed by host and path prefix (the
//! instances' `http` field) to the active color's instances; services with a VIP also get TCP
//! listeners on VIP:port (L4).
//!
//! # Layout
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | flags ([`Args`]) and the validated [`Config`] |
//! | [`table`] | pure: catalog -> routing table (host/path routes, VIP listeners) |
//! | [`balance`] | pure: round-robin / least-connections, passive health (ejection) |
//! | [`metrics`] | counters and the Prometheus text |
//! | [`shard`] | per-worker-thread tables and counter slots, so threads never write one cache line |
//! | [`http`] | the L7 request path: forward, retry, upgrade, error replies (I/O) |
//! | [`pool`] | keep-alive HTTP/1.1 connections to instances, returned when a body ends (I/O) |
//! | [`upstream`] | the proxy's own HTTP/1.1 client for bodiless requests, in the request's task (I/O) |
//! | [`tls`] | the HTTPS listener (rustls, ALPN h2/http1.1) |
//! | [`l4`] | VIP listeners and TCP splicing (I/O) |
//! | [`vipnet`] | VIP addresses on the dummy interface `berth0`, by netlink (I/O) |
//! | [`server`] | [`run`]: catalog -> table loop, health checks, admin endpoints |
//! | [`workers`] | the HTTP listener: accept, hand each client to one of `--threads` single-threaded runtimes |
//! | [`deploy`] | `berth deploy`: blue-green with Docker and a compare-and-swap route flip |
//! | [`error`] | typed errors |

pub mod balance;
pub mod config;
pub mod deploy;
pub mod error;
pub mod http;
pub mod l4;
pub mod metrics;
pub mod pool;
pub mod server;
pub mod shard;
pub mod table;
pub mod tls;
pub mod upstream;
pub mod vipnet;
pub mod workers;

pub use balance::Policy;
pub use config::{Args, Config};
pub use error::{ConfigError, Error};
pub use server::{bind, run, Bound, State, Worker};
pub use table::Table;
