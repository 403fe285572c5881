//! The `berth` binary's own library: what the thin `main` calls that is not one of the
//! workspace crates.
//!
//! | crate | concern |
//! |---|---|
//! | `registry` | the etcd v2-compatible registry (Raft + RocksDB), its client and `berth ctl`; the service catalog |
//! | `registrator` | `berth registrator` (Docker events -> catalog) and `berth announce` (the sidekick) |
//! | `dns` | `berth dns`: service names -> VIPs, `tasks.`, SRV |
//! | `proxy` | `berth proxy` (HTTP routes, VIP listeners) and `berth deploy` (blue-green) |
//! | `plugins` | `berth plugin` (overlay networks, IPAM, secret volumes), `berth secret`, `berth config` |
//! | this crate: [`up`] | `berth up`: all of the above on one host |

pub mod up;

pub use up::{UpArgs, UpError};
