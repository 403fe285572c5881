//! `berth dns`: a DNS server (on `hickory-server`) for the service catalog in the registry.
//!
//! With the default zone `berth.`: `<service>.berth` A is the service's VIP,
//! `tasks.<service>.berth` A/AAAA the addresses of its live instances (only the active
//! color's when `/_berth/routes/<service>` = `{"active":"green"}` exists),
//! `_<service>._tcp.berth` SRV one record per instance with the targets' addresses in the
//! additional section, and PTR maps VIPs back to `<service>.berth`. The bare names
//! `<service>`, `tasks.<service>` and `_<service>._tcp` answer the same when the service
//! exists. Unknown names in the zone get NXDOMAIN with the zone's SOA; an existing name asked
//! for another type (e.g. AAAA of a VIP) an empty NOERROR. Everything else is forwarded to
//! upstream resolvers over the client's protocol (next upstream on SERVFAIL or timeout), or
//! REFUSED with `--no-recursion`. Clients outside `--allow` get REFUSED. UDP answers larger
//! than the client's EDNS payload size (512 bytes without EDNS) are truncated with TC set, and
//! the client retries over TCP.
//!
//! UDP is served by berth's own threads ([`udp`]), which answer a repeated question from a
//! per-thread cache that is emptied whenever the catalog changes; TCP by hickory-server. Both
//! run the same [`Handler`].
//!
//! State follows registry watches (never polling): a recursive read of `/services` and
//! `/_berth`, then recursive watches resuming from the last index seen; an outdated index
//! (etcd error 401) means reading everything again. Without a registry the server keeps
//! answering from its last state.
//!
//! # VIP key schema (read by the proxy)
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `/_berth/vips/service/<service>` | `127.77.0.12` | **the** VIP of the service; created once with `prevExist=false`, so the first writer wins every race |
//! | `/_berth/vips/ip/<ip>` | `<service>` | reservation of the address, created with `prevExist=false` *before* the service key |
//!
//! A claimant (any `berth dns`) first reserves an address from `--vip-range` (the service name
//! hashed into the range, then upward), then creates the service key. If the service key
//! already exists it adopts that VIP and deletes its own reservation (`prevValue=<service>`).
//! Hence a service never has two VIPs, and an address never serves two services. Readers
//! must take the service key as the truth; a reservation without a matching service key is
//! a claim in progress or a leftover, removed (`prevIndex`) after the grace period.
//! A service with no instances for `--vip-grace` seconds loses its VIP: the service key is
//! deleted with `prevIndex`, then the reservation with `prevValue`.
//!
//! # Layout
//!
//! The catalog itself (instances, routes, VIP claims, the watch loop that keeps it current)
//! lives in [`registry::catalog`], shared with the proxy.
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | flags ([`Args`]) and the validated [`Config`] |
//! | [`answer`] | pure lookup: catalog + question -> records / NXDOMAIN / forward |
//! | [`vip`] | pure VIP decisions: key schema, range, candidates, releases due |
//! | [`allocator`] | claims and releases VIPs by compare-and-swap (I/O) |
//! | [`forward`] | forwarding to upstream resolvers (I/O) |
//! | [`handler`] | the hickory `RequestHandler` |
//! | [`packet`] | the request path from bytes to bytes, for fuzzing and tests |
//! | [`udp`] | the UDP threads and their answer cache |
//! | [`mmsg`] | batched datagram I/O (`recvmmsg`, `sendmmsg`) |
//! | [`server`] | [`run`] |
//! | [`error`] | typed errors |

pub mod allocator;
pub mod answer;
pub mod config;
pub mod error;
pub mod forward;
pub mod handler;
pub mod mmsg;
pub mod packet;
pub mod server;
pub mod udp;
pub mod vip;

pub use answer::{Answer, Outcome, Zone};
pub use config::{Args, Config};
pub use error::{ConfigError, Error, ForwardError, VipError};
pub use handler::Handler;
pub use registry::catalog::{Catalog, Instance, Shared};
pub use server::run;
pub use vip::VipRange;

/// Re-exported for callers of [`packet::respond`].
pub use hickory_server::net::xfer::Protocol;
